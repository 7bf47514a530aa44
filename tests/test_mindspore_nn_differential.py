"""bn3d.mindspore_nn.BatchNorm3d against the real mindspore.nn.BatchNorm3d (MindSpore 2.10).

Skipped unless MindSpore imports; it needs its own environment (numpy<2). Both cells are
built from the same arguments (numpy arrays become Tensors for MindSpore), driven through
the same steps, and compared: outputs, parameters, gradients, reprs, errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import max_relative_error

import bn3d.mindspore_nn as msnn

ms = pytest.importorskip("mindspore")
msinit = pytest.importorskip("mindspore.common.initializer")

F16, F32, F64 = np.float16, np.float32, np.float64
# MindSpore appends a C++ call stack to its primitives' messages, after this marker.
STACK_MARKER = "\n\n----------------------------------------------------\n"
# |bn3d - MindSpore| / max(1, |MindSpore|): both compute in float32 (float16 data too).
OUTPUT_TOLERANCE = {np.dtype(F32): 5e-6, np.dtype(F16): 2e-3}
STATS_TOLERANCE = {np.dtype(F32): 2e-6, np.dtype(F16): 2e-3}
GRADIENT_TOLERANCE = 2e-5


def real_argument(value):
    """An argument of bn3d's cell as real MindSpore wants it."""
    if isinstance(value, np.ndarray):
        return ms.Tensor(np.array(value, order="C"))  # ascontiguousarray makes 0-d arrays 1-d
    if isinstance(value, str) and value in ("float16", "float32", "float64", "int32"):
        return getattr(ms, value)
    if isinstance(value, msnn.Initializer):
        name = type(value).__name__
        return getattr(msinit, name)(**vars(value))
    return value


def outcome(call, *args, **kwargs):
    """('ok', result) or (exception type name, the message before MindSpore's call stack)."""
    try:
        return "ok", call(*args, **kwargs)
    except Exception as error:  # compared by the caller
        return type(error).__name__, str(error).split(STACK_MARKER)[0]


def build(kwargs):
    """(bn3d's cell, MindSpore's cell) or, if building fails, both outcomes."""
    ours = outcome(msnn.BatchNorm3d, **kwargs)
    real = outcome(ms.nn.BatchNorm3d, **{k: real_argument(v) for k, v in kwargs.items()})
    return ours, real


def parameters(cell):
    """[(name, requires_grad, array copy)] in get_parameters() order."""
    return [(p.name, p.requires_grad, np.array(p.asnumpy())) for p in cell.get_parameters()]


def assert_same_parameters(ours, real, tolerance=0.0):
    ours_parameters, real_parameters = parameters(ours), parameters(real)
    assert [p[:2] for p in ours_parameters] == [p[:2] for p in real_parameters]
    for (name, _, a), (_, _, b) in zip(ours_parameters, real_parameters):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        if tolerance:
            assert max_relative_error(np.nan_to_num(a), np.nan_to_num(b)) <= tolerance, name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


def call_both(ours, real, x):
    """Call both cells on x; return both outcomes (numpy outputs on success)."""
    ours_result = outcome(ours, x)
    real_result = outcome(lambda: real(ms.Tensor(x)).asnumpy())
    return ours_result, real_result


# -- construction ---------------------------------------------------------------------------


