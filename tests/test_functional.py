"""bn3d.functional: torch's argument rules and errors, array-likes, threads."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import max_relative_error, reference_batch_norm

import bn3d
from bn3d import batch_norm, batch_norm_backward, native_batch_norm

F32 = np.float32


def stats(channels=3, dtype=F32):
    return np.zeros(channels, dtype), np.ones(channels, dtype)


def x5(shape=(2, 3, 4, 5, 6), dtype=F32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def case(args, kwargs, error_type, message):
    """An error case: batch_norm(*args(), **kwargs) raises error_type(message)."""
    return args, kwargs, error_type, message


TRAIN = {"training": True}
EVAL = {"training": False}

# torch's own types and messages, and its order of checks.
ERROR_CASES = {
    "one-value-per-channel": case(
        lambda: (x5((1, 3, 1, 1, 1)), *stats()), TRAIN, ValueError,
        "Expected more than 1 value per channel when training, "
        "got input size torch.Size([1, 3, 1, 1, 1])"),
    "one-value-per-channel-rank-2": case(
        lambda: (np.ones((1, 3), F32), *stats()), TRAIN, ValueError,
        "Expected more than 1 value per channel when training, got input size torch.Size([1, 3])"),
    "eps-zero-training": case(
        lambda: (x5(), *stats()), {**TRAIN, "eps": 0.0}, ValueError,
        "batch_norm eps must be positive during training, but got 0.0"),
    "eps-negative-eval": case(
        lambda: (x5(), *stats()), {**EVAL, "eps": -1.0}, ValueError,
        "batch_norm eps must be non-negative, but got -1.0"),
    "one-value-checked-before-eps": case(
        lambda: (x5((1, 3, 1, 1, 1)), *stats()), {**TRAIN, "eps": 0.0}, ValueError,
        "Expected more than 1 value per channel when training, "
        "got input size torch.Size([1, 3, 1, 1, 1])"),
    "eps-checked-before-channels": case(
        lambda: (x5(), *stats(4)), {**TRAIN, "eps": 0.0}, ValueError,
        "batch_norm eps must be positive during training, but got 0.0"),
    "running-mean-channels": case(
        lambda: (x5((2, 4, 3, 3, 3)), *stats(3)), TRAIN, RuntimeError,
        "running_mean should contain 4 elements not 3"),
    "running-var-channels": case(
        lambda: (x5(), np.zeros(3, F32), np.ones(4, F32)), TRAIN, RuntimeError,
        "running_var should contain 3 elements not 4"),
    "weight-channels": case(
        lambda: (x5((2, 4, 3, 3, 3)), None, None, np.ones(3, F32)), TRAIN, RuntimeError,
        "weight should contain 4 elements not 3"),
    "bias-channels": case(
        lambda: (x5(), *stats(), None, np.ones(4, F32)), TRAIN, RuntimeError,
        "bias should contain 3 elements not 4"),
    "running-stats-2d": case(
        lambda: (x5(), np.zeros((1, 3), F32), np.ones((1, 3), F32)), TRAIN, RuntimeError,
        "TensorAccessor expected 1 dims but tensor has 2"),
    "running-stats-0d-one-channel": case(
        lambda: (x5((2, 1, 3, 3, 3)), np.zeros((), F32), np.ones((), F32)), EVAL, RuntimeError,
        "TensorAccessor expected 1 dims but tensor has 0"),
    "eval-needs-running-mean": case(
        lambda: (x5(), None, None), EVAL, RuntimeError,
        "running_mean must be defined in evaluation mode"),
    "eval-needs-running-var": case(
        lambda: (x5(), np.zeros(3, F32), None), EVAL, RuntimeError,
        "running_var must be defined in evaluation mode"),
    "both-or-neither": case(
        lambda: (x5(), np.zeros(3, F32), None), TRAIN, ValueError,
        "running_mean and running_var must either both be None or neither be None"),
    "int32-input": case(
        lambda: (x5().astype(np.int32), *stats()), TRAIN, NotImplementedError,
        "\"batch_norm\" not implemented for 'Int'"),
    "int64-input": case(
        lambda: (x5().astype(np.int64), *stats()), TRAIN, NotImplementedError,
        "\"batch_norm\" not implemented for 'Long'"),
    "bool-input": case(
        lambda: (x5() > 0, *stats()), TRAIN, NotImplementedError,
        "\"batch_norm\" not implemented for 'Bool'"),
    "uint8-input": case(
        lambda: (x5().astype(np.uint8), *stats()), TRAIN, NotImplementedError,
        "\"batch_norm\" not implemented for 'Byte'"),
    "channels-checked-before-dtype": case(
        lambda: (x5().astype(np.int32), *stats(4)), TRAIN, RuntimeError,
        "running_mean should contain 3 elements not 4"),
    "float64-input-float32-stats": case(
        lambda: (x5(dtype=np.float64), *stats()), TRAIN, RuntimeError,
        "mixed dtype (CPU): all inputs must share same datatype."),
    "float32-input-float64-stats": case(
        lambda: (x5(), *stats(dtype=np.float64)), TRAIN, RuntimeError,
        "mixed dtype (CPU): expect parameter to have scalar type of Float"),
    "float16-input-mixed-half-float": case(
        lambda: (x5(dtype=np.float16), np.zeros(3, np.float16), np.ones(3, F32)), TRAIN,
        RuntimeError, "expected scalar type Half but found Float"),
    "momentum-none": case(
        lambda: (x5(), *stats()), {**TRAIN, "momentum": None}, TypeError,
        "batch_norm(): argument 'momentum' (position 7) must be float, not NoneType"),
}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_errors_carry_torch_type_and_message(name):
    args, kwargs, error_type, message = ERROR_CASES[name]
    with pytest.raises(error_type) as raised:
        batch_norm(*args(), **kwargs)
    assert str(raised.value) == message


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_error_table_matches_real_torch(name):
    torch = pytest.importorskip("torch")
    args, kwargs, error_type, message = ERROR_CASES[name]
    torch_args = [None if a is None else torch.from_numpy(a) for a in args()]
    with pytest.raises(error_type) as raised:
        torch.nn.functional.batch_norm(*torch_args, **kwargs)
    assert str(raised.value) == message


def test_none_for_the_input_is_torchs_type_error():
    message = "argument 'input' (position 1) must be Tensor, not NoneType"
    for call, function in [(lambda: batch_norm(None, *stats()), "batch_norm"),
                           (lambda: bn3d.batch_norm_stats(None), "batch_norm"),
                           (lambda: native_batch_norm(None, None, None, None, None, True, 0.1,
                                                      1e-5), "native_batch_norm")]:
        with pytest.raises(TypeError) as raised:
            call()
        assert str(raised.value) == f"{function}(): {message}"
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError) as raised:
        torch.nn.functional.batch_norm(None, *map(torch.from_numpy, stats()))
    assert str(raised.value) == f"batch_norm(): {message}"


@pytest.mark.parametrize("missing", ["grad_out", "input"])
def test_none_for_a_tensor_of_the_backward_is_torchs_runtime_error(missing):
    x, mean, invstd = x5(), np.zeros(3), np.ones(3)
    tensors = {"grad_out": x, "input": x, missing: None}
    index = list(tensors).index(missing)
    message = (f"Expected a proper Tensor but got None (or an undefined Tensor in C++) for "
               f"argument #{index} '{missing}'")
    with pytest.raises(RuntimeError) as raised:
        batch_norm_backward(*tensors.values(), None, None, training=True, save_mean=mean,
                            save_invstd=invstd)
    assert str(raised.value) == message
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as raised:
        torch.ops.aten.native_batch_norm_backward(
            *[None if t is None else torch.from_numpy(t) for t in tensors.values()], None, None,
            None, torch.from_numpy(mean), torch.from_numpy(invstd), True, 1e-5,
            [True, True, True])
    assert str(raised.value) == message


def test_a_failing_call_changes_nothing():
    running_mean, running_var = np.full(3, 0.5, F32), np.full(3, 2.0, F32)
    out = np.full((2, 3, 4, 5, 6), 7.0, F32)
    with pytest.raises(RuntimeError):
        batch_norm(x5(), running_mean, running_var, np.ones(4, F32), training=True, out=out)
    np.testing.assert_array_equal(running_mean, np.full(3, 0.5, F32))
    np.testing.assert_array_equal(running_var, np.full(3, 2.0, F32))
    np.testing.assert_array_equal(out, np.full((2, 3, 4, 5, 6), 7.0, F32))


@pytest.mark.parametrize("training", [True, False])
def test_forward_takes_weight_and_bias_of_any_shape_with_one_value_per_channel(training):
    rng = np.random.default_rng(5)
    weight, bias = rng.uniform(0.5, 2, 3).astype(F32), rng.standard_normal(3).astype(F32)
    flat = batch_norm(x5(), *stats(), weight, bias, training=training)
    shaped = batch_norm(x5(), *stats(), weight.reshape(1, 3), bias.reshape(3, 1, 1),
                        training=training)
    np.testing.assert_array_equal(shaped, flat)
    torch = pytest.importorskip("torch")
    expected = torch.nn.functional.batch_norm(
        torch.from_numpy(x5()), *map(torch.from_numpy, stats()),
        torch.from_numpy(weight.reshape(1, 3)), torch.from_numpy(bias.reshape(3, 1, 1)),
        training=training)
    np.testing.assert_allclose(shaped, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_backward_takes_only_a_1d_weight_like_torch():
    x = x5()
    mean, invstd = np.zeros(3), np.ones(3)
    message = "TensorAccessor expected 1 dims but tensor has 2"
    with pytest.raises(RuntimeError, match=message):
        batch_norm_backward(x, x, None, None, np.ones((1, 3), F32), training=True,
                            save_mean=mean, save_invstd=invstd)
    torch = pytest.importorskip("torch")
    tx = torch.from_numpy(x)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.aten.native_batch_norm_backward(
            tx, tx, torch.ones(1, 3), None, None, torch.from_numpy(mean),
            torch.from_numpy(invstd), True, 1e-5, [True, True, True])


def test_eval_accepts_zero_eps():
    y = batch_norm(x5(), *stats(), training=False, eps=0.0)
    np.testing.assert_array_equal(y, x5())


def test_float16_input_with_float16_parameters_updates_them_in_float16():
    running_mean, running_var = stats(dtype=np.float16)
    y = batch_norm(x5(dtype=np.float16), running_mean, running_var, training=True)
    assert y.dtype == running_mean.dtype == running_var.dtype == np.float16
    assert np.all(running_mean != 0)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("rank", [0, 1])
def test_rank_below_two_is_rejected_as_torch_rejects_it(rank, training):
    x = np.ones((3,) * rank, F32)
    for running in ((None, None), stats()):
        with pytest.raises((IndexError, RuntimeError)) as ours:
            batch_norm(x, *running, training=training)
        torch = pytest.importorskip("torch")
        with pytest.raises((IndexError, RuntimeError)) as theirs:
            torch.nn.functional.batch_norm(
                torch.from_numpy(x), *[None if s is None else torch.from_numpy(s)
                                       for s in running], training=training)
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def test_out_must_match_shape_and_dtype():
    x = x5()
    with pytest.raises(ValueError, match="shape"):
        batch_norm(x, *stats(), training=True, out=np.empty((2, 3), F32))
    with pytest.raises(ValueError, match="dtype"):
        batch_norm(x, *stats(), training=True, out=np.empty(x.shape, np.float64))
    # Any memory layout is accepted (one the kernels cannot write goes through a temporary).
    strided = np.empty((2, 3, 4, 5, 12), F32)[..., ::2]
    np.testing.assert_array_equal(batch_norm(x, *stats(), training=True, out=strided),
                                  batch_norm(x, *stats(), training=True))


class ArrayInterfaceOnly:
    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array


class DLPackOnly:
    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("wrap", [ArrayInterfaceOnly, DLPackOnly, np.asmatrix],
                         ids=["__array__", "__dlpack__", "matrix"])
def test_array_objects_are_accepted(wrap):
    x = x5((4, 3), dtype=np.float64)
    expected = batch_norm(x, None, None, training=True)
    np.testing.assert_array_equal(batch_norm(wrap(x), None, None, training=True), expected)


@pytest.mark.parametrize("argument", ["input", "running_mean", "running_var", "weight", "bias"])
def test_lists_are_refused_as_torch_refuses_them(argument):
    arguments = {"input": x5(), "running_mean": np.zeros(3, F32),
                 "running_var": np.ones(3, F32), "weight": None, "bias": None}
    arguments[argument] = [0.0, 1.0, 2.0]
    position = {"input": 1, "weight": 2, "bias": 3, "running_mean": 4, "running_var": 5}
    with pytest.raises(TypeError, match=rf"^batch_norm\(\): argument '{argument}' "
                       rf"\(position {position[argument]}\) must be Tensor, not list$"):
        batch_norm(training=False, **arguments)


def test_torch_tensors_are_accepted_and_results_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6, 7)).astype(F32)
    weight, bias = rng.uniform(0.5, 2, 4).astype(F32), rng.standard_normal(4).astype(F32)
    ours_stats, theirs_stats = stats(4), tuple(torch.from_numpy(s.copy()) for s in stats(4))
    ours = batch_norm(torch.from_numpy(x), *ours_stats, torch.from_numpy(weight),
                      torch.from_numpy(bias), training=True, momentum=0.2)
    theirs = torch.nn.functional.batch_norm(torch.from_numpy(x), *theirs_stats,
                                            torch.from_numpy(weight), torch.from_numpy(bias),
                                            training=True, momentum=0.2)
    assert max_relative_error(ours, theirs.numpy()) <= 2e-6
    for a, b in zip(ours_stats, theirs_stats):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6)


def test_running_stats_given_as_torch_tensors_are_updated_in_place():
    torch = pytest.importorskip("torch")
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    batch_norm(x5(), running_mean, running_var, training=True)
    assert torch.all(running_mean != 0) and torch.all(running_var != 1)


def test_backward_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5, 6))
    g = rng.standard_normal(x.shape)
    weight = rng.uniform(0.5, 2, 3)
    for training in (True, False):
        mean, var = rng.standard_normal(3), rng.uniform(1, 2, 3)
        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(weight, requires_grad=True)
        tb = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        y = torch.nn.functional.batch_norm(tx, torch.tensor(mean), torch.tensor(var), tw, tb,
                                           training=training)
        y.backward(torch.tensor(g))
        ours = batch_norm_backward(g, x, mean, var, weight, training=training)
        for a, b in zip(ours, (tx.grad, tw.grad, tb.grad)):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-12)


def test_threads_follow_threadpoolctl_limits():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not bn3d.openmp_enabled():
        pytest.skip("built without OpenMP")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert bn3d.get_num_threads() == 1


def test_set_num_threads_validates_and_overrides():
    try:
        bn3d.set_num_threads(3)
        assert bn3d.get_num_threads() == (3 if bn3d.openmp_enabled() else 1)
    finally:
        bn3d.set_num_threads(None)
    with pytest.raises(ValueError):
        bn3d.set_num_threads(0)
    with pytest.raises(TypeError):
        bn3d.set_num_threads(1.5)


def test_native_form_returns_the_statistics_that_normalised():
    x = x5(dtype=np.float64)
    mean, var = np.linspace(-1, 1, 3), np.linspace(1, 2, 3)
    y, save_mean, save_invstd = native_batch_norm(x, None, None, mean, var, False, 0.1, 1e-5)
    np.testing.assert_array_equal(save_mean, mean)
    np.testing.assert_allclose(save_invstd, 1 / np.sqrt(var + 1e-5), rtol=1e-15)
    assert max_relative_error(y, reference_batch_norm(x, mean=mean, var=var)) <= 1e-12


def test_momentum_type_is_checked_in_every_mode():
    with pytest.raises(TypeError, match="must be float, not str"):
        batch_norm(x5(), *stats(), training=False, momentum="fast")
    with pytest.raises(TypeError, match="must be float, not NoneType"):
        batch_norm(x5(), None, None, training=True, momentum=None)


def test_torch_tensor_that_requires_grad_is_read_by_value():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(x5()).requires_grad_(True)
    y = batch_norm(x, None, None, training=True)
    np.testing.assert_array_equal(y, batch_norm(x5(), None, None, training=True))


def test_empty_batch_backward_gives_zero_parameter_gradients():
    x = np.zeros((0, 3, 2, 2, 2), F32)
    grad_input, grad_weight, grad_bias = batch_norm_backward(x, x, None, None, np.ones(3, F32),
                                                             training=True)
    assert grad_input.shape == x.shape
    np.testing.assert_array_equal(grad_weight, np.zeros(3, F32))
    np.testing.assert_array_equal(grad_bias, np.zeros(3, F32))


def test_eval_backward_with_saved_stats_needs_no_running_stats():
    x, g = x5(dtype=np.float64), x5(dtype=np.float64) * 0.5
    mean, var = np.linspace(-1, 1, 3), np.linspace(1, 2, 3)
    _, save_mean, save_invstd = native_batch_norm(x, None, None, mean, var, False, 0.1, 1e-5)
    expected = batch_norm_backward(g, x, mean, var)
    got = batch_norm_backward(g, x, None, None, save_mean=save_mean, save_invstd=save_invstd)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
