"""The numerical core: accuracy, special values, layouts and determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import (
    max_relative_error,
    reduce_axes,
    reference_batch_norm,
    reference_batch_norm_backward,
)

from bn3d import batch_norm, batch_norm_backward, batch_norm_stats, native_batch_norm
from bn3d._core import is_channels_last

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-12}

SHAPES = [
    (7, 3),                 # rank 2: one value per (n, c)
    (4, 5, 33),             # rank 3
    (2, 3, 9, 11),          # rank 4
    (2, 4, 3, 5, 7),        # rank 5
    (3, 2, 5000),           # rows longer than one block
    (1, 3, 64, 64, 17),     # few channels, many blocks: the team shares a channel
    (16, 40, 3, 7, 7),      # many channels: each thread takes whole channels
]


def random_data(rng, shape, dtype, loc=1.0, scale=3.0):
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_training_output_matches_float64_reference(rng, shape, dtype):
    x = random_data(rng, shape, dtype)
    channels = shape[1]
    weight = rng.uniform(0.5, 2.0, channels).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    y = batch_norm(x, None, None, weight, bias, training=True)
    assert y.dtype == dtype and y.shape == shape
    expected = reference_batch_norm(x, weight, bias)
    assert max_relative_error(y, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_eval_output_matches_float64_reference(rng, shape, dtype):
    x = random_data(rng, shape, dtype)
    channels = shape[1]
    mean = rng.standard_normal(channels).astype(dtype)
    var = rng.uniform(0.5, 4.0, channels).astype(dtype)
    weight = rng.uniform(0.5, 2.0, channels).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    y = batch_norm(x, mean, var, weight, bias, training=False)
    expected = reference_batch_norm(x, weight, bias, mean=mean, var=var)
    assert max_relative_error(y, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_match_float64_reference(rng, dtype):
    x = random_data(rng, (3, 4, 6, 5, 300), dtype)
    stats = batch_norm_stats(x, eps=1e-5)
    xd = x.astype(np.float64)
    axes = reduce_axes(x.ndim)
    np.testing.assert_allclose(stats.mean, xd.mean(axis=axes), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(stats.var, xd.var(axis=axes, ddof=1), rtol=1e-13)
    np.testing.assert_allclose(stats.invstd, 1 / np.sqrt(xd.var(axis=axes) + 1e-5), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_mean_small_spread_stays_accurate(rng, dtype):
    x = random_data(rng, (4, 3, 8, 16, 16), dtype, loc=1e4, scale=1.0)
    y = batch_norm(x, None, None, training=True)
    tolerance = 1e-5 if dtype == np.float32 else 1e-10
    assert max_relative_error(y, reference_batch_norm(x)) <= tolerance
    stats = batch_norm_stats(x)
    expected_var = x.astype(np.float64).var(axis=reduce_axes(x.ndim), ddof=1)
    np.testing.assert_allclose(stats.var, expected_var, rtol=1e-9)


def test_huge_offset_variance_is_not_cancelled():
    # 1e8 + small integers: an uncentred sum of squares would lose every digit.
    base = np.arange(4096, dtype=np.float64) % 7
    x = (1e8 + base).reshape(2, 1, 2048)
    stats = batch_norm_stats(x)
    assert stats.var[0] == pytest.approx(base.var(ddof=1), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", [0.0, 3.25, -1e4, 12345.678])
def test_constant_channel_normalises_to_exactly_beta(dtype, value):
    x = np.full((3, 2, 4, 5, 6), value, dtype=dtype)
    bias = np.array([0.5, -2.0], dtype=np.float32 if dtype == np.float16 else dtype)
    y = batch_norm(x, None, None, None, bias, training=True)
    expected = np.broadcast_to(bias.astype(dtype).reshape(1, 2, 1, 1, 1), x.shape)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_value_poisons_its_channel_in_training(rng, bad):
    x = random_data(rng, (2, 3, 4, 4, 4), np.float32)
    x[1, 1, 2, 3, 0] = bad
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = batch_norm(x, running_mean, running_var, training=True)
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(y[:, [0, 2]]).all()
    assert np.isfinite(running_mean[[0, 2]]).all() and np.isfinite(running_var[[0, 2]]).all()
    assert not np.isfinite(running_var[1])


def test_nan_in_eval_stays_in_its_element(rng):
    x = random_data(rng, (2, 3, 4, 4, 4), np.float32)
    x[1, 1, 2, 3, 0] = np.nan
    y = batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=False)
    assert np.isnan(y).sum() == 1 and np.isnan(y[1, 1, 2, 3, 0])


@pytest.mark.parametrize("shape", [(0, 3, 2, 2, 2), (2, 3, 0, 2, 2), (2, 0, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_empty_batch_gives_empty_output_and_keeps_running_stats(shape, training):
    channels = shape[1]
    running_mean = np.full(channels, 0.5, np.float32)
    running_var = np.full(channels, 2.0, np.float32)
    y = batch_norm(np.zeros(shape, np.float32), running_mean, running_var, training=training)
    assert y.shape == shape and y.dtype == np.float32
    np.testing.assert_array_equal(running_mean, np.full(channels, 0.5, np.float32))
    np.testing.assert_array_equal(running_var, np.full(channels, 2.0, np.float32))


@pytest.mark.parametrize(
    "make_view",
    [
        lambda a: a[:, :, ::2],                       # strided spatial axis
        lambda a: a[::2],                             # strided batch
        lambda a: a[:, 1:4],                          # channel slice
        lambda a: a.transpose(0, 1, 4, 3, 2),         # permuted spatial axes
        lambda a: np.moveaxis(np.moveaxis(a, 1, -1).copy(), -1, 1),  # channels-last memory
        lambda a: a[..., ::-1],                       # negative stride
    ],
    ids=["strided-spatial", "strided-batch", "channel-slice", "transposed", "channels-last",
         "reversed"],
)
@pytest.mark.parametrize("training", [True, False])
def test_non_contiguous_input_gives_correct_results(rng, make_view, training):
    base = random_data(rng, (6, 5, 8, 6, 10), np.float64)
    x = make_view(base)
    channels = x.shape[1]
    mean, var = rng.standard_normal(channels), rng.uniform(1, 2, channels)
    y = batch_norm(x, mean.copy(), var.copy(), training=training)
    expected = (reference_batch_norm(x) if training
                else reference_batch_norm(x, mean=mean, var=var))
    assert max_relative_error(y, expected) <= 1e-12
    # The output keeps a channels-last input's memory layout (PyTorch's preserve_format);
    # any other comes back C-contiguous.
    if is_channels_last(x):
        assert np.moveaxis(y, 1, -1).flags.c_contiguous
    else:
        assert y.flags.c_contiguous


@pytest.mark.parametrize(
    "make_view",
    [lambda a: a, lambda a: a[::2], lambda a: a[:, 1:-1]],
    ids=["contiguous", "strided-batch", "channel-slice"],
)
@pytest.mark.parametrize("training", [True, False])
def test_short_rows_shared_by_a_team_give_correct_results(rng, make_view, training):
    # Large enough for a team; rows of 147 elements, 13 to a block, and a last,
    # partial block: in inference the rows are shared out in (n, c) order.
    import bn3d

    x = make_view(random_data(rng, (74, 11, 3, 7, 7), np.float64))
    g = random_data(rng, x.shape, np.float64)
    channels = x.shape[1]
    mean, var = rng.standard_normal(channels), rng.uniform(1, 2, channels)
    bn3d.set_num_threads(3)
    try:
        y = batch_norm(x, mean.copy(), var.copy(), training=training)
        grad_input = batch_norm_backward(g, x, mean, var, training=training)[0]
    finally:
        bn3d.set_num_threads(None)
    expected = (reference_batch_norm(x) if training
                else reference_batch_norm(x, mean=mean, var=var))
    assert max_relative_error(y, expected) <= 1e-12
    if not training:
        expected_grad = g * (1 / np.sqrt(var + 1e-5))[:, None, None, None]
        assert max_relative_error(grad_input, expected_grad) <= 1e-12


def test_float16_is_computed_in_float32_and_returned_as_float16(rng):
    x = random_data(rng, (2, 3, 4, 5, 6), np.float16)
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = batch_norm(x, running_mean, running_var, training=True)
    assert y.dtype == np.float16 and running_mean.dtype == np.float32
    expected = batch_norm(x.astype(np.float32), None, None, training=True).astype(np.float16)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("training", [True, False])
def test_out_receives_the_result(rng, training):
    x = random_data(rng, (2, 3, 4, 5, 6), np.float32)
    stats = (np.zeros(3, np.float32), np.ones(3, np.float32))
    expected = batch_norm(x, *map(np.copy, stats), training=training)
    out = np.empty_like(x)
    returned = batch_norm(x, *map(np.copy, stats), training=training, out=out)
    assert returned is out
    np.testing.assert_array_equal(out, expected)
    batch_norm(x, *map(np.copy, stats), training=training, out=x)  # in place
    np.testing.assert_array_equal(x, expected)


# The compiler vectorises the row loops 8 or 16 lanes at a time, with shorter
# vectors and scalar steps at the end of a row: lengths on either side of those widths.
ROW_LENGTHS = [1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 49, 196]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", ROW_LENGTHS)
@pytest.mark.parametrize("training", [True, False])
def test_every_row_length_is_normalised_exactly_once_in_place(rng, length, training, dtype):
    x = random_data(rng, (5, 3, length), dtype)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    if training:
        expected = reference_batch_norm(x)
    else:
        expected = reference_batch_norm(x, mean=mean, var=var)
    out = np.full_like(x, np.nan)
    batch_norm(x, mean.astype(dtype), var.astype(dtype), training=training, out=out)
    assert max_relative_error(out, expected) <= TOLERANCE[dtype]
    in_place = x.copy()
    batch_norm(in_place, mean.astype(dtype), var.astype(dtype), training=training,
               out=in_place)
    np.testing.assert_array_equal(in_place, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", ROW_LENGTHS)
@pytest.mark.parametrize("training", [True, False])
def test_every_row_length_has_accurate_gradients(rng, length, training, dtype):
    x = random_data(rng, (5, 3, length), dtype)
    g = random_data(rng, x.shape, dtype)
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    got = batch_norm_backward(g, x, running_mean.astype(dtype), running_var.astype(dtype),
                              training=training)
    expected = reference_batch_norm_backward(g, x, running_mean.astype(dtype),
                                             running_var.astype(dtype), training)
    tolerance = {np.float32: 2e-6, np.float64: 1e-12}[dtype]
    for a, b in zip(got, expected):
        assert np.max(np.abs(a - b)) <= tolerance * max(1.0, np.max(np.abs(b)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [1, 7, 196])
@pytest.mark.parametrize("training", [True, False])
def test_short_row_gradients_are_accurate_across_batch_groups(rng, length, training, dtype):
    # 150 rows per channel: 64 batch groups of two or three rows, shared by a team.
    import bn3d

    x = random_data(rng, (150, 4, length), dtype)
    g = random_data(rng, x.shape, dtype)
    running_mean, running_var = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    bn3d.set_num_threads(3)
    try:
        got = batch_norm_backward(g, x, running_mean.astype(dtype), running_var.astype(dtype),
                                  training=training)
    finally:
        bn3d.set_num_threads(None)
    expected = reference_batch_norm_backward(g, x, running_mean.astype(dtype),
                                             running_var.astype(dtype), training)
    tolerance = {np.float32: 2e-6, np.float64: 1e-12}[dtype]
    for a, b in zip(got, expected):
        assert np.max(np.abs(a - b)) <= tolerance * max(1.0, np.max(np.abs(b)))


STREAMING_LAYOUTS = {
    "contiguous": lambda a: a,
    "strided-batch": lambda a: a[::2],
    "channel-slice": lambda a: a[:, 1:],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    [(6, 3, 1000), (2, 4, 2500), (1, 3, 64, 64, 17), (70, 5, 3, 7, 7)],
    ids=["short-rows", "long-rows-by-channel", "long-rows-shared", "short-rows-many"],
)
@pytest.mark.parametrize("layout", STREAMING_LAYOUTS, ids=list(STREAMING_LAYOUTS))
def test_streamed_outputs_hold_the_same_bits(rng, shape, layout, dtype):
    from bn3d import _kernels

    x = STREAMING_LAYOUTS[layout](random_data(rng, shape, dtype))
    g = random_data(rng, x.shape, dtype)
    channels = x.shape[1]
    running_mean = rng.standard_normal(channels).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, channels).astype(dtype)
    # An output one element into its buffer: its rows start off 16-byte boundaries.
    misaligned = np.empty(x.size + 2, dtype)[1:-1].reshape(x.shape)

    def outputs():
        return [
            batch_norm(x, None, None, training=True),
            batch_norm(x, running_mean, running_var, training=False),
            batch_norm(x, None, None, training=True, out=misaligned).copy(),
            *batch_norm_backward(g, x, None, None, training=True),
            *batch_norm_backward(g, x, running_mean, running_var, training=False),
        ]

    threshold, width = _kernels.stream_threshold(), _kernels.store_width()
    streamed = {}
    try:
        _kernels.set_stream_threshold(2**62)
        cached = outputs()
        _kernels.set_stream_threshold(0)
        for store_width in [w for w in (16, 32, 64) if w <= width]:
            _kernels.set_store_width(store_width)
            streamed[store_width] = outputs()
    finally:
        _kernels.set_stream_threshold(threshold)
        _kernels.set_store_width(width)
    for store_width, results in streamed.items():
        for a, b in zip(cached, results):
            np.testing.assert_array_equal(a, b, err_msg=f"{store_width}-byte stores")
    np.testing.assert_array_equal(cached[0], cached[2])


def test_store_width_is_one_the_cpu_has():
    from bn3d import _kernels

    width = _kernels.store_width()
    assert width in (16, 32, 64)
    with pytest.raises(ValueError, match="16, 32 or 64"):
        _kernels.set_store_width(8)
    if width < 64:
        with pytest.raises(ValueError, match=f"at most {width}"):
            _kernels.set_store_width(64)
    assert _kernels.store_width() == width


def test_running_stats_follow_torch_update_rule(rng):
    x = random_data(rng, (4, 3, 5), np.float64)
    running_mean, running_var = rng.standard_normal(3), rng.uniform(1, 2, 3)
    expected_mean = 0.7 * running_mean + 0.3 * x.mean(axis=(0, 2))
    expected_var = 0.7 * running_var + 0.3 * x.var(axis=(0, 2), ddof=1)
    batch_norm(x, running_mean, running_var, training=True, momentum=0.3)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-14)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-14)


def test_single_value_per_channel_gives_nan_running_variance():
    # Rejected by batch_norm (torch's check) but defined in the native form.
    running_mean, running_var = np.zeros(2), np.ones(2)
    x = np.array([[3.0, 4.0]])
    y, _, _ = native_batch_norm(x, None, None, running_mean, running_var, True, 0.5, 1e-5)
    np.testing.assert_array_equal(y, np.zeros((1, 2)))
    np.testing.assert_array_equal(running_mean, [1.5, 2.0])
    assert np.isnan(running_var).all()


def numerical_gradients(f, array, step=1e-6):
    grad = np.zeros_like(array)
    flat, grad_flat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + step
        upper = f()
        flat[i] = saved - step
        lower = f()
        flat[i] = saved
        grad_flat[i] = (upper - lower) / (2 * step)
    return grad


@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_finite_differences(rng, training):
    x = random_data(rng, (3, 2, 2, 3, 2), np.float64)
    weight, bias = rng.uniform(0.5, 2, 2), rng.standard_normal(2)
    mean, var = rng.standard_normal(2), rng.uniform(1, 2, 2)
    g = rng.standard_normal(x.shape)

    def loss():
        y = batch_norm(x, mean.copy(), var.copy(), weight, bias, training=training, eps=1e-3)
        return float(np.sum(y * g))

    grad_input, grad_weight, grad_bias = batch_norm_backward(
        g, x, mean, var, weight, training=training, eps=1e-3)
    np.testing.assert_allclose(grad_input, numerical_gradients(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_weight, numerical_gradients(loss, weight), rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(grad_bias, numerical_gradients(loss, bias), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("training", [True, False])
def test_backward_with_saved_stats_equals_recomputed(rng, training):
    x = random_data(rng, (4, 3, 7, 100), np.float32)
    g = random_data(rng, x.shape, np.float32)
    stats = (np.zeros(3, np.float32), np.ones(3, np.float32))
    _, save_mean, save_invstd = batch_norm(x, *map(np.copy, stats), training=training,
                                           return_stats=True)
    recomputed = batch_norm_backward(g, x, *stats, training=training)
    saved = batch_norm_backward(g, x, *stats, training=training, save_mean=save_mean,
                                save_invstd=save_invstd)
    for a, b in zip(recomputed, saved):
        np.testing.assert_array_equal(a, b)


def test_float32_backward_matches_float64(rng):
    x = random_data(rng, (4, 3, 6, 50), np.float32)
    g = random_data(rng, x.shape, np.float32)
    got = batch_norm_backward(g, x, None, None, training=True)
    expected = batch_norm_backward(g.astype(np.float64), x.astype(np.float64), None, None,
                                   training=True)
    scale = np.max(np.abs(expected[0]))
    assert np.max(np.abs(got[0] - expected[0])) <= 1e-6 * scale
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5, atol=1e-4)


DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib
    import itertools
    import numpy as np
    import bn3d
    digest = hashlib.sha256()
    rng = np.random.default_rng(7)
    shapes = [(1, 3, 64, 64, 40), (8, 40, 3, 7, 9), (2, 3, 5000), (4, 5, 1, 1, 1),
              (150, 3, 5, 7)]
    for shape, dtype, threshold in itertools.product(shapes, (np.float32, np.float64),
                                                     (2**62, 0)):
        bn3d._kernels.set_stream_threshold(threshold)
        x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        y, mean, invstd = bn3d.batch_norm(x, None, None, training=True, return_stats=True)
        grads = bn3d.batch_norm_backward(g, x, None, None, training=True)
        running_mean = np.linspace(-1, 1, shape[1]).astype(dtype)
        running_var = np.linspace(0.5, 2, shape[1]).astype(dtype)
        eval_grads = bn3d.batch_norm_backward(g, x, running_mean, running_var)
        for array in (y, mean, invstd) + grads + eval_grads:
            digest.update(np.ascontiguousarray(array).tobytes())
    print(bn3d.get_num_threads(), digest.hexdigest())
    """
)


