"""Benchmark bn3d's BatchNorm3d against PyTorch's CPU kernel and plain numpy.

Run as ``python benchmarks/bench.py`` (``--help`` for options). For each shape,
operation and thread count it prints the median time of ``--repeat`` runs after
warm-up, the speed-up over torch (torch time / bn3d time), bn3d's bandwidth with
a preallocated output against a copy measured in the same run, and the peak
extra memory of a bn3d call; it writes everything to ``benchmarks/results.json``
for the documentation's plot.

The libraries take turns: the runs of one case are made in ``--rounds`` rounds,
each library warming up and then making its share of the runs in every round,
so that a slow spell of the machine (a virtual one shares its memory bandwidth
with its neighbours) falls on all of them alike. As pyperf does, the whole
measurement is repeated in ``--processes`` fresh worker processes and their runs
pooled: where the memory of a process's arrays happens to lie changes its times
by up to 2x on a virtual machine, for every library at once.

Every library allocates its outputs as it normally does (fresh arrays), except
in the ``out=`` bandwidth measurement. The workers run with glibc's malloc
thresholds fixed (``GLIBC_TUNABLES``, see ``STEADY_MALLOC``): by default glibc
serves a large block from its heap or from fresh pages of the system by a
threshold it moves as blocks are freed, and gives the top of its heap back to the
system above another, so whether a library's output cost it a page fault per 4 KiB
on every call depended on what the other libraries in the process had allocated
before it. The page faults per call of every case are recorded.

torch is timed at the same level as bn3d: ``torch.nn.functional.batch_norm`` for
forwards, ``aten.native_batch_norm_backward`` (what autograd calls) for the
backward, and autograd for forward + backward.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

import bn3d

# glibc's malloc, as a process settles after allocating and freeing arrays of a size:
# blocks up to 32 MiB (the most its moving threshold reaches on 64-bit) from the
# heap, larger ones with fresh pages of the system; the heap kept, not given back.
# Measured on 2026-12-02 with the defaults, in one process taking turns with bn3d:
# torch's backward of (32,128,4,7,7) went from 0.16-0.2 ms (no faults) to 1.0-2.0 ms
# (384 to 786 page faults a call) once bn3d had run, and stayed there; of
# (2,64,16,56,56) from 2.0 to 4.6 ms (1882 faults a call).
STEADY_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"

SHAPES = [(8, 32, 32, 64, 64), (2, 64, 16, 56, 56), (1, 3, 64, 128, 128), (32, 128, 4, 7, 7)]
OPERATIONS = ["train_forward", "eval_forward", "backward", "forward_backward"]
EPS = 1e-5
MOMENTUM = 0.1


def interleaved_times(functions: dict[str, Callable[[], object]], repeat: int,
                      rounds: int, warmup_seconds: float = 0.02) -> dict[str, list[float]]:
    """Wall times of ``repeat`` calls of each function, the functions taking turns.

    The calls are made in ``rounds`` rounds. In each round every function in
    turn is called for ``warmup_seconds`` (and at least twice), untimed, to
    bring its data and code back into cache and its threads awake, then timed
    for its share of the ``repeat`` calls.
    """
    shares = [repeat // rounds + (r < repeat % rounds) for r in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in functions}
    for share in shares:
        for name, function in functions.items():
            start = time.perf_counter()
            calls = 0
            while calls < 2 or time.perf_counter() - start < warmup_seconds:
                function()
                calls += 1
            for _ in range(share):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    return times


def steady_allocator_environment() -> dict[str, str]:
    """This process's environment with glibc's malloc thresholds fixed as ``STEADY_MALLOC``."""
    environment = dict(os.environ)
    tunables = [item for item in environment.get("GLIBC_TUNABLES", "").split(":") if item]
    environment["GLIBC_TUNABLES"] = ":".join([*tunables, STEADY_MALLOC])
    return environment


def page_faults_per_call(function: Callable[[], object], calls: int = 5) -> float:
    """Minor page faults (fresh pages from the system) per call of ``function``."""
    function()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


class Case:
    """The arrays of one shape: input, gradient, parameters and statistics."""

    def __init__(self, shape: tuple[int, ...]):
        rng = np.random.default_rng(0)
        channels = shape[1]
        self.shape = shape
        self.x = (rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5)
        self.g = rng.standard_normal(shape, dtype=np.float32)
        self.weight = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        self.bias = rng.standard_normal(channels).astype(np.float32)
        self.running_mean = np.zeros(channels, np.float32)
        self.running_var = np.ones(channels, np.float32)
        _, self.save_mean, self.save_invstd = bn3d.batch_norm(
            self.x, None, None, self.weight, self.bias, training=True, return_stats=True)


def bn3d_operations(case: Case) -> dict[str, Callable[[], object]]:
    def train_forward():
        return bn3d.batch_norm(case.x, case.running_mean, case.running_var, case.weight,
                               case.bias, training=True, momentum=MOMENTUM, eps=EPS)

    def eval_forward():
        return bn3d.batch_norm(case.x, case.running_mean, case.running_var, case.weight,
                               case.bias, training=False, eps=EPS)

    def backward():
        return bn3d.batch_norm_backward(case.g, case.x, None, None, case.weight, training=True,
                                        eps=EPS, save_mean=case.save_mean,
                                        save_invstd=case.save_invstd)

    def forward_backward():
        _, mean, invstd = bn3d.batch_norm(case.x, case.running_mean, case.running_var,
                                          case.weight, case.bias, training=True,
                                          momentum=MOMENTUM, eps=EPS, return_stats=True)
        return bn3d.batch_norm_backward(case.g, case.x, None, None, case.weight, training=True,
                                        eps=EPS, save_mean=mean, save_invstd=invstd)

    return {"train_forward": train_forward, "eval_forward": eval_forward,
            "backward": backward, "forward_backward": forward_backward}


def torch_operations(case: Case, torch) -> dict[str, Callable[[], object]]:
    functional = torch.nn.functional
    x, g = torch.from_numpy(case.x), torch.from_numpy(case.g)
    weight, bias = torch.from_numpy(case.weight), torch.from_numpy(case.bias)
    running_mean = torch.from_numpy(case.running_mean.copy())
    running_var = torch.from_numpy(case.running_var.copy())
    _, save_mean, save_invstd = torch.native_batch_norm(x, weight, bias, None, None, True,
                                                        MOMENTUM, EPS)
    x_leaf = x.clone().requires_grad_(True)
    weight_leaf = weight.clone().requires_grad_(True)
    bias_leaf = bias.clone().requires_grad_(True)

    def train_forward():
        with torch.no_grad():
            return functional.batch_norm(x, running_mean, running_var, weight, bias,
                                         training=True, momentum=MOMENTUM, eps=EPS)

    def eval_forward():
        with torch.no_grad():
            return functional.batch_norm(x, running_mean, running_var, weight, bias,
                                         training=False, eps=EPS)

    def backward():
        return torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, save_mean, save_invstd, True, EPS, [True, True, True])

    def forward_backward():
        for leaf in (x_leaf, weight_leaf, bias_leaf):
            leaf.grad = None
        y = functional.batch_norm(x_leaf, running_mean, running_var, weight_leaf, bias_leaf,
                                  training=True, momentum=MOMENTUM, eps=EPS)
        y.backward(g)
        return x_leaf.grad

    return {"train_forward": train_forward, "eval_forward": eval_forward,
            "backward": backward, "forward_backward": forward_backward}


def numpy_operations(case: Case) -> dict[str, Callable[[], object]]:
    """A plain numpy BatchNorm3d, as one would write it without bn3d."""
    axes = (0, 2, 3, 4)
    view = (1, -1, 1, 1, 1)
    x, g = case.x, case.g
    weight, bias = case.weight.reshape(view), case.bias.reshape(view)
    count = x.size // x.shape[1]

    def forward(training: bool):
        if training:
            mean = x.mean(axis=axes, keepdims=True)
            var = x.var(axis=axes, keepdims=True)
            case.running_mean[...] = ((1 - MOMENTUM) * case.running_mean
                                      + MOMENTUM * mean.ravel())
            case.running_var[...] = ((1 - MOMENTUM) * case.running_var
                                     + MOMENTUM * var.ravel() * count / (count - 1))
        else:
            mean = case.running_mean.reshape(view)
            var = case.running_var.reshape(view)
        invstd = 1 / np.sqrt(var + EPS)
        return (x - mean) * (invstd * weight) + bias, mean, invstd

    def backward_from(mean, invstd):
        xhat = (x - mean) * invstd
        grad_bias = g.sum(axis=axes, keepdims=True)
        grad_weight = (g * xhat).sum(axis=axes, keepdims=True)
        grad_input = (weight * invstd / count) * (count * g - grad_bias - xhat * grad_weight)
        return grad_input, grad_weight.ravel(), grad_bias.ravel()

    save_mean = case.save_mean.astype(np.float32).reshape(view)
    save_invstd = case.save_invstd.astype(np.float32).reshape(view)
    return {
        "train_forward": lambda: forward(True)[0],
        "eval_forward": lambda: forward(False)[0],
        "backward": lambda: backward_from(save_mean, save_invstd),
        "forward_backward": lambda: backward_from(*forward(True)[1:]),
    }


def bandwidth_times(case: Case, repeat: int, rounds: int) -> dict[str, list[float]]:
    """Times of ``numpy.copyto`` and of a training forward into a preallocated ``out``,
    in turns: each moves one read of x and one write of y."""
    copy_destination, out = np.empty_like(case.x), np.empty_like(case.x)
    return interleaved_times({
        "copy": lambda: np.copyto(copy_destination, case.x),
        "out": lambda: bn3d.batch_norm(case.x, case.running_mean, case.running_var,
                                       case.weight, case.bias, training=True, eps=EPS, out=out),
    }, repeat, rounds)


def extra_memory(operation: Callable[[], object], output_bytes: int) -> int:
    """Peak bytes a call allocates beyond its outputs (numpy allocations, via tracemalloc)."""
    tracemalloc.start()
    try:
        result = operation()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak - output_bytes


def set_threads(threads: int, torch) -> None:
    bn3d.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)


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


def measure(thread_counts: list[int], repeat: int, rounds: int,
            with_numpy: bool) -> dict[str, list]:
    """One worker's raw times: every shape, thread count and operation."""
    try:
        import torch
    except ImportError:
        torch = None
    rows, bandwidth, memory = [], [], []
    for shape in SHAPES:
        case = Case(shape)
        for threads in thread_counts:
            set_threads(threads, torch)
            libraries = {"bn3d": bn3d_operations(case)}
            if torch is not None:
                libraries["torch"] = torch_operations(case, torch)
            if with_numpy and threads == thread_counts[0]:
                libraries["numpy"] = numpy_operations(case)
            for operation in OPERATIONS:
                functions = {name: ops[operation] for name, ops in libraries.items()}
                times = interleaved_times(functions, repeat, rounds)
                faults = {name: page_faults_per_call(function)
                          for name, function in functions.items()}
                rows.append({"shape": list(shape), "threads": threads, "operation": operation,
                             "times": times, "page_faults": faults})
            bandwidth.append({"shape": list(shape), "threads": threads, "bytes": 2 * case.x.nbytes,
                              "times": bandwidth_times(case, repeat, rounds)})
        ops = bn3d_operations(case)
        memory.append({
            "shape": list(shape),
            "train_forward_extra_bytes": extra_memory(ops["train_forward"], case.x.nbytes),
            "backward_extra_bytes": extra_memory(ops["backward"], case.x.nbytes),
            "input_bytes": case.x.nbytes,
        })
    return {"rows": rows, "bandwidth": bandwidth, "memory": memory,
            "torch": None if torch is None else torch.__version__}


