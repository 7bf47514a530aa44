"""bn3d.torch_nn.BatchNorm3d: torch.nn.BatchNorm3d's interface, state, modes and errors.

Every expected message here was read off PyTorch 2.13; the differential tests
(test_torch_nn_differential.py) check them against the real thing when it is installed.
"""

from __future__ import annotations

import ast
import copy
import doctest
import importlib
import inspect
import pickle
import threading

import numpy as np
import pytest
from conftest import max_relative_error, reference_batch_norm

from bn3d.functional import batch_norm_backward
from bn3d.torch_nn import BatchNorm3d

F32, F64 = np.float32, np.float64
SEED_INPUT = np.array([[[[[0.1, 0.2], [0.3, 0.4]]], [[[0.9, 1.0], [1.1, 1.2]]]]], F32)
SEED_TORCH_OUTPUT = np.array([
    [-1.3411044, -0.44703478, 0.4470349, 1.3411044],
    [-1.3411034, -0.44703388, 0.44703573, 1.3411053],
])


def data(shape=(2, 3, 3, 4, 5), dtype=F32, seed=0, scale=2.0, shift=0.5):
    x = np.random.default_rng(seed).standard_normal(shape) * scale + shift
    return x.astype(dtype)


def batch_mean_var(x):
    """float64 per-channel mean and unbiased variance of (N, C, D, H, W) data."""
    xd = np.asarray(x, F64)
    return xd.mean(axis=(0, 2, 3, 4)), xd.var(axis=(0, 2, 3, 4), ddof=1)


