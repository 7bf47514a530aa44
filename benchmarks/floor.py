"""How close bn3d's backward comes to the memory floor of this machine.

Run as ``python benchmarks/floor.py`` (``--help`` for options). It compiles
``floor.c`` (idealised backwards with none of bn3d's numerical care: the memory
traffic of a backward and the least arithmetic) with the C compiler that builds
Python extensions, and times them in one process beside bn3d's backward and,
when it is installed, PyTorch's, the libraries taking turns as in ``bench.py``.
Every call allocates a fresh output, and the floors stream it where bn3d does;
glibc's malloc thresholds are fixed as in ``bench.py``.
For each shape and thread count it prints the median times and bn3d's time
over the faster of the two two-pass floors.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from bn3d import _kernels as bn3d_kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    SHAPES,
    STEADY_MALLOC,
    Case,
    bn3d_operations,
    interleaved_times,
    set_threads,
    steady_allocator_environment,
    torch_operations,
)

SOURCE = Path(__file__).resolve().parent / "floor.c"
FLOORS = ["floor_one_sweep", "floor_by_channel", "floor_two_sweeps"]
FLOAT_P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")


def build(directory: Path) -> ctypes.CDLL:
    """Compile ``floor.c`` for this CPU, with OpenMP, into a shared library."""
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")[:1]
    library = directory / "floor.so"
    command = [*compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC",
               str(SOURCE), "-o", str(library)]
    subprocess.run(command, check=True)
    floors = ctypes.CDLL(str(library))
    size = ctypes.c_ssize_t
    for name in FLOORS:
        function = getattr(floors, name)
        function.restype = None
        function.argtypes = [FLOAT_P, FLOAT_P, FLOAT_P, size, size, size, ctypes.c_int,
                             ctypes.c_int]
    floors.floor_two_sweeps.argtypes = [*floors.floor_two_sweeps.argtypes, FLOAT_P]
    return floors


def floor_operations(case: Case, floors: ctypes.CDLL,
                     threads: int) -> dict[str, Callable[[], object]]:
    n, c = case.shape[:2]
    length = case.x.size // (n * c)
    scratch = np.empty(2 * n * c + 2 * c, np.float32)
    # Stream where bn3d does: when x, g and the output are larger than the cache.
    stream = int(3 * case.x.nbytes > bn3d_kernels.stream_threshold())

    def call(name: str) -> Callable[[], object]:
        function = getattr(floors, name)
        extra = (scratch,) if name == "floor_two_sweeps" else ()

        def run() -> np.ndarray:
            out = np.empty_like(case.x)
            function(case.x, case.g, out, n, c, length, threads, stream, *extra)
            return out
        return run

    return {name.removeprefix("floor_"): call(name) for name in FLOORS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="timed runs per function and case")
    parser.add_argument("--rounds", type=int, default=10, help="turns the functions take")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if STEADY_MALLOC not in os.environ.get("GLIBC_TUNABLES", ""):
        # Start again with glibc's malloc thresholds fixed, as bench.py's workers run.
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]],
                  steady_allocator_environment())
    try:
        import torch
    except ImportError:
        torch = None
    with tempfile.TemporaryDirectory() as directory:
        floors = build(Path(directory))
        print("| shape (N,C,D,H,W) | threads | bn3d ms | torch ms | one sweep ms "
              "| by channel ms | two sweeps ms | bn3d / best two-pass floor |")
        print("|---|---|---|---|---|---|---|---|")
        for shape in SHAPES:
            case = Case(shape)
            for threads in args.threads:
                set_threads(threads, torch)
                functions = {"bn3d": bn3d_operations(case)["backward"]}
                if torch is not None:
                    functions["torch"] = torch_operations(case, torch)["backward"]
                functions.update(floor_operations(case, floors, threads))
                times = interleaved_times(functions, args.repeat, args.rounds)
                median = {name: float(np.median(runs)) * 1e3 for name, runs in times.items()}
                floor = min(median["by_channel"], median["two_sweeps"])
                torch_ms = f"{median['torch']:.3f}" if "torch" in median else "-"
                print(f"| ({','.join(map(str, shape))}) | {threads} | {median['bn3d']:.3f} "
                      f"| {torch_ms} | {median['one_sweep']:.3f} | {median['by_channel']:.3f} "
                      f"| {median['two_sweeps']:.3f} | {median['bn3d'] / floor:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