def pooled_median(parts: list[dict], name: str) -> float:
    return statistics.median(value for part in parts for value in part["times"][name])


def combine(workers: list[dict], repeat: int, rounds: int) -> dict[str, object]:
    """The results: for each case, the median of every worker's runs."""
    rows = []
    for parts in zip(*(worker["rows"] for worker in workers)):
        names = list(parts[0]["times"])
        rows.append({key: parts[0][key] for key in ("shape", "threads", "operation")}
                    | {"seconds": {name: pooled_median(parts, name) for name in names},
                       "process_medians": {name: [statistics.median(part["times"][name])
                                                  for part in parts] for name in names},
                       "page_faults_per_call": {
                           name: statistics.median(part["page_faults"][name] for part in parts)
                           for name in names}})
    bandwidth = []
    for parts in zip(*(worker["bandwidth"] for worker in workers)):
        moved = parts[0]["bytes"]
        bandwidth.append({"shape": parts[0]["shape"], "threads": parts[0]["threads"],
                          "copy_bytes_per_second": moved / pooled_median(parts, "copy"),
                          "train_forward_out_bytes_per_second":
                              moved / pooled_median(parts, "out")})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "versions": {"bn3d": bn3d.__version__, "torch": workers[0]["torch"]},
        "repeat": repeat * len(workers),
        "rounds": rounds,
        "processes": len(workers),
        "rows": rows,
        "bandwidth": bandwidth,
        "memory": workers[0]["memory"],
    }


