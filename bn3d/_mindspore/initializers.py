"""MindSpore's initialisers (``mindspore.common.initializer``) for 1-D parameters.

:func:`initializer` turns what ``mindspore.nn.BatchNorm3d`` accepts as
``gamma_init`` & co. into a numpy array: a name (looked up case-insensitively),
a number, a tensor of the right shape, or an :class:`Initializer` object.

The random initialisers draw from one numpy ``Generator`` that :func:`set_seed`
re-seeds, so a seed makes them reproducible. They follow MindSpore's
distributions, but the numbers differ from MindSpore's own random generator.
MindSpore's messages come from :mod:`bn3d._compat.mindspore`.
"""

from __future__ import annotations

import abc
import math
import numbers
import threading
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np

from .._compat import mindspore as _ms
from .._compat import numpy_dtype
from .parameter import tensor_data

__all__ = [
    "Constant",
    "Initializer",
    "Normal",
    "One",
    "TruncatedNormal",
    "Uniform",
    "Zero",
    "get_seed",
    "initializer",
    "resolve_dtype",
    "set_seed",
]

_random_lock = threading.Lock()
_generator = np.random.default_rng()
_global_seed: int | None = None


def set_seed(seed: int) -> None:
    """Seed the random initialisers, as ``mindspore.set_seed`` does.

    After ``set_seed(s)``, the same sequence of random initialisations gives
    the same numbers. They are not MindSpore's numbers (its generator differs),
    and numpy's global random state is left alone.

    Parameters
    ----------
    seed : int
        In ``[0, 2**32 - 1]``.

    Raises
    ------
    TypeError, ValueError
        For a seed that is not an int, is a bool, is negative or is too large
        (MindSpore's messages).

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, set_seed
    >>> set_seed(1234)
    >>> first = BatchNorm3d(3, gamma_init="normal").gamma.asnumpy().copy()
    >>> set_seed(1234)
    >>> bool((BatchNorm3d(3, gamma_init="normal").gamma.asnumpy() == first).all())
    True
    """
    global _generator, _global_seed
    if not isinstance(seed, int):
        raise _ms.error("seed_type", type=type(seed))
    if isinstance(seed, bool) or seed < 0:
        raise _ms.error("seed_bool" if isinstance(seed, bool) else "seed_negative", seed=seed,
                        type=type(seed).__name__)
    if seed > 2**32 - 1:
        raise _ms.error("seed_too_large")
    with _random_lock:
        _generator = np.random.default_rng(seed)
        _global_seed = seed


def get_seed() -> int | None:
    """The seed given to :func:`set_seed` (None if it was never called), as ``mindspore.get_seed``.

    Returns
    -------
    int or None

    Examples
    --------
    >>> from bn3d.mindspore_nn import get_seed, set_seed
    >>> set_seed(7)
    >>> get_seed()
    7
    """
    return _global_seed


def _draw(method: str, *args: Any, size: tuple[int, ...]) -> np.ndarray:
    """Call ``method`` of the shared generator (thread-safe)."""
    with _random_lock:
        values: np.ndarray = getattr(_generator, method)(*args, size=size)
    return values


class Initializer(abc.ABC):
    """Base class of the initialisers: an initialiser fills an array in place.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.mindspore_nn import One
    >>> values = np.zeros(2, np.float32)
    >>> One()(values)
    >>> values
    array([1., 1.], dtype=float32)
    """

    def __call__(self, arr: np.ndarray) -> None:
        self._initialize(arr)

    @abc.abstractmethod
    def _initialize(self, arr: np.ndarray) -> None:
        """Fill ``arr`` in place."""


class Zero(Initializer):
    """Fills with 0 (names ``'zeros'``, ``'zero'``).

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, Zero
    >>> BatchNorm3d(2, gamma_init=Zero()).gamma.asnumpy()
    array([0., 0.], dtype=float32)
    """

    def _initialize(self, arr: np.ndarray) -> None:
        arr.fill(0)


class One(Initializer):
    """Fills with 1 (names ``'ones'``, ``'one'``).

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, One
    >>> BatchNorm3d(2, beta_init=One()).beta.asnumpy()
    array([1., 1.], dtype=float32)
    """

    def _initialize(self, arr: np.ndarray) -> None:
        arr.fill(1)


class Constant(Initializer):
    """Fills with ``value`` (what a number given as an initialiser means).

    Parameters
    ----------
    value : number

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, Constant
    >>> BatchNorm3d(2, moving_var_init=Constant(4)).moving_variance.asnumpy()
    array([4., 4.], dtype=float32)
    """

    def __init__(self, value: Any) -> None:
        self.value = value

    def _initialize(self, arr: np.ndarray) -> None:
        arr.fill(self.value)


