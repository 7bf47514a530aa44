"""bn3d.dask: the bits of the in-memory call, whatever the chunks, the tree, the workers
and the scheduler; a real cluster, a real store, and faults."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import bn3d

da = pytest.importorskip("dask.array")
bn3d_dask = pytest.importorskip("bn3d.dask")

LONG = (6, 3, 2, 32, 64)      # rows of 4096: two blocks a row, any split along N
SHORT = (23, 4, 3, 7, 7)      # rows of 147: 13 rows a block


def data(shape, dtype=np.float32, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 0.5).astype(dtype)


def bits(*arrays):
    return [np.ascontiguousarray(np.asarray(a)).tobytes() for a in arrays]


def in_memory(x, g):
    channels = x.shape[1]
    weight, bias = np.linspace(0.5, 1.5, channels), np.linspace(-1, 1, channels)
    running = [np.zeros(channels, x.dtype), np.ones(channels, x.dtype)]
    y, mean, invstd = bn3d.batch_norm(x, *running, weight.astype(x.dtype),
                                      bias.astype(x.dtype), training=True, momentum=0.3,
                                      return_stats=True)
    grads = bn3d.batch_norm_backward(g, x, None, None, weight.astype(x.dtype), training=True)
    eval_y = bn3d.batch_norm(x, *running, weight.astype(x.dtype), training=False)
    return [y, mean, invstd, *running, *grads, eval_y]


def distributed(x, g, chunks, split_every=None, scheduler="threads"):
    channels = x.shape[1]
    weight, bias = np.linspace(0.5, 1.5, channels), np.linspace(-1, 1, channels)
    running = [np.zeros(channels, x.dtype), np.ones(channels, x.dtype)]
    dx, dg = da.from_array(x, chunks=chunks), da.from_array(g, chunks=chunks)
    y, mean, invstd = bn3d_dask.batch_norm(dx, *running, weight.astype(x.dtype),
                                           bias.astype(x.dtype), training=True, momentum=0.3,
                                           split_every=split_every, return_stats=True)
    grad_input, grad_weight, grad_bias = bn3d_dask.batch_norm_backward(
        dg, dx, None, None, weight.astype(x.dtype), training=True, split_every=split_every)
    eval_y = bn3d_dask.batch_norm(dx, *running, weight.astype(x.dtype), training=False)
    y, grad_input, eval_y = da.compute(y, grad_input, eval_y, scheduler=scheduler)
    return [y, mean, invstd, *running, grad_input, grad_weight, grad_bias, eval_y]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "chunks"), [
    (LONG, (1, 3, 2, 32, 64)), (LONG, (4, 2, 2, 32, 64)), (LONG, ((1, 2, 3), 1, 2, 32, 64)),
    (SHORT, (5, 4, 3, 7, 7)), (SHORT, ((13, 10), (1, 3), 3, 7, 7)), (SHORT, (1, 2, 3, 7, 7)),
])
def test_any_split_of_the_batch_and_channels_gives_the_in_memory_bits(shape, chunks, dtype):
    x, g = data(shape, dtype), data(shape, dtype, seed=1)
    expected = bits(*in_memory(x, g))
    for split_every in (2, 3, 16):
        assert bits(*distributed(x, g, chunks, split_every)) == expected, split_every


def test_any_scheduler_gives_the_same_bits():
    x, g = data(LONG), data(LONG, seed=1)
    expected = bits(*in_memory(x, g))
    for scheduler in ("sync", "threads", "processes"):
        assert bits(*distributed(x, g, (2, 3, 2, 32, 64), 2, scheduler)) == expected, scheduler


@pytest.mark.parametrize("chunks", [
    (2, 3, 2, 32, 64), (2, 3, 3, 20, 50), ((1, 3), 1, (5, 3), (7, 25), 64), (4, 3, 1, 32, 64),
])
def test_any_spatial_chunks_give_the_in_memory_bits(chunks):
    x, g = data((4, 3, 8, 32, 64)), data((4, 3, 8, 32, 64), seed=1)
    assert bits(*distributed(x, g, chunks, 2)) == bits(*in_memory(x, g))


def test_short_rows_chunked_in_space_give_the_in_memory_bits():
    x, g = data(SHORT), data(SHORT, seed=1)
    assert bits(*distributed(x, g, (5, 4, 2, 3, 7), 3)) == bits(*in_memory(x, g))


def test_chunks_of_whole_blocks_are_kept_and_others_merged_as_little_as_needed():
    aligned = da.zeros((4, 3, 8, 32, 64), chunks=(1, 1, 2, 32, 64))
    assert bn3d_dask._aligned(aligned, True) is aligned
    # tiles of 3 x 10 x 50 become slabs of whole 16 x 64 planes, an even number of them
    # (1024-element planes: a segment is two), about as large as a tile
    slabs = bn3d_dask._aligned(da.zeros((4, 3, 8, 16, 64), chunks=(1, 1, 3, 10, 50)), True)
    assert slabs.chunks[2:] == ((2, 2, 2, 2), (16,), (64,))
    samples = bn3d_dask._aligned(da.zeros(SHORT, chunks=(5, 1, 3, 7, 7)), True)
    assert set(samples.chunks[0][:-1]) == {13}
    tiles = da.zeros((4, 3, 8, 16, 64), chunks=(1, 1, 3, 10, 50))
    assert bn3d_dask._aligned(tiles, False) is tiles


def test_without_bitwise_no_chunk_moves_and_the_results_are_within_the_bound():
    x, g = data((4, 3, 8, 32, 64)), data((4, 3, 8, 32, 64), seed=1)
    dx, dg = (da.from_array(a, chunks=(2, 3, 3, 20, 50)) for a in (x, g))
    stats = bn3d_dask.population_stats(dx, bitwise=False)
    expected = bn3d.batch_norm_stats(x)
    np.testing.assert_allclose(stats.mean, expected.mean, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(stats.var_unbiased, expected.var, rtol=2e-6)
    y = bn3d_dask.batch_norm(dx, None, None, training=True, bitwise=False)
    assert y.chunks == dx.chunks
    np.testing.assert_allclose(y.compute(), bn3d.batch_norm(x, None, None, training=True),
                               rtol=2e-6, atol=2e-6)
    grad_input, grad_weight, _ = bn3d_dask.batch_norm_backward(dg, dx, None, None,
                                                              training=True, bitwise=False)
    expected_grads = bn3d.batch_norm_backward(g, x, None, None, training=True)
    assert grad_input.chunks == dx.chunks
    np.testing.assert_allclose(grad_input.compute(), expected_grads[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_weight, expected_grads[1], rtol=1e-5)


def test_population_stats_are_the_whole_data_sets():
    x = data(SHORT, np.float64)
    stats = bn3d_dask.population_stats(da.from_array(x, chunks=(7, 2, 3, 7, 7)))
    axes = (0, 2, 3, 4)
    np.testing.assert_array_equal(stats.values, np.full(4, x.size // 4))
    np.testing.assert_allclose(stats.mean, x.mean(axis=axes), rtol=1e-14)
    np.testing.assert_allclose(stats.var, x.var(axis=axes), rtol=1e-13)
    np.testing.assert_allclose(stats.var_unbiased, x.var(axis=axes, ddof=1), rtol=1e-13)


@pytest.mark.parametrize("facade", ["torch", "mindspore"])
def test_population_stats_load_into_either_facade(facade):
    x = data(SHORT)
    stats = bn3d_dask.population_stats(da.from_array(x, chunks=5))
    if facade == "torch":
        module = bn3d.torch_nn.BatchNorm3d(4)
        bn3d_dask.load_population_stats(module, stats)
        loaded = module.running_mean, module.running_var
    else:
        module = bn3d.mindspore_nn.BatchNorm3d(4)
        bn3d_dask.load_population_stats(module, stats)
        loaded = module.moving_mean.asnumpy(), module.moving_variance.asnumpy()
    np.testing.assert_array_equal(loaded[0], stats.mean.astype(np.float32))
    np.testing.assert_array_equal(loaded[1], stats.var_unbiased.astype(np.float32))


def test_a_chunk_with_nan_poisons_only_its_channel():
    x = data(LONG)
    x[3, 1, 0, 5, 7] = np.nan
    y = bn3d_dask.batch_norm(da.from_array(x, chunks=(2, 1, 2, 32, 64)), None, None,
                             training=True).compute()
    assert np.isnan(y[:, 1]).all() and not np.isnan(y[:, [0, 2]]).any()
    np.testing.assert_array_equal(y, bn3d.batch_norm(x, None, None, training=True))


def test_a_chunk_of_the_wrong_dtype_fails_before_anything_is_written(tmp_path):
    zarr = pytest.importorskip("zarr")
    x = da.from_array(data(LONG), chunks=(2, 3, 2, 32, 64))
    # A chunk that is not what the array declares (as a faulty store or function gives).
    bad = x.map_blocks(lambda block, block_info=None: block.astype(np.float64)
                       if block_info[0]["chunk-location"][0] == 1 else block,
                       dtype=np.float32)
    target = zarr.open_array(tmp_path / "out.zarr", mode="w", shape=LONG,
                             chunks=(2, 3, 2, 32, 64), dtype=np.float32, fill_value=-1.0)
    with pytest.raises(ValueError, match=r"chunk \(1, 0, 0, 0, 0\) has dtype float64"):
        y = bn3d_dask.batch_norm(bad, None, None, training=True)
        da.to_zarr(y, target)
    assert (target[...] == -1.0).all()


def test_a_zarr_array_on_disk_is_normalised_back_to_disk_with_the_in_memory_bits(tmp_path):
    zarr = pytest.importorskip("zarr")
    x = data(SHORT)
    store = zarr.open_array(tmp_path / "x.zarr", mode="w", shape=x.shape,
                            chunks=(5, 2, 3, 7, 7), dtype=x.dtype)
    store[...] = x
    running = [np.zeros(4, np.float32), np.ones(4, np.float32)]
    y = bn3d_dask.batch_norm(da.from_zarr(store), *running, training=True)
    da.to_zarr(y, str(tmp_path / "y.zarr"))
    expected_running = [np.zeros(4, np.float32), np.ones(4, np.float32)]
    expected = bn3d.batch_norm(x, *expected_running, training=True)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "y.zarr", mode="r")[...],
                                  expected)
    assert bits(*running) == bits(*expected_running)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local, \
            distributed.Client(local) as client:
        yield local, client


def test_a_local_cluster_of_two_processes_gives_the_in_memory_bits(cluster):
    _, client = cluster
    x, g = data(LONG), data(LONG, seed=1)
    assert len(client.scheduler_info()["workers"]) == 2
    assert bits(*distributed(x, g, (1, 3, 2, 32, 64), 2, client)) == bits(*in_memory(x, g))


@pytest.mark.parametrize("split_every", [1, 0, 2.5, True])
def test_a_fan_in_below_two_is_refused(split_every):
    with pytest.raises(ValueError, match="split_every must be an int of at least 2"):
        bn3d_dask.population_stats(da.from_array(data(SHORT), chunks=5), split_every=split_every)


def test_the_fan_in_goes_to_the_chunked_axes():
    partials = da.zeros((8, 3, 1, 1, 1), chunks=1)
    assert bn3d_dask._fan_in(None, partials, (0, 2, 3, 4)) == {0: 32, 2: 2, 3: 2, 4: 2}
    spatial = da.zeros((8, 3, 4, 1, 1), chunks=1)
    assert bn3d_dask._fan_in(16, spatial, (0, 2, 3, 4)) == {0: 4, 2: 4, 3: 2, 4: 2}


def test_population_stats_can_stay_lazy_and_be_followed_on_a_cluster(cluster, capsys):
    from distributed import progress

    _, client = cluster
    x = data(LONG)
    lazy = bn3d_dask.population_stats(da.from_array(x, chunks=(2, 3, 2, 32, 64)),
                                      compute=False)
    future = client.compute(lazy)
    progress(future)
    stats = future.result()
    assert "100%" in capsys.readouterr().out
    expected = bn3d.batch_norm_stats(x)
    assert bits(stats.mean, stats.var_unbiased) == bits(expected.mean, expected.var)


# Last: it replaces one of the cluster's workers.
def slow_chunks(block):
    time.sleep(0.05)
    return block


def test_a_worker_killed_during_the_reduction_leaves_the_result_bitwise_right(cluster):
    local, client = cluster
    x = data((48, 3, 2, 32, 64))
    expected = bn3d.batch_norm_stats(x)
    slow = da.from_array(x, chunks=(1, 3, 2, 32, 64)).map_blocks(slow_chunks)
    before = set(client.scheduler_info()["workers"])

    victim = client.run(os.getpid, workers=sorted(before)[:1])

    def kill_one_worker():
        time.sleep(0.5)
        os.kill(next(iter(victim.values())), signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    stats = bn3d_dask.population_stats(slow, split_every=2)
    killer.join()
    client.wait_for_workers(2, timeout=60)
    assert set(client.scheduler_info()["workers"]) != before  # one was lost and replaced
    np.testing.assert_array_equal(stats.mean, expected.mean)
    np.testing.assert_array_equal(stats.var_unbiased, expected.var)
