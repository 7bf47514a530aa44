"""bn3d.mindspore_nn.BatchNorm3d: mindspore.nn.BatchNorm3d's interface, state, modes and errors.

Every expected message here was read off MindSpore 2.10 (CPU); the differential tests
(test_mindspore_nn_differential.py) check them against the real thing when it is installed.
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

from bn3d.mindspore_nn import (
    BatchNorm3d,
    Constant,
    Normal,
    One,
    Parameter,
    TruncatedNormal,
    Uniform,
    Zero,
    get_seed,
    set_seed,
    torch_momentum,
)

F16, F32, F64 = np.float16, np.float32, np.float64
AXES = (0, 2, 3, 4)
NAMES = ["bn2d.moving_mean", "bn2d.moving_variance", "bn2d.gamma", "bn2d.beta"]
SEED_INPUT = np.array([[[[[0.1, 0.2], [0.3, 0.4]]], [[[0.9, 1.0], [1.1, 1.2]]]]], F32)
SEED_MINDSPORE_OUTPUT = np.array([
    [-1.3411044, -0.44703478, 0.4470349, 1.3411044],
    [-1.3411039, -0.44703427, 0.44703534, 1.341105],
])
FAILED_CALLING = (
    'Failed calling BatchNorm with "BatchNorm(is_training=bool, epsilon={}, momentum=float, '
    'data_format=string)(input_x=Tensor, scale=Tensor, bias=Tensor, mean=Tensor, '
    'variance=Tensor)".\nThe valid calling should be: \n"BatchNorm(is_training=<bool>, '
    'epsilon=<float>, momentum=<float>, data_format=<string>)(input_x=<Tensor>, '
    'scale=<Tensor>, bias=<Tensor>, mean=<Tensor>, variance=<Tensor>)".'
)
CONVERSION = ("Data type conversion is not supported for a 'Parameter', nor for the input "
              "tensor of an in-place operator, so data type {}, which cannot be converted to "
              "data type {} automatically.")
SAME_TYPE = ("For primitive[BatchNorm], the input type must be same.\n"
             "name:[bias]:Ref[Tensor[{}]].\nname:[mean]:Ref[Tensor[{}]].\n"
             "name:[scale]:Ref[Tensor[{}]].\nname:[variance]:Ref[Tensor[{}]].")


def data(shape=(2, 3, 3, 4, 5), dtype=F32, seed=0, scale=2.0, shift=0.5):
    x = np.random.default_rng(seed).standard_normal(shape) * scale + shift
    return x.astype(dtype)


def stats(x):
    """float64 per-channel mean, biased and unbiased variance of (N, C, D, H, W) data."""
    xd = np.asarray(x, F64)
    return xd.mean(axis=AXES), xd.var(axis=AXES), xd.var(axis=AXES, ddof=1)


def values(cell):
    """Copies of the four parameters' arrays, in get_parameters() order."""
    return [p.asnumpy().copy() for p in cell.get_parameters()]


def assert_same_values(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def raises(error, message, call, *args, **kwargs):
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    assert str(info.value) == message


class FakeMindSporeTensor:
    """Stands for a mindspore.Tensor: only asnumpy()."""

    def __init__(self, array):
        self._array = np.asarray(array)

    def asnumpy(self):
        return self._array


class ArrayInterfaceOnly:
    """Has only __array__."""

    def __init__(self, array):
        self._array = np.asarray(array)

    def __array__(self, dtype=None, copy=None):
        return self._array


class DLPackOnly:
    """Has only __dlpack__ (as a CPU tensor of another library)."""

    def __init__(self, array):
        self._array = np.asarray(array)

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class FakeMindSporeDtype:
    """Stands for mindspore.float16: a MindSpore type that prints as Float16."""

    __module__ = "mindspore._c_expression.typing"

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name


# -- construction and interface ------------------------------------------------------------


def test_signature_is_mindspores():
    parameters = inspect.signature(BatchNorm3d).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        ("num_features", inspect.Parameter.empty), ("eps", 1e-5), ("momentum", 0.9),
        ("affine", True), ("gamma_init", "ones"), ("beta_init", "zeros"),
        ("moving_mean_init", "zeros"), ("moving_var_init", "ones"),
        ("use_batch_statistics", None), ("dtype", np.float32),
    ]


def test_new_cell_infers_with_mindspores_initial_values():
    cell = BatchNorm3d(3)
    assert cell.training is False and cell.bn2d.training is False
    expected = [np.zeros(3), np.ones(3), np.ones(3), np.zeros(3)]
    for parameter, value in zip(cell.get_parameters(), expected):
        assert parameter.dtype == F32 and parameter.shape == (3,)
        np.testing.assert_array_equal(parameter.asnumpy(), value)
    bn2d = cell.bn2d
    assert (bn2d.num_features, bn2d.eps, bn2d.use_batch_statistics) == (3, 1e-5, None)
    assert bn2d.momentum == 1.0 - 0.9  # MindSpore keeps the primitive's momentum


def test_set_train_returns_the_cell_and_switches_it_and_bn2d():
    cell = BatchNorm3d(2)
    assert cell.set_train() is cell
    assert cell.training is True and cell.bn2d.training is True
    assert cell.set_train(False) is cell
    assert cell.training is False and cell.bn2d.training is False


def test_set_train_stores_the_mode_as_given_and_uses_its_truth_value():
    cell = BatchNorm3d(2)
    assert cell.set_train(1).training == 1
    cell(data((2, 2, 1, 1, 2)))
    assert not np.array_equal(cell.moving_mean.asnumpy(), np.zeros(2))  # trained
    before = values(cell)
    cell.set_train(None)(data((2, 2, 1, 1, 2)))
    assert_same_values(before, values(cell))


def test_parameters_are_named_and_ordered_as_in_mindspore():
    cell = BatchNorm3d(3)
    parameters = list(cell.get_parameters())
    assert [p.name for p in parameters] == NAMES
    assert [p.requires_grad for p in parameters] == [False, False, True, True]
    assert list(cell.parameters_dict()) == NAMES
    assert all(cell.parameters_dict()[p.name] is p for p in parameters)
    assert [p.name for p in cell.trainable_params()] == ["bn2d.gamma", "bn2d.beta"]
    assert not isinstance(cell.get_parameters(), (list, tuple))  # a generator, as in MindSpore


def test_cell_exposes_the_parameters_of_bn2d():
    cell = BatchNorm3d(3)
    assert cell.gamma is cell.bn2d.gamma and cell.beta is cell.bn2d.beta
    assert cell.moving_mean is cell.bn2d.moving_mean
    assert cell.moving_variance is cell.bn2d.moving_variance
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        with pytest.raises(AttributeError):
            setattr(cell.bn2d, name, np.ones(3, F32))
        with pytest.raises(AttributeError):
            setattr(cell, name, np.ones(3, F32))


