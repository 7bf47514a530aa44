"""Batch normalisation on numpy arrays, with :mod:`torch.nn.functional` semantics.

This module checks and prepares arguments, chooses the kernel, and updates
running statistics; every number is computed in :mod:`bn3d._kernels`.

Arrays of shape ``(N, C, *)`` of any rank >= 2 are accepted, so the same
functions serve 1D, 2D and 3D batch normalisation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from ._arrays import as_array
from ._cache import configure_streaming
from ._threads import threads_for

__all__ = [
    "BatchStats",
    "as_array",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_stats",
    "native_batch_norm",
]

ArrayLike = Any
Array = np.ndarray

# torch's names for the scalar types it refuses ('"batch_norm" not implemented for ...').
_TORCH_TYPE_NAMES = {
    np.dtype(np.bool_): "Bool",
    np.dtype(np.uint8): "Byte",
    np.dtype(np.int8): "Char",
    np.dtype(np.int16): "Short",
    np.dtype(np.int32): "Int",
    np.dtype(np.int64): "Long",
    np.dtype(np.uint16): "UInt16",
    np.dtype(np.uint32): "UInt32",
    np.dtype(np.uint64): "UInt64",
    np.dtype(np.float16): "Half",
    np.dtype(np.float32): "Float",
    np.dtype(np.float64): "Double",
    np.dtype(np.complex64): "ComplexFloat",
    np.dtype(np.complex128): "ComplexDouble",
}
_FLOAT16, _FLOAT32, _FLOAT64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_FLOATS = (_FLOAT16, _FLOAT32, _FLOAT64)
_PARAMETER_NAMES = ("running_mean", "running_var", "weight", "bias")

configure_streaming()


class BatchStats(NamedTuple):
    """Per-channel statistics of a batch, all float64 arrays of shape (C,)."""

    mean: Array
    """The batch mean."""
    invstd: Array
    """``1 / sqrt(biased variance + eps)``."""
    var: Array
    """The unbiased variance (``sum((x - mean)**2) / (n - 1)``)."""


def _torch_type_name(dtype: np.dtype) -> str:
    return _TORCH_TYPE_NAMES.get(dtype, str(dtype))


def _torch_size(shape: tuple[int, ...]) -> str:
    return "torch.Size([{}])".format(", ".join(str(d) for d in shape))


def _check_rank(x: Array) -> None:
    if x.ndim < 2:
        raise ValueError(
            f"expected an input of shape (N, C, *) with at least 2 dimensions, got {x.ndim}D input"
        )


def _parameter_arrays(
    x: Array,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    training: bool,
    affine_any_shape: bool,
) -> tuple[Array | None, Array | None, Array | None, Array | None]:
    """Check the parameters against ``x`` in torch's order.

    Each parameter holds one value per channel. The running statistics must be
    1-D; so must the weight unless ``affine_any_shape`` (torch's forwards accept
    a weight and bias of any shape, its backward only a 1-D weight).

    Returns ``(running_mean, running_var, weight, bias)`` as 1-D arrays, None
    where not given.
    """
    if not training:
        for name, value in (("running_mean", running_mean), ("running_var", running_var)):
            if value is None:
                raise RuntimeError(f"{name} must be defined in evaluation mode")
    arrays = [
        None if running_mean is None else as_array(running_mean),
        None if running_var is None else as_array(running_var),
        None if weight is None else as_array(weight),
        None if bias is None else as_array(bias),
    ]
    expected = x.shape[1:2]
    for i, array in enumerate(arrays):
        if array is not None and array.shape != expected:
            name = _PARAMETER_NAMES[i]
            if array.size != expected[0]:
                raise RuntimeError(f"{name} should contain {expected[0]} elements not {array.size}")
            if not (affine_any_shape and name in ("weight", "bias")):
                raise RuntimeError(f"TensorAccessor expected 1 dims but tensor has {array.ndim}")
            arrays[i] = array.reshape(expected)
    if (arrays[0] is None) != (arrays[1] is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if x.dtype not in _FLOATS:
        raise NotImplementedError(
            f"\"batch_norm\" not implemented for '{_torch_type_name(x.dtype)}'"
        )
    # torch's order: weight, bias, running_mean, running_var.
    defined = [array for array in (arrays[2], arrays[3], arrays[0], arrays[1]) if array is not None]
    if {array.dtype for array in defined} - {x.dtype}:
        _check_parameter_dtypes(x, defined)
    return arrays[0], arrays[1], arrays[2], arrays[3]


def _check_parameter_dtypes(x: Array, defined: list[Array]) -> None:
    """torch's CPU rule: parameters share the input's dtype, or are all float32
    beside a float16 input ("mixed" precision).

    ``defined`` holds the parameters given, in the order weight, bias,
    running_mean, running_var.
    """
    if defined[0].dtype != x.dtype:  # mixed: the first defined parameter decides
        if any(array.dtype != np.float32 for array in defined):
            raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        if x.dtype != np.float16:
            raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
        return
    for array in defined:
        if array.dtype != x.dtype:
            raise RuntimeError(
                f"expected scalar type {_torch_type_name(x.dtype)} "
                f"but found {_torch_type_name(array.dtype)}"
            )


def _check_momentum(momentum: Any) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.floating)):
        raise TypeError(
            "batch_norm(): argument 'momentum' (position 7) must be float, "
            f"not {type(momentum).__name__}"
        )
    return float(momentum)


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32."""
    return _FLOAT32 if dtype == _FLOAT16 else dtype


