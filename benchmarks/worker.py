"""A worker of ``bench.py``: every case at one thread count, in a fresh process.

``bench.py`` starts it as ``python bench.py --worker ...`` with ``NPROC`` set to the
thread count (JAX's threads) and glibc's malloc thresholds fixed, and reads the JSON
it prints: per case, every implementation's kept call times, CPU per wall second,
page faults per call, the largest difference of its output from bn3d's and the
rounds kept and set aside; per shape, the bandwidth and memory measurements; and
notes on the peers (which are missing and why, how they ran).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from peers import (
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
)
from timing import extra_memory, page_faults_per_call, timed_rounds

import bn3d


class Libraries:
    """The peers this worker may use (None where not installed or skipped), and notes on them.

    Parameters
    ----------
    skip : list of str
        Peers left out (``torch``, ``onnxruntime``, ``jax``, ``numpy``, ``floor``).
    threads : int
        The worker's thread count, set here for bn3d and torch.
    """

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
        self.training_mode = self._probe_onnxruntime()
        self._note_jax_threads(threads)
        if not backward_has_out():
            self.notes["bn3d_out/backward"] = (
                f"bn3d {bn3d.__version__}: batch_norm_backward has no out=")
        self.floors, self._floor_directory = self._build_floors(skip)
        set_threads(threads, self.torch)

    def _probe_onnxruntime(self) -> dict[str, object] | None:
        """Whether onnxruntime runs ``training_mode=1`` (None without onnxruntime)."""
        if self.onnxruntime is None or self.onnx is None:
            return None
        found = onnxruntime_training_mode(self.onnxruntime, self.onnx)
        self.notes["onnxruntime"] = (f"{found['note']}; a session with intra_op_num_threads "
                                     "= threads; contiguous NCDHW only")
        for operation in ("backward", "forward_backward"):
            self.notes[f"onnxruntime/{operation}"] = "no backward (an inference session)"
        if not found["batch_statistics"]:
            self.notes["onnxruntime/train_forward"] = str(found["note"])
        return found

    def _note_jax_threads(self, threads: int) -> None:
        if self.jax is None:
            return
        nproc = os.environ.get("NPROC")
        note = ("threads: NPROC=<threads> in each worker (see settings.jax_threads); "
                "cpu_per_wall shows the cores it kept busy")
        if nproc != str(threads):
            note = f"NPROC was {nproc!r} in a worker of {threads} threads: JAX's were not set"
        self.notes["jax"] = self.notes["jax_cl"] = note

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
        """Remove the floor's build directory."""
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