@pytest.mark.parametrize("kwargs, text", [
    ({}, "BatchNorm3d(\n  (bn2d): BatchNorm2d(num_features=3, eps=1e-05, momentum=0.9, "
         "gamma=Parameter (name=bn2d.gamma, shape=(3,), dtype=Float32, requires_grad=True), "
         "beta=Parameter (name=bn2d.beta, shape=(3,), dtype=Float32, requires_grad=True), "
         "moving_mean=Parameter (name=bn2d.moving_mean, shape=(3,), dtype=Float32, "
         "requires_grad=False), moving_variance=Parameter (name=bn2d.moving_variance, "
         "shape=(3,), dtype=Float32, requires_grad=False))\n)"),
    ({"momentum": 0.1, "eps": 1e-3, "affine": False},
     "BatchNorm3d(\n  (bn2d): BatchNorm2d(num_features=3, eps=0.001, "
     "momentum=0.09999999999999998, "
     "gamma=Parameter (name=bn2d.gamma, shape=(3,), dtype=Float32, requires_grad=False), "
     "beta=Parameter (name=bn2d.beta, shape=(3,), dtype=Float32, requires_grad=False), "
     "moving_mean=Parameter (name=bn2d.moving_mean, shape=(3,), dtype=Float32, "
     "requires_grad=False), moving_variance=Parameter (name=bn2d.moving_variance, "
     "shape=(3,), dtype=Float32, requires_grad=False))\n)"),
])
def test_repr_is_mindspores(kwargs, text):
    assert repr(BatchNorm3d(3, **kwargs)) == text
    assert str(BatchNorm3d(3, **kwargs)) == text


@pytest.mark.parametrize("kwargs, part", [
    ({"momentum": 0.3}, "momentum=0.30000000000000004,"),
    ({"momentum": 1}, "momentum=1.0,"),
    ({"momentum": 0}, "momentum=0.0,"),
    ({"eps": 1}, "eps=1,"),
    ({"dtype": np.float16}, "dtype=Float16"),
    ({"dtype": "float64"}, "dtype=Float64"),
])
def test_repr_prints_momentum_as_one_minus_one_minus_momentum(kwargs, part):
    assert part in repr(BatchNorm3d(3, **kwargs))


def test_assigned_eps_and_momentum_change_the_repr_but_not_the_computation():
    x = data((2, 3, 2, 2, 2))
    cell, reference = BatchNorm3d(3).set_train(), BatchNorm3d(3).set_train()
    cell.bn2d.eps, cell.bn2d.momentum = 0.0, 0.5
    assert "eps=0.0, momentum=0.5," in repr(cell)
    np.testing.assert_array_equal(cell(x), reference(x))
    assert_same_values(values(cell), values(reference))


def test_assigned_use_batch_statistics_is_read_at_every_call():
    cell = BatchNorm3d(3)
    cell.bn2d.use_batch_statistics = True
    cell(data((2, 3, 2, 2, 2)))
    assert not np.array_equal(cell.moving_mean.asnumpy(), np.zeros(3))


# -- Parameter ------------------------------------------------------------------------------


def test_parameter_looks_like_mindspores():
    gamma = BatchNorm3d(3).gamma
    assert repr(gamma) == str(gamma) == (
        "Parameter (name=bn2d.gamma, shape=(3,), dtype=Float32, requires_grad=True)")
    assert gamma.shape == (3,) and isinstance(gamma.shape, tuple)
    assert gamma.dtype == np.dtype(F32)
    np.testing.assert_array_equal(np.asarray(gamma), np.ones(3))
    assert np.asarray(gamma, dtype=F64).dtype == F64


def test_asnumpy_is_the_parameters_own_array_and_training_updates_it_in_place():
    cell = BatchNorm3d(3).set_train()
    moving_mean = cell.moving_mean.asnumpy()
    cell(data((2, 3, 2, 2, 2)))
    assert cell.moving_mean.asnumpy() is moving_mean
    assert not np.array_equal(moving_mean, np.zeros(3))


def test_set_data_casts_to_the_parameters_dtype_and_follows_the_datas_shape():
    gamma = BatchNorm3d(3).gamma
    assert gamma.set_data(np.array([1.0, 2.0, 4.0])) is gamma
    assert gamma.dtype == F32
    np.testing.assert_array_equal(gamma.asnumpy(), [1.0, 2.0, 4.0])
    gamma.set_data(FakeMindSporeTensor(np.array([1, 2], np.int32)))
    assert gamma.shape == (2,) and gamma.dtype == F32
    gamma.set_data(3)
    assert gamma.shape == () and gamma.asnumpy() == 3.0
    source = np.array([5.0, 6.0, 7.0], F32)
    gamma.set_data(source)
    source[0] = 0.0
    assert gamma.asnumpy()[0] == 5.0  # a copy


@pytest.mark.parametrize("value", [[1.0, 2.0, 3.0], (1.0,), None, "1", np.float32(1.0)])
def test_set_data_rejects_what_mindspore_rejects(value):
    raises(TypeError, "Parameter data must be [`Tensor`, `int`, `float`] or a kind of `Tensor` "
           f"(like `Tensor`). But with type {type(value)}.",
           BatchNorm3d(3).gamma.set_data, value)


def test_set_data_of_a_float_into_an_integer_parameter_is_mindspores_error():
    gamma = BatchNorm3d(3, dtype="int32").gamma
    raises(TypeError, "Incoming Parameter dtype can not be converted to current dtype "
           "implicitly. Current dtype is Int32, and incoming is Float. Use .set_dtype(xxx) to "
           "change the dtype.", gamma.set_data, 2.5)
    assert gamma.set_data(True).asnumpy() == 1


def test_requires_grad_is_settable_to_a_bool_and_decides_trainability():
    cell = BatchNorm3d(3)
    cell.gamma.requires_grad = False
    assert [p.name for p in cell.trainable_params()] == ["bn2d.beta"]
    assert "requires_grad=False" in repr(cell.gamma)
    raises(TypeError, "The argument `requires_grad` must be bool type",
           setattr, cell.beta, "requires_grad", 1)
    assert cell.beta.requires_grad is True


def test_parameter_can_be_built_directly():
    parameter = Parameter([1.0, 2.0], name="w", requires_grad=False)
    assert parameter.name == "w" and parameter.dtype == F64 and not parameter.requires_grad
    raises(TypeError, "The argument `requires_grad` must be bool type", Parameter, [1.0], "w", 0)


