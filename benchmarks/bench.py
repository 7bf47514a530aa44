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
import gc
import json
import os
import platform
import shutil
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
    Implementation,
    backward_has_out,
    bn3d_operations,
    first_array,
    first_array_ndhwc,
    floor_operations,
    import_optional,
    jax_operations,
    numpy_operations,
    onnxruntime_operations,
    onnxruntime_training_mode,
    set_threads,
    torch_operations,
    versions,
)
from report import report  # noqa: E402
from summary import results_document  # noqa: E402
from targets import TARGET_THREADS  # noqa: E402
from timing import (  # noqa: E402
    STEADY_MALLOC,
    extra_memory,
    interleaved_times,
    page_faults_per_call,
    steady_allocator_environment,
    timed_rounds,
)

import bn3d  # noqa: E402

# floor.py imports these from here.
__all__ = ["SHAPES", "STEADY_MALLOC", "Case", "bn3d_operations", "interleaved_times",
           "main", "set_threads", "steady_allocator_environment", "torch_operations"]

PEER_LIBRARIES = ["torch", "onnxruntime", "jax", "numpy", "floor"]
JAX_THREADS = ("NPROC=<threads> in each worker's environment: jaxlib sizes XLA's CPU "
               "thread pool from it when its client starts")


# -- a worker: every case at one thread count -------------------------------------------------


class Libraries:
    """The peers this worker may use (None where not installed or skipped), and why not."""

    def __init__(self, skip: list[str], threads: int):
        self.notes: dict[str, str] = {}
        self.torch = self._load("torch", skip, ["torch", "torch_cl"])
        self.onnxruntime = self._load("onnxruntime", skip, ["onnxruntime"])
        self.onnx = None if self.onnxruntime is None else self._load("onnx", skip,
                                                                     ["onnxruntime"])
        self.jax = self._load("jax", skip, ["jax", "jax_cl"])
        self.numpy = "numpy" not in skip
        if not self.numpy:
            self.notes["numpy"] = "skipped"
        self.training_mode: dict[str, object] | None = None
        if self.onnxruntime is not None and self.onnx is not None:
            self.training_mode = onnxruntime_training_mode(self.onnxruntime, self.onnx)
            self.notes["onnxruntime"] = (
                f"{self.training_mode['note']}; a session with intra_op_num_threads = threads; "
                "contiguous NCDHW only")
            self.notes["onnxruntime/backward"] = "no backward (an inference session)"
            self.notes["onnxruntime/forward_backward"] = "no backward (an inference session)"
            if not self.training_mode["batch_statistics"]:
                self.notes["onnxruntime/train_forward"] = self.training_mode["note"]
        if self.jax is not None:
            note = (f"NPROC={os.environ.get('NPROC', 'unset')} in this worker ({JAX_THREADS}); "
                    "see cpu_per_wall for the cores it kept busy")
            self.notes["jax"] = self.notes["jax_cl"] = note
        if not backward_has_out():
            self.notes["bn3d_out/backward"] = (
                f"bn3d {bn3d.__version__}: batch_norm_backward has no out=")
        self.floors, self._floor_directory = self._build_floors(skip)
        set_threads(threads, self.torch)

    def _load(self, name: str, skip: list[str], implementations: list[str]) -> Any:
        module = None if name in skip else import_optional(name)
        if module is None:
            reason = "skipped" if name in skip else f"{name} is not installed"
            for implementation in implementations:
                self.notes.setdefault(implementation, reason)
        return module

    def _build_floors(self, skip: list[str]) -> tuple[Any, str | None]:
        names = ["floor_by_channel", "floor_two_sweeps"]
        if "floor" in skip:
            self.notes.update(dict.fromkeys(names, "skipped"))
            return None, None
        directory = tempfile.mkdtemp(prefix="bn3d-floor-")
        try:
            import floor

            return floor.build(Path(directory)), directory
        except Exception as error:  # noqa: BLE001 - no compiler, or it failed: no floor
            shutil.rmtree(directory, ignore_errors=True)
            self.notes.update(dict.fromkeys(names, f"floor.c not built: {error}"))
            return None, None

    def close(self) -> None:
        if self._floor_directory:
            shutil.rmtree(self._floor_directory, ignore_errors=True)


def implementations(case: Case, libraries: Libraries, threads: int,
                    layouts: list[str]) -> dict[str, Implementation]:
    """Every implementation available for ``case``, by name."""
    found: dict[str, Implementation] = {}

    def add(name: str, operations: dict, main_output=first_array) -> None:
        found[name] = Implementation(name, operations, main_output)

    if "contiguous" in layouts:
        add("bn3d", bn3d_operations(case))
        add("bn3d_out", bn3d_operations(case, out=True))
        if libraries.torch is not None:
            add("torch", torch_operations(case, libraries.torch))
        if libraries.training_mode is not None:
            add("onnxruntime", onnxruntime_operations(
                case, libraries.onnxruntime, libraries.onnx, threads,
                bool(libraries.training_mode["batch_statistics"])))
        if libraries.jax is not None:
            add("jax", jax_operations(case, libraries.jax))
        if libraries.numpy:
            add("numpy", numpy_operations(case))
        if libraries.floors is not None:
            for name, operations in floor_operations(case, libraries.floors, threads).items():
                add(name, operations, None)
    if "channels_last" in layouts:
        add("bn3d_cl", bn3d_operations(case, "channels_last"))
        if libraries.torch is not None:
            add("torch_cl", torch_operations(case, libraries.torch, "channels_last"))
        if libraries.jax is not None:
            add("jax_cl", jax_operations(case, libraries.jax, "channels_last"), first_array_ndhwc)
    return found


