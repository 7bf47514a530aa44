"""bn3d on Dask: population statistics in memory, and a data set larger than the workers'
memory normalised from a zarr store back to one.

Two parts, each against its target of issue 25:

1. **In memory** (threaded scheduler), in ``--processes`` fresh processes taking turns
   under the load rule (:mod:`timing`): :func:`bn3d.dask.population_stats` of an
   in-memory Dask array of (16,32,32,64,64) float32, chunked as Dask chooses
   (``chunks="auto"``: tiles of the volumes), four samples a chunk (as large, whole
   volumes) and one sample a chunk, against :func:`bn3d.batch_norm_stats`
   on the numpy array (target: within 1.5x) and Dask's own ``mean`` and ``var``
   (target: faster).
2. **Out of core** (``dask.distributed``, a ``LocalCluster`` of 2 worker processes of
   one thread, ``--worker-memory`` each, loopback only): a zarr array of ``--gib`` GiB
   (uncompressed, one sample a chunk) on disk; the population statistics, then a
   training-mode normalisation written to a second zarr array, each with a progress
   bar; against Dask reading the array and summing it (target: at least half its
   throughput) and, as the floor of a training normalisation (a pass that reads, then
   one that reads and writes), reading and summing plus reading and copying; the peak
   memory of each worker process (sampled every 0.2 s) against its limit. The load
   rule applies here too, counting the cluster's processes as ours: a step during
   which other processes used more than a quarter of a core is run again (up to
   twice).

Run ``python benchmarks/dask_bench.py`` (about 10 minutes; ``--gib 2`` for a quick
look); it prints the tables and writes ``benchmarks/dask_results.json``. Needs the
``dask`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from load_rule import LOAD_LIMIT, busy_ticks, is_loaded, load_rule_available, own_ticks
from summary import spread
from timing import timed_rounds

HERE = Path(__file__).resolve().parent
IN_MEMORY_SHAPE = (16, 32, 32, 64, 64)
SAMPLE = (32, 32, 128, 128)  # one chunk of the out-of-core array: 64 MiB of float32
GIB = 2**30


# -- part 1: in memory ------------------------------------------------------------------


def in_memory_functions() -> dict[str, Callable[[], object]]:
    """The calls part 1 times, on one array, in the order they take turns."""
    import dask
    import dask.array as da

    import bn3d
    import bn3d.dask

    dask.config.set(scheduler="threads")
    x = np.random.default_rng(0).standard_normal(IN_MEMORY_SHAPE, dtype=np.float32)
    auto = da.from_array(x, chunks="auto")  # Dask's choice: tiles of the volumes
    volumes = da.from_array(x, chunks=(4, *IN_MEMORY_SHAPE[1:]))  # as large, whole volumes
    per_sample = da.from_array(x, chunks=(1, *IN_MEMORY_SHAPE[1:]))
    axes = (0, 2, 3, 4)
    expected = bn3d.batch_norm_stats(x)
    for chunked in (auto, volumes, per_sample):  # the same bits, or the timings mean nothing
        stats = bn3d.dask.population_stats(chunked)
        assert np.array_equal(stats.mean, expected.mean)
        assert np.array_equal(stats.var_unbiased, expected.var)
    stats = bn3d.dask.population_stats(auto, bitwise=False)
    assert np.allclose(stats.var_unbiased, expected.var, rtol=2e-6)
    return {
        "bn3d.batch_norm_stats (numpy)": lambda: bn3d.batch_norm_stats(x),
        "bn3d.dask.population_stats, auto chunks": lambda: bn3d.dask.population_stats(auto),
        "bn3d.dask.population_stats, auto chunks, bitwise=False":
            lambda: bn3d.dask.population_stats(auto, bitwise=False),
        "bn3d.dask.population_stats, 4 samples a chunk":
            lambda: bn3d.dask.population_stats(volumes),
        "bn3d.dask.population_stats, a sample a chunk":
            lambda: bn3d.dask.population_stats(per_sample),
        "dask mean + var, a sample a chunk":
            lambda: da.compute(per_sample.mean(axis=axes), per_sample.var(axis=axes)),
    }


def in_memory_worker(options: argparse.Namespace) -> None:
    """One fresh process of part 1: its times as JSON on stdout."""
    functions = in_memory_functions()
    timing = timed_rounds(functions, options.repeat, options.rounds,
                          min_round_seconds=options.min_round_seconds)
    json.dump({"times": timing.times,
               "kept_rounds": [record.as_json() for record in timing.kept],
               "set_aside": [record.as_json() for record in timing.set_aside],
               "chunks": {"auto": str(_auto_chunks())}}, sys.stdout)


def _auto_chunks() -> tuple:
    import dask.array as da
    return da.empty(IN_MEMORY_SHAPE, dtype=np.float32, chunks="auto").chunksize


def in_memory_part(options: argparse.Namespace) -> dict[str, Any]:
    """Part 1 in ``options.processes`` fresh processes, one after another."""
    workers = []
    for process in range(options.processes):
        result = subprocess.run(
            [sys.executable, __file__, "--in-memory-worker", "--repeat", str(options.repeat),
             "--rounds", str(options.rounds), "--min-round-seconds",
             str(options.min_round_seconds)],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"in-memory process {process + 1} failed:\n{result.stderr}")
        workers.append(json.loads(result.stdout))
        print(f"in memory: process {process + 1}/{options.processes} done", flush=True)
    names = list(workers[0]["times"])
    per_process = {name: [float(np.median(worker["times"][name])) for worker in workers]
                   for name in names}
    return {"shape": IN_MEMORY_SHAPE, "auto_chunks": workers[0]["chunks"]["auto"],
            "seconds": {name: spread(medians) for name, medians in per_process.items()},
            "rounds_kept": sum(len(worker["kept_rounds"]) for worker in workers),
            "rounds_set_aside": [record for worker in workers
                                 for record in worker["set_aside"]]}


# -- part 2: out of core ----------------------------------------------------------------


class Sampler:
    """The peak resident memory of each worker process, sampled in a thread."""

    def __init__(self, pids: dict[str, int], every: float = 0.2) -> None:
        self.pids, self.every = pids, every
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            for address, pid in self.pids.items():
                try:
                    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
                except (OSError, IndexError, ValueError):
                    continue
                self.peak[address] = max(self.peak[address], resident)
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cluster_ticks(pids: list[int]) -> int:
    """CPU ticks of this process and the cluster's worker processes."""
    total = own_ticks(Path("/proc/self/stat").read_text())
    for pid in pids:
        try:
            total += own_ticks(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            pass
    return total


def timed_step(run: Callable[[], object], pids: list[int], retries: int = 2
               ) -> dict[str, Any]:
    """Run a step, with the load rule: rerun it while others used more than the limit."""
    hz = os.sysconf("SC_CLK_TCK")
    attempts = []
    for attempt in range(retries + 1):
        busy = busy_ticks(Path("/proc/stat").read_text()) if load_rule_available() else 0
        ours = cluster_ticks(pids)
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        load = None
        if load_rule_available():
            others = (busy_ticks(Path("/proc/stat").read_text()) - busy
                      - (cluster_ticks(pids) - ours))
            load = others / hz / seconds
        attempts.append({"attempt": attempt, "seconds": seconds, "others_cores": load})
        if load is None or not is_loaded(load, LOAD_LIMIT):
            break
    return {"seconds": attempts[-1]["seconds"], "attempts": attempts}


def empty_store(path: Path, shape: tuple[int, ...]) -> Any:
    """An uncompressed float32 zarr array of one sample a chunk (zarr 3, or 2)."""
    import zarr

    if hasattr(zarr, "create_array"):
        return zarr.create_array(store=path, shape=shape, chunks=(1, *shape[1:]),
                                 dtype="float32", compressors=None)
    return zarr.open_array(path, mode="w", shape=shape, chunks=(1, *shape[1:]),
                           dtype="float32", compressor=None)


def write_store(path: Path, samples: int) -> None:
    """The input: ``samples`` random samples, one a chunk, written by the cluster."""
    import dask.array as da

    shape = (samples, *SAMPLE)
    store = empty_store(path, shape)
    generator = da.random.default_rng(0)
    x = generator.standard_normal(shape, chunks=(1, *SAMPLE), dtype=np.float32) * 2 + 0.5
    da.to_zarr(x.astype(np.float32), store)


def out_of_core_part(options: argparse.Namespace) -> dict[str, Any]:
    """Part 2 on a LocalCluster of 2 worker processes with a memory limit each."""
    import dask.array as da
    import zarr
    from distributed import Client, LocalCluster, progress

    import bn3d.dask

    samples = max(1, round(options.gib * GIB / (4 * math.prod(SAMPLE))))
    root = Path(tempfile.mkdtemp(prefix="bn3d-dask-bench-", dir=options.store))
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          memory_limit=options.worker_memory, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            pids = client.run(os.getpid)
            limit = {address: info["memory_limit"]
                     for address, info in client.scheduler_info()["workers"].items()}
            print(f"out of core: writing {samples} samples ({options.gib} GiB) to {root}",
                  flush=True)
            write_store(root / "x.zarr", samples)
            x = da.from_zarr(zarr.open_array(root / "x.zarr", mode="r"))
            output = empty_store(root / "y.zarr", x.shape)
            channels = x.shape[1]
            running = [np.zeros(channels, np.float32), np.ones(channels, np.float32)]

            def follow(collection: Any) -> Any:
                future = client.compute(collection)
                progress(future)
                print(flush=True)
                return future.result()

            def read_and_sum() -> object:
                return follow(x.sum())

            copy = empty_store(root / "copy.zarr", x.shape)

            def read_and_copy() -> object:  # the floor of any pass that writes its output
                return follow(da.to_zarr(x, copy, compute=False))

            def stats() -> object:
                return follow(bn3d.dask.population_stats(x, compute=False))

            def normalise() -> object:
                # pass 1 (the batch statistics) inside batch_norm, pass 2 with a bar
                y = bn3d.dask.batch_norm(x, *running, training=True)
                return follow(da.to_zarr(y, output, compute=False))

            steps = {"dask: read and sum (x.sum())": read_and_sum,
                     "dask: read and copy to zarr": read_and_copy,
                     "bn3d.dask.population_stats": stats,
                     "bn3d.dask.batch_norm (training) to zarr": normalise}
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in steps}
            with Sampler(pids) as sampler:
                for repetition in range(options.repetitions):
                    for name, step in steps.items():
                        print(f"{name} ({repetition + 1}/{options.repetitions})", flush=True)
                        results[name].append(timed_step(step, list(pids.values())))
            restarted = set(client.run(os.getpid).items()) != set(pids.items())
            size = x.nbytes
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "shape": [samples, *SAMPLE], "gib": size / GIB, "chunk_mib": 4 * math.prod(SAMPLE) / 2**20,
        "worker_memory_limit_gib": {address: value / GIB for address, value in limit.items()},
        "worker_peak_gib": {address: value / GIB for address, value in sampler.peak.items()},
        "worker_restarted": restarted,
        "steps": {name: {"seconds": spread(run["seconds"] for run in runs),
                         "gib_per_second": spread(size / GIB / run["seconds"] for run in runs),
                         "runs": runs}
                  for name, runs in results.items()},
    }