def test_results_are_bitwise_identical_for_any_thread_count(tmp_path):
    import bn3d

    if not bn3d.openmp_enabled():
        pytest.skip("a serial build has a single thread count")
    digests = {}
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        # From an empty directory, so the installed bn3d is imported, not the source tree.
        result = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], env=env,
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        used, digest = result.stdout.split()
        assert used == threads
        digests[threads] = digest
    assert len(set(digests.values())) == 1, digests


def test_openmp_is_enabled_in_this_build():
    import bn3d

    if os.environ.get("BN3D_DISABLE_OPENMP", "") not in ("", "0"):
        pytest.skip("built without OpenMP on purpose")
    assert bn3d.openmp_enabled()


def test_digest_of_a_call_does_not_depend_on_set_num_threads(rng):
    import bn3d

    x = random_data(rng, (1, 3, 64, 64, 40), np.float32)
    digests = set()
    try:
        for threads in (1, 2, 4):
            bn3d.set_num_threads(threads)
            y = batch_norm(x, None, None, training=True)
            digests.add(hashlib.sha256(y.tobytes()).hexdigest())
    finally:
        bn3d.set_num_threads(None)
    assert len(digests) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 2, 2049), (70, 5, 3, 7, 7), (2, 3, 31)],
                         ids=["long-rows", "short-rows", "rows-shorter-than-the-lanes"])
def test_every_version_of_the_statistics_kernel_gives_the_same_bits(rng, shape, dtype):
    from bn3d import _kernels

    x = random_data(rng, shape, dtype, loc=1e3)
    x[1, 0, -1] = np.nan
    width = _kernels.store_width()
    versions = [w for w in (16, 32, 64) if w <= width]
    if len(versions) < 2:
        pytest.skip("this CPU runs one version of the kernels only")
    stats = {}
    try:
        for version in versions:
            _kernels.set_store_width(version)
            stats[version] = batch_norm_stats(x)
    finally:
        _kernels.set_store_width(width)
    for version, (mean, invstd, var) in stats.items():
        if version == width:
            continue
        np.testing.assert_array_equal(mean, stats[width].mean, err_msg=f"{version}-byte version")
        np.testing.assert_array_equal(invstd, stats[width].invstd)
        np.testing.assert_array_equal(var, stats[width].var)
    assert np.isnan(stats[width].mean[0]) and not np.isnan(stats[width].mean[1:]).any()
