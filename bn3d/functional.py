"""Batch normalisation on numpy arrays, with :mod:`torch.nn.functional` semantics.

This module is PyTorch's dialect: it checks arguments in PyTorch's order and
raises its errors (:mod:`bn3d._compat.torch` holds the words), then hands the
call to :mod:`bn3d._core`, which computes through :mod:`bn3d._kernels`.

Arrays of shape ``(N, C, *)`` of any rank >= 2 are accepted, so the same
functions serve 1D, 2D and 3D batch normalisation. Where PyTorch takes a tensor,
bn3d takes a numpy array or anything with ``__array__`` or ``__dlpack__`` (a CPU
torch tensor, say); Python lists and scalars are refused, as PyTorch refuses them.

What bn3d adds to PyTorch's rules, in every function here: a call that raises
changes nothing; ``out`` may be the input itself, and an ``out`` that overlaps
an argument in another way is written through a temporary; a running statistic
that is updated must not share memory with any other argument (refused with
:class:`bn3d._core.OverlapError`, a ValueError), nor be read-only.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import _core
from ._compat import torch as _torch
from ._core import BatchStats

__all__ = [
    "BatchStats",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_stats",
    "native_batch_norm",
]

Array = np.ndarray
_BACKWARD = "native_batch_norm_backward"


# -- torch's checks -------------------------------------------------------------------------


def _verify_batch_size(shape: tuple[int, ...]) -> None:
    """torch.nn.functional's check that training sees more than one value per channel."""
    count = shape[0]  # IndexError for rank 0, as in torch
    for extent in shape[2:]:
        count *= extent
    if count == 1:
        raise _torch.error("one_value_per_channel", size=_torch.size(shape))


def _check_eps(eps: Any, training: Any) -> None:
    """torch.nn.functional's eps checks: plain comparisons, so NaN passes."""
    if training and eps <= 0.0:
        raise _torch.error("eps_not_positive", eps=eps)
    elif eps < 0.0:
        raise _torch.error("eps_negative", eps=eps)


def _check_parameters(
    x: Array,
    parameters: dict[str, Array | None],
    use_batch_stats: bool,
    weight_any_shape: bool,
) -> dict[str, Array | None]:
    """ATen's checks of the per-channel arrays against ``x``, in its order.

    ``parameters`` maps ``running_mean``, ``running_var``, ``weight`` and ``bias``
    (or a subset, in that order) to arrays or None. Each holds one value per channel
    and is 1-D, except that torch's forwards take a weight and bias of any shape
    (``weight_any_shape``). Returns them as 1-D arrays.
    """
    if not use_batch_stats:
        for name in ("running_mean", "running_var"):
            if name in parameters and parameters[name] is None:
                raise _torch.error("undefined_in_evaluation", name=name)
    channels = x.shape[1] if x.ndim >= 2 else 0
    checked = {}
    for name, array in parameters.items():
        if array is not None:
            if array.size != channels:
                raise _torch.error("element_count", name=name, channels=channels,
                                   size=array.size)
            if array.ndim != 1 and not (weight_any_shape and name in ("weight", "bias")):
                raise _torch.error("accessor_dims", ndim=array.ndim)
            array = array.reshape(channels)
        checked[name] = array
    if x.ndim < 2:
        raise _torch.error("dimension_out_of_range" if x.ndim == 1 else "no_dimensions")
    if ("running_mean" in checked) and (checked["running_mean"] is None) != \
            (checked.get("running_var") is None):
        raise _torch.error("running_stats_half_defined")
    if x.dtype.newbyteorder("=") not in _core.FLOAT_DTYPES:
        raise _torch.error("not_implemented_for_dtype", type=_torch.type_name(x.dtype))
    # torch's order for the dtype rule: weight, bias, running_mean, running_var.
    defined = [array for array in (checked.get(name) for name in
                                   ("weight", "bias", "running_mean", "running_var"))
               if array is not None]
    _check_parameter_dtypes(x.dtype.newbyteorder("="),
                            [array.dtype.newbyteorder("=") for array in defined])
    return checked