def snapshot(bn):
    """Every piece of state, copied."""
    state = {name: None if getattr(bn, name) is None else getattr(bn, name).copy()
             for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    state["training"] = bn.training
    return state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        if a[name] is None or isinstance(a[name], bool):
            assert a[name] is b[name], name
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
            assert a[name].dtype == b[name].dtype, name


# -- construction ---------------------------------------------------------------------------


def test_signature_is_torchs():
    parameters = inspect.signature(BatchNorm3d).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        ("num_features", inspect.Parameter.empty), ("eps", 1e-05), ("momentum", 0.1),
        ("affine", True), ("track_running_stats", True), ("device", None), ("dtype", None),
        ("bias", True),
    ]
    assert parameters["bias"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(TypeError):
        BatchNorm3d(3, 1e-5, 0.1, True, True, None, None, False)


def test_new_module_has_torchs_initial_state():
    bn = BatchNorm3d(3)
    assert bn.training is True
    assert (bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (
        3, 1e-05, 0.1, True, True)
    for name, value in [("weight", 1), ("bias", 0), ("running_mean", 0), ("running_var", 1)]:
        array = getattr(bn, name)
        assert isinstance(array, np.ndarray) and array.dtype == F32 and array.shape == (3,)
        np.testing.assert_array_equal(array, np.full(3, value, F32))
    assert bn.num_batches_tracked.shape == () and bn.num_batches_tracked.dtype == np.int64
    assert bn.num_batches_tracked == 0


@pytest.mark.parametrize("kwargs, absent", [
    ({"affine": False}, ["weight", "bias"]),
    ({"bias": False}, ["bias"]),
    ({"track_running_stats": False}, ["running_mean", "running_var", "num_batches_tracked"]),
    ({"affine": False, "track_running_stats": False},
     ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
])
def test_absent_parameters_and_buffers_are_none(kwargs, absent):
    bn = BatchNorm3d(3, **kwargs)
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert (getattr(bn, name) is None) == (name in absent), name


@pytest.mark.parametrize("dtype, expected", [
    (None, F32), ("float32", F32), ("float64", F64), ("float16", np.float16),
    (np.float64, F64), (np.dtype("float16"), np.float16),
])
def test_dtype_sets_parameters_and_running_stats_dtype(dtype, expected):
    bn = BatchNorm3d(2, dtype=dtype)
    for array in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        assert array.dtype == expected
    assert bn.num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize("dtype", ["int32", np.int64, "complex64", "bfloat16", "no-such-type"])
def test_non_float_dtypes_are_rejected(dtype):
    with pytest.raises(TypeError, match="dtype must be float16, float32 or float64"):
        BatchNorm3d(2, dtype=dtype)


@pytest.mark.parametrize("device", [None, "cpu", "cpu:0", "cpu:3"])
def test_cpu_devices_are_accepted(device):
    assert BatchNorm3d(2, device=device).weight.shape == (2,)


@pytest.mark.parametrize("device, error, message", [
    ("cuda", AssertionError, "Torch not compiled with CUDA enabled"),
    ("cuda:0", AssertionError, "Torch not compiled with CUDA enabled"),
    ("gpu", RuntimeError, "Expected one of cpu, cuda, ipu, xpu, mkldnn, opengl, opencl, ideep, "
     "hip, ve, fpga, maia, xla, lazy, vulkan, mps, meta, hpu, mtia, privateuseone device type "
     "at start of device string: gpu"),
    ("CPU", RuntimeError, "Expected one of cpu, cuda, ipu, xpu, mkldnn, opengl, opencl, ideep, "
     "hip, ve, fpga, maia, xla, lazy, vulkan, mps, meta, hpu, mtia, privateuseone device type "
     "at start of device string: CPU"),
    ("cpu:x", RuntimeError, "Invalid device string: 'cpu:x'"),
    ("", RuntimeError, "Device string must not be empty"),
    (0, RuntimeError, "Cannot access accelerator device when none is available."),
    (-1, RuntimeError, "Device index must not be negative"),
    (1.5, TypeError, "empty(): argument 'device' must be torch.device, not float"),
    ("meta", ValueError, "bn3d computes on the CPU only, not on device 'meta'"),
])
def test_other_devices_raise_torchs_errors(device, error, message):
    with pytest.raises(error) as raised:
        BatchNorm3d(2, device=device)
    assert str(raised.value) == message


@pytest.mark.parametrize("num_features, error, message", [
    (-1, RuntimeError, "Trying to create tensor with negative dimension -1: [-1]"),
    (3.0, TypeError, "empty(): argument 'size' (position 1) must be tuple of ints, not float"),
    (True, TypeError, "empty(): argument 'size' (position 1) must be tuple of ints, not bool"),
])
def test_bad_num_features_raise_torchs_errors(num_features, error, message):
    with pytest.raises(error) as raised:
        BatchNorm3d(num_features)
    assert str(raised.value) == message


def test_num_features_is_only_checked_when_arrays_are_created():
    """torch validates num_features by creating tensors; with none to create, it accepts it."""
    assert BatchNorm3d(-1, affine=False, track_running_stats=False).num_features == -1


@pytest.mark.parametrize("kwargs, text", [
    ({}, "BatchNorm3d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, "
         "track_running_stats=True)"),
    ({"eps": 1e-3, "momentum": None, "affine": False, "track_running_stats": False},
     "BatchNorm3d(3, eps=0.001, momentum=None, affine=False, bias=False, "
     "track_running_stats=False)"),
    ({"bias": False, "momentum": 1.5, "eps": 0}, "BatchNorm3d(3, eps=0, momentum=1.5, "
     "affine=True, bias=False, track_running_stats=True)"),
])
def test_repr_is_torchs(kwargs, text):
    bn = BatchNorm3d(3, **kwargs)
    assert repr(bn) == str(bn) == text
    assert bn.extra_repr() == text[len("BatchNorm3d("):-1]


# -- modes ----------------------------------------------------------------------------------


def test_train_and_eval_return_the_module_and_set_the_mode():
    bn = BatchNorm3d(3)
    assert bn.eval() is bn and bn.training is False
    assert bn.train() is bn and bn.training is True
    assert bn.train(False) is bn and bn.training is False


def test_train_mode_must_be_a_bool():
    with pytest.raises(ValueError) as raised:
        BatchNorm3d(3).train(1)
    assert str(raised.value) == "training mode is expected to be boolean"


def test_training_normalises_with_batch_stats_and_updates_running_stats():
    x = data(dtype=F64)
    bn = BatchNorm3d(3, momentum=0.3, dtype="float64")
    bn.weight[:] = [0.5, 1.0, 2.0]
    bn.bias[:] = [0.0, -1.0, 3.0]
    y = bn(x)
    expected = reference_batch_norm(x, bn.weight, bn.bias, eps=1e-5)
    assert max_relative_error(y, expected) <= 1e-12
    mean, var = batch_mean_var(x)
    np.testing.assert_allclose(bn.running_mean, 0.3 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.7 + 0.3 * var, rtol=1e-12)
    assert bn.num_batches_tracked == 1


def test_training_without_tracked_stats_uses_batch_stats():
    x = data(dtype=F64)
    bn = BatchNorm3d(3, track_running_stats=False, dtype="float64")
    assert max_relative_error(bn(x), reference_batch_norm(x)) <= 1e-12
    assert bn.running_mean is None and bn.num_batches_tracked is None


def test_eval_uses_running_stats():
    x = data(dtype=F64)
    bn = BatchNorm3d(3, dtype="float64").eval()
    bn.running_mean[:] = [1.0, -2.0, 0.5]
    bn.running_var[:] = [4.0, 0.25, 1.0]
    y = bn(x)
    expected = reference_batch_norm(x, mean=bn.running_mean, var=bn.running_var)
    assert max_relative_error(y, expected) <= 1e-12
    np.testing.assert_array_equal(bn.running_mean, [1.0, -2.0, 0.5])
    np.testing.assert_array_equal(bn.running_var, [4.0, 0.25, 1.0])
    assert bn.num_batches_tracked == 0


def test_eval_without_tracked_stats_uses_batch_stats():
    x = data(dtype=F64)
    bn = BatchNorm3d(3, track_running_stats=False, dtype="float64").eval()
    assert max_relative_error(bn(x), reference_batch_norm(x)) <= 1e-12


def test_eval_accepts_one_value_per_channel_when_running_stats_are_tracked():
    bn = BatchNorm3d(3).eval()
    x = data((1, 3, 1, 1, 1))
    assert max_relative_error(bn(x), x / np.sqrt(1 + 1e-5)) <= 2e-7


def test_momentum_none_keeps_a_cumulative_average():
    bn = BatchNorm3d(3, momentum=None, dtype="float64")
    batches = [data(dtype=F64, seed=seed, shift=seed) for seed in range(4)]
    for batch in batches:
        bn(batch)
    means, variances = zip(*(batch_mean_var(batch) for batch in batches))
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean(variances, axis=0), rtol=1e-12)
    assert bn.num_batches_tracked == 4


def test_momentum_outside_unit_interval_is_used_as_given():
    bn = BatchNorm3d(3, momentum=1.5, dtype="float64")
    x = data(dtype=F64)
    bn(x)
    mean, var = batch_mean_var(x)
    np.testing.assert_allclose(bn.running_mean, 1.5 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, -0.5 + 1.5 * var, rtol=1e-12)


def test_num_batches_tracked_counts_training_forwards_only():
    bn = BatchNorm3d(3)
    counter = bn.num_batches_tracked
    bn(data())
    bn(data())
    bn.eval()(data())
    assert bn.num_batches_tracked is counter and counter == 2 and counter.dtype == np.int64


def test_empty_batch_is_counted_but_leaves_running_stats_unchanged():
    for momentum in (0.1, None):
        bn = BatchNorm3d(3, momentum=momentum)
        y = bn(np.zeros((0, 3, 2, 2, 2), F32))
        assert y.shape == (0, 3, 2, 2, 2) and y.dtype == F32
        assert bn.num_batches_tracked == 1
        np.testing.assert_array_equal(bn.running_mean, np.zeros(3, F32))
        np.testing.assert_array_equal(bn.running_var, np.ones(3, F32))
        assert bn.eval()(np.zeros((0, 3, 2, 2, 2), F32)).shape == (0, 3, 2, 2, 2)


def test_running_stats_and_parameters_are_updated_in_place():
    bn = BatchNorm3d(3)
    names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    arrays = [getattr(bn, name) for name in names]
    bn(data())
    bn.reset_parameters()
    bn.load_state_dict(bn.state_dict())
    assert all(getattr(bn, name) is array for name, array in zip(names, arrays))


def test_reset_running_stats_and_reset_parameters_restore_initial_values():
    bn = BatchNorm3d(3)
    bn.weight[:] = 2.0
    bn.bias[:] = 1.0
    bn(data())
    bn.reset_running_stats()
    np.testing.assert_array_equal(bn.running_mean, 0.0)
    np.testing.assert_array_equal(bn.running_var, 1.0)
    assert bn.num_batches_tracked == 0
    np.testing.assert_array_equal(bn.weight, 2.0)
    bn.reset_parameters()
    np.testing.assert_array_equal(bn.weight, 1.0)
    np.testing.assert_array_equal(bn.bias, 0.0)
    BatchNorm3d(3, affine=False, track_running_stats=False).reset_parameters()  # no-op


def test_eps_is_checked_at_forward_time():
    bn = BatchNorm3d(3, eps=0.0)
    with pytest.raises(ValueError) as raised:
        bn(data())
    assert str(raised.value) == "batch_norm eps must be positive during training, but got 0.0"
    np.testing.assert_array_equal(bn.eval()(data()), data())  # eval accepts eps == 0
    bn.eps = -1.0
    with pytest.raises(ValueError) as raised:
        bn(data())
    assert str(raised.value) == "batch_norm eps must be non-negative, but got -1.0"


# -- inputs and dtypes ----------------------------------------------------------------------


def test_output_is_a_new_array_of_the_input_dtype():
    x = data()
    y = BatchNorm3d(3)(x)
    assert isinstance(y, np.ndarray) and y.dtype == F32 and y.shape == x.shape
    assert not np.shares_memory(x, y)
    np.testing.assert_array_equal(x, data())


class ArrayInterfaceOnly:
    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array


@pytest.mark.parametrize("wrap", [ArrayInterfaceOnly, lambda a: np.asfortranarray(a)],
                         ids=["__array__", "fortran-order"])
def test_array_objects_are_accepted(wrap):
    x = data(dtype=F64)
    expected = BatchNorm3d(3, dtype="float64")(x)
    np.testing.assert_array_equal(BatchNorm3d(3, dtype="float64")(wrap(x)), expected)


def test_float16_input_into_float32_module_gives_float16_output_and_float32_stats():
    x = data(dtype=np.float16)
    bn = BatchNorm3d(3)
    y = bn(x)
    assert y.dtype == np.float16
    assert bn.running_mean.dtype == bn.running_var.dtype == F32
    expected = reference_batch_norm(x.astype(F64))
    assert max_relative_error(y, expected) <= 1e-3
    mean, var = batch_mean_var(x)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var, rtol=1e-6)


def test_float16_module_takes_float16_input():
    bn = BatchNorm3d(3, dtype="float16")
    y = bn(data(dtype=np.float16))
    assert y.dtype == bn.running_mean.dtype == np.float16


# Each case: (constructor kwargs, training, input, error type, torch's message).
ERROR_CASES = {
    "rank-4": ({}, True, data((2, 3, 4, 5)), ValueError, "expected 5D input (got 4D input)"),
    "rank-6": ({}, False, data((2, 3, 2, 2, 2, 2)), ValueError,
               "expected 5D input (got 6D input)"),
    "channels-running-mean": ({}, True, data((2, 4, 2, 2, 2)), RuntimeError,
                              "running_mean should contain 4 elements not 3"),
    "channels-running-mean-eval": ({}, False, data((2, 4, 2, 2, 2)), RuntimeError,
                                   "running_mean should contain 4 elements not 3"),
    "channels-weight-untracked": ({"track_running_stats": False}, True, data((2, 4, 2, 2, 2)),
                                  RuntimeError, "weight should contain 4 elements not 3"),
    "channels-weight-untracked-eval": ({"track_running_stats": False}, False,
                                       data((2, 2, 2, 2, 2)), RuntimeError,
                                       "weight should contain 2 elements not 3"),
    "one-value-per-channel": ({}, True, data((1, 3, 1, 1, 1)), ValueError,
                              "Expected more than 1 value per channel when training, "
                              "got input size torch.Size([1, 3, 1, 1, 1])"),
    "one-value-per-channel-eval-untracked": (
        {"track_running_stats": False}, False, data((1, 3, 1, 1, 1)), ValueError,
        "Expected more than 1 value per channel when training, "
        "got input size torch.Size([1, 3, 1, 1, 1])"),
    "eps-zero-training": ({"eps": 0.0}, True, data(), ValueError,
                          "batch_norm eps must be positive during training, but got 0.0"),
    "eps-negative-eval": ({"eps": -1.0}, False, data(), ValueError,
                          "batch_norm eps must be non-negative, but got -1.0"),
    "float64-into-float32": ({}, True, data(dtype=F64), RuntimeError,
                             "mixed dtype (CPU): all inputs must share same datatype."),
    "float32-into-float64": ({"dtype": "float64"}, True, data(), RuntimeError,
                             "mixed dtype (CPU): expect parameter to have scalar type of Float"),
    "int32": ({}, True, data(dtype=np.int32), NotImplementedError,
              "\"batch_norm\" not implemented for 'Int'"),
    "int64": ({}, False, data(dtype=np.int64), NotImplementedError,
              "\"batch_norm\" not implemented for 'Long'"),
    "uint8": ({}, True, data(dtype=np.uint8), NotImplementedError,
              "\"batch_norm\" not implemented for 'Byte'"),
    "bool": ({}, True, data() > 0, NotImplementedError,
             "\"batch_norm\" not implemented for 'Bool'"),
}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_errors_carry_torchs_type_and_message(name):
    kwargs, training, x, error, message = ERROR_CASES[name]
    bn = BatchNorm3d(3, **kwargs).train(training)
    with pytest.raises(error) as raised:
        bn(x)
    assert str(raised.value) == message


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_a_failing_forward_changes_nothing(name, momentum):
    kwargs, training, x, error, _ = ERROR_CASES[name]
    kwargs = dict(kwargs)
    eps = kwargs.pop("eps", 1e-5)
    bn = BatchNorm3d(3, momentum=momentum, **kwargs)
    good = data(dtype=bn.weight.dtype)
    bn(good)
    bn.train(training)
    bn.eps = eps
    before = snapshot(bn)
    gradients = bn.backward(np.ones_like(good))
    with pytest.raises(error):
        bn(x)
    assert_same_state(snapshot(bn), before)
    for after, expected in zip(bn.backward(np.ones_like(good)), gradients):
        np.testing.assert_array_equal(after, expected)  # still the last good forward's


# -- backward -------------------------------------------------------------------------------


def reference_gradients(g, x, weight, mean, var, eps, through_batch_stats):
    """float64 gradients by the textbook formulas."""
    g, x = np.asarray(g, F64), np.asarray(x, F64)
    shape = (1, -1, 1, 1, 1)
    invstd = 1 / np.sqrt(np.asarray(var, F64) + eps)
    xhat = (x - np.reshape(mean, shape)) * invstd.reshape(shape)
    axes = (0, 2, 3, 4)
    n = x.size // x.shape[1]
    sum_g, sum_gx = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    scale = (np.asarray(weight, F64) * invstd).reshape(shape)
    if through_batch_stats:
        grad_input = scale / n * (n * g - sum_g.reshape(shape) - xhat * sum_gx.reshape(shape))
    else:
        grad_input = g * scale
    return grad_input, sum_gx, sum_g


@pytest.mark.parametrize("training", [True, False])
def test_backward_follows_the_forwards_statistics(training):
    x, g = data(dtype=F64), data(dtype=F64, seed=1)
    bn = BatchNorm3d(3, dtype="float64").train(training)
    bn.weight[:] = [0.5, 1.5, -2.0]
    bn.running_mean[:] = [0.1, 0.2, 0.3]
    bn.running_var[:] = [0.5, 2.0, 1.0]
    if training:
        mean, var = x.mean(axis=(0, 2, 3, 4)), x.var(axis=(0, 2, 3, 4))
    else:
        mean, var = bn.running_mean.copy(), bn.running_var.copy()
    bn(x)
    expected = reference_gradients(g, x, bn.weight, mean, var, 1e-5, training)
    for ours, theirs in zip(bn.backward(g), expected):
        assert max_relative_error(ours, theirs) <= 1e-10


def test_backward_matches_the_functional_backward():
    x, g = data(), data(seed=1)
    bn = BatchNorm3d(3)
    bn(x)
    expected = batch_norm_backward(g, x, None, None, bn.weight, training=True)
    for ours, theirs in zip(bn.backward(g), expected):
        np.testing.assert_array_equal(ours, theirs)


def test_backward_without_tracked_stats_in_eval_goes_through_batch_stats():
    x, g = data(dtype=F64), data(dtype=F64, seed=1)
    bn = BatchNorm3d(3, track_running_stats=False, dtype="float64").eval()
    bn(x)
    expected = reference_gradients(g, x, bn.weight, x.mean(axis=(0, 2, 3, 4)),
                                   x.var(axis=(0, 2, 3, 4)), 1e-5, True)
    assert max_relative_error(bn.backward(g)[0], expected[0]) <= 1e-10


@pytest.mark.parametrize("kwargs, present", [
    ({}, (True, True)), ({"bias": False}, (True, False)), ({"affine": False}, (False, False)),
])
def test_backward_returns_none_for_absent_parameters(kwargs, present):
    bn = BatchNorm3d(3, **kwargs)
    x = data()
    bn(x)
    grad_input, grad_weight, grad_bias = bn.backward(np.ones_like(x))
    assert grad_input.shape == x.shape and grad_input.dtype == F32
    assert (grad_weight is not None, grad_bias is not None) == present


def test_backward_before_any_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="backward\\(\\) needs a forward\\(\\) first"):
        BatchNorm3d(3).backward(data())