CONSTRUCTIONS = [
    {}, {"num_features": 1}, {"momentum": 0.1}, {"momentum": 0.3}, {"momentum": 1},
    {"momentum": 0}, {"momentum": True}, {"eps": 1}, {"eps": 1e-3}, {"eps": 0.0},
    {"affine": False}, {"use_batch_statistics": True}, {"use_batch_statistics": False},
    {"dtype": "float16"}, {"dtype": "float64"}, {"dtype": "int32"},
    {"gamma_init": "One", "beta_init": "ZERO", "moving_mean_init": "ones",
     "moving_var_init": "Zeros"},
    {"gamma_init": 2.5, "beta_init": -1, "moving_mean_init": True,
     "moving_var_init": np.float64(0.5)},
    {"gamma_init": float("nan"), "beta_init": float("inf")},
    {"gamma_init": 2.7, "dtype": "int32"},
    {"gamma_init": np.array([0.5, 2.0, -1.0], F32), "beta_init": np.array([1, 2, 3], np.int32),
     "moving_mean_init": np.array([1.0, 2.0, 3.0], F64),
     "moving_var_init": np.array([1.0, 2.0, 3.0], F16)},
    {"gamma_init": msnn.Constant(4), "beta_init": msnn.One(), "moving_var_init": msnn.Zero()},
    # errors
    {"num_features": 0}, {"num_features": -1}, {"num_features": 3.0}, {"num_features": True},
    {"num_features": np.int64(3)}, {"num_features": None},
    {"momentum": 1.5}, {"momentum": -0.1}, {"momentum": "a"}, {"momentum": None},
    {"use_batch_statistics": 1}, {"use_batch_statistics": "x"},
    {"use_batch_statistics": np.bool_(True)}, {"affine": 0}, {"affine": None},
    {"num_features": 0, "momentum": 2}, {"momentum": 2, "use_batch_statistics": 1},
    {"use_batch_statistics": 1, "moving_mean_init": "bogus"},
    {"gamma_init": "bogus", "moving_var_init": "bogus2"},
    {"affine": 0, "gamma_init": "bogus"}, {"affine": 0, "beta_init": "bogus"},
    {"gamma_init": None}, {"gamma_init": 1 + 2j},
    {"beta_init": np.ones(2)}, {"beta_init": np.ones((3, 1))}, {"beta_init": np.array(2.0)},
    {"gamma_init": msnn.Normal(sigma=-1.0)}, {"gamma_init": msnn.TruncatedNormal(sigma=-1.0)},
]


@pytest.mark.parametrize("kwargs", CONSTRUCTIONS, ids=repr)
def test_construction_matches(kwargs):
    kwargs = {"num_features": 3, **kwargs}
    (ours_status, ours), (real_status, real) = build(kwargs)
    assert ours_status == real_status
    if ours_status != "ok":
        assert ours == real
        return
    assert repr(ours) == repr(real)
    assert_same_parameters(ours, real)
    assert [p.name for p in ours.trainable_params()] == [p.name for p in real.trainable_params()]
    assert list(ours.parameters_dict()) == list(real.parameters_dict())
    assert ours.training == real.training is False
    assert ours.set_train().training == real.set_train().training is True


@pytest.mark.parametrize("name", sorted(msinit._INITIALIZER_ALIAS) + [
    "One", "ZEROS", "TruncatedNormal", "XAVIER_UNIFORM", "Xavier_Uniform", "truncated_normal",
    "constant", "", "bogus",
])
def test_initialiser_names_match(name):
    (ours_status, ours), (real_status, real) = build({"num_features": 5, "gamma_init": name})
    assert ours_status == real_status
    if ours_status != "ok":
        assert ours == real
        return
    ours_gamma, real_gamma = ours.gamma.asnumpy(), real.bn2d.gamma.asnumpy()
    assert ours_gamma.dtype == real_gamma.dtype and ours_gamma.shape == real_gamma.shape
    if name.lower() in ("normal", "uniform", "truncatednormal"):
        assert np.abs(ours_gamma).max() < 0.1 and np.abs(real_gamma).max() < 0.1
    else:
        np.testing.assert_array_equal(ours_gamma, real_gamma)


def ks_statistic(first, second):
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the samples' CDFs."""
    points = np.sort(np.concatenate([first, second]))
    cdf_first = np.searchsorted(np.sort(first), points, side="right") / first.size
    cdf_second = np.searchsorted(np.sort(second), points, side="right") / second.size
    return np.abs(cdf_first - cdf_second).max()


@pytest.mark.parametrize("init, support", [
    ("normal", None), ("uniform", (-0.07, 0.07)), ("truncatedNormal", (-2.0, 2.0)),
    (msnn.Normal(sigma=0.5, mean=2.0), None), (msnn.Uniform(3.0), (-3.0, 3.0)),
    (msnn.TruncatedNormal(sigma=2.0, mean=5.0, a=-1.0, b=1.0), (-1.0, 1.0)),
    (msnn.TruncatedNormal(sigma=1.0), (-2.0, 2.0)),
], ids=repr)
def test_random_initialisers_follow_the_same_distributions(init, support):
    (_, ours), (_, real) = build({"num_features": 20000, "gamma_init": init})
    ours_gamma, real_gamma = ours.gamma.asnumpy(), real.bn2d.gamma.asnumpy()
    assert ours_gamma.dtype == real_gamma.dtype
    # Two samples of 20000 from one distribution differ by more than 0.03 with
    # probability below 1e-7.
    assert ks_statistic(ours_gamma, real_gamma) < 0.03
    if support is not None:
        low, high = np.float32(support[0]), np.float32(support[1])
        assert low <= ours_gamma.min() and ours_gamma.max() <= high
        assert low <= real_gamma.min() and real_gamma.max() <= high