def _check_parameter_dtypes(dtype: np.dtype, parameter_dtypes: list[np.dtype]) -> None:
    """torch's CPU rule: parameters share the input's dtype, or are all float32 beside a
    float16 or bfloat16 input ("mixed" precision); the first parameter decides which."""
    if not parameter_dtypes or set(parameter_dtypes) == {dtype}:
        return
    if parameter_dtypes[0] != dtype:
        if any(other != _core.FLOAT32 for other in parameter_dtypes):
            raise _torch.error("mixed_dtype_not_float")
        if _core.compute_dtype(dtype) == dtype:  # not a low-precision input
            raise _torch.error("mixed_dtype_not_low_precision")
        return
    for other in parameter_dtypes:
        if other != dtype:
            raise _torch.error("scalar_type", expected=_torch.type_name(dtype),
                               found=_torch.type_name(other))


# -- public functions -----------------------------------------------------------------------


def native_batch_norm(
    input: npt.ArrayLike,
    weight: npt.ArrayLike | None,
    bias: npt.ArrayLike | None,
    running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None,
    training: bool,
    momentum: float,
    eps: float,
    *,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Batch normalisation returning the statistics it used (``torch.native_batch_norm``).

    Unlike :func:`batch_norm`, this does not check ``eps`` nor that a channel
    holds more than one value when training, and refuses an empty input.

    Parameters
    ----------
    input : array_like
        Data of shape ``(N, C, *)``: float16, bfloat16, float32 or float64.
    weight, bias : array_like of C elements (of any shape) or None
        Affine parameters; None means ones and zeros.
    running_mean, running_var : array_like of shape (C,) or None
        Running statistics. When ``training``, they are updated in place (if
        given) as ``r = (1 - momentum) * r + momentum * batch``, with the
        unbiased batch variance. When not ``training`` they normalise and are
        required.
    training : bool
        Normalise with the batch statistics (True) or the running ones (False).
    momentum : float
        The weight of the batch in the running statistics' update.
    eps : float
        Added to the variance before its square root.
    out : numpy.ndarray, optional
        An array of the input's shape and dtype to write the output into, in
        any memory layout (it may be the input itself).

    Returns
    -------
    output : numpy.ndarray
        The normalised data, in the input's dtype (float16 and bfloat16 are
        computed in float32).
    save_mean, save_invstd : numpy.ndarray
        float64 arrays of shape (C,): the mean and ``1 / sqrt(var + eps)`` that
        normalised (batch or running), for :func:`batch_norm_backward`.

    Raises
    ------
    RuntimeError, NotImplementedError, ValueError, TypeError, IndexError
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
    x, arrays, training, momentum, eps = _parse(input, weight, bias, running_mean, running_var,
                                                training, momentum, eps, "native_batch_norm")
    if x.size == 0:
        raise _torch.error("empty_input", sizes=", ".join(map(str, x.shape)))
    return _normalise(x, arrays, training, momentum, eps, out)


def _parse(input: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any,
           training: Any, momentum: Any, eps: Any, function: str
           ) -> tuple[Array, dict[str, Array | None], bool, float, float]:
    """torch's argument parser: every argument's type, in positional order."""
    x = _torch.tensor_argument(input, function, "input")
    arrays = {name: _torch.optional_tensor_argument(value, function, name) for name, value in
              (("weight", weight), ("bias", bias), ("running_mean", running_mean),
               ("running_var", running_var))}
    return (x, arrays, _torch.bool_argument(training, function, "training"),
            _torch.float_argument(momentum, function, "momentum"),
            _torch.float_argument(eps, function, "eps"))


def _normalise(x: Array, arrays: dict[str, Array | None], training: bool, momentum: float,
               eps: float, out: Array | None) -> tuple[Array, Array, Array]:
    checked = _check_parameters(
        x, {name: arrays[name] for name in ("running_mean", "running_var", "weight", "bias")},
        training, weight_any_shape=True)
    return _core.batch_norm(
        x, checked["weight"], checked["bias"], eps, use_batch_stats=training,
        running_mean=checked["running_mean"], running_var=checked["running_var"],
        momentum=momentum, out=out)


@overload
def batch_norm(input: npt.ArrayLike, running_mean: npt.ArrayLike | None,
               running_var: npt.ArrayLike | None, weight: npt.ArrayLike | None = ...,
               bias: npt.ArrayLike | None = ..., training: bool = ..., momentum: float = ...,
               eps: float = ..., *, out: Array | None = ...,
               return_stats: Literal[False] = ...) -> Array: ...