def test_backward_checks_the_gradient_shape_like_autograd():
    bn = BatchNorm3d(3)
    bn(data())
    with pytest.raises(RuntimeError) as raised:
        bn.backward(data((2, 3, 3, 4, 1)))
    assert str(raised.value) == (
        "Mismatch in shape: grad_output[0] has a shape of torch.Size([2, 3, 3, 4, 1]) and "
        "output[0] has a shape of torch.Size([2, 3, 3, 4, 5]).")
    with pytest.raises(RuntimeError, match="For complex Tensors"):
        bn.backward(data().astype(np.complex64))


def test_backward_casts_the_gradient_to_the_output_dtype_like_autograd():
    x, g = data(), data(seed=1)
    bn = BatchNorm3d(3)
    bn(x)
    ours = bn.backward(g.astype(F64))
    for a, b in zip(ours, bn.backward(g)):
        assert a.dtype == b.dtype == F32
        np.testing.assert_array_equal(a, b)


def test_backward_of_float16_input_is_float16_with_float32_parameter_gradients():
    x = data(dtype=np.float16)
    bn = BatchNorm3d(3)
    bn(x)
    grad_input, grad_weight, grad_bias = bn.backward(np.ones_like(x))
    assert grad_input.dtype == np.float16
    assert grad_weight.dtype == grad_bias.dtype == F32


