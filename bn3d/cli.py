"""The ``bn3d`` command line."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from . import __version__, _kernels
from ._memory import output_pool_stats
from ._threads import get_num_threads, openmp_enabled
from .convert import ConversionError, Policies, Selection, convert_checkpoint
from .convert.formats import FORMATS, CheckpointError
from .convert.patterns import read_pattern_file
from .spec import (
    FACADES,
    FAIL,
    IMPLEMENTATIONS,
    PASS,
    SKIPPED,
    ImplementationUnavailable,
    SpecError,
    load_spec,
    max_error,
    open_implementation,
    run_check,
    verify,
)
from .spec.expectations import Output


def _streaming() -> str:
    """When the kernels write with non-temporal stores."""
    if not _kernels.streaming_supported():
        return "off (no non-temporal stores on this machine)"
    return (f"calls larger than {_kernels.stream_threshold() / 2**20:g} MiB, "
            f"{_kernels.store_width()}-byte stores")


def _output_pool() -> str:
    """The output pool's limit and what it keeps now."""
    stats = output_pool_stats()
    if stats["limit"] == 0:
        return "off (set_output_pool_limit(0))"
    return (f"keeps up to {stats['limit'] / 2**20:g} MiB of freed output blocks "
            f"(now {stats['kept_bytes'] / 2**20:.1f} MiB in {stats['kept_blocks']} blocks)")


