"""Dialect-neutral batch normalisation on numpy arrays, between the dialects and the kernels.

The dialects (:mod:`bn3d.functional` for PyTorch, :mod:`bn3d.mindspore_nn` for
MindSpore) check their arguments in their framework's order and with its
messages, then call this module. It sees the data as ``(N, C, L)``, chooses the
compute dtype, validates every array it will write before anything is written,
calls :mod:`bn3d._kernels` and updates running statistics. Its own errors are
bn3d's, not a framework's: they concern what no framework allows either
(read-only or overlapping outputs).

Rules every call follows:

- **A call that raises changes nothing.** Every array that will be written (the
  output, the running statistics) is checked for shape, dtype, writability and
  overlap before the first write.
- **Overlap.** ``out`` may be the input itself (exactly: same memory, shape and
  strides); an ``out`` that overlaps any array the call reads in another way is
  written through a temporary, so the result is as if it did not overlap. A
  running statistic that is updated must not share memory with any other
  argument: that is refused, as two results cannot both be right in one place.
- **Non-finite data** propagate as in PyTorch: an inf or NaN in a channel's batch
  makes that channel's statistics inf or NaN (its mean ``+inf`` for ``+inf``
  data) and its output NaN; other channels are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from ._cache import configure_streaming
from ._memory import empty, pooled
from ._threads import threads_for

__all__ = [
    "BFLOAT16",
    "BatchStats",
    "FLOAT_DTYPES",
    "OverlapError",
    "batch_norm",
    "batch_norm_backward",
    "batch_stats",
    "block_rows",
    "check_out",
    "check_separate",
    "check_writable",
    "compute_dtype",
    "finish_gradients",
    "finish_moments",
    "finish_population",
    "first_block",
    "grad_input_from_partials",
    "gradient_partials",
    "inverse_std",
    "merge_partials",
    "moment_partials",
    "normalise_with_stats",
    "pilots",
    "shape_ncl",
    "to_array",
    "update_running_stats",
]

Array = np.ndarray

try:  # bfloat16 lives in numpy only through ml_dtypes (JAX's and TensorFlow's dtypes)
    import ml_dtypes

    BFLOAT16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BFLOAT16 = None

FLOAT16, FLOAT32, FLOAT64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = tuple(d for d in (FLOAT16, BFLOAT16, FLOAT32, FLOAT64) if d is not None)
_KERNEL_DTYPES = (FLOAT32, FLOAT64)

configure_streaming()


class OverlapError(ValueError):
    """Two arrays a call writes (or one it writes and one it reads) share memory."""


class BatchStats(NamedTuple):
    """Per-channel statistics of a batch, all float64 arrays of shape (C,)."""

    mean: Array
    """The batch mean."""
    invstd: Array
    """``1 / sqrt(biased variance + eps)``."""
    var: Array
    """The unbiased variance (``sum((x - mean)**2) / (n - 1)``)."""


# -- arrays ---------------------------------------------------------------------------------


def _torch_bfloat16_bits(obj: Any) -> Array | None:
    """The bfloat16 values of a torch tensor, as an ml_dtypes array sharing its memory."""
    if type(obj).__module__.startswith("torch") and str(getattr(obj, "dtype", "")) == \
            "torch.bfloat16":
        import torch  # already imported: obj is one of its tensors

        bits = obj.detach().view(torch.int16).numpy()
        if BFLOAT16 is None:
            raise TypeError("bfloat16 tensors need the ml_dtypes package, which holds "
                            "bfloat16 in numpy: pip install ml-dtypes")
        return bits.view(BFLOAT16)
    return None


def to_array(obj: Any) -> Array | None:
    """``obj`` as a numpy array if it is a tensor of this world, else None.

    Tensors are numpy arrays, and objects with ``__array__`` or ``__dlpack__``
    (a CPU torch tensor, a JAX or MindSpore array; a torch tensor that requires
    grad is read by value). The result shares memory with ``obj`` where the
    object allows it. An ndarray subclass (``numpy.matrix``) is seen as a plain
    ndarray; a masked array is refused, as its masked values would be used.
    Lists, tuples and scalars are not tensors.

    Parameters
    ----------
    obj : object

    Returns
    -------
    numpy.ndarray or None

    Raises
    ------
    TypeError
        For a masked array, or a bfloat16 torch tensor without ml_dtypes.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._core import to_array
    >>> to_array(np.ones((1, 2))).shape, to_array([1.0, 2.0])
    ((1, 2), None)
    """
    if type(obj) is np.ndarray:
        return obj
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError("masked arrays are not supported: their masked values would be "
                        "normalised too; fill them first (numpy.ma.filled)")
    if isinstance(obj, np.ndarray):
        return obj.view(np.ndarray)
    bfloat16 = _torch_bfloat16_bits(obj)
    if bfloat16 is not None:
        return bfloat16
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        obj = obj.detach()  # a torch tensor in an autograd graph: its values
    if hasattr(obj, "__array__"):
        return np.asarray(obj)
    if hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    return None


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the kernels compute data of ``dtype`` in: float16 and bfloat16 in float32.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._core import compute_dtype
    >>> compute_dtype(np.dtype(np.float16))
    dtype('float32')
    """
    dtype = dtype.newbyteorder("=")
    return dtype if dtype in _KERNEL_DTYPES else FLOAT32