def test_backward_uses_the_weight_of_its_forward():
    x, g = data(dtype=F64), data(dtype=F64, seed=1)
    bn = BatchNorm3d(3, dtype="float64")
    bn.weight[:] = 2.0
    bn(x)
    expected = bn.backward(g)
    bn.weight[:] = 5.0  # an optimiser step between forward and backward
    for ours, theirs in zip(bn.backward(g), expected):
        np.testing.assert_array_equal(ours, theirs)


def test_backward_of_an_empty_batch_is_empty_with_zero_parameter_gradients():
    bn = BatchNorm3d(3)
    x = np.zeros((0, 3, 2, 2, 2), F32)
    bn(x)
    grad_input, grad_weight, grad_bias = bn.backward(x)
    assert grad_input.shape == x.shape
    np.testing.assert_array_equal(grad_weight, 0)
    np.testing.assert_array_equal(grad_bias, 0)


# -- state_dict -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, keys", [
    ({}, ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
    ({"affine": False}, ["running_mean", "running_var", "num_batches_tracked"]),
    ({"bias": False}, ["weight", "running_mean", "running_var", "num_batches_tracked"]),
    ({"track_running_stats": False}, ["weight", "bias"]),
])
def test_state_dict_has_torchs_keys_in_torchs_order(kwargs, keys):
    state = BatchNorm3d(3, **kwargs).state_dict()
    assert list(state) == keys
    assert state._metadata == {"": {"version": 2}}