@overload
def batch_norm(input: npt.ArrayLike, running_mean: npt.ArrayLike | None,
               running_var: npt.ArrayLike | None, weight: npt.ArrayLike | None = ...,
               bias: npt.ArrayLike | None = ..., training: bool = ..., momentum: float = ...,
               eps: float = ..., *, out: Array | None = ...,
               return_stats: Literal[True]) -> tuple[Array, Array, Array]: ...


def batch_norm(
    input: npt.ArrayLike,
    running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None,
    weight: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-05,
    *,
    out: Array | None = None,
    return_stats: bool = False,
) -> Array | tuple[Array, Array, Array]:
    """Batch normalisation of ``(N, C, *)`` data, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, with the
    batch's mean and biased variance when ``training`` and the running ones
    otherwise.

    Parameters
    ----------
    input : array_like
        Data of shape ``(N, C, *)``: float16, bfloat16 (an ``ml_dtypes`` array or
        a torch tensor), float32 or float64, in any byte order: a numpy array,
        or anything with ``__array__`` or ``__dlpack__``.
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
        non-negative otherwise (NaN passes, as in torch: the output is NaN).
    out : numpy.ndarray, optional
        An array of the input's shape and dtype to write into, in any memory
        layout. It may be the input itself; if it overlaps an argument in another
        way, the result is computed into a temporary first.
    return_stats : bool, default False
        Also return the float64 mean and ``1 / sqrt(var + eps)`` that
        normalised, to pass to :func:`batch_norm_backward`.

    Returns
    -------
    numpy.ndarray or tuple
        The output in the input's dtype and memory layout (channels last for a
        channels-last input, as PyTorch's ``preserve_format``; else C-contiguous),
        or ``(output, save_mean, save_invstd)``.
        An empty input returns an empty output without any other check, as
        torch does.

    Raises
    ------
    ValueError, RuntimeError, NotImplementedError, TypeError, IndexError
        PyTorch's errors, with its messages, checked in its order; then bn3d's
        ValueErrors for a read-only running statistic or ``out``, and for a
        running statistic sharing memory with another argument. Nothing is
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
    # torch.nn.functional's own checks come first, on the arguments as given.
    shape = _shape_of(input)
    if training and shape is not None:
        _verify_batch_size(shape)
    _check_eps(eps, training)
    x, arrays, training, momentum, eps = _parse(input, weight, bias, running_mean, running_var,
                                                training, momentum, eps, "batch_norm")
    if x.size == 0:  # torch.batch_norm returns at once, whatever the other arguments
        _check_empty_affine(x, arrays["weight"], arrays["bias"])
        result = np.empty(x.shape, x.dtype.newbyteorder("=")) if out is None else \
            _core.check_out(out, x.shape, x.dtype.newbyteorder("="))
        empty = np.full(x.shape[1] if x.ndim >= 2 else 0, np.nan)
        return (result, empty, empty.copy()) if return_stats else result
    output = _normalise(x, arrays, training, momentum, eps, out)
    return output if return_stats else output[0]


def _check_empty_affine(x: Array, weight: Array | None, bias: Array | None) -> None:
    """torch.batch_norm returns ``input * weight[0] + bias[0]`` for an empty input: its
    errors for a weight or bias with no first row, or one that does not broadcast."""
    for array in (weight, bias):
        if array is None:
            continue
        if array.ndim == 0:
            raise _torch.error("index_of_0_dim")
        if array.shape[0] == 0:
            raise _torch.error("select_out_of_range", sizes=", ".join(map(str, array.shape)))
        error = _torch.broadcast_error(x.shape, array.shape[1:])
        if error is not None:
            raise error


def _shape_of(value: Any) -> tuple[int, ...] | None:
    """The shape of a tensor argument, for the checks made before the argument parser;
    None if it is not a tensor (the parser then refuses it)."""
    if isinstance(value, (list, tuple)) or np.isscalar(value):
        return None
    shape = getattr(value, "shape", None)
    if shape is not None:
        return tuple(shape)
    array = _core.to_array(value)
    return None if array is None else array.shape


def batch_norm_stats(input: npt.ArrayLike, eps: float = 1e-05) -> BatchStats:
    """Per-channel batch statistics of ``(N, C, *)`` data.

    Bitwise equal to the statistics a training :func:`batch_norm` computes.

    Parameters
    ----------
    input : array_like
        Data of shape ``(N, C, *)``: float16, bfloat16, float32 or float64.
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
    x = _torch.tensor_argument(input, "batch_norm", "input")
    eps = _torch.float_argument(eps, "batch_norm", "eps")
    _check_parameters(x, {}, True, weight_any_shape=False)
    return _core.batch_stats(x, eps)