def shape_ncl(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(N, C, *)`` as ``(N, C, L)``.

    Examples
    --------
    >>> from bn3d._core import shape_ncl
    >>> shape_ncl((2, 3, 4, 5, 6))
    (2, 3, 120)
    """
    return shape[0], shape[1], math.prod(shape[2:])


def is_channels_last(x: Array) -> bool:
    """Whether the kernels take ``x`` (N, C, *) channels last: its channel axis has the
    smallest stride and its spatial axes follow in C order (NDHWC memory; NHWC and NLC
    for ranks 4 and 3), as PyTorch's ``suggest_memory_format`` would say.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._core import is_channels_last
    >>> x = np.zeros((2, 4, 3, 5, 6), np.float32)
    >>> is_channels_last(x), is_channels_last(np.moveaxis(np.moveaxis(x, 1, -1).copy(), -1, 1))
    (False, True)
    """
    if x.ndim < 3 or x.shape[1] <= 1 or math.prod(x.shape[2:]) <= 1:
        return False
    moved = np.moveaxis(x, 1, -1)
    strides = [stride for stride, extent in zip(moved.strides, moved.shape) if extent > 1]
    return all(stride > 0 for stride in strides) and strides == sorted(strides, reverse=True)


def _reshaped_view(a: Array, shape: tuple[int, ...]) -> Array | None:
    """``a`` reshaped without a copy, or None where the strides do not allow it."""
    view = a.view()
    try:
        view.shape = shape
    except AttributeError:
        return None
    return view


def _kernel_view(x: Array, dtype: np.dtype, channels_last: bool) -> Array:
    """``x`` (N, C, *) as the kernels take it, in ``dtype``: (N, C, L) with unit stride
    along L, or (N, L, C) with unit stride along C and each sample's (L, C) slab dense.
    A view where the strides allow it, else a copy in that layout."""
    with pooled(dtype.itemsize * x.size):  # a converted or copied input is bn3d's own
        x = x.astype(dtype, copy=False)
        view = _kernel_view_in_place(x, channels_last)
        if view is None:
            n, c, length = shape_ncl(x.shape)
            moved = np.moveaxis(x, 1, -1) if channels_last else x
            view = np.ascontiguousarray(moved).reshape((n, length, c) if channels_last
                                                       else (n, c, length))
    return view


def _kernel_view_in_place(x: Array, channels_last: bool) -> Array | None:
    """``x`` as the kernels take it (see ``_kernel_view``) without a copy, or None."""
    n, c, length = shape_ncl(x.shape)
    if channels_last:
        view = _reshaped_view(np.moveaxis(x, 1, -1), (n, length, c))
        dense = view is not None and view.strides[2] == view.itemsize and \
            (length <= 1 or view.strides[1] == c * view.itemsize)
    else:
        view = _reshaped_view(x, (n, c, length))
        dense = view is not None and (length <= 1 or view.strides[2] == view.itemsize)
    return view if dense else None


def _logical(view: Array, shape: tuple[int, ...], channels_last: bool) -> Array:
    """A kernel view (see ``_kernel_view``) as the (N, C, *) array it holds."""
    if channels_last:
        return np.moveaxis(view.reshape(shape[0], *shape[2:], shape[1]), -1, 1)
    return view.reshape(shape)


def _empty(shape: tuple[int, ...], dtype: np.dtype, channels_last: bool) -> Array:
    """A new (N, C, *) array, its memory C-ordered or channels last (see bn3d._memory)."""
    if channels_last:
        return np.moveaxis(empty((shape[0], *shape[2:], shape[1]), dtype), -1, 1)
    return empty(shape, dtype)


def _per_channel(array: Array | None, channels: int, default: float) -> Array:
    """A per-channel parameter as a contiguous float64 array; ``default`` where it is None."""
    if array is None:
        return np.full(channels, default)
    return np.ascontiguousarray(array, dtype=FLOAT64).reshape(channels)


def check_writable(array: Array, name: str) -> None:
    """Raise ValueError if ``array`` is read-only."""
    if not array.flags.writeable:
        raise ValueError(f"{name} is read-only")


def _shares_memory(a: Array, b: Array) -> bool:
    return np.may_share_memory(a, b) and np.shares_memory(a, b)


def _same_memory(a: Array, b: Array) -> bool:
    """Whether ``a`` and ``b`` view the same elements in the same way."""
    return (a.shape == b.shape and a.dtype == b.dtype and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def check_separate(updated: dict[str, Array], others: dict[str, Array | None]) -> None:
    """Refuse arrays updated in place (running statistics) that share memory with each
    other or with any other argument of the call."""
    names = list(updated)
    for i, name in enumerate(names):
        rivals = {**{n: updated[n] for n in names[i + 1:]}, **others}
        for other_name, other in rivals.items():
            if other is not None and _shares_memory(updated[name], other):
                raise OverlapError(f"{name} shares memory with {other_name}: an array updated "
                                   "in place must not overlap any other argument")


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """``out`` as an array the result of ``shape`` and ``dtype`` can be written into (in
    any memory layout: a layout the kernels cannot write goes through a temporary)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must have the result's shape {shape} and dtype {dtype}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    check_writable(out, "out")
    return out


class _Destination:
    """Where a kernel writes a result of the input's shape: straight into the array
    handed back, or into a temporary copied there afterwards (a float16 or bfloat16
    result, an ``out`` in a layout the kernels cannot write, or an ``out`` that
    overlaps in another way what the kernel reads)."""

    def __init__(self, result: Array, compute: np.dtype, channels_last: bool,
                 reads: Iterable[Array]) -> None:
        self.result = result
        self.channels_last = channels_last
        view = None
        if result.dtype == compute:
            view = _kernel_view_in_place(result.view(np.ndarray), channels_last)
        if view is not None and any(np.may_share_memory(view, read)
                                    and not _same_memory(view, read) for read in reads):
            view = None
        self._copy_back = view is None
        n, c, length = shape_ncl(result.shape)
        self.target = view if view is not None else \
            empty((n, length, c) if channels_last else (n, c, length), compute)

    def finish(self) -> Array:
        """The result, once the kernel has written the target."""
        if self._copy_back:
            np.copyto(self.result.view(np.ndarray),
                      _logical(self.target, self.result.shape, self.channels_last),
                      casting="unsafe")
        return self.result


def _check_channels(channels: int, arrays: dict[str, Array | None]) -> None:
    for name, array in arrays.items():
        if array is not None and array.size != channels:
            raise ValueError(f"{name} should contain {channels} elements, not {array.size}")


# -- calls ----------------------------------------------------------------------------------


def batch_norm(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    eps: float,
    *,
    use_batch_stats: bool,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    momentum: float | None = None,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Normalise ``x`` of shape (N, C, *) per channel; update running statistics.

    Parameters
    ----------
    x : numpy.ndarray
        float16, bfloat16, float32 or float64, in any byte order and strides.
    weight, bias : numpy.ndarray of C elements or None
        Ones and zeros where None.
    eps : float
        Added to the variance.
    use_batch_stats : bool
        Normalise with the batch's mean and biased variance (and update the running
        statistics, if given, with weight ``momentum`` unless it is None); else
        with ``running_mean`` and ``running_var``.
    running_mean, running_var : numpy.ndarray of C elements or None
        Updated in place as ``r = (1 - momentum) * r + momentum * batch`` with the
        unbiased batch variance, unless the batch is empty.
    momentum : float or None
        The batch's weight in the update; None updates nothing.
    out : numpy.ndarray, optional
        An array of the result's shape and dtype, in any memory layout.

    Returns
    -------
    output : numpy.ndarray
        In ``x``'s dtype, in the machine's byte order.
    mean, invstd : numpy.ndarray
        float64 (C,): the statistics that normalised.

    Raises
    ------
    ValueError
        For the wrong number of per-channel values, a read-only array that would be
        written, or an ``out`` of the wrong shape or dtype.
    OverlapError
        If a running statistic to update shares memory with another argument.
    """
    channels = x.shape[1]
    _check_channels(channels, {"running_mean": running_mean, "running_var": running_var,
                               "weight": weight, "bias": bias})
    # The running statistics to update, or None.
    updated = (running_mean, running_var) if use_batch_stats and momentum is not None and \
        running_mean is not None and running_var is not None else None
    if updated is not None:
        check_writable(updated[0], "running_mean")
        check_writable(updated[1], "running_var")
        check_separate({"running_mean": updated[0], "running_var": updated[1]},
                       {"input": x, "weight": weight, "bias": bias, "out": out})
    dtype = x.dtype.newbyteorder("=")
    channels_last = is_channels_last(x)
    result = _empty(x.shape, dtype, channels_last) if out is None else \
        check_out(out, x.shape, dtype)
    compute = compute_dtype(dtype)
    x_kernel = _kernel_view(x, compute, channels_last)
    weight64 = _per_channel(weight, channels, 1.0)
    bias64 = _per_channel(bias, channels, 0.0)
    invstd = np.empty(channels)
    threads = threads_for(x.size)
    if use_batch_stats:
        destination = _Destination(result, compute, channels_last, (x_kernel, weight64, bias64))
        mean, var_unbiased = np.empty(channels), np.empty(channels)
        _kernels.train_forward(x_kernel, destination.target, channels_last, weight64, bias64,
                               eps, mean, invstd, var_unbiased, threads)
        if updated is not None and momentum is not None and x.size > 0:
            update_running_stats(*updated, mean, var_unbiased, momentum)
    else:
        mean = _per_channel(running_mean, channels, 0.0)
        var = _per_channel(running_var, channels, 1.0)
        destination = _Destination(result, compute, channels_last,
                                   (x_kernel, weight64, bias64, mean, var))
        _kernels.eval_forward(x_kernel, destination.target, channels_last, mean, var, weight64,
                              bias64, eps, invstd, threads)
        mean = mean.copy()  # not a view of running_mean: the caller may keep it
    return destination.finish(), mean, invstd


def update_running_stats(running_mean: Array, running_var: Array, mean: Array,
                         var_unbiased: Array, momentum: float) -> None:
    """``r = (1 - momentum) * r + momentum * batch`` in float64, stored in the
    statistics' own dtype."""
    new_mean = np.array(running_mean, dtype=FLOAT64).reshape(-1)
    new_var = np.array(running_var, dtype=FLOAT64).reshape(-1)
    _kernels.update_running_stats(new_mean, new_var, mean, var_unbiased, momentum)
    np.copyto(running_mean, new_mean.reshape(running_mean.shape), casting="unsafe")
    np.copyto(running_var, new_var.reshape(running_var.shape), casting="unsafe")


def batch_stats(x: Array, eps: float) -> BatchStats:
    """Per-channel batch statistics of ``x`` (N, C, *), bitwise those a training
    :func:`batch_norm` normalises with."""
    channels = x.shape[1]
    stats = BatchStats(np.empty(channels), np.empty(channels), np.empty(channels))
    channels_last = is_channels_last(x)
    x_kernel = _kernel_view(x, compute_dtype(x.dtype), channels_last)
    _kernels.batch_stats(x_kernel, channels_last, eps, stats.mean, stats.invstd, stats.var,
                         threads_for(x.size))
    return stats


def inverse_std(var: Array, eps: float) -> Array:
    """``1 / sqrt(var + eps)`` in float64, as the kernels compute it."""
    invstd = np.empty(var.size)
    _kernels.inverse_std(_per_channel(var, var.size, 1.0), eps, invstd)
    return invstd


def batch_norm_backward(
    grad_output: Array,
    x: Array,
    weight: Array | None,
    save_mean: Array,
    save_invstd: Array,
    *,
    use_batch_stats: bool,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`batch_norm` with respect to ``x``, weight and bias.

    With ``xhat = (x - mean) * invstd`` and ``n`` values per channel: through batch
    statistics ``grad_input = w * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat))``,
    through fixed ones ``grad_input = g * w * invstd``; in both ``grad_weight =
    sum(g * xhat)``, ``grad_bias = sum(g)``.

    Parameters
    ----------
    grad_output, x : numpy.ndarray
        Of one shape (N, C, *) and one dtype.
    weight : numpy.ndarray of C elements or None
    save_mean, save_invstd : numpy.ndarray of C elements
        The mean and ``1 / sqrt(var + eps)`` that normalised.
    use_batch_stats : bool
        Whether they were the batch's.
    out : numpy.ndarray, optional
        An array of ``x``'s shape and dtype for grad_input (it may be ``grad_output``
        or ``x`` itself; another overlap goes through a temporary).

    Returns
    -------
    grad_input : numpy.ndarray
        In ``x``'s dtype and memory layout.
    grad_weight, grad_bias : numpy.ndarray
        float64, shape (C,).
    """
    channels = x.shape[1]
    if grad_output.shape != x.shape:
        raise ValueError(f"grad_output has shape {grad_output.shape}, but the input has shape "
                         f"{x.shape}")
    _check_channels(channels, {"weight": weight, "save_mean": save_mean,
                               "save_invstd": save_invstd})
    dtype = x.dtype.newbyteorder("=")
    compute = compute_dtype(dtype)
    channels_last = is_channels_last(x)
    result = _empty(x.shape, dtype, channels_last) if out is None else \
        check_out(out, x.shape, dtype)
    x_kernel = _kernel_view(x, compute, channels_last)
    g_kernel = _kernel_view(grad_output, compute, channels_last)
    weight64 = _per_channel(weight, channels, 1.0)
    mean64 = _per_channel(save_mean, channels, 0.0)
    invstd64 = _per_channel(save_invstd, channels, 1.0)
    destination = _Destination(result, compute, channels_last,
                               (x_kernel, g_kernel, weight64, mean64, invstd64))
    grad_weight, grad_bias = np.empty(channels), np.empty(channels)
    _kernels.backward_pass(g_kernel, x_kernel, destination.target, channels_last, mean64,
                           invstd64, weight64, grad_weight, grad_bias, use_batch_stats,
                           threads_for(x.size))
    return destination.finish(), grad_weight, grad_bias


# -- chunks of a batch (what bn3d.dask distributes) ----------------------------------------


BLOCK_ELEMENTS = _kernels.BLOCK_ELEMENTS
"""The longest block: rows longer than it are cut into segments of this many elements."""


def block_rows(length: int) -> int:
    """The rows of ``length`` elements in one block: a split of the batch at multiples of
    it keeps every block whole, and the results bitwise those of the whole batch."""
    return _kernels.block_rows(length)


def first_block(x: Array) -> Array:
    """The logical first block of every channel of ``x`` (N, C, *): rows ``0 .. G - 1``,
    the first 2048 elements of each, as an (G', C, L') array (what ``pilots`` reads)."""
    n, c, length = shape_ncl(x.shape)
    rows = min(n, block_rows(length))
    return np.ascontiguousarray(x[:rows]).reshape(rows, c, length)[:, :, :BLOCK_ELEMENTS]


def pilots(first: Array) -> Array:
    """The pilot of every channel (float64, (C,)) from its first block (``first_block``)."""
    pilot = np.zeros(first.shape[1])
    if first.size:
        compute = compute_dtype(first.dtype)
        _kernels.pilots(_kernel_view(first, compute, False), False, pilot, 1)
    return pilot


def moment_partials(x: Array, pilot: Array) -> Array:
    """The exact moment sums of each channel of a chunk of a batch (int64 words,
    (C, ``partial_words()``)), every block of the chunk reduced as in the whole batch."""
    partials = np.zeros((x.shape[1], _kernels.partial_words()), np.int64)
    if x.size:
        channels_last = is_channels_last(x)
        _kernels.moment_partials(_kernel_view(x, compute_dtype(x.dtype), channels_last),
                                 channels_last, _per_channel(pilot, x.shape[1], 0.0), partials,
                                 threads_for(x.size))
    return partials


def gradient_partials(grad_output: Array, x: Array, mean: Array) -> Array:
    """The exact gradient sums (``sum(g)``, ``sum(g * (x - mean))``) of each channel of a
    chunk of a batch (int64 words, (C, ``partial_words()``))."""
    partials = np.zeros((x.shape[1], _kernels.partial_words()), np.int64)
    if x.size:
        channels_last = is_channels_last(x)
        compute = compute_dtype(x.dtype)
        _kernels.gradient_partials(_kernel_view(grad_output, compute, channels_last),
                                   _kernel_view(x, compute, channels_last), channels_last,
                                   _per_channel(mean, x.shape[1], 0.0), partials,
                                   threads_for(x.size))
    return partials


def merge_partials(partials: Iterable[Array]) -> Array:
    """The sum of the partials of several chunks of a batch (exact: any order, any
    grouping gives the same bits)."""
    partials = iter(partials)
    total = np.array(next(partials), dtype=np.int64, order="C")
    for other in partials:
        _kernels.merge_partials(total, np.ascontiguousarray(other, dtype=np.int64))
    return total


def finish_moments(partials: Array, pilot: Array, eps: float) -> BatchStats:
    """The statistics of a batch from its merged moment partials: bitwise those of
    :func:`batch_stats` on the whole batch."""
    channels = partials.shape[0]
    stats = BatchStats(np.empty(channels), np.empty(channels), np.empty(channels))
    _kernels.finish_moments(np.ascontiguousarray(partials), _per_channel(pilot, channels, 0.0),
                            eps, stats.mean, stats.invstd, stats.var)
    return stats


def finish_population(partials: Array, pilot: Array) -> tuple[Array, Array, Array, Array]:
    """The count, mean, biased and unbiased variance of each channel of a data set, from
    its merged moment partials."""
    channels = partials.shape[0]
    values, mean, var, var_unbiased = (np.empty(channels) for _ in range(4))
    _kernels.finish_population(np.ascontiguousarray(partials),
                               _per_channel(pilot, channels, 0.0), values, mean, var,
                               var_unbiased)
    return values, mean, var, var_unbiased


def finish_gradients(partials: Array, invstd: Array) -> tuple[Array, Array]:
    """``(sum(g * xhat), sum(g))`` of each channel from merged gradient partials."""
    channels = partials.shape[0]
    grad_weight, grad_bias = np.empty(channels), np.empty(channels)
    _kernels.finish_gradients(np.ascontiguousarray(partials),
                              _per_channel(invstd, channels, 1.0), grad_weight, grad_bias)
    return grad_weight, grad_bias


def normalise_with_stats(x: Array, mean: Array, invstd: Array, weight: Array | None,
                         bias: Array | None) -> Array:
    """``x`` normalised with given statistics: bitwise what a training :func:`batch_norm`
    of the whole batch writes for these elements, once it has the statistics."""
    channels = x.shape[1]
    dtype = x.dtype.newbyteorder("=")
    compute = compute_dtype(dtype)
    channels_last = is_channels_last(x)
    x_kernel = _kernel_view(x, compute, channels_last)
    destination = _Destination(_empty(x.shape, dtype, channels_last), compute, channels_last,
                               ())
    _kernels.normalise_with_stats(x_kernel, destination.target, channels_last,
                                  _per_channel(mean, channels, 0.0),
                                  _per_channel(invstd, channels, 1.0),
                                  _per_channel(weight, channels, 1.0),
                                  _per_channel(bias, channels, 0.0), threads_for(x.size))
    return destination.finish()


def grad_input_from_partials(grad_output: Array, x: Array, partials: Array, mean: Array,
                             invstd: Array, weight: Array | None) -> Array:
    """grad_input of a batch-statistics backward for a chunk of the batch, from the
    merged gradient partials of the whole batch: bitwise the whole batch's."""
    channels = x.shape[1]
    dtype = x.dtype.newbyteorder("=")
    compute = compute_dtype(dtype)
    channels_last = is_channels_last(x)
    mean64, invstd64 = _per_channel(mean, channels, 0.0), _per_channel(invstd, channels, 1.0)
    weight64 = _per_channel(weight, channels, 1.0)
    grad_mean, coefficient, scale = np.empty(channels), np.empty(channels), np.empty(channels)
    _kernels.gradient_constants(np.ascontiguousarray(partials), mean64, invstd64, weight64,
                                grad_mean, coefficient, scale)
    destination = _Destination(_empty(x.shape, dtype, channels_last), compute, channels_last,
                               ())
    _kernels.grad_input_map(_kernel_view(grad_output, compute, channels_last),
                            _kernel_view(x, compute, channels_last), destination.target,
                            channels_last, mean64, grad_mean, coefficient, scale,
                            threads_for(x.size))
    return destination.finish()