def test_state_dict_holds_copies():
    bn = BatchNorm3d(3)
    bn(data())
    state = bn.state_dict()
    assert state["num_batches_tracked"].shape == () and state["num_batches_tracked"] == 1
    for name, value in state.items():
        np.testing.assert_array_equal(value, getattr(bn, name))
        assert value.dtype == getattr(bn, name).dtype
        value[...] = 7
    assert bn.num_batches_tracked == 1 and np.all(bn.weight == 1)


def test_state_dict_round_trip_restores_the_module():
    source = BatchNorm3d(3, momentum=None)
    source(data())
    source(data(seed=2))
    target = BatchNorm3d(3, momentum=None)
    assert repr(target.load_state_dict(source.state_dict())) == "<All keys matched successfully>"
    assert_same_state(snapshot(target), snapshot(source))
    x = data(seed=3)
    np.testing.assert_array_equal(target(x), source(x))
    assert_same_state(snapshot(target), snapshot(source))


def test_load_state_dict_accepts_array_likes_and_casts_to_the_modules_dtypes():
    bn = BatchNorm3d(2)
    result = bn.load_state_dict({
        "weight": [2, 3], "bias": np.array([0.5, 1.5]), "running_mean": (1.0, 2.0),
        "running_var": ArrayInterfaceOnly(np.array([4.0, 5.0])),
        "num_batches_tracked": 7.0,
    })
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(bn.weight, [2, 3])
    np.testing.assert_array_equal(bn.running_var, [4, 5])
    assert bn.weight.dtype == bn.bias.dtype == bn.running_var.dtype == F32
    assert bn.num_batches_tracked == 7 and bn.num_batches_tracked.dtype == np.int64