@pytest.mark.parametrize("seed", [1.5, np.int64(3), None, -1, True, 2**40, 0, 12345])
def test_set_seed_validation_matches(seed):
    assert outcome(msnn.set_seed, seed)[0] == outcome(ms.set_seed, seed)[0]
    assert outcome(msnn.set_seed, seed) == outcome(ms.set_seed, seed)


# -- computation ----------------------------------------------------------------------------


def test_seed_example_matches():
    x = np.array([[[[[0.1, 0.2], [0.3, 0.4]]], [[[0.9, 1.0], [1.1, 1.2]]]]], F32)
    (_, ours), (_, real) = build({"num_features": 2, "momentum": 0.9})
    ours.set_train()
    real.set_train()
    (_, ours_y), (_, real_y) = call_both(ours, real, x)
    assert np.abs(ours_y.astype(F64) - real_y).max() <= 2e-6
    assert_same_parameters(ours, real, tolerance=1e-7)


def random_configuration(rng):
    """Constructor arguments and the dtype of the data, drawn at random."""
    channels = int(rng.integers(1, 6))
    parameter_dtype = F16 if rng.random() < 0.2 else F32
    kwargs = {
        "num_features": channels,
        "momentum": float(rng.choice([0.0, 0.1, 0.5, 0.9, 0.99, 1.0, rng.random()])),
        "eps": float(rng.choice([1e-5, 1e-3, 0.1, 1.0, 10 ** rng.uniform(-6, 0)])),
        "affine": bool(rng.random() < 0.7),
        "use_batch_statistics": [None, True, False][int(rng.integers(3))],
        "gamma_init": rng.normal(1.0, 1.0, channels).astype(parameter_dtype),
        "beta_init": rng.normal(0.0, 1.0, channels).astype(parameter_dtype),
        "moving_mean_init": rng.normal(0.0, 2.0, channels).astype(parameter_dtype),
        "moving_var_init": rng.uniform(0.2, 3.0, channels).astype(parameter_dtype),
    }
    data_dtype = F16 if rng.random() < 0.25 else F32
    return kwargs, data_dtype


def random_input(rng, channels, dtype):
    shape = (int(rng.integers(1, 5)), channels) + tuple(int(n) for n in rng.integers(1, 5, 3))
    loc, scale = rng.normal(0.0, 3.0), 10 ** rng.uniform(-0.5, 0.5)
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


@pytest.mark.parametrize("seed", range(30))
def test_random_multi_step_sequences_match(seed):
    rng = np.random.default_rng(seed)
    kwargs, data_dtype = random_configuration(rng)
    (_, ours), (_, real) = build(kwargs)
    parameter_dtype = np.dtype(kwargs["gamma_init"].dtype)
    for step in range(int(rng.integers(2, 6))):
        training = bool(rng.random() < 0.7)
        ours.set_train(training)
        real.set_train(training)
        x = random_input(rng, kwargs["num_features"], data_dtype)
        (ours_status, ours_y), (real_status, real_y) = call_both(ours, real, x)
        assert ours_status == real_status == "ok", (ours_y, real_y)
        assert ours_y.dtype == real_y.dtype and ours_y.shape == real_y.shape
        tolerance = OUTPUT_TOLERANCE[np.dtype(data_dtype)]
        assert max_relative_error(ours_y, real_y) <= tolerance, f"step {step}"
        stats_tolerance = max(STATS_TOLERANCE[np.dtype(data_dtype)],
                              STATS_TOLERANCE[parameter_dtype])
        assert_same_parameters(ours, real, tolerance=stats_tolerance * (step + 1))


