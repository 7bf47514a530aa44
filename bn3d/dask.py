"""Batch normalisation of Dask arrays, with the bits of the in-memory call.

A stack of volumes larger than a machine's memory lives in a chunked array (zarr,
HDF5) behind Dask. This module normalises it over the whole batch, and computes the
population statistics of a whole data set (to re-estimate running statistics after
training, "precise BN"), with Dask scheduling the work: per chunk, bn3d's kernels
reduce every block of the chunk into exact partial sums; Dask merges them in a tree
whose fan-in is ``split_every`` (the merge is exact, so the tree's shape changes no
bit); the kernels finish the statistics; one ``map_blocks`` normalises.

The same bits
-------------
bn3d's statistics are defined on logical indices (see :mod:`bn3d._kernels`): blocks of
``G = max(1, 2048 // L)`` whole rows, or 2048-element segments of rows longer than
2048, combined in exact sums. So, whatever the number of workers, the fan-in and the
scheduler:

any chunks give outputs, statistics and gradients **bitwise identical** to
:func:`bn3d.batch_norm` on the concatenated array. Chunks that would cut a block are
merged first (a rechunk that moves whole samples or whole segments only):

- along ``N``, chunks hold multiples of ``G`` samples (any split when ``G = 1``, that
  is when rows are at least 1024 elements long);
- along the spatial axes, chunks cut the first spatial axis only, each chunk's
  ``D_chunk * H * W`` a multiple of 2048; other spatial chunks are merged into slabs
  of that kind, about as large as the original chunks;
- along ``C``, any split.

Chunk your store that way (whole volumes, or slabs of 2048-element multiples) and no
data moves. Where a rechunk would cost too much (tiles of a volume spread over a
cluster), ``bitwise=False`` reduces the chunks as they are: the statistics and
gradients then agree with the in-memory call within its accuracy bound (2e-6
relative in float32), not bit for bit.

Training calls compute the batch statistics (one pass over the data) before they
return: the running statistics are updated then, as in memory, and the returned array
is lazy (computing it is the second pass). A chunk of the wrong dtype or shape fails
that first pass with an error naming the chunk, before any output is written.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as error:  # an optional extra
    raise ImportError('bn3d.dask needs Dask: pip install "bn3d[dask]" '
                      '(dask[array,distributed] and zarr)') from error

from . import _core, _kernels
from ._threads import serial_in_this_thread

__all__ = [
    "PopulationStats",
    "batch_norm",
    "batch_norm_backward",
    "load_population_stats",
    "population_stats",
]

# One channel's partial sums as one numpy element: opaque int64 words.
_PARTIAL = np.dtype((np.void, 8 * _kernels.partial_words()))


class PopulationStats(NamedTuple):
    """Per-channel statistics of a whole data set, float64 arrays of shape (C,)."""

    values: np.ndarray
    """The number of values of each channel."""
    mean: np.ndarray
    """The mean of each channel."""
    var: np.ndarray
    """The biased variance, ``sum((x - mean)**2) / values``."""
    var_unbiased: np.ndarray
    """``sum((x - mean)**2) / (values - 1)``: what running statistics hold."""


# -- checks ---------------------------------------------------------------------------------


def _check_input(x: Any, name: str = "x") -> da.Array:
    if not isinstance(x, da.Array):
        raise TypeError(f"{name} must be a dask.array.Array, not {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, C, *), got {x.ndim} dimensions")
    if np.dtype(x.dtype).newbyteorder("=") not in _core.FLOAT_DTYPES:
        raise TypeError(f"{name} must hold floating-point numbers, not {x.dtype}")
    if any(math.isnan(extent) for extent in x.shape):
        raise ValueError(f"{name} must have a known shape (call compute_chunk_sizes())")
    return x


def _per_channel(value: Any, name: str, channels: int) -> np.ndarray | None:
    if value is None:
        return None
    array = _core.to_array(value)
    if array is None or array.size != channels:
        raise ValueError(f"{name} must hold {channels} values, one per channel")
    return array.reshape(channels)


def _checked_block(block: np.ndarray, dtype: np.dtype, block_info: dict | None) -> np.ndarray:
    """A chunk as Dask promised it: its dtype and shape, or an error naming it."""
    if block_info is None:  # Dask's metadata probe: an empty array
        return block
    info = block_info[0]
    expected = tuple(end - start for start, end in info["array-location"])
    if block.dtype != dtype or block.shape != expected:
        raise ValueError(
            f"chunk {info['chunk-location']} has dtype {block.dtype} and shape "
            f"{block.shape}; the array declares {dtype} and {expected}")
    return block


def _aligned(x: da.Array, bitwise: bool) -> da.Array:
    """``x`` rechunked, if need be (and ``bitwise``), so that no block of the canonical
    order straddles two chunks: batch chunks at multiples of the block rows; spatial
    chunks only along the first spatial axis, at multiples of whole segments, about as
    large as ``x``'s chunks. Rechunking moves whole samples or whole segments."""
    if not bitwise:
        return x
    length = math.prod(x.shape[2:])
    rows = _core.block_rows(length)
    changes: dict[int, Any] = {}
    batch = x.chunks[0]
    if rows > 1 and any(size % rows for size in batch[:-1]):
        changes[0] = max(rows, (max(batch) // rows) * rows)
    spatial = x.chunks[2:]
    if any(len(chunks) > 1 for chunks in spatial):
        inner = math.prod(x.shape[3:])  # the elements of one step along the first axis
        step = _core.BLOCK_ELEMENTS // math.gcd(inner, _core.BLOCK_ELEMENTS)
        first = spatial[0]
        whole_segments = (length > _core.BLOCK_ELEMENTS
                          and all(len(chunks) == 1 for chunks in spatial[1:])
                          and all(size % step == 0 for size in first[:-1]))
        if not whole_segments:
            changes.update({axis: -1 for axis in range(3, x.ndim)})
            changes[2] = -1
            if length > _core.BLOCK_ELEMENTS:  # slabs of about the chunks' size
                elements = math.prod(max(chunks) for chunks in x.chunks)
                per_step = max(x.chunks[0]) * max(x.chunks[1]) * inner
                size = max(step, (elements // per_step) // step * step)
                changes[2] = size if size < x.shape[2] else -1
    return x.rechunk(changes) if changes else x


# -- the reduction --------------------------------------------------------------------------


def _as_element(words: np.ndarray, ndim: int) -> np.ndarray:
    """A chunk's partials (C, W) as (1, C, 1, ..., 1) elements of _PARTIAL."""
    return np.ascontiguousarray(words).view(_PARTIAL).reshape(
        (1, words.shape[0]) + (1,) * (ndim - 2))


def _words(elements: np.ndarray) -> list[np.ndarray]:
    """The partials held by an array of _PARTIAL elements, one (C, W) array per chunk."""
    moved = np.ascontiguousarray(np.moveaxis(elements, 1, -1))
    channels = moved.shape[-1]
    return [np.ascontiguousarray(row).view(np.int64).reshape(channels, -1)
            for row in moved.reshape(-1, channels)]


def _merge(elements: np.ndarray, axis: Any = None, keepdims: bool = True) -> np.ndarray:
    """The reduction's chunk, combine and aggregate steps: merge partials exactly."""
    merged = _core.merge_partials(_words(elements))
    return _as_element(merged, elements.ndim) if keepdims else \
        np.ascontiguousarray(merged).view(_PARTIAL).reshape(merged.shape[0])


FAN_IN = 32
"""The reduction tree's fan-in when none is given. Partials are small (about 1.2 KB a
channel), so merging many at once is cheap, and a wide tree has few tasks."""


def _fan_in(split_every: int | None, partials: da.Array, axes: tuple[int, ...]) -> dict:
    """``split_every`` as the tree's fan-in. Dask spreads an integer over all the reduced
    axes (its k-th root on each, so a binary tree for any value below 81 with four);
    here it goes to the axes that have several chunks."""
    fan_in = FAN_IN if split_every is None else split_every
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 2:
        raise ValueError(f"split_every must be an int of at least 2, got {split_every!r}")
    chunked = [axis for axis in axes if partials.numblocks[axis] > 1] or [0]
    each = max(2, int(fan_in ** (1 / len(chunked)) + 1e-9))
    return {axis: each if axis in chunked else 2 for axis in axes}


def _reduce(partials: da.Array, split_every: int | None) -> da.Array:
    """Partials of every chunk merged through Dask's tree into one per channel."""
    axes = (0, *range(2, partials.ndim))
    return da.reduction(partials, chunk=_merge, combine=_merge, aggregate=_merge, axis=axes,
                        dtype=_PARTIAL, split_every=_fan_in(split_every, partials, axes),
                        concatenate=True, meta=np.empty((0,), _PARTIAL))


# The functions Dask runs on chunks live at module level and take small numpy arrays:
# Dask hashes a task's function and arguments to name it, and a closure over a Dask
# array would make it hash the array's whole graph (and any numpy data in it).


def _serial(function: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``function`` with bn3d's kernels on the task's thread alone: Dask runs one task
    per core at once (its threads or worker processes), and OpenMP threads of each
    task would compete with the other tasks for the same cores."""
    @functools.wraps(function)
    def on_this_thread(*args: Any, **kwargs: Any) -> np.ndarray:
        with serial_in_this_thread():
            return function(*args, **kwargs)
    return on_this_thread


@_serial
def _pilot_chunk(first: np.ndarray) -> np.ndarray:
    return _core.pilots(_core.first_block(first))


@_serial
def _moment_chunk(block: np.ndarray, pilot: np.ndarray, expected_dtype: np.dtype,
                  block_info: dict | None = None) -> np.ndarray:
    block = _checked_block(block, expected_dtype, block_info)
    return _as_element(_core.moment_partials(block, pilot.ravel()), block.ndim)


@_serial
def _gradient_chunk(g: np.ndarray, block: np.ndarray, mean: np.ndarray,
                    expected_dtype: np.dtype, block_info: dict | None = None) -> np.ndarray:
    block = _checked_block(block, expected_dtype, block_info)
    g = _checked_block(g, expected_dtype, block_info)
    return _as_element(_core.gradient_partials(g, block, mean.ravel()), block.ndim)


@_serial
def _normalise_chunk(block: np.ndarray, mean: np.ndarray, invstd: np.ndarray,
                     weight: np.ndarray, bias: np.ndarray, expected_dtype: np.dtype,
                     block_info: dict | None = None) -> np.ndarray:
    block = _checked_block(block, expected_dtype, block_info)
    return _core.normalise_with_stats(block, mean, invstd, weight, bias)


@_serial
def _grad_input_chunk(g: np.ndarray, block: np.ndarray, partials: np.ndarray,
                      mean: np.ndarray, invstd: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return _core.grad_input_from_partials(g, block, _words(partials)[0], mean, invstd, weight)


def _moment_partials(x: da.Array, pilot: da.Array) -> da.Array:
    return da.map_blocks(_moment_chunk, x, *_channel_arrays(x, pilot), expected_dtype=x.dtype,
                         dtype=_PARTIAL, chunks=_partial_chunks(x),
                         meta=np.empty((0,) * x.ndim, _PARTIAL))


def _partial_chunks(x: da.Array) -> tuple[tuple[int, ...], ...]:
    return tuple(chunks if axis == 1 else (1,) * len(chunks)
                 for axis, chunks in enumerate(x.chunks))


def _pilot(x: da.Array) -> da.Array:
    """Each channel's pilot (shape (C,), lazy), from the batch's first block: a small
    slice of ``x``, read in the same graph as the reduction that needs it."""
    length = math.prod(x.shape[2:])
    rows = min(x.shape[0], _core.block_rows(length))
    index: list[slice] = [slice(0, rows), slice(None)]
    remaining = min(length, _core.BLOCK_ELEMENTS)
    for axis, extent in enumerate(x.shape[2:]):  # the fewest leading elements covering it
        inner = math.prod(x.shape[3 + axis:])
        take = min(extent, -(-remaining // inner))
        index.append(slice(0, take))
        if take > 1:
            index.extend(slice(None) for _ in x.shape[3 + axis:])
            break
    first = x[tuple(index)].rechunk(-1)
    return first.map_blocks(_pilot_chunk, drop_axis=[0, *range(2, x.ndim)],
                            chunks=((x.shape[1],),), dtype=np.float64,
                            meta=np.empty((0,), np.float64))


def _lazy_statistics(x: da.Array, split_every: int | None, bitwise: bool
                     ) -> tuple[da.Array, da.Array]:
    """The merged moment partials of the whole batch and the pilots, lazy, one graph."""
    x = _aligned(x, bitwise)
    pilot = _pilot(x)
    return _reduce(_moment_partials(x, pilot), split_every), pilot


def _as_words(merged: np.ndarray) -> np.ndarray:
    """The merged partials, (C,) elements of _PARTIAL, as a (C, W) int64 array."""
    return np.ascontiguousarray(merged).view(np.int64).reshape(merged.shape[0], -1)


def _statistics(x: da.Array, split_every: int | None, bitwise: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """The merged moment partials of the whole batch and the pilots, computed."""
    merged, pilot = da.compute(*_lazy_statistics(x, split_every, bitwise))
    return _as_words(merged), pilot


def _finish_population(merged: np.ndarray, pilot: np.ndarray) -> PopulationStats:
    return PopulationStats(*_core.finish_population(_as_words(merged), pilot))


# -- public functions -----------------------------------------------------------------------


def population_stats(x: da.Array, *, split_every: int | None = None, bitwise: bool = True,
                     compute: bool = True) -> Any:
    """Per-channel count, mean and biased and unbiased variance of a whole data set.

    Parameters
    ----------
    x : dask.array.Array
        Data of shape ``(N, C, *)``, float16, bfloat16, float32 or float64, chunked
        in any way (see the module's docstring for which chunks give the in-memory
        bits).
    split_every : int, optional
        The fan-in of Dask's reduction tree (:data:`FAN_IN` when None); it changes no
        bit.
    bitwise : bool, default True
        Merge chunks that would cut a block of the canonical order first (a rechunk),
        for the in-memory bits; False reduces the chunks as they are (no data moves),
        within the accuracy bound of the in-memory call (see the module's docstring).
    compute : bool, default True
        False returns a :class:`dask.delayed.Delayed` of the statistics instead, to
        compute with others or to follow (``distributed.progress``).

    Returns
    -------
    PopulationStats or dask.delayed.Delayed
        float64 arrays of shape (C,): the bits of :func:`bn3d.batch_norm_stats` on the
        concatenated array (its ``mean`` and ``var``, the unbiased variance).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from bn3d.dask import population_stats
    >>> x = da.from_array(np.arange(24.0).reshape(4, 2, 3), chunks=(1, 2, 3))
    >>> stats = population_stats(x)
    >>> stats.values, stats.mean, stats.var_unbiased
    (array([12., 12.]), array([10., 13.]), array([49.81818182, 49.81818182]))
    """
    x = _check_input(x)
    merged, pilot = _lazy_statistics(x, split_every, bitwise)
    if not compute:
        return dask.delayed(_finish_population, pure=True)(merged, pilot)
    return _finish_population(*da.compute(merged, pilot))


def load_population_stats(module: Any, stats: PopulationStats) -> None:
    """Load population statistics as the running statistics of a bn3d module.

    ``running_mean``/``running_var`` (:class:`bn3d.torch_nn.BatchNorm3d`) or
    ``bn2d.moving_mean``/``bn2d.moving_variance``
    (:class:`bn3d.mindspore_nn.BatchNorm3d`) become the mean and the unbiased variance
    (the variance running statistics hold), in the module's dtypes.

    Parameters
    ----------
    module : bn3d.torch_nn.BatchNorm3d or bn3d.mindspore_nn.BatchNorm3d
    stats : PopulationStats

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from bn3d.dask import load_population_stats, population_stats
    >>> from bn3d.torch_nn import BatchNorm3d
    >>> x = da.from_array(np.arange(48.0).reshape(4, 2, 3, 2, 1), chunks=2)
    >>> bn = BatchNorm3d(2)
    >>> load_population_stats(bn, population_stats(x))
    >>> bn.running_mean
    array([20.5, 26.5], dtype=float32)
    """
    if hasattr(module, "moving_mean") and hasattr(module, "moving_variance"):
        for parameter, values in ((module.moving_mean, stats.mean),
                                  (module.moving_variance, stats.var_unbiased)):
            parameter.set_data(values.astype(parameter.dtype))
        return
    if getattr(module, "running_mean", None) is None:
        raise ValueError("the module keeps no running statistics (track_running_stats=False)")
    with module._lock:
        module.running_mean[...] = stats.mean
        module.running_var[...] = stats.var_unbiased


def _channel_arrays(x: da.Array, *values: np.ndarray | da.Array) -> list[da.Array]:
    """Per-channel values (numpy or Dask, shape (C,)) as Dask arrays of shape
    (1, C, 1, ...), chunked like ``x``'s channels, which broadcast against ``x``'s chunks
    in ``map_blocks``: each chunk gets its channels' values."""
    index = (None, slice(None)) + (None,) * (x.ndim - 2)
    return [(value.rechunk((x.chunks[1],)) if isinstance(value, da.Array)
             else da.from_array(value, chunks=(x.chunks[1],)))[index] for value in values]


def _normalised(x: da.Array, mean: np.ndarray, invstd: np.ndarray,
                weight: np.ndarray | None, bias: np.ndarray | None) -> da.Array:
    """One ``map_blocks``: each chunk normalised with the batch's statistics."""
    channels = x.shape[1]
    dtype = np.dtype(x.dtype).newbyteorder("=")
    return da.map_blocks(
        _normalise_chunk, x, *_channel_arrays(
            x, np.asarray(mean, np.float64), np.asarray(invstd, np.float64),
            np.ones(channels) if weight is None else np.asarray(weight, np.float64),
            np.zeros(channels) if bias is None else np.asarray(bias, np.float64)),
        expected_dtype=x.dtype, dtype=dtype, meta=np.empty((0,) * x.ndim, dtype))


def batch_norm(
    x: da.Array,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-05,
    *,
    split_every: int | None = None,
    bitwise: bool = True,
    return_stats: bool = False,
) -> Any:
    """Batch normalisation of a Dask array, bitwise as :func:`bn3d.batch_norm` in memory.

    In training, the batch statistics are reduced through Dask (chunk partials merged
    exactly in a tree of fan-in ``split_every``) and computed before this returns; the
    running statistics, if given, are then updated in place as in memory
    (``r = (1 - momentum) * r + momentum * batch``, unbiased variance). Otherwise the
    running statistics normalise. The output is lazy: one ``map_blocks``.

    Parameters
    ----------
    x : dask.array.Array
        Data of shape ``(N, C, *)``.
    running_mean, running_var : numpy.ndarray of shape (C,) or None
        Updated in place when ``training``; required otherwise.
    weight, bias : array_like of C values, optional
    training : bool, default False
    momentum : float, default 0.1
    eps : float, default 1e-05
    split_every : int, optional
        The fan-in of Dask's reduction tree (:data:`FAN_IN` when None); it changes no
        bit.
    bitwise : bool, default True
        Merge chunks that would cut a block of the canonical order first (a rechunk),
        for the in-memory bits; False reduces the chunks as they are (no data moves),
        within the accuracy bound of the in-memory call (see the module's docstring).
    return_stats : bool, default False
        Also return the mean and ``1 / sqrt(var + eps)`` that normalised (numpy).

    Returns
    -------
    dask.array.Array or tuple
        The normalised array (lazy, ``x``'s chunks and dtype), or
        ``(output, mean, invstd)``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import bn3d
    >>> from bn3d.dask import batch_norm
    >>> data = np.random.default_rng(0).standard_normal((6, 3, 4, 4, 4)).astype(np.float32)
    >>> running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    >>> y = batch_norm(da.from_array(data, chunks=(2, 3, 4, 4, 4)), running_mean,
    ...                running_var, training=True)
    >>> bool((y.compute() == bn3d.batch_norm(data, None, None, training=True)).all())
    True
    """
    x = _check_input(x)
    channels = x.shape[1]
    weight = _per_channel(weight, "weight", channels)
    bias = _per_channel(bias, "bias", channels)
    if training:
        if not eps > 0:
            raise ValueError(f"eps must be positive in training, got {eps}")
        if (running_mean is None) != (running_var is None):
            raise ValueError("running_mean and running_var must both be given or neither")
        if running_mean is not None:
            for name, array in (("running_mean", running_mean), ("running_var", running_var)):
                _core.check_writable(_checked_statistic(array, name, channels), name)
        merged, pilot = _statistics(x, split_every, bitwise)
        stats = _core.finish_moments(merged, pilot, float(eps))
        mean, invstd = stats.mean, stats.invstd
        if running_mean is not None and running_var is not None and x.size > 0:
            _core.update_running_stats(running_mean, running_var, stats.mean, stats.var,
                                       float(momentum))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required in evaluation")
        mean = np.array(_checked_statistic(running_mean, "running_mean", channels),
                        np.float64)
        invstd = _core.inverse_std(_checked_statistic(running_var, "running_var", channels),
                                   float(eps))
    output = _normalised(x, mean, invstd, weight, bias)
    return (output, mean, invstd) if return_stats else output


def _checked_statistic(array: Any, name: str, channels: int) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.shape != (channels,):
        raise ValueError(f"{name} must be a numpy array of shape ({channels},)")
    return array


def batch_norm_backward(
    grad_output: da.Array,
    x: da.Array,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: Any = None,
    training: bool = False,
    eps: float = 1e-05,
    *,
    save_mean: np.ndarray | None = None,
    save_invstd: np.ndarray | None = None,
    split_every: int | None = None,
    bitwise: bool = True,
) -> tuple[da.Array, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm`, bitwise as :func:`bn3d.batch_norm_backward`.

    The two reductions (``sum(g)`` and ``sum(g * (x - mean))``) are chunk partials
    merged exactly through Dask, computed before this returns; grad_input is lazy.

    Parameters
    ----------
    grad_output, x : dask.array.Array
        Of one shape, ``(N, C, *)``, and one dtype.
    running_mean, running_var : numpy.ndarray or None
        The statistics that normalised when not ``training``.
    weight : array_like of C values, optional
    training : bool, default False
    eps : float, default 1e-05
    save_mean, save_invstd : numpy.ndarray, optional
        The forward's statistics (``return_stats=True``); in training they are
        otherwise recomputed.
    split_every : int, optional
        The fan-in of Dask's reduction tree (:data:`FAN_IN` when None); it changes no
        bit.
    bitwise : bool, default True
        Merge chunks that would cut a block of the canonical order first (a rechunk),
        for the in-memory bits; False reduces the chunks as they are (no data moves),
        within the accuracy bound of the in-memory call (see the module's docstring).

    Returns
    -------
    grad_input : dask.array.Array
        Lazy, ``x``'s chunks and dtype.
    grad_weight, grad_bias : numpy.ndarray
        Shape (C,), in the weight's dtype (the compute dtype without one).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import bn3d
    >>> from bn3d.dask import batch_norm_backward
    >>> x = np.random.default_rng(0).standard_normal((4, 2, 3, 5)).astype(np.float32)
    >>> g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    >>> grads = batch_norm_backward(da.from_array(g, chunks=1), da.from_array(x, chunks=1),
    ...                             None, None, training=True)
    >>> expected = bn3d.batch_norm_backward(g, x, None, None, training=True)
    >>> bool((grads[0].compute() == expected[0]).all()), bool((grads[1] == expected[1]).all())
    (True, True)
    """
    x = _check_input(x)
    grad_output = _check_input(grad_output, "grad_output")
    if grad_output.shape != x.shape:
        raise ValueError(f"grad_output has shape {grad_output.shape}, x {x.shape}")
    channels = x.shape[1]
    weight = _per_channel(weight, "weight", channels)
    if save_mean is not None and save_invstd is not None:
        mean, invstd = np.asarray(save_mean, np.float64), np.asarray(save_invstd, np.float64)
    elif training:
        merged, pilot = _statistics(x, split_every, bitwise)
        stats = _core.finish_moments(merged, pilot, float(eps))
        mean, invstd = stats.mean, stats.invstd
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required in evaluation")
        mean = np.array(running_mean, np.float64)
        invstd = _core.inverse_std(np.asarray(running_var), float(eps))
    x = _aligned(x, bitwise)
    grad_output = grad_output.rechunk(x.chunks)

    partials = da.map_blocks(_gradient_chunk, grad_output, x, *_channel_arrays(x, mean),
                             expected_dtype=x.dtype, dtype=_PARTIAL, chunks=_partial_chunks(x),
                             meta=np.empty((0,) * x.ndim, _PARTIAL))
    merged = _as_words(_reduce(partials, split_every).compute())
    grad_weight, grad_bias = _core.finish_gradients(merged, invstd)
    if training:
        grad_input = _grad_input(grad_output, x, merged, mean, invstd, weight)
    else:
        grad_input = _normalised(grad_output, np.zeros(channels), invstd, weight,
                                 np.zeros(channels))
    dtype = _core.compute_dtype(np.dtype(x.dtype)) if weight is None else \
        weight.dtype.newbyteorder("=")
    return grad_input, grad_weight.astype(dtype), grad_bias.astype(dtype)


def _grad_input(grad_output: da.Array, x: da.Array, merged: np.ndarray, mean: np.ndarray,
                invstd: np.ndarray, weight: np.ndarray | None) -> da.Array:
    """One ``map_blocks``: grad_input of each chunk from the batch's gradient sums."""
    channels = x.shape[1]

    dtype = np.dtype(x.dtype).newbyteorder("=")
    return da.map_blocks(
        _grad_input_chunk, grad_output, x, *_channel_arrays(
            x, np.ascontiguousarray(merged).view(_PARTIAL).reshape(channels),
            np.asarray(mean, np.float64), np.asarray(invstd, np.float64),
            np.ones(channels) if weight is None else np.asarray(weight, np.float64)),
        dtype=dtype, meta=np.empty((0,) * x.ndim, dtype))