def test_load_state_dict_without_metadata_may_omit_the_count():
    bn = BatchNorm3d(2)
    bn(data((2, 2, 2, 2, 2)))
    state = dict(BatchNorm3d(2).state_dict())  # a plain dict: no _metadata
    del state["num_batches_tracked"]
    bn.load_state_dict(state)
    assert bn.num_batches_tracked == 1
    np.testing.assert_array_equal(bn.running_mean, 0)


def test_load_state_dict_takes_a_one_element_count():
    bn = BatchNorm3d(2)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.array([5])
    bn.load_state_dict(state)
    assert bn.num_batches_tracked.shape == () and bn.num_batches_tracked == 5


def test_load_state_dict_reports_every_problem_like_torch_and_loads_nothing():
    bn = BatchNorm3d(3)
    before = snapshot(bn)
    state = bn.state_dict()
    del state["weight"], state["num_batches_tracked"]
    state["running_mean"] = np.full(3, 9.0)
    state["foo"] = np.zeros(3)
    state["bias"] = np.zeros(4)
    state["running_var"] = np.zeros((2, 2))
    with pytest.raises(RuntimeError) as raised:
        bn.load_state_dict(state)
    assert str(raised.value) == (
        "Error(s) in loading state_dict for BatchNorm3d:\n"
        '\tMissing key(s) in state_dict: "weight", "num_batches_tracked". \n'
        '\tUnexpected key(s) in state_dict: "foo". \n'
        "\tsize mismatch for bias: copying a param with shape torch.Size([4]) from checkpoint, "
        "the shape in current model is torch.Size([3]).\n"
        "\tsize mismatch for running_var: copying a param with shape torch.Size([2, 2]) from "
        "checkpoint, the shape in current model is torch.Size([3]).")
    assert_same_state(snapshot(bn), before)
    with pytest.raises(RuntimeError) as raised:  # not strict: the shapes still count
        bn.load_state_dict(state, strict=False)
    assert "Missing" not in str(raised.value) and "size mismatch for bias" in str(raised.value)
    assert_same_state(snapshot(bn), before)