def reference_outputs(case: Case) -> dict[str, np.ndarray]:
    """bn3d's main output of every operation (contiguous), that the others are compared with."""
    operations = bn3d_operations(case)
    return {operation: first_array(call()) for operation, call in operations.items()}


def max_abs_difference(output: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference between an output and bn3d's."""
    return float(np.max(np.abs(output - reference)))


def measure_case(case: Case, operation: str, found: dict[str, Implementation],
                 reference: np.ndarray, options: argparse.Namespace) -> dict[str, Any]:
    """One case's raw row: every implementation's times, faults, CPU use, output check."""
    calls = {name: implementation.operations[operation]
             for name, implementation in found.items() if operation in implementation.operations}
    differences = {}
    for name, call in calls.items():  # also the first call: JAX compiles, onnxruntime plans
        main_output = found[name].main_output
        result = call()
        differences[name] = (None if main_output is None
                             else max_abs_difference(main_output(result), reference))
        del result
    timing = timed_rounds(calls, options.repeat, options.rounds,
                          warmup_seconds=options.warmup_seconds,
                          min_round_seconds=options.min_round_seconds,
                          load_limit=options.load_limit, max_retries=options.max_retries)
    return {
        "shape": list(case.shape), "threads": options.threads[0], "operation": operation,
        "times": timing.times, "cpu_per_wall": timing.cpu_per_wall,
        "page_faults": {name: page_faults_per_call(call) for name, call in calls.items()},
        "max_abs_difference": differences,
        "rounds": {"limit_cores": options.load_limit,
                   "kept": [record.as_json() for record in timing.kept],
                   "set_aside": [record.as_json() for record in timing.set_aside]},
    }


def bandwidth_row(case: Case, options: argparse.Namespace) -> dict[str, Any]:
    """numpy copy against a training forward into a preallocated ``out``, in turns."""
    copy_destination, out = np.empty_like(case.x), np.empty_like(case.x)
    timing = timed_rounds({
        "copy": lambda: np.copyto(copy_destination, case.x),
        "out": lambda: bn3d.batch_norm(case.x, case.running_mean, case.running_var,
                                       case.weight, case.bias, training=True, eps=1e-5, out=out),
    }, options.repeat, options.rounds, warmup_seconds=options.warmup_seconds,
        min_round_seconds=options.min_round_seconds, load_limit=options.load_limit,
        max_retries=options.max_retries)
    return {"shape": list(case.shape), "threads": options.threads[0],
            "bytes": 2 * case.x.nbytes, "times": timing.times}


def memory_row(case: Case, layouts: list[str]) -> dict[str, Any]:
    """Peak bytes bn3d's calls allocate beyond their outputs."""
    row: dict[str, Any] = {"shape": list(case.shape), "input_bytes": case.x.nbytes}
    for layout in layouts:
        operations = bn3d_operations(case, layout)
        suffix = "" if layout == "contiguous" else "_channels_last"
        row[f"train_forward{suffix}_extra_bytes"] = extra_memory(operations["train_forward"],
                                                                 case.x.nbytes)
        row[f"backward{suffix}_extra_bytes"] = extra_memory(operations["backward"],
                                                            case.x.nbytes)
    if "contiguous" not in layouts:  # the old fields, which the documentation reads
        row["train_forward_extra_bytes"] = row["train_forward_channels_last_extra_bytes"]
        row["backward_extra_bytes"] = row["backward_channels_last_extra_bytes"]
    return row


def measure(options: argparse.Namespace) -> dict[str, Any]:
    """One worker's raw results: every shape and operation at ``options.threads[0]`` threads."""
    threads = options.threads[0]
    libraries = Libraries(options.skip, threads)
    rows, bandwidth, memory = [], [], []
    try:
        for shape in options.shapes:
            case = Case(shape)
            found = implementations(case, libraries, threads, options.layouts)
            references = reference_outputs(case)
            for operation in options.operations:
                rows.append(measure_case(case, operation, found, references[operation], options))
            if "contiguous" in options.layouts:
                bandwidth.append(bandwidth_row(case, options))
            memory.append(memory_row(case, options.layouts))
            del found, references, case
            gc.collect()
    finally:
        libraries.close()
    return {"process": options.process, "threads": threads, "rows": rows,
            "bandwidth": bandwidth, "memory": memory, "notes": libraries.notes}


# -- the parent: workers, pooling, report --------------------------------------------------------


def machine_description() -> dict[str, object]:
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
            result = subprocess.run(
                [sys.executable, __file__, *worker_arguments(options, process, threads)],
                capture_output=True, text=True, env=environment)
            if result.returncode != 0:
                raise SystemExit(f"worker {process + 1} ({threads} threads) failed:\n"
                                 f"{result.stderr}")
            workers.append(json.loads(result.stdout))
            print(f"worker {len(workers)}/{total} (process {process + 1}, {threads} threads): "
                  f"{time.perf_counter() - started:.0f} s, "
                  f"{time.perf_counter() - started_all:.0f} s in all", flush=True)
    return workers


def settings(options: argparse.Namespace) -> dict[str, Any]:
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
                           default=Path(__file__).resolve().parent / "results.json")
    arguments.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments.add_argument("--process", type=int, default=0, help=argparse.SUPPRESS)
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parser()
    options = arguments.parse_args(argv)
    if options.no_numpy and "numpy" not in options.skip:
        options.skip.append("numpy")
    if not 1 <= options.rounds <= options.repeat or options.processes < 1:
        arguments.error("need 1 <= --rounds <= --repeat and --processes >= 1")
    if options.worker:
        print(json.dumps(measure(options)))
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