class Normal(Initializer):
    """Samples N(mean, sigma**2) (name ``'normal'``).

    Parameters
    ----------
    sigma : float, default 0.01
        The standard deviation; negative raises ``ValueError('sigma < 0')``
        when the initialiser is used, as in MindSpore.
    mean : float, default 0.0

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, Normal
    >>> gamma = BatchNorm3d(1000, gamma_init=Normal(sigma=0.5, mean=1.0)).gamma.asnumpy()
    >>> bool(abs(gamma.mean() - 1.0) < 0.1 and abs(gamma.std() - 0.5) < 0.1)
    True
    """

    def __init__(self, sigma: float = 0.01, mean: float = 0.0) -> None:
        self.sigma = sigma
        self.mean = mean

    def _initialize(self, arr: np.ndarray) -> None:
        if self.sigma < 0:
            raise _ms.error("sigma_negative")
        arr[...] = _draw("normal", self.mean, self.sigma, size=arr.shape)


class Uniform(Initializer):
    """Samples U(-scale, scale) (name ``'uniform'``).

    Parameters
    ----------
    scale : float, default 0.07

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, Uniform
    >>> beta = BatchNorm3d(100, beta_init=Uniform(0.5)).beta.asnumpy()
    >>> bool(abs(beta).max() <= 0.5)
    True
    """

    def __init__(self, scale: float = 0.07) -> None:
        self.scale = scale

    def _initialize(self, arr: np.ndarray) -> None:
        arr[...] = _draw("uniform", -self.scale, self.scale, size=arr.shape)


class TruncatedNormal(Initializer):
    """Samples N(mean, sigma**2) restricted to ``[a, b]`` (name ``'truncatedNormal'``).

    ``a`` and ``b`` bound the values themselves (not in units of sigma), as in
    MindSpore: with the defaults the truncation at +-2 never happens.

    Parameters
    ----------
    sigma : float, default 0.01
        Negative raises ``ValueError('sigma < 0')`` when used, as in MindSpore.
    mean : float, default 0.0
    a, b : float, default -2.0 and 2.0

    Examples
    --------
    >>> from bn3d.mindspore_nn import BatchNorm3d, TruncatedNormal
    >>> gamma = BatchNorm3d(100, gamma_init=TruncatedNormal(sigma=1.0, a=-0.5, b=0.5)).gamma
    >>> bool(abs(gamma.asnumpy()).max() <= 0.5)
    True
    """

    def __init__(self, sigma: float = 0.01, mean: float = 0.0, a: float = -2.0,
                 b: float = 2.0) -> None:
        self.sigma = sigma
        self.mean = mean
        self.a = a
        self.b = b

    def _initialize(self, arr: np.ndarray) -> None:
        if self.sigma < 0:
            raise _ms.error("sigma_negative")
        arr[...] = _truncated_normal(float(self.mean), float(self.sigma), float(self.a),
                                     float(self.b), arr.shape)


def _truncated_normal(mean: float, sigma: float, a: float, b: float,
                      shape: tuple[int, ...]) -> np.ndarray:
    """Inverse-CDF sampling of N(mean, sigma**2) restricted to [a, b] (never loops)."""
    if sigma == 0:
        return np.full(shape, min(max(mean, a), b))
    # Sample an interval that lies above the mean as its mirror image below the
    # mean, where the CDF (computed with erfc) keeps its relative precision.
    mirrored = (a + b) / 2 > mean
    if mirrored:
        mean, a, b = -mean, -b, -a
    distribution = NormalDist(mean, sigma)

    def cdf(value: float) -> float:
        return 0.5 * math.erfc((mean - value) / (sigma * math.sqrt(2.0)))

    low, high = cdf(a), cdf(b)
    if not high > low:  # no representable mass: it all sits at the bound nearest the mean
        values = np.full(shape, b)
    else:
        uniform = _draw("uniform", low, high, size=shape)
        values = np.array([distribution.inv_cdf(p) if p > 0 else a for p in uniform.flat])
        values = np.clip(values, a, b).reshape(shape)
    return -values if mirrored else values


class _NeedsMoreDimensions(Initializer):
    """A MindSpore initialiser that cannot fill a 1-D array: raises its error when used."""

    def __init__(self, error_name: str) -> None:
        self.error_name = error_name

    def _initialize(self, arr: np.ndarray) -> None:
        raise _ms.error(self.error_name)


