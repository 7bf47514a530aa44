"""Render the benchmark's results (``benchmarks/results.json``) at build time.

``python benchmarks/bench.py`` writes the JSON file; this extension reads it
when the documentation is built and draws the plot with matplotlib, so the
performance page always shows the latest run, with the machine and date it
was measured on. Without the file the page says so, and the build still
succeeds without a warning. A file written before the benchmark had peers,
the load rule and the targets (schema 1: no ``schema`` field) still renders:
the parts it lacks say that the run predates them.

Directive
---------
``.. bn3d-benchmark:: summary | plot | times | targets | bandwidth | memory``
    ``summary``: the machine, versions, date, how the times were taken and what
    the load rule set aside (or, without results, a note saying how to make
    them); ``plot``: bn3d's speed-ups over its peers with min-max whiskers across
    the worker processes and a mark at each target (schema 1: over PyTorch per
    thread count; without any peer: bn3d's times); ``times``: median ms per call
    with the processes' min-max, per thread count and layout; ``targets``: every
    target, its ratio, whether it is met and whether the processes' spread crosses
    it; ``bandwidth``, ``memory``: the tables. Parts other than ``summary`` render
    nothing without results.

Configuration
-------------
``bn3d_benchmark_results``
    The JSON file, relative to the configuration directory; default
    ``../benchmarks/results.json``. The environment variable
    ``BN3D_BENCHMARK_RESULTS`` overrides it.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docutils import nodes
from spec_tables import make_table, paragraph, rebuild_every_time
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PARTS = ("summary", "plot", "times", "targets", "bandwidth", "memory")
OPERATIONS = {
    "train_forward": "training forward",
    "eval_forward": "inference forward",
    "backward": "backward",
    "forward_backward": "forward + backward",
}
NAMES = {
    "bn3d": "bn3d", "bn3d_out": "bn3d out=", "torch": "PyTorch", "onnxruntime": "onnxruntime",
    "jax": "JAX", "numpy": "numpy", "floor_by_channel": "floor, by channel",
    "floor_two_sweeps": "floor, two sweeps", "bn3d_cl": "bn3d channels-last",
    "torch_cl": "PyTorch channels_last_3d", "jax_cl": "JAX NDHWC",
}
TARGET_TITLES = {
    "fastest-peer": "contiguous, against the fastest peer",
    "torch": "contiguous, against PyTorch",
    "floor": "contiguous backward, to the two-pass floor",
    "channels-last": "channels-last, against PyTorch and JAX",
    "channels-last-own": "channels-last, to bn3d contiguous",
    "fresh-vs-out": "a fresh output, to out=",
}
LAYOUTS = {
    "contiguous": ["bn3d", "bn3d_out", "torch", "onnxruntime", "jax", "numpy",
                   "floor_by_channel", "floor_two_sweeps"],
    "channels_last": ["bn3d_cl", "torch_cl", "jax_cl"],
}
PEERS = ("torch", "onnxruntime", "jax", "numpy")
# The speed-ups over PyTorch 2.13 that bn3d aims at with both threads of a 2-core machine,
# marked on the plot of a run that predates the targets section.
TORCH_TARGETS = {"train_forward": 2.5, "eval_forward": 1.2, "backward": 1.3}
TARGET_THREADS = 2
PLOT_NAME = "benchmark.png"
STATUS = {True: ("pass", "\u2714 met"), False: ("fail", "\u2718 not met"),
          None: ("skipped", "\u2013 unmeasured")}


def results_path(app: Sphinx) -> Path:
    """The results file: ``BN3D_BENCHMARK_RESULTS``, else the configured path."""
    configured = os.environ.get("BN3D_BENCHMARK_RESULTS") or app.config.bn3d_benchmark_results
    return (Path(app.confdir) / configured).resolve()


def load_results(app: Sphinx) -> dict[str, Any] | None:
    """The results, or None if the benchmark has not been run (no file)."""
    path = results_path(app)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("rows"), list) or not data["rows"]:
            raise ValueError("no 'rows'")
    except (ValueError, AttributeError) as error:
        logger.warning("bn3d benchmark: %s is not a results file of benchmarks/bench.py: %s",
                       path, error)
        return None
    return data


# -- reading the results (no docutils) ----------------------------------------------------------


def predates_peers(data: dict[str, Any]) -> bool:
    """Whether the run predates the peers, the load rule and the targets (schema 1)."""
    return int(data.get("schema", 1)) < 2


def shape_text(shape: Sequence[int]) -> str:
    """``(8, 32, 32, 64, 64)``."""
    return "(" + ", ".join(str(size) for size in shape) + ")"


def date_text(iso: str) -> str:
    """An ISO 8601 date as ``02 January 2025, 03:04 UTC`` (as given if it does not parse)."""
    try:
        when = datetime.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
        return when.strftime("%d %B %Y, %H:%M UTC")
    return when.strftime("%d %B %Y, %H:%M")


def thread_counts(data: dict[str, Any]) -> list[int]:
    """The thread counts measured, in increasing order."""
    return sorted({row["threads"] for row in data["rows"]})


def shapes(data: dict[str, Any]) -> list[tuple[int, ...]]:
    """The shapes measured, in the order they were."""
    return list(dict.fromkeys(tuple(row["shape"]) for row in data["rows"]))


def rows_by_case(data: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    """The rows by ``(shape, operation, threads)``."""
    return {(tuple(r["shape"]), r["operation"], r["threads"]): r for r in data["rows"]}


def timing_text(data: dict[str, Any]) -> str:
    """How the times were taken, from the fields the benchmark wrote."""
    settings = data.get("settings", {})
    text = f"median of {data.get('repeat', '?')} runs after warm-up"
    if "processes" in data:
        per = " per thread count" if not predates_peers(data) else ""
        text += (f", pooled from {data['processes']} processes{per} in which the libraries "
                 f"took turns ({data.get('rounds', '?')} rounds per case)")
    threads = " and ".join(map(str, thread_counts(data)))
    text += f", float32, {threads} threads"
    if settings.get("jax_threads"):
        text += f"; JAX's threads: {settings['jax_threads']}"
    return text


def load_text(data: dict[str, Any]) -> str:
    """What the load rule did, or that the run predates it."""
    load = data.get("load")
    if not isinstance(load, dict) or "limit_cores" not in load:
        return ("not applied: this run predates the load rule (rounds during which other "
                "processes used more than a quarter of a core are now set aside and rerun)")
    set_aside, kept = load.get("set_aside", []), load.get("kept_under_load", [])
    text = (f"a round during which other processes used more than {load['limit_cores']:g} "
            f"core is set aside and run again (at most {load.get('max_retries', '?')} times); "
            f"{load.get('rounds_kept', '?')} rounds kept, {len(set_aside)} set aside")
    loads = [record["others_cores"] for record in set_aside if "others_cores" in record]
    if loads:
        text += f" (other processes used {min(loads):.2f} to {max(loads):.2f} cores)"
    return text + f", {len(kept)} kept under load when the retries ran out"


def milliseconds_text(row: dict[str, Any], name: str) -> tuple[str, str]:
    """The median ms of an implementation in a row, and the processes' min-max (or '')."""
    seconds = row["seconds"].get(name)
    if seconds is None:
        return "-", ""
    spread = row.get("spread", {}).get(name)
    if not spread or spread["min"] == spread["max"]:
        return f"{1e3 * seconds:.3f}", ""
    return f"{1e3 * seconds:.3f}", f"{1e3 * spread['min']:.3f}\u2013{1e3 * spread['max']:.3f}"