def _shape_3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return shape[0], shape[1], math.prod(shape[2:])


def _as_3d(x: Array, dtype: np.dtype, shape_3d: tuple[int, int, int]) -> Array:
    """``x`` as an array of ``shape_3d`` (N, C, L) and ``dtype`` with unit stride along L.

    A view where the strides allow it, a copy otherwise.
    """
    view = x.astype(dtype, copy=False).reshape(shape_3d)
    if view.shape[2] > 1 and view.strides[2] != view.itemsize:
        view = np.ascontiguousarray(view)
    return view


def _output_3d(
    out: Array | None, x: Array, dtype: np.dtype, shape_3d: tuple[int, int, int]
) -> tuple[Array, Array]:
    """Return (the array handed back, the ``shape_3d`` array the kernel writes)."""
    if out is None:
        result = np.empty(x.shape, dtype=x.dtype)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
        if out.shape != x.shape or out.dtype != x.dtype:
            raise ValueError(
                f"out must have the input's shape {x.shape} and dtype {x.dtype}, "
                f"got shape {out.shape} and dtype {out.dtype}"
            )
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        result = out
    target = result.reshape(shape_3d)
    if target.dtype != dtype:  # float16: the kernel writes float32, copied into result after
        target = np.empty(target.shape, dtype=dtype)
    return result, target


def _per_channel(array: Array | None, channels: int, default: float) -> Array:
    """A parameter as a contiguous float64 array; ``default`` where it is None."""
    if array is None:
        return np.full(channels, default)
    return array.astype(_FLOAT64, order="C", copy=False)


def _finish_output(result: Array, target: Array) -> Array:
    """The output; float16 results are rounded from the float32 the kernel wrote."""
    if target.dtype != result.dtype:
        result.reshape(target.shape)[...] = target
    return result


