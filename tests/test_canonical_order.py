"""One canonical reduction order on logical indices: the same bits whatever the memory
layout, the threads, the instruction set, and the split of the batch into chunks
reduced apart and merged (what bn3d.dask relies on)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bn3d
from bn3d import _kernels, batch_norm, batch_norm_backward, batch_norm_stats
from bn3d._core import is_channels_last

SHAPES = {
    "long-rows": (3, 5, 2, 40, 60),      # rows of 4800: three blocks a row
    "short-rows": (13, 6, 3, 7, 7),      # rows of 147: 13 a block
    "many-channels": (4, 40, 2, 5, 9),   # channels last: three channel groups
    "one-channel": (5, 1, 30, 90),
    "rank-3": (7, 19, 300),
}


def data(shape, dtype, seed=0, loc=0.5, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


def layouts(x):
    """The same logical array in several memory layouts."""
    channels_last = np.moveaxis(np.moveaxis(x, 1, -1).copy(), -1, 1)
    gapped = np.moveaxis(np.moveaxis(np.repeat(x, 2, axis=0), 1, -1).copy(), -1, 1)[::2]
    spatial = tuple(range(2, x.ndim))
    transposed = np.ascontiguousarray(x.transpose(0, 1, *spatial[::-1])).transpose(
        0, 1, *spatial[::-1])
    return {"contiguous": np.ascontiguousarray(x), "channels-last": channels_last,
            "channels-last-gapped": gapped, "transposed": transposed,
            "reversed": np.flip(np.flip(x, -1).copy(), -1)}


def bits(*arrays):
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


def everything(x, g):
    """Every result of a training step and its backward, and of eval."""
    channels = x.shape[1]
    parameter_dtype = np.float32 if x.dtype == np.float16 else x.dtype
    weight = np.linspace(0.5, 1.5, channels).astype(parameter_dtype)
    bias = np.linspace(-1, 1, channels).astype(parameter_dtype)
    running = [np.zeros(channels, parameter_dtype), np.ones(channels, parameter_dtype)]
    y, mean, invstd = batch_norm(x, *running, weight, bias, training=True, return_stats=True)
    grads = batch_norm_backward(g, x, None, None, weight, training=True, save_mean=mean,
                                save_invstd=invstd)
    y_eval = batch_norm(x, *running, weight, bias, training=False)
    eval_grads = batch_norm_backward(g, x, *running, weight, training=False)
    stats = batch_norm_stats(x)
    return bits(y, mean, invstd, *running, *grads, y_eval, *eval_grads, *stats)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_results_are_bitwise_identical_whatever_the_memory_layout(shape_name, dtype):
    x, g = data(SHAPES[shape_name], dtype), data(SHAPES[shape_name], dtype, seed=1)
    expected = everything(x, g)
    for name, laid_out in layouts(x).items():
        for g_name, g_laid_out in layouts(g).items():
            if g_name not in ("contiguous", name):
                continue
            assert everything(laid_out, g_laid_out) == expected, (name, g_name)


@pytest.mark.parametrize("shape_name", ["long-rows", "many-channels"])
def test_channels_last_results_keep_the_layout_and_bits_for_any_thread_count(shape_name):
    x = layouts(data(SHAPES[shape_name], np.float32))["channels-last"]
    g = layouts(data(SHAPES[shape_name], np.float32, seed=1))["channels-last"]
    y = batch_norm(x, None, None, training=True)
    grad_input = batch_norm_backward(g, x, None, None, training=True)[0]
    assert is_channels_last(y) and is_channels_last(grad_input)
    assert np.moveaxis(y, 1, -1).flags.c_contiguous
    results = set()
    try:
        for threads in (1, 2, 3):
            bn3d.set_num_threads(threads)
            results.add(tuple(everything(x, g)))
    finally:
        bn3d.set_num_threads(None)
    assert len(results) == 1


def test_channels_last_kernels_give_the_same_bits_in_every_instruction_set():
    x = layouts(data((4, 40, 2, 50, 50), np.float32))["channels-last"]
    g = layouts(data((4, 40, 2, 50, 50), np.float32, seed=1))["channels-last"]
    widths = [width for width in (16, 32, 64) if width <= _kernels.store_width()]
    results = []
    try:
        for width in widths:
            _kernels.set_store_width(width)
            results.append(everything(x, g))
    finally:
        _kernels.set_store_width(max(widths))
    assert all(result == results[0] for result in results)


def merged(partials):
    """The partials merged as a tree with fan-in 2, pairs taken from the right."""
    partials = list(partials)
    while len(partials) > 1:
        right = partials.pop()
        _kernels.merge_partials(partials[-1], right)
    return partials[0]


def chunk_partials(x, pilot, splits, channels_last=False):
    words = _kernels.partial_words()
    parts = []
    for chunk in np.split(x, splits):
        view = (np.ascontiguousarray(np.moveaxis(chunk, 1, -1)).reshape(
            chunk.shape[0], -1, chunk.shape[1]) if channels_last
            else np.ascontiguousarray(chunk).reshape(chunk.shape[0], chunk.shape[1], -1))
        partial = np.zeros((x.shape[1], words), np.int64)
        _kernels.moment_partials(view, channels_last, pilot, partial, 2)
        parts.append(partial)
    return parts


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape_name", ["long-rows", "short-rows", "many-channels"])
def test_a_batch_split_into_chunks_of_whole_blocks_gives_the_same_statistics(shape_name,
                                                                              channels_last):
    x = data(SHAPES[shape_name], np.float32)
    expected = batch_norm_stats(x)
    n, c, length = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    rows = _kernels.block_rows(length)
    pilot = np.empty(c)
    first = np.ascontiguousarray(x[:rows]).reshape(min(rows, n), c, length)
    _kernels.pilots(first, False, pilot, 1)
    for threads in (1, 2):  # the channels-last pilots, shared by a team or not: same bits
        channels_last_pilot = np.empty(c)
        _kernels.pilots(np.ascontiguousarray(first.transpose(0, 2, 1)), True,
                        channels_last_pilot, threads)
        np.testing.assert_array_equal(channels_last_pilot, pilot)
    boundaries = list(range(rows, n, rows))
    for splits in ([], boundaries, boundaries[::2], boundaries[:1]):
        for order in (lambda p: p, lambda p: p[::-1]):
            partials = order(chunk_partials(x, pilot, splits, channels_last))
            stats = [np.empty(c) for _ in range(3)]
            _kernels.finish_moments(merged(partials), pilot, 1e-5, *stats)
            assert bits(*stats) == bits(*expected), splits


def test_exact_sums_are_correctly_rounded_in_any_order():
    # Gradient sums of rows of one block each (L = 2048, one nonzero value per row):
    # grad_bias is the exact sum of the values, rounded once.
    values = np.array([1e300, 1.0, -1e300, 3e-300, 2.0**-60, -7.5, 1e16, 1.0, -1e16,
                       5e-324, 12345.678])
    x = np.zeros((values.size, 1, 2048))
    g = np.zeros_like(x)
    g[:, 0, 0] = values
    for order in (np.arange(values.size), np.arange(values.size)[::-1],
                  np.random.default_rng(3).permutation(values.size)):
        _, _, grad_bias = batch_norm_backward(g[order], x[order], np.zeros(1), np.ones(1),
                                              training=False)
        assert grad_bias[0] == math.fsum(values)