def _info(args: argparse.Namespace) -> int:
    """Print the version, OpenMP and thread settings, and how bn3d was built."""
    rows = [
        ("bn3d", __version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("openmp", "on" if openmp_enabled() else "off"),
        ("threads", str(get_num_threads())),
        ("streaming", _streaming()),
        ("output pool", _output_pool()),
        ("compiler", _kernels.compiler_version()),
        ("compile flags", _kernels.build_flags()),
        ("kernels", _kernels.__file__),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


EXAMPLE_ENTRY, EXAMPLE_CHECK = "example-outputs", "side-by-side"


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
    documented = {expectation.side: (np.asarray(expectation.value), expectation.tol)
                  for expectation in check.expect if isinstance(expectation, Output)}
    outputs = {framework: result.outputs[framework].get(0) for framework in FACADES}
    print("The document's example: input_x =", check.inputs["input_x"].value)
    for framework, facade in FACADES.items():
        side = check.sides[framework]
        kwargs = ", ".join(f"{name}={value!r}" for name, value in side.kwargs.items())
        print(f"  {facade}: BatchNorm3d({kwargs}), mode: {side.mode}")
    print()
    header = ["index"] + [f"{facade} {column}" for facade in FACADES.values()
                          for column in ("output", "documented")]
    rows = [header]
    for index in np.ndindex(*documented["torch"][0].shape):
        row = [str(index)]
        for framework in FACADES:
            output = outputs[framework]
            row.append("-" if output is None else _shown(float(output[index]), output.dtype))
            row.append(repr(float(documented[framework][0][index])))
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    print()
    for framework, facade in FACADES.items():
        expected, tol = documented[framework]
        if outputs[framework] is not None:
            error = max_error(outputs[framework], expected)
            print(f"largest difference, {facade} vs documented: {error:.3g} "
                  f"(|a - b| / max(1, |b|); tolerance {tol:g})")
    if all(output is not None for output in outputs.values()):
        between = max_error(outputs["torch"], outputs["mindspore"])
        print(f"largest difference between the facades: {between:.3g}")
    for message in result.messages:
        print(f"FAIL: {message}")
    print(f"{EXAMPLE_ENTRY}/{EXAMPLE_CHECK}: {result.status}")
    return 1 if result.status == FAIL else 0


def _unavailable(implementations: Sequence[str]) -> dict[str, str]:
    """implementation -> why it cannot run here, for the implementations that cannot."""
    reasons = {}
    for implementation in implementations:
        try:
            open_implementation(implementation)
        except ImplementationUnavailable as error:
            reasons[implementation] = str(error)
    return reasons


def _verify(args: argparse.Namespace) -> int:
    """Replay every spec entry against the chosen implementations; print a table and a summary."""
    implementations = IMPLEMENTATIONS if args.target == "all" else (args.target,)
    results = verify(implementations)
    rows = [["entry", *implementations]] + [
        [entry_id, *(by_implementation[name].status for name in implementations)]
        for entry_id, by_implementation in results.items()
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    replayed = [result for by_implementation in results.values()
                for result in by_implementation.values()]
    statuses = [result.status for result in replayed]
    failures = [result for result in replayed if result.status == FAIL]
    if failures:
        print()
    for result in failures:
        for message in result.messages:
            print(f"FAIL {result.entry_id} [{result.implementation}] {message}")
    for implementation, reason in _unavailable(implementations).items():
        print(f"{implementation}: not available here, skipped: {reason}")
    print(f"{len(results)} entries x {len(implementations)} implementation(s): "
          f"{statuses.count(PASS)} pass, {statuses.count(FAIL)} fail, "
          f"{statuses.count(SKIPPED)} skipped")
    return 1 if failures else 0


def _momentum(text: str) -> float | None:
    """``--momentum``: a number, or None (torch's cumulative average)."""
    if text in ("None", "none"):
        return None
    return float(text)


def _convert(args: argparse.Namespace) -> int:
    """Convert a checkpoint to the other framework; print the report; replay it if asked."""
    try:
        layers = tuple(args.layers) + (
            read_pattern_file(args.layers_file) if args.layers_file else ())
        selection = Selection(layers=layers, without_bn2d=args.without_bn2d,
                              affine_false=args.affine_false, no_bias=args.no_bias,
                              no_running_stats=args.no_running_stats, exclude=args.exclude)
        policies = Policies(momentum_none=args.momentum_none, bias_false=args.bias_false,
                            affine_false_values=args.affine_false_values)
        settings = {name: value for name, value in (("eps", args.eps),
                                                    ("momentum", args.momentum))
                    if value is not _NOT_GIVEN}
        report = convert_checkpoint(
            args.input, args.output, args.to, format=args.format,
            source_framework=args.source_framework, selection=selection, policies=policies,
            source_settings=settings, counter=args.counter, check=args.check,
            steps=args.check_steps, seed=args.seed)
    except (ConversionError, CheckpointError, ImportError, OSError) as error:
        print(f"bn3d convert: {error}", file=sys.stderr)
        return 2
    print(report)
    if report.failed:
        print(f"bn3d convert: the check failed for {sum(line.failed for line in report.lines)} "
              f"layer(s); {args.output} was written: do not use it before you know why",
              file=sys.stderr)
        return 1
    return 0


_NOT_GIVEN = object()
_CONVERT_EPILOG = """\
examples:
  bn3d convert model.pth --to mindspore -o model.ckpt --check
  bn3d convert model.ckpt --to torch -o model.pth --affine-false 'head.bn' --counter 1000
  bn3d convert model.pth --to mindspore -o model.safetensors --layers 'encoder.*.bn' \\
      --without-bn2d 'stem.bn' --bias-false zero-beta

A pattern matches a whole dotted layer name: * within one component, ** across dots.
Exit status: 0 converted (and checked); 1 a layer failed the check (the output was written);
2 nothing converted (the error says why; no output is written).
"""


def _add_convert_parser(commands: Any) -> None:
    convert = commands.add_parser(
        "convert", help="convert a checkpoint's BatchNorm layers to the other framework",
        description="Convert a PyTorch or MindSpore checkpoint (.pt/.pth, .ckpt, .safetensors) "
                    "to the other framework: the BatchNorm layers' tensors renamed (and "
                    "completed where the other framework needs more), every other tensor "
                    "passed through with its name. Prints a report of every choice made.",
        epilog=_CONVERT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("input", help="the checkpoint to convert (any of the four formats)")
    convert.add_argument("--to", required=True, choices=("mindspore", "torch"),
                         help="the target framework")
    convert.add_argument("-o", "--output", required=True,
                         help="the file to write (.pt/.pth, .ckpt or .safetensors)")
    convert.add_argument("--format", choices=FORMATS,
                         help="the output format (default: from the output's suffix)")
    convert.add_argument("--from", dest="source_framework", choices=("torch", "mindspore"),
                         help="whose names the input has (default: its format's framework)")
    layers = convert.add_argument_group("which layers")
    layers.add_argument("--layers", action="append", default=[], metavar="PATTERN",
                        help="a BatchNorm3d layer or pattern (repeatable; default: every "
                             "torch BatchNorm group, every MindSpore bn2d group)")
    layers.add_argument("--layers-file", metavar="FILE",
                        help="a file listing --layers patterns, one per line (# comments)")
    layers.add_argument("--without-bn2d", action="append", default=[], metavar="PATTERN",
                        help="BatchNorm layers that are not BatchNorm3d (MindSpore "
                             "BatchNorm1d/2d, SyncBatchNorm): converted without bn2d")
    layers.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="tensors to leave out of the output (optimizer state, say)")
    marks = convert.add_argument_group(
        "what the checkpoint cannot say (MindSpore to torch, except --no-running-stats)")
    marks.add_argument("--affine-false", action="append", default=[], metavar="PATTERN",
                       help="the torch layers are built with affine=False: gamma/beta (which "
                            "must be 1/0) are dropped")
    marks.add_argument("--no-bias", action="append", default=[], metavar="PATTERN",
                       help="the torch layers are built with bias=False: beta (which must be "
                            "0) is dropped")
    marks.add_argument("--no-running-stats", action="append", default=[], metavar="PATTERN",
                       help="layers built with torch track_running_stats=False / MindSpore "
                            "use_batch_statistics=True")
    marks.add_argument("--counter", type=int, default=0, metavar="N",
                       help="the num_batches_tracked written for torch (default 0)")
    marks.add_argument("--eps", type=float, default=_NOT_GIVEN,
                       help="the layers' eps (default: the source framework's, 1e-05)")
    marks.add_argument("--momentum", type=_momentum, default=_NOT_GIVEN,
                       help="the layers' momentum in the source framework's meaning, or None "
                            "(default: torch 0.1, MindSpore 0.9)")
    policies = convert.add_argument_group("policies, for settings with no exact equivalent")
    policies.add_argument("--momentum-none", type=float, metavar="M",
                          help="torch momentum=None: use the fixed torch momentum M instead")
    policies.add_argument("--bias-false", choices=("zero-beta",),
                          help="torch bias=False: MindSpore's beta fixed at 0 (and frozen)")
    policies.add_argument("--affine-false-values", choices=("keep",),
                          help="an --affine-false layer whose gamma/beta are not 1/0: keep them "
                               "as the weight/bias of an affine=True torch layer")
    check = convert.add_argument_group("proof by replay")
    check.add_argument("--check", action="store_true",
                       help="replay each converted layer on both of bn3d's facades, loaded "
                            "from the input and from the output; exit status 1 if one differs "
                            "beyond the spec's tolerance")
    check.add_argument("--check-steps", type=int, default=3, metavar="N",
                       help="training steps of the replay (default 3)")
    check.add_argument("--seed", type=int, default=0, help="of the replay's random data")
    convert.set_defaults(handler=_convert)


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
        "--target", choices=(*IMPLEMENTATIONS, "all"), default="all",
        help="the implementation to replay against (default: all; absent frameworks are "
             "skipped)")
    verify_command.set_defaults(handler=_verify)
    _add_convert_parser(commands)
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
