"""The ``bn3d`` command line."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from typing import Callable

import numpy as np

from . import __version__, _kernels
from ._targets import TARGETS, TargetUnavailable, open_side
from ._threads import get_num_threads, openmp_enabled
from .spec import FAIL, PASS, SKIPPED, SpecError, load_spec, max_error, run_check, verify


def _streaming() -> str:
    """When the kernels write with non-temporal stores."""
    if not _kernels.streaming_supported():
        return "off (no non-temporal stores on this machine)"
    return (f"calls larger than {_kernels.stream_threshold() / 2**20:g} MiB, "
            f"{_kernels.store_width()}-byte stores")


def _info(args: argparse.Namespace) -> int:
    """Print the version, OpenMP and thread settings, and how bn3d was built."""
    rows = [
        ("bn3d", __version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("openmp", "on" if openmp_enabled() else "off"),
        ("threads", str(get_num_threads())),
        ("streaming", _streaming()),
        ("compiler", _kernels.compiler_version()),
        ("compile flags", _kernels.build_flags()),
        ("kernels", _kernels.__file__),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


EXAMPLE_ENTRY, EXAMPLE_CHECK = "example-outputs", "side-by-side"
FACADES = {"torch": "torch-facade", "mindspore": "mindspore-facade"}


def _shown(value: float, dtype: np.dtype) -> str:
    """The shortest digits that identify ``value`` as a ``dtype`` number."""
    return np.format_float_positional(dtype.type(value), unique=True, trim="-")


def _example(args: argparse.Namespace) -> int:
    """Run the document's example through both facades; print outputs beside the documented ones."""
    check = {entry.id: entry for entry in load_spec()}[EXAMPLE_ENTRY].check(EXAMPLE_CHECK)
    result = run_check(check, FACADES)
    if result.status == SKIPPED:
        print(f"cannot run the example: {'; '.join(result.messages)}")
        return 1
    documented = {spec["side"]: (np.asarray(spec["value"]), spec["tol"])
                  for spec in (item["output"] for item in check["expect"] if "output" in item)}
    outputs = {framework: result.outputs[framework].get(0) for framework in FACADES}
    print("The document's example: input_x =", check["inputs"]["input_x"]["value"])
    for framework, target in FACADES.items():
        side = check["sides"][framework]
        kwargs = ", ".join(f"{name}={value!r}" for name, value in side["kwargs"].items())
        print(f"  {target}: BatchNorm3d({kwargs}), mode: {side.get('mode', 'default')}")
    print()
    header = ["index"] + [f"{target} {column}" for target in FACADES.values()
                          for column in ("output", "documented")]
    rows = [header]
    for index in np.ndindex(*documented["torch"][0].shape):
        row = [str(index)]
        for framework in FACADES:
            output = outputs[framework]
            row.append("-" if output is None else _shown(output[index], output.dtype))
            row.append(repr(float(documented[framework][0][index])))
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    print()
    for framework, target in FACADES.items():
        expected, tol = documented[framework]
        if outputs[framework] is not None:
            error = max_error(outputs[framework], expected)
            print(f"largest difference, {target} vs documented: {error:.3g} "
                  f"(|a - b| / max(1, |b|); tolerance {tol:g})")
    if all(output is not None for output in outputs.values()):
        between = max_error(outputs["torch"], outputs["mindspore"])
        print(f"largest difference between the facades: {between:.3g}")
    for message in result.messages:
        print(f"FAIL: {message}")
    print(f"{EXAMPLE_ENTRY}/{EXAMPLE_CHECK}: {result.status}")
    return 1 if result.status == FAIL else 0


def _unavailable(targets: Sequence[str]) -> dict[str, str]:
    """target -> why it cannot run here, for the targets that cannot."""
    reasons = {}
    for target in targets:
        try:
            open_side(target)
        except TargetUnavailable as error:
            reasons[target] = str(error)
    return reasons


def _verify(args: argparse.Namespace) -> int:
    """Replay every spec entry against the chosen targets; print a table and a summary."""
    targets = TARGETS if args.target == "all" else (args.target,)
    results = verify(targets)
    rows = [["entry", *targets]] + [
        [entry_id, *(by_target[target].status for target in targets)]
        for entry_id, by_target in results.items()
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    statuses = [result.status for by_target in results.values() for result in by_target.values()]
    failures = [result for by_target in results.values() for result in by_target.values()
                if result.status == FAIL]
    if failures:
        print()
    for result in failures:
        for message in result.messages:
            print(f"FAIL {result.entry_id} [{result.target}] {message}")
    for target, reason in _unavailable(targets).items():
        print(f"{target}: not available here, skipped: {reason}")
    print(f"{len(results)} entries x {len(targets)} target(s): {statuses.count(PASS)} pass, "
          f"{statuses.count(FAIL)} fail, {statuses.count(SKIPPED)} skipped")
    return 1 if failures else 0


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
    example = commands.add_parser(
        "example", help="the document's example through both facades, beside its printed output")
    example.set_defaults(handler=_example)
    verify_command = commands.add_parser(
        "verify", help="replay the executable spec; exit status 1 if a check fails")
    verify_command.add_argument(
        "--target", choices=(*TARGETS, "all"), default="all",
        help="what to replay against (default: all; absent frameworks are skipped)")
    verify_command.set_defaults(handler=_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bn3d`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SpecError as error:
        print(f"bn3d {args.command}: the spec is malformed: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
