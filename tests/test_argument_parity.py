"""bn3d.functional accepts what torch.nn.functional.batch_norm accepts and refuses what it
refuses, with its error types: odd argument types, dtypes, byte orders and empty batches.

Each case runs on bn3d alone; where torch is installed, the same arguments (as tensors)
run on torch too and the outcomes are compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from bn3d import batch_norm

F32 = np.float32


def x5(shape=(2, 3, 2, 2, 2), dtype=F32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def stats(channels=3, dtype=F32):
    return np.zeros(channels, dtype), np.ones(channels, dtype)


def torch_or_skip():
    return pytest.importorskip("torch")


def as_torch(value, torch):
    return torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else value


# torch computes these; so must bn3d. Each: (args, kwargs) of batch_norm.
ACCEPTED = {
    "eps-nan-training": ((x5(), *stats()), {"training": True, "eps": float("nan")}),
    "eps-nan-eval": ((x5(), *stats()), {"training": False, "eps": float("nan")}),
    "eps-inf": ((x5(), *stats()), {"training": True, "eps": float("inf")}),
    "eps-int": ((x5(), *stats()), {"training": True, "eps": 1}),
    "eps-numpy-float32": ((x5(), *stats()), {"training": True, "eps": np.float32(1e-3)}),
    "momentum-true": ((x5(), *stats()), {"training": True, "momentum": True}),
    "momentum-false": ((x5(), *stats()), {"training": True, "momentum": False}),
    "momentum-numpy-int": ((x5(), *stats()), {"training": True, "momentum": np.int64(1)}),
    "momentum-numpy-bool": ((x5(), *stats()), {"training": True, "momentum": np.bool_(True)}),
    "momentum-negative": ((x5(), *stats()), {"training": True, "momentum": -1.0}),
    "empty-batch-wrong-channels": ((x5((0, 3, 2, 2, 2)), *stats(4)), {"training": True}),
    "empty-batch-wrong-dtype": ((x5((0, 3, 2, 2, 2)), *stats(dtype=np.float64)),
                                {"training": True}),
    "empty-batch-eval-without-stats": ((x5((0, 3, 2, 2, 2)), None, None), {"training": False}),
    "empty-batch-int": ((np.zeros((0, 3), np.int32), None, None), {"training": True}),
    "rank-2": ((x5((4, 3)), *stats()), {"training": True}),
    "weight-of-any-shape": ((x5(), *stats(), np.ones((3, 1), F32)), {"training": True}),
}


def run(args, kwargs):
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    output = batch_norm(*args, **kwargs)
    return output, args


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_what_torch_computes_bn3d_computes(name):
    args, kwargs = ACCEPTED[name]
    output, after = run(args, kwargs)
    assert output.shape == args[0].shape
    torch = pytest.importorskip("torch")
    torch_args = [as_torch(a, torch) for a in args]
    expected = torch.nn.functional.batch_norm(*torch_args, **kwargs).numpy()
    assert output.dtype == expected.dtype
    np.testing.assert_allclose(output, expected, rtol=2e-5, atol=2e-5)
    for ours, theirs in zip(after[1:3], torch_args[1:3]):
        if ours is not None:
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("zero_d", ["numpy", "torch"])
def test_momentum_and_eps_may_be_zero_dimensional_arrays(zero_d):
    make = np.array if zero_d == "numpy" else torch_or_skip().tensor
    running, expected_running = stats(), stats()
    y = batch_norm(x5(), *running, training=True, momentum=make(0.5), eps=make(1e-3))
    expected = batch_norm(x5(), *expected_running, training=True, momentum=0.5, eps=1e-3)
    np.testing.assert_array_equal(y, expected)
    for ours, theirs in zip(running, expected_running):
        np.testing.assert_array_equal(ours, theirs)


# torch refuses these; so must bn3d, with torch's error type and message.
REFUSED = {
    "training-int": ((x5(), *stats()), {"training": 1}, TypeError,
                     "batch_norm(): argument 'training' (position 6) must be bool, not int"),
    "training-str": ((x5(), *stats()), {"training": "yes"}, TypeError,
                     "batch_norm(): argument 'training' (position 6) must be bool, not str"),
    "training-none": ((x5(), *stats()), {"training": None}, TypeError,
                      "batch_norm(): argument 'training' (position 6) must be bool, not NoneType"),
    "training-numpy-bool": ((x5(), *stats()), {"training": np.bool_(True)}, TypeError,
                            "batch_norm(): argument 'training' (position 6) must be bool, "
                            "not numpy.bool" if np.__version__ >= "2" else
                            "batch_norm(): argument 'training' (position 6) must be bool, "
                            "not numpy.bool_"),
    "eps-checked-before-training-type": ((x5(), *stats()), {"training": 1, "eps": 0.0},
                                         ValueError, "batch_norm eps must be positive during "
                                         "training, but got 0.0"),
    "momentum-list": ((x5(), *stats()), {"training": True, "momentum": [0.1]}, TypeError,
                      "batch_norm(): argument 'momentum' (position 7) must be float, not list"),
    "momentum-1d-array": ((x5(), *stats()), {"training": True, "momentum": np.array([0.1])},
                          TypeError, "batch_norm(): argument 'momentum' (position 7) must be "
                          "float, not numpy.ndarray"),
    "momentum-complex": ((x5(), *stats()), {"training": True, "momentum": 1j}, TypeError,
                         "batch_norm(): argument 'momentum' (position 7) must be float, "
                         "not complex"),
    "eps-string": ((x5(), *stats()), {"training": True, "eps": "a"}, TypeError,
                   "'<=' not supported between instances of 'str' and 'float'"),
    "eps-none-eval": ((x5(), *stats()), {"training": False, "eps": None}, TypeError,
                      "'<' not supported between instances of 'NoneType' and 'float'"),
    "empty-batch-eps-zero": ((x5((0, 3, 2, 2, 2)), *stats()), {"training": True, "eps": 0.0},
                             ValueError, "batch_norm eps must be positive during training, "
                             "but got 0.0"),
    "rank-0-training": ((np.ones((), F32), None, None), {"training": True},
                        IndexError, "tuple index out of range"),
    "rank-1-stats": ((np.ones(3, F32), *stats()), {"training": True}, RuntimeError,
                     "running_mean should contain 0 elements not 3"),
    "rank-1-no-stats": ((np.ones(3, F32), None, None), {"training": True}, IndexError,
                        "Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
    "rank-1-one-value": ((np.ones(1, F32), None, None), {"training": True}, ValueError,
                         "Expected more than 1 value per channel when training, got input "
                         "size torch.Size([1])"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_torch_refuses_bn3d_refuses_with_its_error(name):
    args, kwargs, error_type, message = REFUSED[name]
    running = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises(error_type) as raised:
        batch_norm(*running, **kwargs)
    assert str(raised.value) == message
    for before, after in zip(args, running):
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)
    torch = pytest.importorskip("torch")
    with pytest.raises(error_type) as raised:
        torch.nn.functional.batch_norm(*[as_torch(a, torch) for a in args], **kwargs)
    if "numpy" not in message:  # torch names numpy values the same, tensors otherwise
        assert str(raised.value) == message


def test_big_endian_data_is_computed_in_native_order():
    x = x5()
    running, native_running = (s.astype(">f4") for s in stats()), stats()
    running = tuple(running)
    y = batch_norm(x.astype(">f4"), *running, np.ones(3, ">f4"), training=True)
    expected = batch_norm(x, *native_running, np.ones(3, F32), training=True)
    assert y.dtype == np.dtype("=f4")
    np.testing.assert_array_equal(y, expected)
    for ours, theirs in zip(running, native_running):
        assert ours.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(ours, theirs)


def test_bfloat16_tensor_is_computed_in_float32_and_returned_as_bfloat16():
    torch = torch_or_skip()
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = torch.from_numpy(x5((2, 3, 4, 4, 4))).to(torch.bfloat16)
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    y = batch_norm(x, running_mean, running_var, training=True)
    assert y.dtype == ml_dtypes.bfloat16
    expected_stats = torch.zeros(3), torch.ones(3)
    expected = torch.nn.functional.batch_norm(x, *expected_stats, training=True)
    np.testing.assert_allclose(y.astype(F32), expected.float().numpy(), rtol=0, atol=2**-7)
    for ours, theirs in zip((running_mean, running_var), expected_stats):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_bfloat16_array_updates_bfloat16_running_stats():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bfloat16 = ml_dtypes.bfloat16
    x = x5((2, 3, 4, 4, 4))
    running = tuple(s.astype(bfloat16) for s in stats())
    y = batch_norm(x.astype(bfloat16), *running, training=True)
    reference_running = stats()
    reference = batch_norm(x.astype(bfloat16).astype(F32), *reference_running, training=True)
    np.testing.assert_array_equal(y, reference.astype(bfloat16))
    for ours, theirs in zip(running, reference_running):
        assert ours.dtype == bfloat16
        np.testing.assert_array_equal(ours, theirs.astype(bfloat16))


def test_masked_arrays_are_refused_rather_than_normalised_with_their_masked_values():
    x = np.ma.masked_array(x5(), mask=x5() > 1)
    with pytest.raises(TypeError, match="masked arrays"):
        batch_norm(x, None, None, training=True)
