"""Batch normalisation of a zarr array on a Dask cluster, with the in-memory bits.

Run it from any directory: it writes its arrays to a temporary one. It starts a
LocalCluster of two worker processes (loopback only) and checks every result
against bn3d's in-memory call on the same data.
"""

import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from distributed import Client, LocalCluster

import bn3d
import bn3d.dask
from bn3d.torch_nn import BatchNorm3d


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    shape, chunks = (12, 4, 16, 64, 64), (1, 4, 16, 64, 64)  # a volume a chunk

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB",
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster):
        # A data set on disk (here random; yours is a store you already have).
        volumes = da.random.default_rng(0).standard_normal(shape, chunks=chunks,
                                                           dtype=np.float32)
        da.to_zarr(volumes, str(folder / "x.zarr"))
        x = da.from_zarr(str(folder / "x.zarr"))

        # 1. Population statistics ("precise BN"), loaded into a torch-dialect module.
        stats = bn3d.dask.population_stats(x)
        module = BatchNorm3d(4)
        bn3d.dask.load_population_stats(module, stats)

        # 2. A training-mode normalisation over the whole batch, written back to disk.
        running_mean, running_var = np.zeros(4, np.float32), np.ones(4, np.float32)
        y = bn3d.dask.batch_norm(x, running_mean, running_var, training=True)
        da.to_zarr(y, str(folder / "y.zarr"))

    # The same bits as the in-memory calls on the whole array.
    data = zarr.open_array(str(folder / "x.zarr"), mode="r")[...]
    expected = bn3d.batch_norm_stats(data)
    in_memory_running = [np.zeros(4, np.float32), np.ones(4, np.float32)]
    expected_y = bn3d.batch_norm(data, *in_memory_running, training=True)
    written = zarr.open_array(str(folder / "y.zarr"), mode="r")[...]
    print("population statistics, bitwise:",
          np.array_equal(stats.mean, expected.mean)
          and np.array_equal(stats.var_unbiased, expected.var))
    print("loaded into the module:",
          np.array_equal(module.running_mean, expected.mean.astype(np.float32)))
    print("output, bitwise:", np.array_equal(written, expected_y))
    print("running statistics, bitwise:",
          np.array_equal(running_mean, in_memory_running[0])
          and np.array_equal(running_var, in_memory_running[1]))


if __name__ == "__main__":  # worker processes import this file: start nothing then
    main()