def native_batch_norm(
    input: ArrayLike,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    training: bool,
    momentum: float,
    eps: float,
    *,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Batch normalisation returning the statistics it used (``torch.native_batch_norm``).

    Unlike :func:`batch_norm`, this does not check ``eps`` nor that a channel
    holds more than one value when training.

    Parameters
    ----------
    input : array_like
        Data of shape ``(N, C, *)``, float16, float32 or float64.
    weight, bias : array_like of C elements (of any shape) or None
        Affine parameters; None means ones and zeros.
    running_mean, running_var : array_like of shape (C,) or None
        Running statistics. When ``training``, they are updated in place (if
        given) as ``r = (1 - momentum) * r + momentum * batch``, with the
        unbiased batch variance; an empty batch leaves them unchanged. When not
        ``training`` they normalise and are required.
    training : bool
        Normalise with the batch statistics (True) or the running ones (False).
    momentum : float
        The weight of the batch in the running statistics' update.
    eps : float
        Added to the variance before its square root.
    out : numpy.ndarray, optional
        A C-contiguous array of the input's shape and dtype to write the
        output into (it may be the input itself).

    Returns
    -------
    output : numpy.ndarray
        The normalised data, in the input's dtype (float16 is computed in float32).
    save_mean, save_invstd : numpy.ndarray
        float64 arrays of shape (C,): the mean and ``1 / sqrt(var + eps)`` that
        normalised (batch or running), for :func:`batch_norm_backward`.

    Raises
    ------
    RuntimeError, NotImplementedError, ValueError, TypeError
        With PyTorch's types and messages. Nothing is modified when it raises.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.functional import native_batch_norm
    >>> x = np.array([[[1.0, 3.0]], [[5.0, 7.0]]])           # N=2, C=1, L=2
    >>> y, mean, invstd = native_batch_norm(x, None, None, None, None, True, 0.1, 0.0)
    >>> y.ravel(), mean
    (array([-1.34164079, -0.4472136 ,  0.4472136 ,  1.34164079]), array([4.]))
    """
    momentum = _check_momentum(momentum)
    x = as_array(input)
    _check_rank(x)
    running_mean, running_var, weight, bias = _parameter_arrays(
        x, running_mean, running_var, weight, bias, training, affine_any_shape=True)
    eps = float(eps)
    dtype = _compute_dtype(x.dtype)
    shape_3d = _shape_3d(x.shape)
    channels = shape_3d[1]
    x3 = _as_3d(x, dtype, shape_3d)
    result, target = _output_3d(out, x, dtype, shape_3d)
    weight64 = _per_channel(weight, channels, 1.0)
    bias64 = _per_channel(bias, channels, 0.0)
    threads = threads_for(x.size)
    invstd = np.empty(channels)
    if training:
        mean = np.empty(channels)
        var_unbiased = np.empty(channels)
        _kernels.train_forward(x3, target, weight64, bias64, eps, mean, invstd, var_unbiased,
                               threads)
        if running_mean is not None and x.size > 0:
            _update_running(running_mean, running_var, mean, var_unbiased, momentum)
    else:
        mean = _per_channel(running_mean, channels, 0.0)
        var = _per_channel(running_var, channels, 1.0)
        _kernels.eval_forward(x3, target, mean, var, weight64, bias64, eps, invstd, threads)
    return _finish_output(result, target), mean, invstd


def _update_running(running_mean: Array, running_var: Array, mean: Array, var_unbiased: Array,
                    momentum: float) -> None:
    new_mean = np.array(running_mean, dtype=np.float64)
    new_var = np.array(running_var, dtype=np.float64)
    _kernels.update_running_stats(new_mean, new_var, mean, var_unbiased, momentum)
    running_mean[...] = new_mean
    running_var[...] = new_var


def batch_norm(
    input: ArrayLike,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-05,
    *,
    out: Array | None = None,
    return_stats: bool = False,
) -> Any:
    """Batch normalisation of ``(N, C, *)`` data, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, with the
    batch's mean and biased variance when ``training`` and the running ones
    otherwise.

    Parameters
    ----------
    input : array_like
        Data of shape ``(N, C, *)``, float16, float32 or float64 (numpy, or
        anything with ``__array__`` or ``__dlpack__``).
    running_mean, running_var : array_like of shape (C,) or None
        Running statistics, updated in place when ``training``:
        ``r = (1 - momentum) * r + momentum * batch`` with the unbiased batch
        variance. Required when not ``training``.
    weight, bias : array_like of C elements (of any shape), optional
        Affine parameters (ones and zeros when None).
    training : bool, default False
        Use (and track) batch statistics.
    momentum : float, default 0.1
        The weight of the batch in the running statistics' update.
    eps : float, default 1e-05
        Added to the variance; must be positive when training and
        non-negative otherwise.
    out : numpy.ndarray, optional
        A C-contiguous array of the input's shape and dtype to write into.
    return_stats : bool, default False
        Also return the float64 mean and ``1 / sqrt(var + eps)`` that
        normalised, to pass to :func:`batch_norm_backward`.

    Returns
    -------
    numpy.ndarray or tuple
        The output in the input's dtype, or ``(output, save_mean, save_invstd)``.

    Raises
    ------
    ValueError, RuntimeError, NotImplementedError, TypeError
        PyTorch's errors, with its messages, checked in its order. Nothing is
        modified when it raises.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d import batch_norm
    >>> x = np.array([[[[[0.1, 0.2], [0.3, 0.4]]], [[[0.9, 1.0], [1.1, 1.2]]]]], np.float32)
    >>> running_mean, running_var = np.zeros(2, np.float32), np.ones(2, np.float32)
    >>> y = batch_norm(x, running_mean, running_var, training=True)
    >>> y[0, 0].ravel()
    array([-1.3411044 , -0.44703484,  0.44703484,  1.3411044 ], dtype=float32)
    >>> running_mean, running_var
    (array([0.025, 0.105], dtype=float32), array([0.90166664, 0.90166664], dtype=float32))
    """
    x = as_array(input)
    _check_rank(x)
    if training:
        _verify_batch_size(x.shape)
        if not eps > 0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif not eps >= 0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    result = native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum,
                               eps, out=out)
    return result if return_stats else result[0]


def _verify_batch_size(shape: tuple[int, ...]) -> None:
    batch, _, length = _shape_3d(shape)
    if batch * length == 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input size {_torch_size(shape)}"
        )


def batch_norm_stats(input: ArrayLike, eps: float = 1e-05) -> BatchStats:
    """Per-channel batch statistics of ``(N, C, *)`` data.

    Bitwise equal to the statistics a training :func:`batch_norm` computes.

    Parameters
    ----------
    input : array_like
        Data of shape ``(N, C, *)``, float16, float32 or float64.
    eps : float, default 1e-05
        Added to the biased variance in ``invstd``.

    Returns
    -------
    BatchStats
        ``(mean, invstd, var)`` with the unbiased variance; float64, shape (C,).

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.functional import batch_norm_stats
    >>> batch_norm_stats(np.array([[[1.0, 3.0]], [[5.0, 7.0]]]), eps=0.0)
    BatchStats(mean=array([4.]), invstd=array([0.4472136]), var=array([6.66666667]))
    """
    x = as_array(input)
    _check_rank(x)
    if x.dtype not in _FLOATS:
        raise NotImplementedError(
            f"\"batch_norm\" not implemented for '{_torch_type_name(x.dtype)}'"
        )
    channels = x.shape[1]
    stats = BatchStats(np.empty(channels), np.empty(channels), np.empty(channels))
    x3 = _as_3d(x, _compute_dtype(x.dtype), _shape_3d(x.shape))
    _kernels.batch_stats(x3, float(eps), stats.mean, stats.invstd, stats.var, threads_for(x.size))
    return stats


def batch_norm_backward(
    grad_output: ArrayLike,
    input: ArrayLike,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    weight: ArrayLike | None = None,
    training: bool = False,
    eps: float = 1e-05,
    *,
    save_mean: ArrayLike | None = None,
    save_invstd: ArrayLike | None = None,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`batch_norm` with respect to its input, weight and bias.

    With ``xhat = (x - mean) * invstd`` and ``n`` values per channel:

    - training (batch statistics):
      ``grad_input = weight * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat))``;
    - otherwise (fixed running statistics): ``grad_input = g * weight * invstd``;
    - in both, ``grad_weight = sum(g * xhat)`` and ``grad_bias = sum(g)``.

    Parameters
    ----------
    grad_output : array_like
        The gradient of the loss with respect to the output; the input's shape.
    input : array_like
        The forward's input.
    running_mean, running_var : array_like of shape (C,) or None
        The statistics that normalised when not ``training`` (unused otherwise).
    weight : array_like of shape (C,), optional
        The forward's weight (ones when None).
    training : bool, default False
        Whether the forward normalised with batch statistics.
    eps : float, default 1e-05
        The forward's eps.
    save_mean, save_invstd : array_like of shape (C,), optional
        The statistics returned by the forward (``return_stats=True``); when
        given they are used instead of being recomputed.

    Returns
    -------
    grad_input : numpy.ndarray
        In the input's dtype.
    grad_weight, grad_bias : numpy.ndarray
        Shape (C,), in the weight's dtype (the compute dtype when ``weight`` is None).

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.functional import batch_norm_backward
    >>> x = np.array([[[1.0, 3.0]], [[5.0, 7.0]]])
    >>> g = np.array([[[1.0, 0.0]], [[0.0, 0.0]]])
    >>> gx, gw, gb = batch_norm_backward(g, x, None, None, training=True, eps=0.0)
    >>> gx.ravel(), gw, gb
    (array([ 0.13416408, -0.17888544, -0.04472136,  0.08944272]), array([-1.34164079]), array([1.]))
    """
    x = as_array(input)
    g = as_array(grad_output)
    _check_rank(x)
    if g.shape != x.shape:
        raise ValueError(f"grad_output has shape {g.shape}, but the input has shape {x.shape}")
    if g.dtype != x.dtype:
        raise TypeError(f"grad_output has dtype {g.dtype}, but the input has dtype {x.dtype}")
    saved = save_mean is not None and save_invstd is not None
    # With saved statistics, the running ones are not needed, whatever the mode.
    running_mean, running_var, weight, _ = _parameter_arrays(
        x, running_mean, running_var, weight, None, training or saved, affine_any_shape=False)
    dtype = _compute_dtype(x.dtype)
    shape_3d = _shape_3d(x.shape)
    channels = shape_3d[1]
    x3 = _as_3d(x, dtype, shape_3d)
    g3 = _as_3d(g, dtype, shape_3d)
    result, target = _output_3d(None, x, dtype, shape_3d)
    weight64 = _per_channel(weight, channels, 1.0)
    threads = threads_for(x.size)
    if saved:
        mean = _per_channel(as_array(save_mean), channels, 0.0)
        invstd = _per_channel(as_array(save_invstd), channels, 1.0)
    elif training:
        mean, invstd, _ = batch_norm_stats(x3, eps)
    else:
        mean = _per_channel(running_mean, channels, 0.0)
        invstd = np.empty(channels)
        _kernels.inverse_std(_per_channel(running_var, channels, 1.0), float(eps),
                             invstd)
    grad_weight = np.empty(channels)
    grad_bias = np.empty(channels)
    kernel = _kernels.train_backward if training else _kernels.eval_backward
    kernel(g3, x3, target, mean, invstd, weight64, grad_weight, grad_bias, threads)
    parameter_dtype = dtype if weight is None else weight.dtype
    return (
        _finish_output(result, target),
        grad_weight.astype(parameter_dtype),
        grad_bias.astype(parameter_dtype),
    )
