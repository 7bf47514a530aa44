"""Benchmark bn3d's BatchNorm3d against PyTorch, onnxruntime, JAX and plain numpy.

Run as ``python benchmarks/bench.py`` (``--help`` for options; ``pip install
".[bench]"`` installs the peers, each of which is optional). For each shape,
thread count and operation (training forward, inference forward, backward,
forward + backward; float32) it times every implementation of :mod:`peers`, in
the contiguous (NCDHW) and the channels-last (NDHWC memory) layouts, prints the
tables and the targets of :mod:`targets`, and writes ``benchmarks/results.json``
for the documentation.

How it measures
---------------
- The implementations take turns (:mod:`timing`): the runs of a case are made in
  ``--rounds`` rounds, in each of which every implementation warms up and then
  makes its share of the runs, so a slow spell falls on all of them alike.
- The load rule (:mod:`load_rule`): a round during which other processes used more
  than ``--load-limit`` cores (0.25, read from ``/proc/stat``) is set aside and run
  again, up to ``--max-retries`` times; every round set aside is recorded.
- As pyperf does, the measurement is repeated in ``--processes`` fresh worker
  processes for each thread count (a worker measures one thread count: JAX fixes
  its threads when it starts, from ``NPROC``). Where the memory of a process's
  arrays lies changes its times by up to 2x on a virtual machine, for every
  library at once, so each case reports the spread of the processes' medians.
- Every implementation allocates its outputs as it normally does (``bn3d_out``
  and the bandwidth measurement excepted). The workers run with glibc's malloc
  thresholds fixed (``GLIBC_TUNABLES``, see ``timing.STEADY_MALLOC``): with the
  defaults, whether a library's output cost it a page fault per 4 KiB on every
  call depended on what the others had allocated before it. The page faults per
  call are recorded.
- Before it is timed, every implementation's main output (``y``, or
  ``grad_input``) is compared with bn3d's: ``max_abs_difference``.

results.json (schema 2)
-----------------------
``schema``: 2. ``date``: ISO 8601, UTC. ``machine``: ``cpu``, ``cores``,
``platform``, ``python``, ``numpy``. ``versions``: every distribution the run may
use (``bn3d``, ``numpy``, ``torch``, ``onnxruntime``, ``onnx``, ``jax``, ``jaxlib``;
null when not installed).
``settings``: ``repeat`` (timed runs per implementation and case in each process),
``rounds``, ``processes`` (per thread count), ``threads``, ``shapes``,
``operations``, ``layouts``, ``skip``, ``warmup_seconds``, ``malloc``
(``GLIBC_TUNABLES``), ``jax_threads`` (how JAX's threads were set) and ``load``
(``limit_cores``, ``max_retries``, ``min_round_seconds``, ``ticks_per_second``).
``repeat`` (runs pooled per cell), ``rounds``, ``processes``: as in schema 1.
``implementations``: name -> ``library``, ``layout``, ``calls``.
``notes``: name (or ``name/operation``) -> why it is missing or how it ran, e.g.
whether onnxruntime runs ``training_mode=1`` on the CPU.
``rows``: one per case, with ``shape``, ``threads``, ``operation`` and, per
implementation name: ``seconds`` (the median of all the processes' runs),
``process_medians`` (each process's median, in process order, null where it did
not measure), ``spread`` (``min``/``median``/``max`` of those), ``cpu_per_wall``
(the process's CPU seconds per wall second while it ran: the cores it kept busy),
``page_faults_per_call``, ``max_abs_difference`` (from bn3d's output); and
``load``: ``rounds_kept``, ``set_aside``, ``kept_under_load``,
``max_others_cores_kept``.
``load``: the settings above, ``rounds_kept``, and ``set_aside`` and
``kept_under_load``: every such round with its case, ``process``, ``round``,
``attempt``, ``seconds`` and ``others_cores`` (other processes' CPU, in cores).
``bandwidth``: per shape and thread count, ``copy_bytes_per_second`` (numpy copy)
and ``train_forward_out_bytes_per_second`` (bn3d into ``out=``), each moving one
read of x and one write. ``memory``: per shape, the peak bytes a bn3d call
allocates beyond its outputs (``train_forward_extra_bytes``,
``backward_extra_bytes``, and their ``_channels_last_`` versions) and
``input_bytes``.
``targets``: ``threads``, ``cells`` (per target, shape and operation: ``target``,
``description``, ``ratio`` (the median of the processes' ratios of their
medians), ``pooled_ratio`` (of the pooled medians), ``numerator`` and
``denominator`` (the implementations compared), ``bound``, ``at_least``, ``met``,
``spread`` ([min, max] of the processes' ratios), ``spread_crosses``, ``note``) and
``summary`` (counts). See :mod:`targets`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_rule import LOAD_LIMIT, ticks_per_second  # noqa: E402
from peers import (  # noqa: E402
    IMPLEMENTATIONS,
    LAYOUTS,
    OPERATIONS,
    SHAPES,
    Case,
    bn3d_operations,
    set_threads,
    torch_operations,
    versions,
)
from report import report  # noqa: E402
from summary import results_document  # noqa: E402
from targets import TARGET_THREADS  # noqa: E402
from timing import (  # noqa: E402
    STEADY_MALLOC,
    interleaved_times,
    steady_allocator_environment,
)

# floor.py imports these from here.
__all__ = ["SHAPES", "STEADY_MALLOC", "Case", "bn3d_operations", "interleaved_times",
           "main", "set_threads", "steady_allocator_environment", "torch_operations"]

PEER_LIBRARIES = ["torch", "onnxruntime", "jax", "numpy", "floor"]
JAX_THREADS = ("NPROC=<threads> in each worker's environment: jaxlib sizes XLA's CPU "
               "thread pool from it when its client starts (XLA_FLAGS' "
               "--xla_cpu_multi_thread_eigen=false and intra_op_parallelism_threads do not "
               "limit it)")


def machine_description() -> dict[str, object]:
    """The CPU model, cores, platform and Python and numpy versions."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__}