def batch_norm_backward(
    grad_output: npt.ArrayLike,
    input: npt.ArrayLike,
    running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None,
    weight: npt.ArrayLike | None = None,
    training: bool = False,
    eps: float = 1e-05,
    *,
    save_mean: npt.ArrayLike | None = None,
    save_invstd: npt.ArrayLike | None = None,
    out: Array | None = None,
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
    out : numpy.ndarray, optional
        An array of the input's shape and dtype to write grad_input into, in any
        memory layout. It may be ``grad_output`` or the input itself; if it
        overlaps an argument in another way, grad_input goes through a temporary.

    Returns
    -------
    grad_input : numpy.ndarray
        In the input's dtype, and its memory layout (channels last for a
        channels-last input, else C-contiguous); ``out`` if given.
    grad_weight, grad_bias : numpy.ndarray
        Shape (C,), in the weight's dtype (the compute dtype when ``weight`` is None).

    Raises
    ------
    ValueError
        If ``grad_output`` has another shape than the input, or ``save_mean`` or
        ``save_invstd`` do not hold one value per channel.
    TypeError
        If ``grad_output`` has another dtype than the input.
    RuntimeError, NotImplementedError
        PyTorch's errors for the other arguments.

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
    g = _torch.tensor_argument(grad_output, _BACKWARD, "grad_out")
    x = _torch.tensor_argument(input, _BACKWARD, "input")
    weight_array = _torch.optional_tensor_argument(weight, _BACKWARD, "weight")
    mean_array = _torch.optional_tensor_argument(running_mean, _BACKWARD, "running_mean")
    var_array = _torch.optional_tensor_argument(running_var, _BACKWARD, "running_var")
    saved_mean = _torch.optional_tensor_argument(save_mean, _BACKWARD, "save_mean")
    saved_invstd = _torch.optional_tensor_argument(save_invstd, _BACKWARD, "save_invstd")
    training = _torch.bool_argument(training, _BACKWARD, "train")
    eps = _torch.float_argument(eps, _BACKWARD, "eps")
    if g.shape != x.shape:
        raise ValueError(f"grad_output has shape {g.shape}, but the input has shape {x.shape}")
    if g.dtype.newbyteorder("=") != x.dtype.newbyteorder("="):
        raise TypeError(f"grad_output has dtype {g.dtype}, but the input has dtype {x.dtype}")
    # With saved statistics, the running ones are not needed, whatever the mode.
    saved = saved_mean is not None and saved_invstd is not None
    checked = _check_parameters(
        x, {"running_mean": mean_array, "running_var": var_array, "weight": weight_array},
        training or saved, weight_any_shape=False)
    checked_weight, checked_mean, checked_var = (
        checked["weight"], checked["running_mean"], checked["running_var"])
    if saved_mean is not None and saved_invstd is not None:
        mean, invstd = saved_mean, saved_invstd
    elif training:
        mean, invstd, _ = _core.batch_stats(x, eps)
    else:
        assert checked_mean is not None and checked_var is not None  # required in this mode
        mean, invstd = checked_mean, _core.inverse_std(checked_var, eps)
    grad_input, grad_weight, grad_bias = _core.batch_norm_backward(
        g, x, checked_weight, mean, invstd, use_batch_stats=training, out=out)
    parameter_dtype = _core.compute_dtype(x.dtype) if checked_weight is None else \
        checked_weight.dtype.newbyteorder("=")
    return grad_input, grad_weight.astype(parameter_dtype), grad_bias.astype(parameter_dtype)