def test_load_state_dict_not_strict_returns_the_incompatible_keys():
    bn = BatchNorm3d(3)
    state = bn.state_dict()
    del state["weight"]
    state["bias"] = np.full(3, 2.0)
    state["extra"] = np.zeros(1)
    result = bn.load_state_dict(state, strict=False)
    assert result.missing_keys == ["weight"] and result.unexpected_keys == ["extra"]
    assert repr(result) == ("_IncompatibleKeys(missing_keys=['weight'], "
                            "unexpected_keys=['extra'])")
    np.testing.assert_array_equal(bn.bias, 2.0)


def test_load_state_dict_rejects_entries_the_module_does_not_have():
    with pytest.raises(RuntimeError) as raised:
        BatchNorm3d(3, affine=False).load_state_dict(BatchNorm3d(3).state_dict())
    assert str(raised.value) == ("Error(s) in loading state_dict for BatchNorm3d:\n"
                                 '\tUnexpected key(s) in state_dict: "weight", "bias". ')


def test_load_state_dict_rejects_non_numeric_values_and_non_mappings():
    bn = BatchNorm3d(3)
    state = bn.state_dict()
    state["weight"] = np.array(["a", "b", "c"])
    with pytest.raises(RuntimeError) as raised:
        bn.load_state_dict(state)
    assert str(raised.value) == (
        "Error(s) in loading state_dict for BatchNorm3d:\n"
        '\tWhile copying the parameter named "weight", expected torch.Tensor or Tensor-like '
        "object from checkpoint but received <class 'numpy.ndarray'>")
    with pytest.raises(TypeError) as raised:
        bn.load_state_dict([("weight", np.ones(3))])
    assert str(raised.value) == "Expected state_dict to be dict-like, got <class 'list'>."


# -- threads, copies, the seed example, docs ------------------------------------------------