def worker_arguments(options: argparse.Namespace, process: int, threads: int) -> list[str]:
    """The command line of one worker."""
    arguments = ["--worker", "--process", str(process), "--threads", str(threads),
                 "--repeat", str(options.repeat), "--rounds", str(options.rounds),
                 "--warmup-seconds", str(options.warmup_seconds),
                 "--min-round-seconds", str(options.min_round_seconds),
                 "--max-retries", str(options.max_retries),
                 "--load-limit", str(options.load_limit),
                 "--shapes", *(",".join(map(str, shape)) for shape in options.shapes),
                 "--operations", *options.operations, "--layouts", *options.layouts]
    if options.skip:
        arguments += ["--skip", *options.skip]
    return arguments


def run_workers(options: argparse.Namespace) -> list[dict]:
    """Run the workers one after another: for each process index, every thread count."""
    workers = []
    total = options.processes * len(options.threads)
    started_all = time.perf_counter()
    for process in range(options.processes):
        for threads in options.threads:
            started = time.perf_counter()
            environment = steady_allocator_environment({"NPROC": str(threads)})
            with tempfile.TemporaryDirectory(prefix="bn3d-bench-") as directory:
                output = Path(directory) / "worker.json"
                result = subprocess.run(
                    [sys.executable, __file__, *worker_arguments(options, process, threads),
                     "--output", str(output)],
                    capture_output=True, text=True, env=environment)
                if result.returncode != 0:
                    raise SystemExit(f"worker {process + 1} ({threads} threads) failed:\n"
                                     f"{result.stderr}")
                workers.append(json.loads(output.read_text()))
            print(f"worker {len(workers)}/{total} (process {process + 1}, {threads} threads): "
                  f"{time.perf_counter() - started:.0f} s, "
                  f"{time.perf_counter() - started_all:.0f} s in all", flush=True)
    return workers


def settings(options: argparse.Namespace) -> dict[str, Any]:
    """The run's settings, as ``results.json`` records them."""
    return {
        "repeat": options.repeat, "rounds": options.rounds, "processes": options.processes,
        "threads": options.threads, "shapes": [list(shape) for shape in options.shapes],
        "operations": options.operations, "layouts": options.layouts, "skip": options.skip,
        "warmup_seconds": options.warmup_seconds, "malloc": STEADY_MALLOC,
        "jax_threads": JAX_THREADS,
        "load": {"limit_cores": options.load_limit, "max_retries": options.max_retries,
                 "min_round_seconds": options.min_round_seconds,
                 "ticks_per_second": ticks_per_second()},
    }


def shape_argument(text: str) -> tuple[int, ...]:
    """``8,32,32,64,64`` -> ``(8, 32, 32, 64, 64)``."""
    try:
        shape = tuple(int(size) for size in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r}") from None
    if len(shape) != 5 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"need 5 positive sizes (N,C,D,H,W), got {text!r}")
    return shape


def parser() -> argparse.ArgumentParser:
    """The command line of the benchmark (and, with ``--worker``, of its workers)."""
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--repeat", type=int, default=10,
                           help="timed runs per implementation and case in each process")
    arguments.add_argument("--rounds", type=int, default=5,
                           help="turns the implementations take at each case")
    arguments.add_argument("--processes", type=int, default=5,
                           help="worker processes per thread count whose runs are pooled")
    arguments.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    arguments.add_argument("--shapes", type=shape_argument, nargs="+", default=SHAPES,
                           metavar="N,C,D,H,W")
    arguments.add_argument("--operations", nargs="+", choices=OPERATIONS, default=OPERATIONS)
    arguments.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=LAYOUTS)
    arguments.add_argument("--skip", nargs="+", choices=PEER_LIBRARIES, default=[],
                           help="peers to leave out")
    arguments.add_argument("--no-numpy", action="store_true", help="the same as --skip numpy")
    arguments.add_argument("--load-limit", type=float, default=LOAD_LIMIT,
                           help="cores other processes may use during a round (/proc/stat)")
    arguments.add_argument("--max-retries", type=int, default=4,
                           help="times a loaded round is set aside and run again")
    arguments.add_argument("--min-round-seconds", type=float, default=0.4,
                           help="warm-ups are lengthened so a round lasts this long")
    arguments.add_argument("--warmup-seconds", type=float, default=0.02)
    arguments.add_argument("--output", type=Path,
                           default=Path(__file__).resolve().parent / "results.json",
                           help="the results file (a worker's raw results, with --worker)")
    arguments.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments.add_argument("--process", type=int, default=0, help=argparse.SUPPRESS)
    return arguments


def main(argv: list[str] | None = None) -> None:
    """Run the workers, pool their results, write ``--output`` and print the report."""
    arguments = parser()
    options = arguments.parse_args(argv)
    if options.no_numpy and "numpy" not in options.skip:
        options.skip.append("numpy")
    if not 1 <= options.rounds <= options.repeat or options.processes < 1:
        arguments.error("need 1 <= --rounds <= --repeat and --processes >= 1")
    if options.worker:  # its results go to --output, whatever a library prints
        from worker import measure

        options.output.write_text(json.dumps(measure(options)))
        return
    workers = run_workers(options)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results = results_document(
        workers, settings(options), machine_description(), versions(), date,
        {name: asdict(description) for name, description in IMPLEMENTATIONS.items()},
        TARGET_THREADS)
    options.output.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(report(results))
    print(f"\nresults written to {options.output}")


if __name__ == "__main__":
    main()