# -- constructor errors ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_features": 0}, ValueError,
     "For 'BatchNorm2d', the 'num_features' must be at least 1, but got 0."),
    ({"num_features": -1}, ValueError,
     "For 'BatchNorm2d', the 'num_features' must be at least 1, but got -1."),
    ({"num_features": 3.0}, TypeError,
     "For 'BatchNorm2d', the type of 'num_features' should be 'int', but got type 'float'."),
    ({"num_features": True}, TypeError,
     "For 'BatchNorm2d', the type of 'num_features' should be 'int', but got type 'bool'."),
    ({"num_features": np.int64(3)}, TypeError,
     "For 'BatchNorm2d', the type of 'num_features' should be 'int', but got type 'int64'."),
    ({"num_features": None}, TypeError,
     "For 'BatchNorm2d', the type of 'num_features' should be 'int', but got type 'NoneType'."),
    ({"momentum": 1.5}, ValueError,
     "For 'BatchNorm2d', the 'momentum' must be a number in range [0, 1], but got 1.5."),
    ({"momentum": -0.1}, ValueError,
     "For 'BatchNorm2d', the 'momentum' must be a number in range [0, 1], but got -0.1."),
    ({"momentum": "a"}, TypeError, "'<' not supported between instances of 'str' and 'int'"),
    ({"momentum": None}, TypeError,
     "'<' not supported between instances of 'NoneType' and 'int'"),
    ({"use_batch_statistics": 1}, ValueError,
     "For 'BatchNorm2d', the 'use_batch_statistics' must be a boolean value or None, but got 1."),
    ({"use_batch_statistics": "x"}, ValueError,
     "For 'BatchNorm2d', the 'use_batch_statistics' must be a boolean value or None, but got x."),
    ({"use_batch_statistics": np.bool_(True)}, ValueError,
     "For 'BatchNorm2d', the 'use_batch_statistics' must be a boolean value or None, "
     "but got True."),
    ({"affine": 0}, TypeError, "The argument `requires_grad` must be bool type"),
    ({"affine": None}, TypeError, "The argument `requires_grad` must be bool type"),
    # MindSpore's order: num_features, momentum, use_batch_statistics, then the parameters
    # moving mean, moving variance, gamma (whose creation checks affine) and beta.
    ({"num_features": 0, "momentum": 2}, ValueError,
     "For 'BatchNorm2d', the 'num_features' must be at least 1, but got 0."),
    ({"momentum": 2, "use_batch_statistics": 1}, ValueError,
     "For 'BatchNorm2d', the 'momentum' must be a number in range [0, 1], but got 2."),
    ({"use_batch_statistics": 1, "moving_mean_init": "bogus"}, ValueError,
     "For 'BatchNorm2d', the 'use_batch_statistics' must be a boolean value or None, but got 1."),
    ({"gamma_init": "bogus", "moving_var_init": "bogus2"}, ValueError,
     "For 'initializer', the class corresponding to 'bogus2' was not found."),
    ({"affine": 0, "gamma_init": "bogus"}, ValueError,
     "For 'initializer', the class corresponding to 'bogus' was not found."),
    ({"affine": 0, "beta_init": "bogus"}, TypeError,
     "The argument `requires_grad` must be bool type"),
])
def test_constructor_errors_are_mindspores(kwargs, error, message):
    kwargs = {"num_features": 3, **kwargs}
    raises(error, message, BatchNorm3d, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"momentum": float("nan")}, {"momentum": True}, {"momentum": np.float32(0.5)},
    {"momentum": 1}, {"eps": 0.0}, {"eps": "x"}, {"eps": None},
])
def test_constructor_accepts_what_mindspore_accepts(kwargs):
    BatchNorm3d(3, **kwargs)


# -- initialisers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("ones", 1), ("One", 1), ("ONES", 1), ("one", 1),
    ("zeros", 0), ("Zero", 0), ("ZEROS", 0), ("zero", 0),
])
def test_constant_names_are_looked_up_case_insensitively(name, value):
    cell = BatchNorm3d(4, gamma_init=name, beta_init=name, moving_mean_init=name,
                       moving_var_init=name)
    for parameter in cell.get_parameters():
        np.testing.assert_array_equal(parameter.asnumpy(), np.full(4, value, F32))


@pytest.mark.parametrize("init, low, high, std", [
    ("normal", None, None, 0.01), ("Normal", None, None, 0.01),
    ("uniform", -0.07, 0.07, 0.07 / np.sqrt(3)),
    ("truncatedNormal", -2.0, 2.0, 0.01), ("TRUNCATEDNORMAL", -2.0, 2.0, 0.01),
    (Normal(sigma=0.5, mean=2.0), None, None, 0.5),
    (Uniform(3.0), -3.0, 3.0, 3.0 / np.sqrt(3)),
])
def test_random_initialisers_follow_mindspores_distributions(init, low, high, std):
    gamma = BatchNorm3d(20000, gamma_init=init).gamma.asnumpy()
    assert gamma.dtype == F32
    mean = 2.0 if isinstance(init, Normal) else 0.0
    assert abs(gamma.mean() - mean) < 5 * std / np.sqrt(gamma.size)
    assert abs(gamma.std() / std - 1) < 0.05
    if low is not None:
        assert low <= gamma.min() and gamma.max() <= high


def test_truncated_normal_bounds_the_values_themselves():
    gamma = BatchNorm3d(20000, gamma_init=TruncatedNormal(sigma=2.0, a=-1.0, b=1.0)).gamma
    values_ = gamma.asnumpy()
    assert -1.0 <= values_.min() and values_.max() <= 1.0
    assert abs(values_.std() - 0.567) < 0.02  # N(0, 4) cut to [-1, 1]: nearly uniform
    # a mean outside the bounds piles the values against the nearer bound
    far = BatchNorm3d(20000, gamma_init=TruncatedNormal(sigma=2.0, mean=5.0, a=-1.0, b=1.0))
    far_values = far.gamma.asnumpy()
    assert -1.0 <= far_values.min() and far_values.max() <= 1.0
    assert 0.3 < far_values.mean() < 0.42
    tail = BatchNorm3d(100, gamma_init=TruncatedNormal(sigma=0.01, mean=0.0, a=5.0, b=6.0))
    assert (tail.gamma.asnumpy() == 5.0).all()  # no representable mass: the nearer bound


@pytest.mark.parametrize("initialiser", [Normal(sigma=-1.0), TruncatedNormal(sigma=-1.0)])
def test_negative_sigma_is_mindspores_error(initialiser):
    raises(ValueError, "sigma < 0", BatchNorm3d, 3, gamma_init=initialiser)


@pytest.mark.parametrize("init, expected", [
    (2.5, [2.5] * 3), (3, [3.0] * 3), (True, [1.0] * 3), (np.float32(1.5), [1.5] * 3),
    (np.int64(2), [2.0] * 3), (float("nan"), [np.nan] * 3), (float("inf"), [np.inf] * 3),
    (Constant(4), [4.0] * 3), (One(), [1.0] * 3), (Zero(), [0.0] * 3),
])
def test_numbers_and_constant_initialisers_fill(init, expected):
    gamma = BatchNorm3d(3, gamma_init=init).gamma
    assert gamma.dtype == F32
    np.testing.assert_array_equal(gamma.asnumpy(), np.array(expected, F32))