def run_workers(processes: int, worker_arguments: list[str]) -> list[dict]:
    """Run the measurement in ``processes`` fresh interpreters, one after another."""
    workers = []
    for index in range(processes):
        started = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--worker", *worker_arguments],
                                capture_output=True, text=True,
                                env=steady_allocator_environment())
        if result.returncode != 0:
            raise SystemExit(f"worker {index + 1} failed:\n{result.stderr}")
        workers.append(json.loads(result.stdout))
        print(f"worker {index + 1}/{processes}: {time.perf_counter() - started:.0f} s",
              flush=True)
    return workers


def markdown_table(results: dict) -> str:
    """The speed-up table: one row per shape and operation, columns per thread count."""
    thread_counts = sorted({row["threads"] for row in results["rows"]})
    header = ["shape (N,C,D,H,W)", "operation"]
    for threads in thread_counts:
        header += [f"bn3d ms ({threads}t)", f"torch ms ({threads}t)", f"speed-up ({threads}t)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(tuple(r["shape"]), r["operation"], r["threads"]): r for r in results["rows"]}
    for shape in dict.fromkeys(tuple(r["shape"]) for r in results["rows"]):
        for operation in OPERATIONS:
            cells = ["(" + ",".join(map(str, shape)) + ")", operation.replace("_", " ")]
            for threads in thread_counts:
                seconds = by_key[(shape, operation, threads)]["seconds"]
                torch_seconds = seconds.get("torch")
                cells += [f"{1e3 * seconds['bn3d']:.3f}",
                          "-" if torch_seconds is None else f"{1e3 * torch_seconds:.3f}",
                          "-" if torch_seconds is None
                          else f"{torch_seconds / seconds['bn3d']:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bandwidth_table(results: dict) -> str:
    lines = ["| shape | threads | copy GB/s | bn3d train forward with out= GB/s | fraction |",
             "|---|---|---|---|---|"]
    for row in results["bandwidth"]:
        copy = row["copy_bytes_per_second"]
        achieved = row["train_forward_out_bytes_per_second"]
        lines.append(f"| ({','.join(map(str, row['shape']))}) | {row['threads']} | "
                     f"{copy / 1e9:.1f} | {achieved / 1e9:.1f} | {achieved / copy:.0%} |")
    return "\n".join(lines)


def page_fault_table(results: dict) -> str:
    """The cases where a library takes fresh pages from the system on every call."""
    names = list(dict.fromkeys(name for row in results["rows"]
                               for name in row["page_faults_per_call"]))
    lines = ["| shape | operation | threads | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for row in results["rows"]:
        faults = row["page_faults_per_call"]
        if any(value >= 1 for value in faults.values()):
            cells = [f"{faults[name]:.0f}" if name in faults else "-" for name in names]
            lines.append(f"| ({','.join(map(str, row['shape']))}) | "
                         f"{row['operation'].replace('_', ' ')} | {row['threads']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(results: dict) -> str:
    lines = ["| shape | input MiB | extra KiB, train forward | extra KiB, backward |",
             "|---|---|---|---|"]
    for row in results["memory"]:
        lines.append(f"| ({','.join(map(str, row['shape']))}) | {row['input_bytes'] / 2**20:.1f} |"
                     f" {row['train_forward_extra_bytes'] / 1024:.1f} |"
                     f" {row['backward_extra_bytes'] / 1024:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10,
                        help="timed runs per library and case in each process (>= 10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="turns the libraries take at each case")
    parser.add_argument("--processes", type=int, default=5,
                        help="worker processes whose runs are pooled")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy baseline")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "results.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 10 or not 1 <= args.rounds <= args.repeat or args.processes < 1:
        parser.error("need --repeat >= 10, 1 <= --rounds <= --repeat and --processes >= 1")
    if args.worker:
        print(json.dumps(measure(args.threads, args.repeat, args.rounds, not args.no_numpy)))
        return
    worker_arguments = ["--repeat", str(args.repeat), "--rounds", str(args.rounds),
                        "--threads", *map(str, args.threads)]
    if args.no_numpy:
        worker_arguments.append("--no-numpy")
    results = combine(run_workers(args.processes, worker_arguments), args.repeat, args.rounds)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(f"{results['machine']['cpu']}, {results['machine']['cores']} cores, {results['date']}")
    print(markdown_table(results))
    print()
    print(bandwidth_table(results))
    print()
    print(memory_table(results))
    print()
    print("page faults per call (4 KiB pages, or 2 MiB where numpy asks for huge pages):")
    print(page_fault_table(results))
    print(f"\nresults written to {args.output}")


if __name__ == "__main__":
    main()
