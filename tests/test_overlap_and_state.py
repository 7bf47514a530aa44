"""Memory overlap, read-only arrays and half-changed state: a call either computes the
right numbers or raises and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from bn3d import batch_norm, batch_norm_backward
from bn3d._core import OverlapError
from bn3d.mindspore_nn import BatchNorm3d as MindSporeBatchNorm3d
from bn3d.torch_nn import BatchNorm3d as TorchBatchNorm3d

SHAPE = (2, 3, 4, 5, 6)
CHANNELS = SHAPE[1]


def data(shape=SHAPE, dtype=np.float32, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 1).astype(dtype)


def running(dtype=np.float32):
    return np.full(CHANNELS, 0.5, dtype), np.full(CHANNELS, 2.0, dtype)


def expected_call(x, training, **kwargs):
    """The output and running statistics of the call on separate, fresh arrays."""
    running_mean, running_var = running(x.dtype)
    output = batch_norm(x.copy(), running_mean, running_var, training=training, **kwargs)
    return output, running_mean, running_var


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("overlap", ["shifted-by-one", "channels-reversed", "is-the-input"])
def test_out_overlapping_the_input_gives_the_separate_result(overlap, training, dtype):
    buffer = np.zeros(int(np.prod(SHAPE)) + 1, dtype)
    x = buffer[1:].reshape(SHAPE)
    x[...] = data(dtype=dtype)
    expected, expected_mean, expected_var = expected_call(x, training)
    if overlap == "shifted-by-one":
        out = buffer[:-1].reshape(SHAPE)
    elif overlap == "channels-reversed":
        x = x[:, ::-1]
        expected, expected_mean, expected_var = expected_call(x, training)
        out = buffer[1:].reshape(SHAPE)  # x's memory, channels in the other order
    else:
        out = x
    running_mean, running_var = running(dtype)
    returned = batch_norm(x, running_mean, running_var, training=training, out=out)
    assert returned is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(running_mean, expected_mean)
    np.testing.assert_array_equal(running_var, expected_var)


@pytest.mark.parametrize("argument", ["weight", "bias", "running_mean"])
def test_out_overlapping_a_parameter_that_is_read_gives_the_separate_result(argument):
    x = data(dtype=np.float64)
    buffer = np.zeros(x.size + CHANNELS)
    out = buffer[:x.size].reshape(SHAPE)
    parameter = buffer[x.size - 1:x.size - 1 + CHANNELS]  # its first value is out's last
    parameter[...] = [1.5, 0.5, 2.0]
    arguments = {"weight": None, "bias": None, **dict(zip(("running_mean", "running_var"),
                                                          running(np.float64)))}
    arguments[argument] = parameter
    expected = batch_norm(x, **{k: None if v is None else v.copy()
                                for k, v in arguments.items()}, training=False)
    batch_norm(x, **arguments, training=False, out=out)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("rival", ["running_var", "input", "out", "weight"])
def test_a_running_statistic_sharing_memory_is_refused_and_nothing_changes(rival):
    x = data()
    running_mean, running_var = running()
    arguments = {"input": x, "running_mean": running_mean, "running_var": running_var,
                 "weight": np.ones(CHANNELS, np.float32), "out": np.full(SHAPE, 7.0, np.float32)}
    if rival == "input":
        arguments["running_mean"] = x[0, 0, 0, 0, :CHANNELS]
    else:
        arguments["running_mean"] = arguments[rival].reshape(-1)[:CHANNELS]
    before = {name: value.copy() for name, value in arguments.items()}
    with pytest.raises(OverlapError, match="running_mean shares memory with"):
        batch_norm(arguments.pop("input"), arguments.pop("running_mean"),
                   arguments.pop("running_var"), training=True, **arguments)
    after = {"input": x, "running_var": running_var, "weight": before["weight"], **arguments}
    for name, value in after.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize("read_only", ["running_mean", "running_var", "out"])
def test_a_read_only_output_is_refused_before_anything_is_written(read_only):
    x = data()
    arrays = dict(zip(("running_mean", "running_var"), running()))
    arrays["out"] = np.full(SHAPE, 7.0, np.float32)
    arrays[read_only].flags.writeable = False
    before = {name: array.copy() for name, array in arrays.items()}
    with pytest.raises(ValueError, match=f"{read_only} is read-only"):
        batch_norm(x, arrays["running_mean"], arrays["running_var"], training=True,
                   out=arrays["out"])
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_running_mean_is_running_var_is_refused_in_training_and_read_in_eval():
    x = data()
    shared = np.ones(CHANNELS, np.float32)
    with pytest.raises(OverlapError, match="running_mean shares memory with running_var"):
        batch_norm(x, shared, shared, training=True)
    np.testing.assert_array_equal(shared, np.ones(CHANNELS))
    np.testing.assert_array_equal(batch_norm(x, shared, shared, training=False),
                                  batch_norm(x, np.ones(CHANNELS, np.float32),
                                             np.ones(CHANNELS, np.float32), training=False))


@pytest.mark.parametrize("length", [1, CHANNELS - 1, CHANNELS + 1])
@pytest.mark.parametrize("argument", ["save_mean", "save_invstd"])
def test_saved_statistics_of_the_wrong_length_are_refused(argument, length):
    x = data()
    saved = {"save_mean": np.zeros(CHANNELS), "save_invstd": np.ones(CHANNELS)}
    saved[argument] = np.ones(length)
    with pytest.raises(ValueError, match=f"{argument} should contain {CHANNELS} elements"):
        batch_norm_backward(x, x, None, None, training=True, **saved)


def test_the_crash_of_short_saved_statistics_on_a_large_input_is_an_error():
    x = np.ones((2, 4_000_000, 1), np.float32)
    with pytest.raises(ValueError, match="save_mean should contain 4000000 elements"):
        batch_norm_backward(x, x, None, None, training=True, save_mean=np.zeros(1),
                            save_invstd=np.ones(1))


def test_torch_module_with_a_read_only_count_fails_and_changes_nothing():
    bn = TorchBatchNorm3d(CHANNELS)
    bn.num_batches_tracked.flags.writeable = False
    before = {name: value.copy() for name, value in bn.state_dict().items()}
    with pytest.raises(ValueError, match="num_batches_tracked is read-only"):
        bn(data())
    for name, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize("read_only", ["running_mean", "running_var"])
def test_torch_module_with_a_read_only_statistic_fails_and_changes_nothing(read_only):
    bn = TorchBatchNorm3d(CHANNELS)
    getattr(bn, read_only).flags.writeable = False
    with pytest.raises(ValueError, match=f"{read_only} is read-only"):
        bn(data())
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.running_mean, np.zeros(CHANNELS))
    np.testing.assert_array_equal(bn.running_var, np.ones(CHANNELS))


def test_mindspore_cell_with_a_read_only_moving_variance_changes_nothing():
    cell = MindSporeBatchNorm3d(CHANNELS).set_train()
    cell.moving_variance.asnumpy().flags.writeable = False
    with pytest.raises(ValueError, match="bn2d.moving_variance is read-only"):
        cell(data())
    np.testing.assert_array_equal(cell.moving_mean.asnumpy(), np.zeros(CHANNELS))