def test_array_initialisers_are_copied_and_keep_their_dtype():
    source = np.array([0.5, 2.0, -1.0], F16)
    cell = BatchNorm3d(3, gamma_init=source, moving_mean_init=FakeMindSporeTensor([1.0, 2, 3]))
    source[0] = 9.0
    assert cell.gamma.dtype == F16 and cell.moving_mean.dtype == F64
    np.testing.assert_array_equal(cell.gamma.asnumpy(), [0.5, 2.0, -1.0])
    assert cell.beta.dtype == F32  # dtype= still applies to the others
    np.testing.assert_array_equal(cell.moving_mean.asnumpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("init, shape", [
    (np.ones(2), [2]), (np.ones((3, 1)), [3, 1]), (np.ones((1, 3)), [1, 3]),
    (np.array(2.0), []),
])
def test_wrongly_shaped_arrays_are_mindspores_error(init, shape):
    raises(ValueError, "For 'initializer', the shape of the 'init' argument should be same as "
           f"the argument 'shape', but got the 'init' shape {shape} and the 'shape' [3].",
           BatchNorm3d, 3, beta_init=init)


@pytest.mark.parametrize("name", [
    "xavier_uniform", "XAVIER_UNIFORM", "Xavier_Uniform", "xavieruniform", "xavier_normal",
    "xaviernormal", "he_uniform", "heuniform", "he_normal", "henormal", "variancescaling",
])
def test_fan_based_initialisers_fail_for_a_one_dimensional_parameter(name):
    raises(ValueError, "'fan_in' and 'fan_out' can not be computed for tensor with fewer than 2 "
           "dimensions, but got dimensions 1.", BatchNorm3d, 3, gamma_init=name)


@pytest.mark.parametrize("name, error, message", [
    ("identity", ValueError, "For Identity initializer, the dimension of the initialized tensor "
                             "should be 2, but got 1."),
    ("Orthogonal", ValueError, "For Orthogonal initializer, the dimension of the initialized "
                               "tensor should be no less than 2, but got 1."),
    ("dirac", ValueError, "For Dirac initializer, only support to initialize tensor with "
                          "dimension of 3, 4 or 5, but got 1."),
    ("sparse", TypeError, "Sparse.__init__() missing 1 required positional argument: "
                          "'sparsity'"),
    ("bogus", ValueError, "For 'initializer', the class corresponding to 'bogus' was not found."),
    ("constant", ValueError,
     "For 'initializer', the class corresponding to 'constant' was not found."),
    ("truncated_normal", ValueError,
     "For 'initializer', the class corresponding to 'truncated_normal' was not found."),
    ("", ValueError, "For 'initializer', the class corresponding to '' was not found."),
])
def test_other_names_are_mindspores_errors(name, error, message):
    raises(error, message, BatchNorm3d, 3, moving_var_init=name)


@pytest.mark.parametrize("init", [None, [1.0, 2.0, 3.0], (1, 2, 3), {"a": 1}])
def test_unsupported_initialiser_types_are_mindspores_error(init):
    raises(TypeError, "For 'initializer', the type of the 'init' argument should be 'Tensor', "
           f"'number', 'string' or 'initializer', but got {type(init)}.",
           BatchNorm3d, 3, gamma_init=init)


def test_complex_number_initialiser_is_mindspores_error():
    raises(TypeError, "float() argument must be a string or a real number, not 'complex'",
           BatchNorm3d, 3, gamma_init=1 + 2j)


@pytest.mark.parametrize("dtype, expected", [
    (np.float16, F16), ("float16", F16), (np.dtype("float64"), F64),
    (FakeMindSporeDtype("Float16"), F16), (FakeMindSporeDtype("Int32"), np.int32),
])
def test_dtype_accepts_numpy_and_mindspore_dtypes(dtype, expected):
    cell = BatchNorm3d(3, dtype=dtype, gamma_init="normal")
    assert all(parameter.dtype == expected for parameter in cell.get_parameters())


@pytest.mark.parametrize("dtype", ["foo", object, "U3", FakeMindSporeDtype("BFloat16")])
def test_dtype_that_is_not_numeric_is_refused(dtype):
    with pytest.raises(TypeError, match="the 'dtype' should be"):
        BatchNorm3d(3, dtype=dtype)


def test_set_seed_makes_random_initialisers_reproducible():
    def draw():
        return values(BatchNorm3d(50, gamma_init="normal", beta_init="uniform",
                                  moving_mean_init=TruncatedNormal(sigma=1.0, a=-1.0, b=1.0)))
    set_seed(1234)
    first = draw()
    assert get_seed() == 1234
    set_seed(1234)
    assert_same_values(first, draw())
    set_seed(4321)
    assert not np.array_equal(first[2], draw()[2])


@pytest.mark.parametrize("seed, error, message", [
    (1.5, TypeError, "The argument 'seed' must be type of int, but got <class 'float'>."),
    (np.int64(3), TypeError,
     "The argument 'seed' must be type of int, but got <class 'numpy.int64'>."),
    (None, TypeError, "The argument 'seed' must be type of int, but got <class 'NoneType'>."),
    (-1, ValueError,
     "For 'global_seed', the 'seed' must be int and must >= 0, but got '-1' with type 'int'."),
    (True, TypeError,
     "For 'global_seed', the 'seed' must be int and must >= 0, but got 'True' with type 'bool'."),
    (2**40, ValueError, "Seed must be between 0 and 2**32 - 1"),
])
def test_set_seed_errors_are_mindspores(seed, error, message):
    raises(error, message, set_seed, seed)


# -- modes ----------------------------------------------------------------------------------


def _cell_with_state(**kwargs):
    return BatchNorm3d(3, gamma_init=np.array([0.5, 2.0, -1.0], F32),
                       beta_init=np.array([0.25, -3.0, 1.0], F32),
                       moving_mean_init=np.array([1.0, -2.0, 0.5], F32),
                       moving_var_init=np.array([4.0, 0.25, 2.0], F32), **kwargs)


@pytest.mark.parametrize("use_batch_statistics, training, batch", [
    (None, True, True), (None, False, False),
    (True, True, True), (True, False, True),
    (False, True, False), (False, False, False),
])
def test_use_batch_statistics_against_training_and_inference(use_batch_statistics, training,
                                                             batch):
    cell = _cell_with_state(use_batch_statistics=use_batch_statistics, momentum=0.7)
    cell.set_train(training)
    old_mean, old_var = (p.asnumpy().astype(F64) for p in list(cell.get_parameters())[:2])
    x = data((4, 3, 2, 3, 2))
    y = cell(x)
    mean, var, unbiased = stats(x)
    gamma, beta = [0.5, 2.0, -1.0], [0.25, -3.0, 1.0]
    if batch:
        expected = reference_batch_norm(x, gamma, beta, eps=1e-5)
        new_mean, new_var = 0.7 * old_mean + 0.3 * mean, 0.7 * old_var + 0.3 * unbiased
    else:
        expected = reference_batch_norm(x, gamma, beta, eps=1e-5, mean=old_mean, var=old_var)
        new_mean, new_var = old_mean, old_var
    assert max_relative_error(y, expected) < 2e-6
    np.testing.assert_allclose(cell.moving_mean.asnumpy(), new_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cell.moving_variance.asnumpy(), new_var, rtol=1e-6, atol=1e-7)


def test_momentum_weighs_the_moving_statistics_over_several_steps():
    cell = BatchNorm3d(3, momentum=0.25).set_train()
    moving_mean, moving_var = np.zeros(3), np.ones(3)
    for step, shape in enumerate([(4, 3, 2, 3, 2), (2, 3, 3, 2, 2), (5, 3, 1, 2, 3)]):
        x = data(shape, seed=step, shift=step - 1.0)
        cell(x)
        mean, _, unbiased = stats(x)
        moving_mean = 0.25 * moving_mean + 0.75 * mean
        moving_var = 0.25 * moving_var + 0.75 * unbiased
    np.testing.assert_allclose(cell.moving_mean.asnumpy(), moving_mean, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(cell.moving_variance.asnumpy(), moving_var, rtol=2e-6)


def test_torch_momentum_is_one_minus_mindspores():
    assert torch_momentum(0.9) == 1.0 - 0.9 and torch_momentum(0.0) == 1.0
    for momentum, mean in [(0.0, "batch"), (1.0, "initial")]:
        cell = BatchNorm3d(3, momentum=momentum).set_train()
        x = data((4, 3, 2, 2, 2))
        cell(x)
        expected = stats(x)[0] if mean == "batch" else np.zeros(3)
        np.testing.assert_allclose(cell.moving_mean.asnumpy(), expected, atol=1e-6)


def test_affine_false_keeps_and_applies_gamma_and_beta_but_does_not_train_them():
    cell = BatchNorm3d(3, affine=False, gamma_init=2.0, beta_init=0.5).set_train()
    assert [p.requires_grad for p in (cell.gamma, cell.beta)] == [False, False]
    assert cell.trainable_params() == []
    x = data((4, 3, 2, 3, 2))
    y = cell(x)
    assert max_relative_error(y, reference_batch_norm(x, [2.0] * 3, [0.5] * 3)) < 2e-6


def test_seed_example_gives_mindspores_documented_output_and_moving_stats():
    cell = BatchNorm3d(num_features=2, momentum=0.9)
    cell.set_train()
    y = cell(SEED_INPUT)
    assert y.dtype == F32 and y.shape == SEED_INPUT.shape
    assert np.abs(y.reshape(2, 4).astype(F64) - SEED_MINDSPORE_OUTPUT).max() <= 2e-6
    np.testing.assert_allclose(cell.moving_mean.asnumpy(), np.array([0.025, 0.105], F32),
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(cell.moving_variance.asnumpy(),
                               np.array([0.90166664, 0.90166664], F32), rtol=0, atol=1e-7)


def test_float16_input_with_float32_parameters_gives_float16_output():
    cell = BatchNorm3d(3).set_train()
    x = data((4, 3, 2, 2, 2), F16)
    y = cell(x)
    assert y.dtype == F16 and cell.moving_mean.dtype == F32
    assert max_relative_error(y, reference_batch_norm(x)) < 2e-3


@pytest.mark.parametrize("use_batch_statistics", [None, True])
@pytest.mark.parametrize("input_dtype", [F16, F32])
def test_float16_parameters_normalise_but_keep_their_moving_statistics(input_dtype,
                                                                       use_batch_statistics):
    # As MindSpore 2.10's CPU kernel: float16 moving statistics are never updated.
    cell = BatchNorm3d(3, dtype=np.float16, moving_mean_init=0.5,
                       use_batch_statistics=use_batch_statistics).set_train()
    x = data((4, 3, 2, 2, 2), input_dtype)
    y = cell(x)
    assert y.dtype == input_dtype
    assert all(p.dtype == F16 for p in cell.get_parameters())
    assert max_relative_error(y, reference_batch_norm(x)) < 2e-3
    np.testing.assert_array_equal(cell.moving_mean.asnumpy(), np.full(3, 0.5, F16))
    np.testing.assert_array_equal(cell.moving_variance.asnumpy(), np.ones(3, F16))


def test_one_value_per_channel_in_training_gives_beta_and_a_nan_moving_variance():
    cell = BatchNorm3d(3, beta_init=0.5).set_train()
    y = cell(np.array([1.0, 2.0, 3.0], F32).reshape(1, 3, 1, 1, 1))
    np.testing.assert_array_equal(y.ravel(), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(cell.moving_mean.asnumpy(), [0.1, 0.2, 0.3], rtol=1e-6)
    assert np.isnan(cell.moving_variance.asnumpy()).all()


@pytest.mark.parametrize("training", [True, False])
def test_empty_batch_gives_an_empty_output_and_leaves_the_moving_statistics(training):
    cell = _cell_with_state().set_train(training)
    before = values(cell)
    y = cell(np.zeros((0, 3, 2, 2, 2), F32))
    assert y.shape == (0, 3, 2, 2, 2) and y.dtype == F32
    assert_same_values(before, values(cell))


@pytest.mark.parametrize("wrap", [FakeMindSporeTensor, ArrayInterfaceOnly, DLPackOnly])
def test_tensors_of_other_kinds_are_accepted(wrap):
    x = data((2, 3, 2, 2, 2))
    np.testing.assert_array_equal(BatchNorm3d(3)(wrap(x)), BatchNorm3d(3)(x))


def test_output_is_a_new_array_and_x_may_be_given_by_keyword():
    x = data((2, 3, 2, 2, 2))
    cell = BatchNorm3d(3)
    y = cell(x=x)
    assert y is not x and not np.shares_memory(x, y) and y.dtype == x.dtype
    np.testing.assert_array_equal(cell.construct(x), y)


@pytest.mark.parametrize("x", [[[[[[1.0]]]]], 1.0, np.float32(1.0), None, memoryview(b"ab")])
def test_inputs_that_are_not_tensors_are_mindspores_error(x):
    raises(TypeError, f"For primitive[Shape], the input argument must be Tensor, but got "
           f"{type(x)}.", BatchNorm3d(1), x)


# -- errors at call time --------------------------------------------------------------------


def _rank_error(ndim):
    return ValueError, f"For 'BatchNorm3d', the in_shape must have 5 dims, but got {ndim}."


def _input_type_error(name):
    return TypeError, ("For primitive[BatchNorm], the input argument[input_x] must be a type "
                       f"of {{Tensor[Float16], Tensor[Float32]}}, but got Tensor[{name}].")


def _eps_error(text):
    return ValueError, f"For primitive[BatchNorm], the eps must be in (0,1], but got {text}."


CHANNEL_ERROR = (ValueError, "For BatchNorm, scale.shape[0] should be equal to input_x's "
                             "channel dimension: 4, bug got scale.shape[0]: 3.")
# name: (constructor kwargs, input, error); each is raised in training and in inference.
CALL_ERRORS = {
    "rank-4": ({}, data((2, 3, 2, 2)), _rank_error(4)),
    "rank-6": ({}, data((2, 3, 2, 2, 2, 1)), _rank_error(6)),
    "channels": ({}, data((2, 4, 2, 2, 2)), CHANNEL_ERROR),
    "float64": ({}, data((2, 3, 2, 2, 2), F64), _input_type_error("Float64")),
    "int32": ({}, data((2, 3, 2, 2, 2), np.int32), _input_type_error("Int32")),
    "bool": ({}, np.ones((2, 3, 2, 2, 2), bool), _input_type_error("Bool")),
    "uint8": ({}, data((2, 3, 2, 2, 2), np.uint8), _input_type_error("UInt8")),
    "eps-0": ({"eps": 0.0}, data((2, 3, 2, 2, 2)), _eps_error("0")),
    "eps-negative": ({"eps": -1.0}, data((2, 3, 2, 2, 2)), _eps_error("-1")),
    "eps-1.5": ({"eps": 1.5}, data((2, 3, 2, 2, 2)), _eps_error("1.5")),
    "eps-nan": ({"eps": float("nan")}, data((2, 3, 2, 2, 2)), _eps_error("nan")),
    "eps-inf": ({"eps": float("inf")}, data((2, 3, 2, 2, 2)), _eps_error("inf")),
    "eps-underflows-float32": ({"eps": 1e-300}, data((2, 3, 2, 2, 2)), _eps_error("0")),
    "eps-above-1-in-float32": ({"eps": 1.0000001}, data((2, 3, 2, 2, 2)), _eps_error("1")),
    "eps-large": ({"eps": 123456789.0}, data((2, 3, 2, 2, 2)), _eps_error("1.23457e+08")),
    "eps-minus-zero": ({"eps": -0.0}, data((2, 3, 2, 2, 2)), _eps_error("-0")),
    "eps-int": ({"eps": 1}, data((2, 3, 2, 2, 2)), (TypeError, FAILED_CALLING.format("int"))),
    "eps-zero-int": ({"eps": 0}, data((2, 3, 2, 2, 2)),
                     (TypeError, FAILED_CALLING.format("int"))),
    "eps-bool": ({"eps": True}, data((2, 3, 2, 2, 2)), (TypeError, FAILED_CALLING.format("bool"))),
    "eps-str": ({"eps": "x"}, data((2, 3, 2, 2, 2)), (TypeError, FAILED_CALLING.format("string"))),
    "eps-none": ({"eps": None}, data((2, 3, 2, 2, 2)), (TypeError, FAILED_CALLING.format("None"))),
    "eps-list": ({"eps": [1, 2.0]}, data((2, 3, 2, 2, 2)),
                 (TypeError, FAILED_CALLING.format("List<int, float>"))),
    "eps-tuple": ({"eps": (1.0,)}, data((2, 3, 2, 2, 2)),
                  (TypeError, FAILED_CALLING.format("Tuple<float>"))),
    "eps-numpy-int": ({"eps": np.int64(1)}, data((2, 3, 2, 2, 2)),
                      (TypeError, FAILED_CALLING.format("<class 'numpy.int64'>"))),
    "float64-parameters": ({"dtype": F64}, data((2, 3, 2, 2, 2)),
                           (TypeError, "For primitive[BatchNorm], the input argument[bias] must "
                                       "be a type of {Tensor[Float16], Tensor[Float32]}, but got "
                                       "Ref[Tensor[Float64]].")),
    "int32-parameters": ({"dtype": "int32"}, data((2, 3, 2, 2, 2)),
                         (TypeError, "For primitive[BatchNorm], the input argument[bias] must be "
                                     "a type of {Tensor[Float16], Tensor[Float32]}, but got "
                                     "Ref[Tensor[Int32]].")),
    "float16-statistics": ({"moving_mean_init": np.zeros(3, F16),
                            "moving_var_init": np.ones(3, F16)}, data((2, 3, 2, 2, 2)),
                           (TypeError, SAME_TYPE.format("Float32", "Float16", "Float32",
                                                        "Float16"))),
    # MindSpore's order of checks: rank, eps type, (training: parameter conversions), eps
    # value, (training: momentum), parameter shapes, channels, input dtype, parameter dtypes.
    "rank-before-eps": ({"eps": 0.0}, data((2, 3, 2, 2)), _rank_error(4)),
    "eps-type-before-channels": ({"eps": 1}, data((2, 4, 2, 2, 2), F64),
                                 (TypeError, FAILED_CALLING.format("int"))),
    "eps-before-channels": ({"eps": 0.0}, data((2, 4, 2, 2, 2)), _eps_error("0")),
    "eps-before-dtype": ({"eps": 0.0}, data((2, 3, 2, 2, 2), F64), _eps_error("0")),
    "channels-before-dtype": ({}, data((2, 4, 2, 2, 2), F64), CHANNEL_ERROR),
    "channels-before-parameter-dtype": ({"dtype": F64}, data((2, 4, 2, 2, 2)), CHANNEL_ERROR),
    "input-dtype-before-parameter-dtype": ({"dtype": F64}, data((2, 3, 2, 2, 2), F64),
                                           _input_type_error("Float64")),
}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CALL_ERRORS))
def test_call_errors_are_mindspores_in_training_and_inference(name, training):
    kwargs, x, (error, message) = CALL_ERRORS[name]
    initial = {"gamma_init": 1.5, "beta_init": -0.5, "moving_mean_init": 0.5,
               "moving_var_init": 2.0}
    cell = BatchNorm3d(3, **{**initial, **kwargs}).set_train(training)
    before = values(cell)
    raises(error, message, cell, x)
    assert_same_values(before, values(cell))


@pytest.mark.parametrize("kwargs, training, message", [
    ({"gamma_init": np.ones(3, F64)}, True, CONVERSION.format("Float32", "Float64")),
    ({"gamma_init": np.ones(3, F64)}, False,
     SAME_TYPE.format("Float32", "Float32", "Float64", "Float32")),
    ({"beta_init": np.ones(3, np.int32)}, True, CONVERSION.format("Int32", "Float32")),
    ({"gamma_init": np.ones(3, F16)}, True, CONVERSION.format("Float16", "Float32")),
    ({"gamma_init": np.ones(3, np.int64), "beta_init": np.ones(3, np.int32)}, True,
     CONVERSION.format("Int32", "Int64")),
    ({"gamma_init": np.ones(3, np.int32), "beta_init": np.ones(3, F16)}, True,
     CONVERSION.format("Int32", "Float16")),
    ({"gamma_init": np.ones(3, bool)}, True, CONVERSION.format("Bool", "Float32")),
    ({"gamma_init": np.ones(3, np.uint8), "beta_init": np.ones(3, np.int8)}, True,
     CONVERSION.format("UInt8", "Int16")),
    ({"moving_mean_init": np.ones(3, np.int32), "moving_var_init": np.ones(3, np.int64)}, True,
     CONVERSION.format("Int32", "Int64")),
    # the scale/bias pair is checked before the mean/variance pair, and before eps
    ({"gamma_init": np.ones(3, F64), "moving_mean_init": np.ones(3, F16)}, True,
     CONVERSION.format("Float32", "Float64")),
    ({"gamma_init": np.ones(3, F16), "eps": 0.0}, True, CONVERSION.format("Float16", "Float32")),
    ({"gamma_init": np.ones(3, F16), "momentum": float("nan")}, True,
     CONVERSION.format("Float16", "Float32")),
])
def test_mixed_parameter_dtypes_are_mindspores_errors(kwargs, training, message):
    cell = BatchNorm3d(3, **kwargs).set_train(training)
    before = values(cell)
    raises(TypeError, message, cell, data((2, 3, 2, 2, 2)))
    assert_same_values(before, values(cell))


def test_nan_momentum_is_accepted_when_built_and_refused_when_tracking():
    cell = BatchNorm3d(3, momentum=float("nan"))
    cell(data((2, 3, 2, 2, 2)))  # inference: the momentum is not used
    raises(ValueError, "For primitive[BatchNorm], the momentum must be in (0,1], but got nan.",
           cell.set_train(), data((2, 3, 2, 2, 2)))


@pytest.mark.parametrize("eps", [1.0, np.float32(1e-3), np.float16(1e-3), 1e-45, 1.00000001])
def test_eps_in_the_float32_unit_interval_is_accepted(eps):
    x = data((2, 3, 2, 2, 2))
    y = BatchNorm3d(3, eps=eps).set_train()(x)
    expected = reference_batch_norm(x, eps=float(np.float32(eps)))
    assert max_relative_error(y, expected) < 2e-6


@pytest.mark.parametrize("parameter, data_, training, message", [
    ("gamma", np.ones(2, F32), True,
     "For primitive[BatchNorm], the scale and bias: [2,] must be equal to [3,]"),
    ("gamma", np.ones(4, F32), False,
     "For primitive[BatchNorm], the scale and bias: [4,] must be equal to [3,]"),
    ("beta", np.ones(2, F32), True,
     "For primitive[BatchNorm], the scale and bias: [3,] must be equal to [2,]"),
    ("gamma", 2.0, True, "For primitive[BatchNorm], the rank of scale must be equal to 1, "
                         "but got 0."),
    ("beta", np.ones((1, 3), F32), False,
     "For primitive[BatchNorm], the rank of bias must be equal to 1, but got 2."),
    ("moving_mean", 1.0, True,
     "For primitive[BatchNorm], the rank of mean must be equal to 1, but got 0."),
    ("moving_variance", np.ones((1, 3), F32), False,
     "For primitive[BatchNorm], the rank of variance must be equal to 1, but got 2."),
    ("moving_mean", np.ones(2, F32), False,
     "For 'BatchNorm', 'scale', 'bias', 'mean', and 'variance' should have the same size "
     "during training, but got 3, 3, 2 and 3."),
    # MindSpore's training kernel reads and writes out of bounds here; bn3d raises as in
    # inference.
    ("moving_variance", np.ones(4, F32), True,
     "For 'BatchNorm', 'scale', 'bias', 'mean', and 'variance' should have the same size "
     "during training, but got 3, 3, 3 and 4."),
])
def test_resized_parameters_are_mindspores_errors(parameter, data_, training, message):
    cell = BatchNorm3d(3).set_train(training)
    getattr(cell, parameter).set_data(data_)
    before = values(cell)
    raises(ValueError, message, cell, data((2, 3, 2, 2, 2)))
    assert_same_values(before, values(cell))


def test_resizing_every_parameter_to_the_input_channels_works():
    cell = BatchNorm3d(3).set_train()
    for parameter in cell.get_parameters():
        parameter.set_data(np.full(4, 1.0, F32))
    x = data((2, 4, 2, 2, 2))
    assert max_relative_error(cell(x), reference_batch_norm(x, [1.0] * 4, [1.0] * 4)) < 2e-6


@pytest.mark.parametrize("name", ["moving_mean", "moving_variance"])
def test_a_read_only_moving_statistic_fails_the_call_and_changes_nothing(name):
    cell = _cell_with_state().set_train()
    getattr(cell, name).asnumpy().flags.writeable = False
    before = values(cell)
    with pytest.raises(ValueError, match=f"bn2d.{name} is read-only"):
        cell(data((2, 3, 2, 2, 2)))
    assert_same_values(before, values(cell))


# -- backward -------------------------------------------------------------------------------


def _reference_gradients(x, g, gamma, mean, var, eps, batch):
    """float64 gradients of y = (x - mean) / sqrt(var + eps) * gamma + beta."""
    xd, gd = np.asarray(x, F64), np.asarray(g, F64)
    shape = (1, -1, 1, 1, 1)
    invstd = 1 / np.sqrt(np.asarray(var, F64) + eps)
    xhat = (xd - np.reshape(mean, shape)) * invstd.reshape(shape)
    grad_gamma, grad_beta = (gd * xhat).sum(axis=AXES), gd.sum(axis=AXES)
    scale = np.reshape(gamma, shape) * invstd.reshape(shape)
    if batch:
        n = xd.size / xd.shape[1]
        grad_x = scale / n * (n * gd - grad_beta.reshape(shape)
                              - xhat * grad_gamma.reshape(shape))
    else:
        grad_x = gd * scale
    return grad_x, grad_gamma, grad_beta


@pytest.mark.parametrize("use_batch_statistics, training, batch", [
    (None, True, True), (None, False, False), (True, False, True), (False, True, False),
])
def test_backward_follows_the_statistics_of_the_call(use_batch_statistics, training, batch):
    cell = _cell_with_state(use_batch_statistics=use_batch_statistics).set_train(training)
    moving_mean, moving_var = (p.asnumpy().astype(F64) for p in list(cell.get_parameters())[:2])
    x, g = data((3, 3, 2, 3, 2)), data((3, 3, 2, 3, 2), seed=1)
    cell(x)
    grads = cell.backward(g)
    mean, var, _ = stats(x)
    if not batch:
        mean, var = moving_mean, moving_var
    eps = float(np.float32(1e-5))
    expected = _reference_gradients(x, g, [0.5, 2.0, -1.0], mean, var, eps, batch)
    assert len(grads) == len(expected) == 3
    for actual, reference in zip(grads, expected):
        assert actual.dtype == F32
        assert max_relative_error(actual, reference) < 1e-5


def test_backward_before_any_call_is_a_clear_error():
    with pytest.raises(RuntimeError, match="needs a call first"):
        BatchNorm3d(3).backward(np.ones((2, 3, 1, 1, 1), F32))


def test_backward_checks_the_gradients_shape_and_kind():
    cell = BatchNorm3d(3)
    cell(data((2, 3, 2, 2, 2)))
    with pytest.raises(ValueError, match="grad_output has shape"):
        cell.backward(np.ones((2, 3, 2, 2, 1), F32))
    with pytest.raises(TypeError, match="real numbers"):
        cell.backward(np.ones((2, 3, 2, 2, 2), np.complex64))


def test_backward_uses_gamma_as_it_was_at_the_call_and_may_be_repeated():
    cell = _cell_with_state().set_train()
    x, g = data((2, 3, 2, 2, 2)), data((2, 3, 2, 2, 2), seed=3)
    cell(x)
    first = cell.backward(g)
    cell.gamma.set_data(np.array([9.0, 9.0, 9.0], F32))
    for a, b in zip(first, cell.backward(g.astype(F64))):
        np.testing.assert_array_equal(a, b)


def test_backward_of_float16_data_keeps_the_dtypes():
    cell = BatchNorm3d(3, gamma_init=np.ones(3, F16), beta_init=np.zeros(3, F16),
                       moving_mean_init=np.zeros(3, F16), moving_var_init=np.ones(3, F16))
    x = data((2, 3, 2, 2, 2), F16)
    cell.set_train()(x)
    grad_x, grad_gamma, grad_beta = cell.backward(np.ones_like(x))
    assert grad_x.dtype == F16 and grad_gamma.dtype == F16 and grad_beta.dtype == F16


# -- threads and copies ---------------------------------------------------------------------


def test_concurrent_calls_give_the_serial_result(frequent_thread_switches):
    x = data((4, 3, 2, 3, 2))
    threads, calls = 6, 20
    serial = BatchNorm3d(3).set_train()
    for _ in range(threads * calls):
        serial(x)
    cell = BatchNorm3d(3).set_train()
    outputs, errors = [], []

    def work():
        try:
            for _ in range(calls):
                outputs.append(cell(x))
        except Exception as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert len(outputs) == threads * calls
    # Every call normalises with the same batch statistics; the moving statistics saw every call.
    assert all(np.array_equal(output, outputs[0]) for output in outputs)
    np.testing.assert_allclose(cell.moving_mean.asnumpy(), serial.moving_mean.asnumpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(cell.moving_variance.asnumpy(), serial.moving_variance.asnumpy(),
                               rtol=1e-6)


def test_set_data_during_concurrent_calls_never_corrupts_a_call(frequent_thread_switches):
    cell = BatchNorm3d(3).set_train()
    x = data((2, 3, 2, 2, 2))
    errors = []

    def call():
        try:
            for _ in range(200):
                cell(x)
        except Exception as error:  # reported below
            errors.append(error)

    worker = threading.Thread(target=call)
    worker.start()
    for value in range(200):
        cell.moving_mean.set_data(np.full(3, float(value), F32))
    worker.join()
    assert not errors
    assert np.isfinite(cell.moving_mean.asnumpy()).all()


def test_backward_pairs_with_the_calling_threads_call():
    cell = BatchNorm3d(3).set_train()
    x_main, x_other = data((2, 3, 2, 2, 2)), data((4, 3, 1, 1, 2), seed=5)
    cell(x_main)
    shapes = []

    def other_thread():
        cell(x_other)
        shapes.append(cell.backward(np.ones_like(x_other))[0].shape)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert shapes == [x_other.shape]
    assert cell.backward(np.ones_like(x_main))[0].shape == x_main.shape


def test_backward_racing_calls_in_other_threads_pairs_with_its_own_threads_call(
        frequent_thread_switches):
    threads, calls = 6, 20
    shape = (2, 3, 2, 3, 2)
    batches = [data(shape, seed=i, shift=i) for i in range(threads)]
    grads = [data(shape, seed=100 + i) for i in range(threads)]
    serial = BatchNorm3d(3, gamma_init=np.array([0.5, 1.0, 2.0], F32)).set_train()
    expected = [(serial(x), serial.backward(g)) for x, g in zip(batches, grads)]

    cell = BatchNorm3d(3, gamma_init=np.array([0.5, 1.0, 2.0], F32)).set_train()
    results = [[] for _ in range(threads)]
    failures = []
    start = threading.Barrier(threads)

    def hammer(i):
        try:
            start.wait()
            for _ in range(calls):
                output = cell(batches[i])
                results[i].append((output, cell.backward(grads[i])))
        except BaseException as error:  # surfaced below
            failures.append(error)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures
    for i, (output, gradients) in enumerate(expected):  # each thread saw its own call
        assert len(results[i]) == calls
        for got_output, got_gradients in results[i]:
            np.testing.assert_array_equal(got_output, output)
            for got, want in zip(got_gradients, gradients):
                np.testing.assert_array_equal(got, want)


class _GradientThatCallsMeanwhile:
    """A gradient which, while the backward reads it, has another thread call the cell."""

    def __init__(self, gradient, cell, x):
        self.gradient, self.cell, self.x = gradient, cell, x
        self.other_call_waited = None

    def __array__(self, dtype=None, copy=None):
        other = threading.Thread(target=self.cell, args=(self.x,))
        other.start()
        other.join(timeout=0.2)
        self.other_call_waited = other.is_alive()
        self.other = other
        return self.gradient


def test_a_call_in_another_thread_waits_for_a_backward():
    cell = BatchNorm3d(3).set_train()
    x = data((2, 3, 2, 2, 2))
    cell(x)
    gradient = _GradientThatCallsMeanwhile(np.ones_like(x), cell, x)
    cell.backward(gradient)
    gradient.other.join()
    assert gradient.other_call_waited


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda cell: pickle.loads(pickle.dumps(cell))])
def test_cells_can_be_copied_and_pickled(clone):
    cell = _cell_with_state().set_train()
    cell(data((2, 3, 2, 2, 2)))
    twin = clone(cell)
    assert repr(twin) == repr(cell)
    assert_same_values(values(cell), values(twin))
    x = data((2, 3, 2, 2, 2), seed=9)
    np.testing.assert_array_equal(twin(x), cell(x))
    assert_same_values(values(cell), values(twin))
    assert twin.moving_mean.asnumpy() is not cell.moving_mean.asnumpy()


# -- the words: MindSpore's messages live in bn3d._compat.mindspore -------------------------


def _names_raised(module, alias):
    """The error names a module passes to ``alias.error`` (both branches of a conditional
    name)."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "error" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == alias):
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


def test_every_mindspore_error_raised_is_in_the_table_and_every_entry_is_raised():
    import bn3d._mindspore.initializers as initializers
    import bn3d._mindspore.parameter as parameter
    import bn3d._mindspore.primitive as primitive
    import bn3d.mindspore_nn
    from bn3d._compat import mindspore as words

    raised = set().union(*(_names_raised(module, "_ms") for module in
                           (bn3d.mindspore_nn, parameter, initializers, primitive)))
    # The initialisers that cannot fill a 1-D parameter raise the error their name maps to.
    raised |= set(initializers._NAMED_FOR_MORE_DIMENSIONS.values())
    assert raised == set(words.ERRORS)
    assert words.VERSION == "2.10.0"


@pytest.mark.parametrize("name", ["bn3d._compat.mindspore", "bn3d._mindspore.parameter",
                                  "bn3d._mindspore.initializers", "bn3d._mindspore.primitive"])
def test_docstring_examples_of_the_mindspore_helpers_run(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