# -- report -----------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    """The two parts' tables and targets, as reStructuredText-friendly text."""
    lines = []
    part = results.get("in_memory")
    if part:
        seconds = part["seconds"]
        lines += [f"In memory, {tuple(part['shape'])} float32, threaded scheduler "
                  f"(auto chunks: {part['auto_chunks']}); medians of "
                  f"{part['run']['settings']['processes']} processes, ms (min / median / max):",
                  ""]
        for name, value in seconds.items():
            lines.append(f"  {name:50s} {value['min'] * 1e3:7.1f} {value['median'] * 1e3:7.1f}"
                         f" {value['max'] * 1e3:7.1f}")
        base = seconds["bn3d.batch_norm_stats (numpy)"]["median"]
        dask_own = seconds["dask mean + var, a sample a chunk"]["median"]
        for name in ("bn3d.dask.population_stats, auto chunks",
                     "bn3d.dask.population_stats, auto chunks, bitwise=False",
                     "bn3d.dask.population_stats, 4 samples a chunk",
                     "bn3d.dask.population_stats, a sample a chunk"):
            ratio = seconds[name]["median"] / base
            lines.append(f"  {name}: {ratio:.2f}x the in-memory call (target <= 1.5x: "
                         f"{'met' if ratio <= 1.5 else 'not met'}), "
                         f"{dask_own / seconds[name]['median']:.1f}x faster than Dask's "
                         "mean + var")
        lines.append(f"  rounds set aside for load: {len(part['rounds_set_aside'])} "
                     f"(kept {part['rounds_kept']})")
    part = results.get("out_of_core")
    if part:
        lines += ["", f"Out of core: zarr {tuple(part['shape'])} float32 ({part['gib']:.1f} GiB,"
                  f" {part['chunk_mib']:.0f} MiB chunks), 2 workers x 1 thread; GiB/s "
                  "(min / median / max):", ""]
        steps = part["steps"]
        for name, step in steps.items():
            rate = step["gib_per_second"]
            lines.append(f"  {name:42s} {rate['min']:6.2f} {rate['median']:6.2f} "
                         f"{rate['max']:6.2f}   ({step['seconds']['median']:.1f} s)")
        reference = steps["dask: read and sum (x.sum())"]["gib_per_second"]["median"]
        for name in ("bn3d.dask.population_stats", "bn3d.dask.batch_norm (training) to zarr"):
            share = steps[name]["gib_per_second"]["median"] / reference
            lines.append(f"  {name}: {share:.2f} of the read-and-sum throughput (target >= "
                         f"0.5: {'met' if share >= 0.5 else 'not met'})")
        floor = (steps["dask: read and sum (x.sum())"]["seconds"]["median"]
                 + steps["dask: read and copy to zarr"]["seconds"]["median"])
        normalise = steps["bn3d.dask.batch_norm (training) to zarr"]["seconds"]["median"]
        lines.append(f"  bn3d.dask.batch_norm (training) to zarr: {normalise / floor:.2f}x the "
                     "time of its two passes' floor (read and sum, then read and copy)")
        for address, peak in part["worker_peak_gib"].items():
            lines.append(f"  worker {address}: peak {peak:.2f} GiB of "
                         f"{part['worker_memory_limit_gib'][address]:.2f} GiB")
        lines.append(f"  a worker restarted: {part['worker_restarted']}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--processes", type=int, default=3,
                           help="fresh processes of part 1 (default 3)")
    arguments.add_argument("--repeat", type=int, default=20, help="timed calls per process")
    arguments.add_argument("--rounds", type=int, default=5, help="rounds per process")
    arguments.add_argument("--min-round-seconds", type=float, default=0.5)
    arguments.add_argument("--gib", type=float, default=8.0, help="size of the zarr array")
    arguments.add_argument("--worker-memory", default="2GiB", help="each worker's limit")
    arguments.add_argument("--repetitions", type=int, default=2,
                           help="runs of each out-of-core step, taking turns")
    arguments.add_argument("--store", default=None, help="directory for the zarr arrays")
    arguments.add_argument("--parts", nargs="+", default=["in-memory", "out-of-core"],
                           choices=["in-memory", "out-of-core"])
    arguments.add_argument("--output", type=Path, default=HERE / "dask_results.json",
                           help="the results (parts not run are kept from it); the docs' "
                                "table goes beside it, as .rst")
    arguments.add_argument("--in-memory-worker", action="store_true", help=argparse.SUPPRESS)
    return arguments