@pytest.mark.parametrize("shape", [(1, 3, 1, 1, 1), (2, 3, 1, 1, 1), (1, 3, 1, 1, 2)])
def test_one_or_two_values_per_channel_match(shape):
    (_, ours), (_, real) = build({"num_features": 3, "beta_init": 0.5})
    ours.set_train()
    real.set_train()
    x = np.arange(np.prod(shape), dtype=F32).reshape(shape)
    (_, ours_y), (_, real_y) = call_both(ours, real, x)
    assert max_relative_error(ours_y, real_y) <= 5e-6
    assert_same_parameters(ours, real, tolerance=1e-6)


# -- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_batch_statistics, training", [
    (None, True), (None, False), (True, False), (False, True), (True, True),
])
@pytest.mark.parametrize("seed", range(3))
def test_gradients_match_mindspore_grad(use_batch_statistics, training, seed):
    rng = np.random.default_rng(100 + seed)
    kwargs, _ = random_configuration(rng)
    channels = kwargs["num_features"]
    kwargs.update(use_batch_statistics=use_batch_statistics, affine=True,
                  gamma_init=kwargs["gamma_init"].astype(F32),
                  beta_init=kwargs["beta_init"].astype(F32),
                  moving_mean_init=kwargs["moving_mean_init"].astype(F32),
                  moving_var_init=kwargs["moving_var_init"].astype(F32))
    (_, ours), (_, real) = build(kwargs)
    ours.set_train(training)
    real.set_train(training)
    x = random_input(rng, channels, F32)
    if x.size == channels:  # one value per channel: gradients are all but zero noise
        x = np.concatenate([x, x + 1])
    g = rng.standard_normal(x.shape).astype(F32)

    def loss(data):
        return (real(data) * ms.Tensor(g)).sum()

    real_grad_x, (real_grad_gamma, real_grad_beta) = ms.grad(
        loss, grad_position=0, weights=[real.bn2d.gamma, real.bn2d.beta])(ms.Tensor(x))
    ours(x)
    grads = ours.backward(g)
    for name, actual, expected in zip(("x", "gamma", "beta"), grads,
                                      (real_grad_x, real_grad_gamma, real_grad_beta)):
        expected = expected.asnumpy()
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(actual.astype(F64) - expected).max() <= GRADIENT_TOLERANCE * scale, name
    assert_same_parameters(ours, real, tolerance=2e-6)


# -- errors at call time --------------------------------------------------------------------


def _x(shape=(2, 3, 2, 2, 2), dtype=F32):
    return (np.random.default_rng(7).standard_normal(shape) + 0.5).astype(dtype)


