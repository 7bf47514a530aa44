"""The ``bn3d`` command line."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from typing import Callable

import numpy as np

from . import __version__, _kernels
from ._threads import get_num_threads, openmp_enabled


def _info(args: argparse.Namespace) -> int:
    """Print the version, OpenMP and thread settings, and how bn3d was built."""
    rows = [
        ("bn3d", __version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("openmp", "on" if openmp_enabled() else "off"),
        ("threads", str(get_num_threads())),
        ("compiler", _kernels.compiler_version()),
        ("compile flags", _kernels.build_flags()),
        ("kernels", _kernels.__file__),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``bn3d`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="bn3d",
        description="A fast, exact BatchNorm3d that speaks PyTorch and MindSpore.",
    )
    parser.add_argument("--version", action="version", version=f"bn3d {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="version, OpenMP, threads and build flags")
    info.set_defaults(handler=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bn3d`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