def present(data: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Those of ``names`` that some row has times for, in the given order."""
    return [name for name in names if any(name in row["seconds"] for row in data["rows"])]


def paired_ratios(row: dict[str, Any], numerator: Sequence[str],
                  denominator: Sequence[str]) -> list[float]:
    """The ratio (fastest of ``numerator`` / fastest of ``denominator``) in each process."""
    medians = row.get("process_medians") or {}
    count = max((len(values) for values in medians.values()), default=0)
    ratios = []
    for index in range(count):
        top = _fastest_in_process(medians, numerator, index)
        bottom = _fastest_in_process(medians, denominator, index)
        if top is not None and bottom:
            ratios.append(top / bottom)
    return ratios


def _fastest_in_process(medians: dict[str, list], names: Sequence[str],
                        index: int) -> float | None:
    times = [medians[name][index] for name in names
             if name in medians and index < len(medians[name])
             and medians[name][index] is not None]
    return min(times) if times else None


def ratio_with_spread(row: dict[str, Any] | None, numerator: Sequence[str],
                      denominator: Sequence[str]) -> tuple[float, float, float] | None:
    """``(median, min, max)`` of the processes' ratios; from the pooled medians (no spread)
    when the row has no process medians; None when a side is missing."""
    if row is None:
        return None
    ratios = paired_ratios(row, numerator, denominator)
    if ratios:
        return statistics.median(ratios), min(ratios), max(ratios)
    top = [row["seconds"][name] for name in numerator if name in row["seconds"]]
    bottom = [row["seconds"][name] for name in denominator if name in row["seconds"]]
    if not top or not bottom or min(bottom) <= 0:
        return None
    ratio = min(top) / min(bottom)
    return ratio, ratio, ratio


@dataclass(frozen=True)
class Series:
    """One kind of bar of the plot: a ratio of implementations at a thread count."""

    label: str
    threads: int
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]
    target: str | None  # the key of its targets in the results, or "torch-legacy"


@dataclass(frozen=True)
class Bar:
    """One bar: a series on one shape and operation."""

    series: Series
    operation: str
    shape: tuple[int, ...]
    value: float
    low: float
    high: float
    bound: float | None


def plot_series(data: dict[str, Any]) -> list[Series]:
    """The kinds of bars of the plot.

    Schema 2: at the targets' thread count, bn3d over PyTorch, over the fastest of its
    peers, and channels-last over the faster of PyTorch and JAX. Schema 1: bn3d over
    PyTorch at each thread count.
    """
    if predates_peers(data):
        return [Series(f"over PyTorch, {count} thread{'s' if count > 1 else ''}", count,
                       ("torch",), ("bn3d",), "torch-legacy" if count == TARGET_THREADS else None)
                for count in thread_counts(data)]
    threads = data.get("targets", {}).get("threads", max(thread_counts(data)))
    candidates = [
        Series("over PyTorch", threads, ("torch",), ("bn3d",), "torch"),
        Series("over the fastest peer", threads, PEERS, ("bn3d",), "fastest-peer"),
        Series("channels-last, over the faster of PyTorch and JAX", threads,
               ("torch_cl", "jax_cl"), ("bn3d_cl",), "channels-last"),
    ]
    names = set(present(data, [*LAYOUTS["contiguous"], *LAYOUTS["channels_last"]]))
    return [series for series in candidates
            if names & set(series.numerator) and names & set(series.denominator)]


def target_bounds(data: dict[str, Any]) -> dict[tuple[str, str], float]:
    """The bound of each (target, operation), from the run's targets section."""
    bounds = {("torch-legacy", operation): bound for operation, bound in TORCH_TARGETS.items()}
    for cell in data.get("targets", {}).get("cells", []):
        bounds[(cell["target"], cell["operation"])] = cell["bound"]
    return bounds


def plot_bars(data: dict[str, Any]) -> list[Bar]:
    """Every bar of the plot, with its whisker and its target (if any)."""
    by_case, bounds = rows_by_case(data), target_bounds(data)
    bars = []
    for series in plot_series(data):
        for operation in OPERATIONS:
            for shape in shapes(data):
                found = ratio_with_spread(by_case.get((shape, operation, series.threads)),
                                          series.numerator, series.denominator)
                if found is not None:
                    bars.append(Bar(series, operation, shape, *found,
                                    bounds.get((series.target, operation))))
    return bars


def times_rows(data: dict[str, Any], threads: int, names: Sequence[str]) -> list[list[str]]:
    """The times table at ``threads``: shape, operation, then per name the median ms and the
    processes' min-max (two strings)."""
    by_case = rows_by_case(data)
    lines = []
    for shape in shapes(data):
        for operation in OPERATIONS:
            row = by_case.get((shape, operation, threads))
            if row is None or not any(name in row["seconds"] for name in names):
                continue
            cells = [shape_text(shape), OPERATIONS[operation]]
            for name in names:
                cells += list(milliseconds_text(row, name))
            lines.append(cells)
    return lines


def target_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets table's rows: text per column and the cell's status."""
    lines = []
    for cell in data.get("targets", {}).get("cells", []):
        bound = ("\u2265 " if cell["at_least"] else "\u2264 ") + f"{cell['bound']:g}x"
        ratio = "-" if cell["ratio"] is None else f"{cell['ratio']:.2f}x"
        spread = ("-" if not cell.get("spread")
                  else f"{cell['spread'][0]:.2f}\u2013{cell['spread'][1]:.2f}")
        compared = ("" if not cell.get("numerator")
                    else f"{NAMES.get(cell['numerator'], cell['numerator'])} / "
                         f"{NAMES.get(cell['denominator'], cell['denominator'])}")
        title = TARGET_TITLES.get(cell["target"], cell.get("description", cell["target"]))
        lines.append({"title": title, "shape": shape_text(cell["shape"]),
                      "operation": OPERATIONS.get(cell["operation"], cell["operation"]),
                      "compared": compared, "ratio": ratio, "bound": bound, "met": cell["met"],
                      "spread": spread, "crosses": bool(cell.get("spread_crosses")),
                      "note": cell.get("note", "")})
    return lines


# -- the plot ------------------------------------------------------------------------------


def draw_plot(data: dict[str, Any], path: Path) -> None:
    """Speed-up bars with min-max whiskers, one panel per operation (or bn3d's times)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = plot_bars(data)
    if not bars:
        draw_times_plot(data, path)
        return
    series = list(dict.fromkeys(bar.series for bar in bars))
    operations = [op for op in OPERATIONS if any(bar.operation == op for bar in bars)]
    all_shapes = shapes(data)
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.2), sharey=True, squeeze=False)
    width = 0.8 / len(series)
    colours = ["#1f5fa6", "#7aa6d6", "#e08a2c", "#999999"]
    handles: dict[str, Any] = {}
    for axis, operation in zip(axes.flat, operations):
        for index, kind in enumerate(series):
            mine = {bar.shape: bar for bar in bars
                    if bar.series == kind and bar.operation == operation}
            positions = [i + (index - (len(series) - 1) / 2) * width
                         for i, shape in enumerate(all_shapes) if shape in mine]
            chosen = [mine[shape] for shape in all_shapes if shape in mine]
            if not chosen:
                continue
            values = [bar.value for bar in chosen]
            whiskers = [[bar.value - bar.low for bar in chosen],
                        [bar.high - bar.value for bar in chosen]]
            handles[kind.label] = axis.bar(positions, values, width * 0.95,
                                           color=colours[index % len(colours)],
                                           yerr=whiskers, capsize=2, ecolor="#333333",
                                           error_kw={"linewidth": 0.8})
            for position, bar in zip(positions, chosen):
                axis.annotate(f"{bar.value:.2f}", (position, bar.high), xytext=(0, 2),
                              textcoords="offset points", ha="center", va="bottom",
                              fontsize=6)
                if bar.bound is not None:
                    handles["target"] = axis.hlines(bar.bound, position - width / 2,
                                                    position + width / 2, color="#c0392b",
                                                    linewidth=1.6)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_title(OPERATIONS[operation])
        axis.set_xticks(range(len(all_shapes)))
        axis.set_xticklabels(["\n".join(("x".join(map(str, s[:2])), "x".join(map(str, s[2:]))))
                              for s in all_shapes], fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    for axis in axes.flat[len(operations):]:
        axis.set_visible(False)
    top = max(bar.high for bar in bars)
    axes.flat[0].set_ylim(0, top * 1.12)
    for axis in axes[:, 0]:
        axis.set_ylabel("speed-up of bn3d (their time / bn3d's)", fontsize=8)
    figure.suptitle("bn3d BatchNorm3d, float32; shapes N x C over D x H x W; "
                    "whiskers: min-max across processes")
    labels = [label for label in handles if label != "target"]
    labels += ["target"] if "target" in handles else []
    figure.legend([handles[label] for label in labels], labels, loc="lower center",
                  ncol=len(labels), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_times_plot(data: dict[str, Any], path: Path) -> None:
    """bn3d's times per shape and thread count, one panel per operation (no peer measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_case = rows_by_case(data)
    all_shapes, threads = shapes(data), thread_counts(data)
    operations = [op for op in OPERATIONS if any(key[1] == op for key in by_case)]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.2), squeeze=False)
    width = 0.8 / len(threads)
    colours = ["#7aa6d6", "#1f5fa6", "#0b2f5c", "#999999"]
    handles: dict[str, Any] = {}
    for axis, operation in zip(axes.flat, operations):
        for index, count in enumerate(threads):
            values = [1e3 * by_case.get((shape, operation, count), {"seconds": {}})["seconds"]
                      .get("bn3d", 0.0) for shape in all_shapes]
            positions = [i + (index - (len(threads) - 1) / 2) * width
                         for i in range(len(all_shapes))]
            label = f"{count} thread{'s' if count > 1 else ''}"
            handles[label] = axis.bar(positions, values, width * 0.95,
                                      color=colours[index % len(colours)])
        axis.set_yscale("log")
        axis.set_title(OPERATIONS[operation])
        axis.set_xticks(range(len(all_shapes)))
        axis.set_xticklabels(["\n".join(("x".join(map(str, s[:2])), "x".join(map(str, s[2:]))))
                              for s in all_shapes], fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    for axis in axes.flat[len(operations):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("bn3d time (ms)", fontsize=8)
    figure.suptitle("bn3d BatchNorm3d, float32; shapes N x C over D x H x W")
    figure.legend(list(handles.values()), list(handles), loc="lower center",
                  ncol=len(handles), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- docutils nodes ------------------------------------------------------------------------------


def text_cell(text: str) -> list[nodes.Node]:
    """A table cell of plain text."""
    return [nodes.Text(text)]


def time_cell(median: str, spread: str) -> list[nodes.Node]:
    """The median, and under it the processes' min-max in small type."""
    if not spread:
        return [paragraph(nodes.Text(median))]
    return [paragraph(nodes.Text(median)),
            paragraph(nodes.Text(spread), classes=["bn3d-note"])]


def status_cell(met: bool | None, crosses: bool) -> list[nodes.Node]:
    """Badges: met / not met / unmeasured, and whether the spread crosses the target."""
    kind, text = STATUS[met]
    badges: list[nodes.Node] = [nodes.inline(text, text,
                                             classes=["bn3d-status", f"bn3d-status-{kind}"])]
    if crosses:
        badges += [nodes.Text(" "), nodes.inline("spread crosses", "spread crosses",
                                                 classes=["bn3d-status", "bn3d-status-skipped"])]
    return badges


def predates_note(what: str) -> list[nodes.Node]:
    """A note that the run predates ``what``, and how to make a new one."""
    return [nodes.note("", paragraph(nodes.Text(
        f"This run predates {what}: rerun "), nodes.literal(text="python benchmarks/bench.py"),
        nodes.Text(" and build the documentation again.")))]


def targets_table(data: dict[str, Any]) -> list[nodes.Node]:
    """The targets table (or, for a run without targets, a note saying it predates them)."""
    targets = data.get("targets")
    if predates_peers(data) or not isinstance(targets, dict):
        return predates_note("the targets (the peers, the spread across processes and the "
                             "load rule)")
    summary = targets.get("summary", {})
    caption = (f"Targets with {targets.get('threads', '?')} threads: {summary.get('met', 0)} "
               f"met, {summary.get('not_met', 0)} not met, {summary.get('unmeasured', 0)} "
               f"unmeasured; in {summary.get('spread_crosses', 0)} the processes' spread "
               "crosses the target")
    body = [[text_cell(row["title"]), text_cell(row["shape"]),
             text_cell(row["operation"]), text_cell(row["compared"]),
             [nodes.strong(row["ratio"], row["ratio"])], text_cell(row["bound"]),
             text_cell(row["spread"]), status_cell(row["met"], row["crosses"]),
             text_cell(row["note"])]
            for row in target_rows(data)]
    return [make_table(["target", "shape", "operation", "ratio of", "median ratio", "target",
                        "processes min\u2013max", "", "note"], body,
                       [30, 14, 12, 18, 8, 8, 10, 14, 20], caption,
                       classes=["bn3d-benchmark-targets"])]


def times_tables(data: dict[str, Any]) -> list[nodes.Node]:
    """Per thread count and layout: the median ms of each implementation and its spread."""
    tables: list[nodes.Node] = []
    for threads in thread_counts(data):
        for layout, names in LAYOUTS.items():
            names = present(data, names)
            lines = times_rows(data, threads, names)
            if not lines:
                continue
            body = [[text_cell(line[0]), text_cell(line[1])]
                    + [time_cell(line[i], line[i + 1]) for i in range(2, len(line), 2)]
                    for line in lines]
            layout_text = "contiguous (NCDHW)" if layout == "contiguous" else \
                "channels-last (NDHWC memory)"
            caption = (f"Median ms per call, {layout_text}, {threads} thread"
                       f"{'s' if threads > 1 else ''}; under it the least and greatest of the "
                       "processes' medians")
            tables.append(make_table(["shape (N, C, D, H, W)", "operation",
                                      *(NAMES[name] for name in names)], body,
                                     [18, 16, *([10] * len(names))], caption,
                                     classes=["bn3d-benchmark-times"]))
    return tables


def legacy_times_table(data: dict[str, Any]) -> nodes.table:
    """The times table of a run that predates the peers: bn3d, torch, speed-up, numpy."""
    threads = thread_counts(data)
    with_numpy = any("numpy" in row["seconds"] for row in data["rows"])
    by_key = {key: row["seconds"] for key, row in rows_by_case(data).items()}
    headers = ["shape (N, C, D, H, W)", "operation"]
    widths = [18, 16]
    for count in threads:
        headers += [f"bn3d ms ({count}t)", f"torch ms ({count}t)", f"speed-up ({count}t)"]
        widths += [10, 10, 10]
    if with_numpy:
        headers.append(f"numpy ms ({threads[0]}t)")
        widths.append(10)
    body = []
    for shape in shapes(data):
        for operation in OPERATIONS:
            if not any((shape, operation, count) in by_key for count in threads):
                continue
            cells = [text_cell(shape_text(shape)), text_cell(OPERATIONS[operation])]
            for count in threads:
                seconds = by_key.get((shape, operation, count), {})
                bn3d, torch = seconds.get("bn3d"), seconds.get("torch")
                cells.append(text_cell("-" if bn3d is None else f"{1e3 * bn3d:.3f}"))
                cells.append(text_cell("-" if torch is None else f"{1e3 * torch:.3f}"))
                ratio = "-" if None in (bn3d, torch) else f"{torch / bn3d:.2f}x"
                cells.append([nodes.strong(ratio, ratio)])
            if with_numpy:
                numpy_seconds = by_key.get((shape, operation, threads[0]), {}).get("numpy")
                cells.append(text_cell("-" if numpy_seconds is None
                                       else f"{1e3 * numpy_seconds:.3f}"))
            body.append(cells)
    return make_table(headers, body, widths, "Median time per call and speed-up over torch",
                      classes=["bn3d-benchmark-times"])


# -- the directive --------------------------------------------------------------------------


class BenchmarkDirective(SphinxDirective):
    """One part of the performance page, from the benchmark's JSON results."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        part = self.arguments[0]
        if part not in PARTS:
            raise self.error(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")
        rebuild_every_time(self.env)
        path = results_path(self.env.app)
        data = load_results(self.env.app)
        if data is None:
            return self._missing(path) if part == "summary" else []
        self.env.note_dependency(str(path))
        return getattr(self, "_" + part)(data)

    def _missing(self, path: Path) -> list[nodes.Node]:
        text = (f"No benchmark results yet: {path.name} was not found next to "
                "benchmarks/bench.py. Run ")
        return [nodes.note("", paragraph(
            nodes.Text(text), nodes.literal(text="python benchmarks/bench.py"),
            nodes.Text(" on the machine to measure, then build the documentation again; "
                       "this page then shows the plot and the tables."),
        ))]

    def _summary(self, data: dict[str, Any]) -> list[nodes.Node]:
        machine = data.get("machine", {})
        versions = data.get("versions", {})
        names = ["bn3d", "torch", "onnxruntime", "jax", "jaxlib"]
        listed = [(name, versions.get(name)) for name in names]
        listed += [("numpy", versions.get("numpy") or machine.get("numpy")),
                   ("Python", machine.get("python"))]
        items = [
            ("Measured on", f"{machine.get('cpu', 'unknown CPU')}, "
                            f"{machine.get('cores', '?')} cores"),
            ("Date", date_text(data.get("date", "unknown"))),
            ("Platform", machine.get("platform", "unknown")),
            ("Versions", ", ".join(f"{name} {version}" for name, version in listed if version)),
            ("Timing", timing_text(data)),
            ("Load rule", load_text(data)),
        ]
        fields = nodes.field_list(classes=["bn3d-benchmark-machine"])
        for name, value in items:
            fields += nodes.field("", nodes.field_name(name, name),
                                  nodes.field_body("", paragraph(nodes.Text(str(value)))))
        notes = data.get("notes") or {}
        if notes:
            listing = nodes.bullet_list()
            for name, note in notes.items():
                listing += nodes.list_item("", paragraph(nodes.literal(text=name),
                                                         nodes.Text(f": {note}")))
            fields += nodes.field("", nodes.field_name("Notes", "Notes"),
                                  nodes.field_body("", listing))
        return [fields]

    def _plot(self, data: dict[str, Any]) -> list[nodes.Node]:
        target = Path(self.env.app.doctreedir) / "bn3d_generated" / PLOT_NAME
        draw_plot(data, target)
        uri = "/" + os.path.relpath(target, self.env.srcdir).replace(os.sep, "/")
        if not plot_bars(data):
            what = "bn3d's time per call (no peer was measured in this run)"
        elif predates_peers(data):
            what = ("speed-up of bn3d over PyTorch's CPU BatchNorm3d (higher is better; the "
                    "red marks are the targets; this run predates the other peers)")
        else:
            what = ("speed-up of bn3d over its peers (higher is better), the median of the "
                    "worker processes with their least and greatest as whiskers; the red "
                    "marks are the targets")
        caption = f"The {what}, measured {date_text(data.get('date', ''))}."
        image = nodes.image(uri=uri, alt=caption, width="100%")
        figure = nodes.figure("", image, nodes.caption(caption, caption), align="center")
        return [figure]

    def _times(self, data: dict[str, Any]) -> list[nodes.Node]:
        if predates_peers(data):
            return [legacy_times_table(data)]
        return times_tables(data)

    def _targets(self, data: dict[str, Any]) -> list[nodes.Node]:
        return targets_table(data)

    def _bandwidth(self, data: dict[str, Any]) -> list[nodes.Node]:
        body = []
        for row in data.get("bandwidth", []):
            copy = row["copy_bytes_per_second"]
            achieved = row["train_forward_out_bytes_per_second"]
            body.append([text_cell(shape_text(row["shape"])), text_cell(str(row["threads"])),
                         text_cell(f"{copy / 1e9:.1f}"), text_cell(f"{achieved / 1e9:.1f}"),
                         [nodes.strong(f"{achieved / copy:.0%}", f"{achieved / copy:.0%}")]])
        if not body:
            return []
        return [make_table(["shape", "threads", "copy GB/s", "bn3d training forward, out= GB/s",
                            "fraction of copy"], body, [22, 10, 14, 30, 16],
                           "Bandwidth: one read of x and one write of y",
                           classes=["bn3d-benchmark-bandwidth"])]

    def _memory(self, data: dict[str, Any]) -> list[nodes.Node]:
        rows = data.get("memory", [])
        if not rows:
            return []
        channels_last = any("train_forward_channels_last_extra_bytes" in row for row in rows)
        keys = ["train_forward_extra_bytes", "backward_extra_bytes"]
        headers = ["shape", "input MiB", "extra KiB, training forward", "extra KiB, backward"]
        if channels_last:
            keys += ["train_forward_channels_last_extra_bytes",
                     "backward_channels_last_extra_bytes"]
            headers += ["channels-last, training forward", "channels-last, backward"]
        body = [[text_cell(shape_text(row["shape"])),
                 text_cell(f"{row['input_bytes'] / 2**20:.1f}")]
                + [text_cell("-" if key not in row else f"{row[key] / 1024:.1f}")
                   for key in keys]
                for row in rows]
        return [make_table(headers, body, [22, 14, *([22] * len(keys))],
                           "Memory allocated during a call beyond its outputs",
                           classes=["bn3d-benchmark-memory"])]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive and its configuration value."""
    app.setup_extension("spec_tables")  # the table helpers and the rebuild-every-time hooks
    app.add_config_value("bn3d_benchmark_results", "../benchmarks/results.json", "env",
                         types=(str,))
    app.add_directive("bn3d-benchmark", BenchmarkDirective)
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