CALLS = {
    "rank-4": ({}, {}, _x((2, 3, 2, 2))),
    "rank-6": ({}, {}, _x((2, 3, 2, 2, 2, 1))),
    "channels": ({}, {}, _x((2, 4, 2, 2, 2))),
    "no-channels": ({}, {}, _x((2, 0, 2, 2, 2))),
    "float64": ({}, {}, _x(dtype=F64)),
    "int32": ({}, {}, _x(dtype=np.int32)),
    "bool": ({}, {}, _x(dtype=bool)),
    "uint8": ({}, {}, _x(dtype=np.uint8)),
    "float16": ({}, {}, _x(dtype=F16)),
    **{f"eps-{eps!r}": ({"eps": eps}, {}, _x()) for eps in [
        0.0, -1.0, 1.5, float("nan"), float("inf"), 1e-300, 1.0000001, 1.00000001,
        123456789.0, -0.0, 1.0, 1e-45, -1e-7, 1.23456789, 1, 0, True, None, "x", [1, 2.0],
        (1.0,), [], [[1.0]], np.int64(1), np.float32(1e-3)]},
    "momentum-nan": ({"momentum": float("nan")}, {}, _x()),
    "momentum-true": ({"momentum": True}, {}, _x()),
    "float64-parameters": ({"dtype": "float64"}, {}, _x()),
    "int32-parameters": ({"dtype": "int32"}, {}, _x()),
    "float16-parameters": ({"dtype": "float16"}, {}, _x()),
    "float16-parameters-float16-data": ({"dtype": "float16"}, {}, _x(dtype=F16)),
    **{f"{name}-{dtype.__name__}": ({f"{name}_init": np.ones(3, dtype)}, {}, _x())
       for name in ("gamma", "beta", "moving_mean", "moving_var")
       for dtype in (F64, np.int32, F16)},
    "gamma-beta-float64": ({"gamma_init": np.ones(3, F64), "beta_init": np.ones(3, F64)}, {},
                           _x()),
    "statistics-float16": ({"moving_mean_init": np.ones(3, F16),
                            "moving_var_init": np.ones(3, F16)}, {}, _x()),
    "gamma-int64-beta-int32": ({"gamma_init": np.ones(3, np.int64),
                                "beta_init": np.ones(3, np.int32)}, {}, _x()),
    "gamma-uint8-beta-int8": ({"gamma_init": np.ones(3, np.uint8),
                               "beta_init": np.ones(3, np.int8)}, {}, _x()),
    "gamma-float64-mean-float16": ({"gamma_init": np.ones(3, F64),
                                    "moving_mean_init": np.ones(3, F16)}, {}, _x()),
    "gamma-float16-eps-0": ({"gamma_init": np.ones(3, F16), "eps": 0.0}, {}, _x()),
    "rank-before-eps": ({"eps": 0.0}, {}, _x((2, 3, 2, 2))),
    "eps-type-before-channels": ({"eps": 1}, {}, _x((2, 4, 2, 2, 2), F64)),
    "eps-before-channels": ({"eps": 0.0}, {}, _x((2, 4, 2, 2, 2))),
    "channels-before-dtype": ({}, {}, _x((2, 4, 2, 2, 2), F64)),
    "channels-before-parameter-dtype": ({"dtype": "float64"}, {}, _x((2, 4, 2, 2, 2))),
    "input-before-parameter-dtype": ({"dtype": "float64"}, {}, _x(dtype=F64)),
    "gamma-2": ({}, {"gamma": np.ones(2, F32)}, _x()),
    "gamma-4": ({}, {"gamma": np.ones(4, F32)}, _x()),
    "gamma-4-channels-4": ({}, {"gamma": np.ones(4, F32)}, _x((2, 4, 2, 2, 2))),
    "beta-2": ({}, {"beta": np.ones(2, F32)}, _x()),
    "gamma-0d": ({}, {"gamma": 2.0}, _x()),
    "beta-1x3": ({}, {"beta": np.ones((1, 3), F32)}, _x()),
    "mean-0d": ({}, {"moving_mean": 1.0}, _x()),
    "variance-1x3": ({}, {"moving_variance": np.ones((1, 3), F32)}, _x()),
    "gamma-0d-beta-0d": ({}, {"gamma": 2.0, "beta": 1.0}, _x()),
    "variance-0d-beta-0d": ({}, {"moving_variance": 2.0, "beta": 1.0}, _x()),
    "gamma-0d-eps-0": ({"eps": 0.0}, {"gamma": 2.0}, _x()),
    "gamma-2-float64-input": ({}, {"gamma": np.ones(2, F32)}, _x(dtype=F64)),
    "all-4-channels-4": ({}, {name: np.ones(4, F32) for name in
                              ("gamma", "beta", "moving_mean", "moving_variance")},
                         _x((2, 4, 2, 2, 2))),
    "gamma-beta-4-channels-4": ({}, {"gamma": np.ones(4, F32), "beta": np.ones(4, F32)},
                                _x((2, 4, 2, 2, 2))),
}
# MindSpore's training kernel reads and writes out of bounds for these; bn3d raises the error
# MindSpore raises in inference (checked in test_mindspore_nn.py).
UNDEFINED_IN_TRAINING = {"gamma-beta-4-channels-4"}


CONVERSION_MESSAGE = "Data type conversion is not supported for a 'Parameter'"
SAME_TYPE_MESSAGE = "For primitive[BatchNorm], the input type must be same."


