"""MindSpore's BatchNorm primitive (``mindspore.ops.BatchNorm``) on numpy arrays.

This is to the MindSpore dialect what :mod:`bn3d.functional` is to the PyTorch
one: :func:`batch_norm` checks a call as MindSpore 2.10's primitive does, in its
order and with its messages (from :mod:`bn3d._compat.mindspore`), then
normalises through :func:`bn3d._core.batch_norm`. The cell,
:class:`bn3d.mindspore_nn.BatchNorm3d`, decides which statistics a call uses and
hands this its parameters' arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .._compat import mindspore as _ms

__all__ = ["PARAMETER_NAMES", "batch_norm"]

Array = np.ndarray

# The primitive's parameter inputs, in the order it names and checks them.
PARAMETER_NAMES = ("scale", "bias", "mean", "variance")
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32))
# Implicit type promotion between parameters: any number type beats bool and the integers.
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _float32(value: Any) -> np.float32:
    with np.errstate(over="ignore"):
        return np.float32(value)


def _check_epsilon_type(epsilon: Any) -> None:
    if not isinstance(epsilon, (float, np.floating)):
        raise _ms.error("failed_calling_batch_norm",
                        epsilon_type=_ms.signature_type_name(epsilon))


def _promoted(first: np.dtype, second: np.dtype) -> np.dtype:
    rank_first, rank_second = _KIND_RANK[first.kind], _KIND_RANK[second.kind]
    if rank_first != rank_second and min(rank_first, rank_second) < 2:
        return first if rank_first > rank_second else second
    return np.promote_types(first, second)


def _check_convertible(first: np.dtype, second: np.dtype) -> None:
    """The training primitive wants each pair (scale, bias), (mean, variance) of one dtype,
    and refuses to convert a Parameter to the promoted one."""
    if first == second:
        return
    target = _promoted(first, second)
    source = first if first != target else second
    raise _ms.error("parameter_conversion", source=_ms.type_name(source),
                    target=_ms.type_name(target))


def _check_call(x: Array, parameters: dict[str, Array], is_training: bool, epsilon: Any,
                momentum: float) -> None:
    """Raise what the primitive raises for this call, in its order."""
    _check_epsilon_type(epsilon)
    if is_training:
        _check_convertible(parameters["scale"].dtype, parameters["bias"].dtype)
        _check_convertible(parameters["mean"].dtype, parameters["variance"].dtype)
    epsilon32 = _float32(epsilon)
    if not 0 < epsilon32 <= 1:
        raise _ms.error("primitive_eps_range", eps=_ms.cpp_float(epsilon32))
    if is_training and not 0 <= momentum <= 1:
        raise _ms.error("primitive_momentum_range", momentum=_ms.cpp_float(momentum))
    for name, array in parameters.items():
        if array.ndim != 1:
            raise _ms.error("parameter_rank", name=name, ndim=array.ndim)
    scale_size, bias_size, mean_size, variance_size = (a.shape[0] for a in parameters.values())
    if scale_size != bias_size:
        raise _ms.error("scale_bias_sizes", scale=scale_size, bias=bias_size)
    if scale_size != x.shape[1]:
        raise _ms.error("scale_channels", channels=x.shape[1], scale=scale_size)
    if not scale_size == mean_size == variance_size:
        raise _ms.error("training_sizes", scale=scale_size, bias=bias_size, mean=mean_size,
                        variance=variance_size)
    if x.dtype not in _FLOATS:
        raise _ms.error("input_dtype", type=_ms.type_name(x.dtype))
    if len({array.dtype for array in parameters.values()}) > 1:
        raise _ms.error("parameter_types_differ", parameters=_ms.parameter_types(
            {name: array.dtype for name, array in parameters.items()}))
    if parameters["bias"].dtype not in _FLOATS:
        raise _ms.error("bias_dtype", type=_ms.type_name(parameters["bias"].dtype))


def batch_norm(
    x: Array,
    scale: Array,
    bias: Array,
    mean: Array,
    variance: Array,
    *,
    is_training: bool,
    epsilon: Any,
    momentum: float,
    moving_names: tuple[str, str] = ("mean", "variance"),
) -> tuple[Array, Array, Array]:
    """``BatchNorm(is_training, epsilon, momentum)(x, scale, bias, mean, variance)``.

    With ``is_training``, the batch statistics normalise and update ``mean``
    and ``variance`` in place: ``r = (1 - momentum) * r + momentum * batch``
    (the primitive's momentum is torch's), with the unbiased batch variance; as
    MindSpore 2.10's CPU kernel, only float32 ones are updated. Otherwise
    ``mean`` and ``variance`` normalise.

    Parameters
    ----------
    x : numpy.ndarray
        Data of shape ``(N, C, *)``, float16 or float32.
    scale, bias, mean, variance : numpy.ndarray
        The parameters' own arrays, shape (C,), of one float16 or float32 dtype.
    is_training : bool
    epsilon : float
        Checked as the primitive checks it (a float in (0, 1] as float32).
    momentum : float
        In [0, 1] when training.
    moving_names : tuple of str, optional
        The names of ``mean`` and ``variance`` in bn3d's error for a read-only array.

    Returns
    -------
    output : numpy.ndarray
        In ``x``'s dtype.
    save_mean, save_invstd : numpy.ndarray
        float64, shape (C,): the statistics that normalised.

    Raises
    ------
    TypeError, ValueError
        MindSpore's errors, in its order. Nothing is modified when it raises.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._mindspore.primitive import batch_norm
    >>> x = np.array([1.0, 3.0], np.float32).reshape(2, 1, 1)
    >>> mean, variance = np.zeros(1, np.float32), np.ones(1, np.float32)
    >>> output, _, _ = batch_norm(x, np.ones(1, np.float32), np.zeros(1, np.float32), mean,
    ...                           variance, is_training=True, epsilon=1e-5, momentum=0.1)
    >>> output.ravel()
    array([-0.999995,  0.999995], dtype=float32)
    >>> mean, variance
    (array([0.2], dtype=float32), array([1.1], dtype=float32))
    >>> batch_norm(x, np.ones(1, np.float32), np.zeros(1, np.float32), mean, variance,
    ...            is_training=False, epsilon=2.0, momentum=0.1)
    Traceback (most recent call last):
    ValueError: For primitive[BatchNorm], the eps must be in (0,1], but got 2.
    """
    parameters = dict(zip(PARAMETER_NAMES, (scale, bias, mean, variance)))
    _check_call(x, parameters, is_training, epsilon, momentum)
    # MindSpore 2.10's CPU kernel updates float32 moving statistics only: with
    # float16 parameters it normalises with the batch statistics and leaves
    # the moving ones as they were.
    updates = is_training and mean.dtype == np.float32
    if updates:  # checked now: a call that raises changes nothing
        _core.check_writable(mean, moving_names[0])
        _core.check_writable(variance, moving_names[1])
    return _core.batch_norm(
        x, scale, bias, float(_float32(epsilon)), use_batch_stats=is_training,
        running_mean=mean, running_var=variance, momentum=momentum if updates else None)