# The names MindSpore registers for initialisers that can fill a 1-D array, lowercased.
_NAMED: dict[str, Callable[[], Initializer]] = {
    "zeros": Zero, "zero": Zero, "ones": One, "one": One,
    "normal": Normal, "uniform": Uniform, "truncatednormal": TruncatedNormal,
}
# The other names MindSpore registers, lowercased, with the error each raises for a 1-D array.
_NAMED_FOR_MORE_DIMENSIONS = {
    "xavier_normal": "fan_in_and_fan_out", "xaviernormal": "fan_in_and_fan_out",
    "xavier_uniform": "fan_in_and_fan_out", "xavieruniform": "fan_in_and_fan_out",
    "he_normal": "fan_in_and_fan_out", "henormal": "fan_in_and_fan_out",
    "he_uniform": "fan_in_and_fan_out", "heuniform": "fan_in_and_fan_out",
    "variancescaling": "fan_in_and_fan_out",
    "identity": "identity_dimensions",
    "orthogonal": "orthogonal_dimensions",
    "dirac": "dirac_dimensions",
}


def _named_initializer(init: str) -> Initializer:
    """The initialiser a name stands for, raising MindSpore's errors in MindSpore's order."""
    name = init.lower()
    if name in _NAMED:
        return _NAMED[name]()
    if name in _NAMED_FOR_MORE_DIMENSIONS:
        return _NeedsMoreDimensions(_NAMED_FOR_MORE_DIMENSIONS[name])
    if name == "sparse":  # MindSpore fails to construct it without its 'sparsity' argument
        raise _ms.error("sparse_without_sparsity")
    raise _ms.error("initializer_not_found", name=init)


def resolve_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype from a numpy dtype-like or a MindSpore dtype (``mindspore.float16``).

    Parameters
    ----------
    dtype : numpy dtype-like or MindSpore dtype

    Returns
    -------
    numpy.dtype
        A boolean, integer, float or complex dtype.

    Raises
    ------
    TypeError
        For anything else.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._mindspore.initializers import resolve_dtype
    >>> resolve_dtype(np.float16), resolve_dtype("float32")
    (dtype('float16'), dtype('float32'))
    """
    resolved = numpy_dtype(dtype, "mindspore")
    if resolved is None or resolved.kind not in "biufc":
        raise TypeError(f"For 'Tensor', the 'dtype' should be a numeric numpy dtype or a "
                        f"MindSpore dtype, but got {dtype!r}.")
    return resolved


def initializer(init: Any, shape: int, dtype: Any) -> np.ndarray:
    """A new (shape,) array initialised by ``init``, as MindSpore's ``initializer``.

    Parameters
    ----------
    init : str, number, tensor or Initializer
        A name (case-insensitive: ``'ones'``/``'one'``, ``'zeros'``/``'zero'``,
        ``'normal'``, ``'uniform'``, ``'truncatedNormal'``), a number (a
        :class:`Constant`), a tensor of shape ``(shape,)`` (copied, keeping its
        own dtype) or an :class:`Initializer`.
    shape : int
        The length of the array.
    dtype : numpy dtype-like or MindSpore dtype
        The array's dtype when ``init`` is not a tensor.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError, ValueError
        MindSpore's errors: an unsupported type, an unknown name, a tensor of
        another shape, a name that needs more dimensions (``'xavier_uniform'``).

    Examples
    --------
    >>> from bn3d._mindspore.initializers import initializer
    >>> initializer("One", 3, "float32")
    array([1., 1., 1.], dtype=float32)
    >>> initializer(2.5, 2, "float16")
    array([2.5, 2.5], dtype=float16)
    """
    tensor = tensor_data(init)
    if tensor is not None:
        if tensor.shape != (shape,):
            raise _ms.error("initializer_shape", init_shape=list(tensor.shape), shape=[shape])
        if tensor.dtype.kind not in "biufc":
            raise TypeError(f"For 'initializer', the dtype of the 'init' tensor should be "
                            f"numeric, but got {tensor.dtype}.")
        return np.array(tensor)
    if not isinstance(init, (numbers.Number, str, Initializer)):
        raise _ms.error("initializer_type", type=type(init))
    if isinstance(init, str):
        init = _named_initializer(init)
    elif isinstance(init, numbers.Number):
        init = Constant(init)
    arr = np.zeros(shape, dtype=resolve_dtype(dtype))
    init(arr)
    return arr