def _set_data(cell, name, value):
    parameter = getattr(cell.bn2d, name)
    parameter.set_data(real_argument(value) if isinstance(cell, ms.nn.Cell) else value)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_calls_match_including_errors(name, training):
    if training and name in UNDEFINED_IN_TRAINING:
        pytest.skip("undefined in MindSpore's training kernel")
    kwargs, set_data, x = CALLS[name]
    (_, ours), (_, real) = build({"num_features": 3, **kwargs})
    for cell in (ours, real):
        cell.set_train(training)
        for parameter, value in set_data.items():
            _set_data(cell, parameter, value)
    (ours_status, ours_y), (real_status, real_y) = call_both(ours, real, x)
    assert ours_status == real_status, (ours_y, real_y)
    if ours_status == "ok":
        assert ours_y.dtype == real_y.dtype
        assert max_relative_error(ours_y, real_y) <= OUTPUT_TOLERANCE[ours_y.dtype]
        assert_same_parameters(ours, real, tolerance=2e-3)
    elif training and ours_y.startswith(CONVERSION_MESSAGE):
        # MindSpore's training call gives this message for a (scale, bias) or (mean,
        # variance) pair of two dtypes, unless the first BatchNorm call that succeeded in
        # the process was an inference one: then the inference call's message. bn3d
        # gives the first (that of a process that trains first).
        assert real_y.startswith((CONVERSION_MESSAGE, SAME_TYPE_MESSAGE)), real_y
    else:
        assert ours_y == real_y
    if ours_status != "ok":
        assert_same_parameters(ours, real)  # a failed call changes nothing in either


@pytest.mark.parametrize("x", [[[[[[1.0]]]]], 1.0, np.float32(1.0), None])
def test_non_tensor_inputs_match(x):
    ours, real = msnn.BatchNorm3d(1), ms.nn.BatchNorm3d(1)
    assert outcome(ours, x) == outcome(real, x)


# -- Parameter ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 5.0], F16), np.array([1, 2, 6], np.int32),
    np.array([1.0, 2.0], F32), np.ones((1, 3), F32), np.array(2.0, F32), 2.5, 3, True,
    [1.0, 2.0, 3.0], None,
], ids=repr)
def test_set_data_matches(value):
    (_, ours), (_, real) = build({"num_features": 3})
    ours_result = outcome(ours.gamma.set_data, value)
    real_result = outcome(real.bn2d.gamma.set_data, real_argument(value))
    assert ours_result[0] == real_result[0]
    if ours_result[0] == "ok":
        assert repr(ours_result[1]) == repr(real_result[1])
        assert_same_parameters(ours, real)
    else:
        assert ours_result[1] == real_result[1]


def test_set_data_of_a_float_into_an_integer_parameter_matches():
    (_, ours), (_, real) = build({"num_features": 3, "dtype": "int32"})
    assert outcome(ours.gamma.set_data, 2.5) == outcome(real.bn2d.gamma.set_data, 2.5)


def test_requires_grad_and_trainable_params_match():
    (_, ours), (_, real) = build({"num_features": 3})
    ours.gamma.requires_grad = False
    real.bn2d.gamma.requires_grad = False
    assert repr(ours) == repr(real)
    assert [p.name for p in ours.trainable_params()] == [p.name for p in real.trainable_params()]
    assert outcome(setattr, ours.beta, "requires_grad", 1) == outcome(
        setattr, real.bn2d.beta, "requires_grad", 1)


def test_assigned_hyper_parameters_behave_the_same():
    # The primitives keep the eps and momentum the cell was built with: assigning
    # them changes the repr only, in both.
    x = _x()
    (_, ours), (_, real) = build({"num_features": 3, "eps": 0.0})
    for cell in (ours, real):
        cell.bn2d.eps = 1e-5
        cell.bn2d.momentum = 0.5
    assert repr(ours) == repr(real)
    (ours_status, ours_error), (real_status, real_error) = call_both(ours, real, x)
    assert ours_status == real_status == "ValueError"
    assert ours_error == real_error
    (_, ours), (_, real) = build({"num_features": 3})
    for cell in (ours, real):
        cell.bn2d.momentum = 0.5
        cell.set_train()
    call_both(ours, real, x)
    assert_same_parameters(ours, real, tolerance=2e-6)
    # use_batch_statistics is read at every call.
    (_, ours), (_, real) = build({"num_features": 3})
    for cell in (ours, real):
        cell.bn2d.use_batch_statistics = True
    call_both(ours, real, x)
    assert_same_parameters(ours, real, tolerance=2e-6)


def test_set_train_with_any_value_matches():
    (_, ours), (_, real) = build({"num_features": 3})
    x = _x()
    for mode in (1, "x", None, 0, True):
        assert ours.set_train(mode).training == real.set_train(mode).training
        call_both(ours, real, x)
        assert_same_parameters(ours, real, tolerance=2e-6)