def main(argv: list[str] | None = None) -> None:
    options = parser().parse_args(argv)
    if options.in_memory_worker:
        in_memory_worker(options)
        return
    import dask
    import distributed
    import zarr

    import bn3d
    results: dict[str, Any] = {}
    if options.output.exists():  # keep the parts not run this time
        results = json.loads(options.output.read_text())
    run = {
        "settings": {key: (str(value) if isinstance(value, Path) else value)
                     for key, value in vars(options).items() if key != "in_memory_worker"},
        "versions": {"bn3d": bn3d.__version__, "dask": dask.__version__,
                     "distributed": distributed.__version__, "zarr": zarr.__version__,
                     "numpy": np.__version__},
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if "in-memory" in options.parts:
        results["in_memory"] = {**in_memory_part(options), "run": run}
    if "out-of-core" in options.parts:
        results["out_of_core"] = {**out_of_core_part(options), "run": run}
    options.output.write_text(json.dumps(results, indent=1) + "\n")
    text = report(results)
    options.output.with_suffix(".rst").write_text(rst(results, text))
    print(text)


def rst(results: dict[str, Any], text: str) -> str:
    """The report as the docs include it: when and where, then the tables."""
    runs = [part["run"] for part in (results.get("in_memory"), results.get("out_of_core"))
            if part]
    when = " and ".join(sorted({run["measured"] for run in runs}))
    versions = runs[0]["versions"] if runs else {}
    return (f"Measured with ``python benchmarks/dask_bench.py`` on {when} (this project's "
            f"2-core machine; dask {versions.get('dask')}, zarr {versions.get('zarr')}); "
            "the numbers are in ``benchmarks/dask_results.json``.\n\n"
            ".. code-block:: text\n\n"
            + "".join(f"   {line}\n" if line else "\n" for line in text.splitlines()))


if __name__ == "__main__":
    main()