def test_concurrent_calls_give_the_serial_result(frequent_thread_switches):
    threads, calls = 8, 30
    shape = (2, 4, 4, 8, 8)
    batches = [data(shape, F64, seed=i, shift=i) for i in range(threads)]
    grads = [data(shape, F64, seed=100 + i) for i in range(threads)]
    serial = BatchNorm3d(4, momentum=None, dtype="float64")
    expected = []
    for x, g in zip(batches, grads):
        for _ in range(calls):
            output = serial(x)
        expected.append((output, serial.backward(g)))

    shared = BatchNorm3d(4, momentum=None, dtype="float64")
    results = [[] for _ in range(threads)]
    failures = []
    start = threading.Barrier(threads)

    def hammer(i):
        try:
            start.wait()
            for _ in range(calls):
                output = shared(batches[i])
                results[i].append((output, shared.backward(grads[i])))
                shared.state_dict()
        except BaseException as error:  # surfaced below
            failures.append(error)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures
    assert shared.num_batches_tracked == serial.num_batches_tracked == threads * calls
    # The same batches in another order: the same cumulative average, up to rounding.
    np.testing.assert_allclose(shared.running_mean, serial.running_mean, rtol=1e-12)
    np.testing.assert_allclose(shared.running_var, serial.running_var, rtol=1e-12)
    for i, (output, gradients) in enumerate(expected):  # each thread saw its own forward
        assert len(results[i]) == calls
        for got_output, got_gradients in results[i]:
            np.testing.assert_array_equal(got_output, output)
            for got, want in zip(got_gradients, gradients):
                np.testing.assert_array_equal(got, want)


def test_backward_pairs_with_the_calling_threads_forward():
    bn = BatchNorm3d(3)
    bn(data())
    failures = []

    def backward_elsewhere():
        try:
            bn.backward(data())
        except RuntimeError as error:
            failures.append(str(error))

    worker = threading.Thread(target=backward_elsewhere)
    worker.start()
    worker.join()
    assert failures and "in this thread" in failures[0]
    assert bn.backward(data())[0].shape == data().shape


class _GradientThatCallsMeanwhile:
    """A gradient which, while the backward reads it, has another thread call the module."""

    def __init__(self, gradient, module, x):
        self.gradient, self.module, self.x = gradient, module, x
        self.other_call_waited = None

    def __array__(self, dtype=None, copy=None):
        other = threading.Thread(target=self.module, args=(self.x,))
        other.start()
        other.join(timeout=0.2)
        self.other_call_waited = other.is_alive()
        self.other = other
        return self.gradient


def test_a_forward_in_another_thread_waits_for_a_backward():
    bn = BatchNorm3d(3)
    x = data()
    bn(x)
    gradient = _GradientThatCallsMeanwhile(np.ones_like(x), bn, x)
    bn.backward(gradient)
    gradient.other.join()
    assert gradient.other_call_waited
    assert bn.num_batches_tracked == 2


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_modules_can_be_copied_and_pickled(clone):
    bn = BatchNorm3d(3)
    bn(data())
    twin = clone(bn)
    assert_same_state(snapshot(twin), snapshot(bn))
    assert twin.weight is not bn.weight
    with pytest.raises(RuntimeError, match="needs a forward"):
        twin.backward(data())
    np.testing.assert_array_equal(twin(data(seed=1)), bn(data(seed=1)))


def test_seed_example_matches_torch():
    bn = BatchNorm3d(2)
    y = bn(SEED_INPUT)
    assert y.dtype == F32
    assert np.max(np.abs(y.reshape(2, 4) - SEED_TORCH_OUTPUT)) <= 2e-6
    np.testing.assert_allclose(bn.running_mean, [0.025, 0.105], rtol=1e-7)
    np.testing.assert_allclose(bn.running_var, [0.90166664, 0.90166664], rtol=1e-7)
    assert bn.num_batches_tracked == 1


# -- the words: PyTorch's messages live in bn3d._compat.torch -------------------------------


def _names_raised(module, alias):
    """The error names a module passes to ``alias.error`` or ``alias.message`` (both branches
    of a conditional name)."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("error", "message")
                and isinstance(node.func.value, ast.Name) and node.func.value.id == alias):
            names |= _string_choices(node.args[0])
    return names


def _string_choices(node):
    """The literal strings an expression may be: a literal, either branch of a conditional;
    none for a name computed otherwise."""
    if isinstance(node, ast.IfExp):
        return _string_choices(node.body) | _string_choices(node.orelse)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    return set()


def test_every_torch_error_raised_is_in_the_table_and_every_entry_is_raised():
    import bn3d.functional
    import bn3d.torch_nn
    from bn3d._compat import torch as words

    raised = _names_raised(bn3d.functional, "_torch") | _names_raised(bn3d.torch_nn, "_torch")
    raised_by_the_parser = {"argument_type", "broadcast", "undefined_tensor"}
    assert raised | raised_by_the_parser == set(words.ERRORS)
    assert words.VERSION == "2.13.0"


@pytest.mark.parametrize("name", ["bn3d._compat", "bn3d._compat.torch"])
def test_docstring_examples_of_the_torch_words_run(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
