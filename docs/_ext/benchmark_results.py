"""Render the benchmark's results (``benchmarks/results.json``) at build time.

``python benchmarks/bench.py`` writes the JSON file; this extension reads it
when the documentation is built and draws the plot with matplotlib, so the
performance page always shows the latest run, with the machine and date it
was measured on. Without the file the page says so, and the build still
succeeds without a warning.

Directive
---------
``.. bn3d-benchmark:: summary | plot | times | bandwidth | memory``
    ``summary``: the machine, versions and date (or, without results, a note
    saying how to make them); ``plot``: the speed-up over PyTorch (or, without
    torch in the results, the times); ``times``, ``bandwidth``, ``memory``: the
    tables. Parts other than ``summary`` render nothing without results.

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
from pathlib import Path
from typing import Any

from docutils import nodes
from spec_tables import make_table, paragraph, rebuild_every_time
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PARTS = ("summary", "plot", "times", "bandwidth", "memory")
OPERATIONS = {
    "train_forward": "training forward",
    "eval_forward": "inference forward",
    "backward": "backward",
    "forward_backward": "forward + backward",
}
# The speed-ups over torch 2.13 that bn3d aims at on a 2-core machine with both threads.
TARGET_SPEEDUPS = {"train_forward": 2.5, "eval_forward": 1.2, "backward": 1.5,
                   "forward_backward": 2.0}
PLOT_NAME = "benchmark.png"


def results_path(app: Sphinx) -> Path:
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


def shape_text(shape: list[int]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def date_text(iso: str) -> str:
    try:
        when = datetime.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
        return when.strftime("%d %B %Y, %H:%M UTC")
    return when.strftime("%d %B %Y, %H:%M")


def timing_text(data: dict[str, Any]) -> str:
    """How the times were taken, from the fields the benchmark wrote."""
    text = f"median of {data.get('repeat', '?')} runs after warm-up"
    if "processes" in data:
        text += (f", pooled from {data['processes']} processes in which the libraries "
                 f"took turns ({data.get('rounds', '?')} rounds per case)")
    threads = " and ".join(map(str, thread_counts(data)))
    return f"{text}, float32, {threads} threads"


def thread_counts(data: dict[str, Any]) -> list[int]:
    return sorted({row["threads"] for row in data["rows"]})


def shapes(data: dict[str, Any]) -> list[tuple[int, ...]]:
    return list(dict.fromkeys(tuple(row["shape"]) for row in data["rows"]))


def has_torch(data: dict[str, Any]) -> bool:
    return any("torch" in row["seconds"] for row in data["rows"])


# -- the plot ------------------------------------------------------------------------------


def draw_plot(data: dict[str, Any], path: Path) -> None:
    """Bars per shape and thread count, one panel per operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(tuple(r["shape"]), r["operation"], r["threads"]): r["seconds"]
              for r in data["rows"]}
    all_shapes, threads = shapes(data), thread_counts(data)
    operations = [op for op in OPERATIONS if any(key[1] == op for key in by_key)]
    speedup = has_torch(data)
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.2), sharey=speedup, squeeze=False)
    width = 0.8 / len(threads)
    colours = ["#7aa6d6", "#1f5fa6", "#0b2f5c", "#999999"]
    handles: dict[str, Any] = {}
    for axis, operation in zip(axes.flat, operations):
        for index, count in enumerate(threads):
            values = []
            for shape in all_shapes:
                seconds = by_key.get((shape, operation, count), {})
                if speedup:
                    ok = "torch" in seconds and "bn3d" in seconds
                    values.append(seconds["torch"] / seconds["bn3d"] if ok else 0.0)
                else:
                    values.append(1e3 * seconds.get("bn3d", 0.0))
            positions = [i + (index - (len(threads) - 1) / 2) * width
                         for i in range(len(all_shapes))]
            label = f"{count} thread{'s' if count > 1 else ''}"
            handles[label] = axis.bar(positions, values, width * 0.95,
                                      color=colours[index % len(colours)])
            if speedup:
                axis.bar_label(handles[label], fmt="%.2f", fontsize=7, padding=1)
        if speedup:
            axis.axhline(1.0, color="black", linewidth=0.8)
            target = TARGET_SPEEDUPS.get(operation)
            if target is not None:
                handles["target speed-up with 2 threads"] = axis.axhline(
                    target, color="#c0392b", linestyle="--", linewidth=1)
            axis.set_ylim(0, axis.get_ylim()[1] * 1.08)
        else:
            axis.set_yscale("log")
        axis.set_title(OPERATIONS[operation])
        axis.set_xticks(range(len(all_shapes)))
        axis.set_xticklabels(["\n".join(("x".join(map(str, s[:2])), "x".join(map(str, s[2:]))))
                              for s in all_shapes], fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    for axis in axes.flat[len(operations):]:
        axis.set_visible(False)
    ylabel = "speed-up over torch (torch time / bn3d time)" if speedup else "bn3d time (ms)"
    for axis in axes[:, 0]:
        axis.set_ylabel(ylabel, fontsize=8)
    figure.suptitle("bn3d BatchNorm3d, float32; shapes N x C over D x H x W")
    figure.legend(list(handles.values()), list(handles), loc="lower center",
                  ncol=len(handles), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
        items = [
            ("Measured on", f"{machine.get('cpu', 'unknown CPU')}, "
                            f"{machine.get('cores', '?')} cores"),
            ("Date", date_text(data.get("date", "unknown"))),
            ("Platform", machine.get("platform", "unknown")),
            ("Versions", ", ".join(
                f"{name} {version}" for name, version in (
                    ("bn3d", versions.get("bn3d")), ("torch", versions.get("torch")),
                    ("numpy", machine.get("numpy")), ("Python", machine.get("python")))
                if version)),
            ("Timing", timing_text(data)),
        ]
        fields = nodes.field_list(classes=["bn3d-benchmark-machine"])
        for name, value in items:
            fields += nodes.field("", nodes.field_name(name, name),
                                  nodes.field_body("", paragraph(nodes.Text(str(value)))))
        return [fields]

    def _plot(self, data: dict[str, Any]) -> list[nodes.Node]:
        target = Path(self.env.app.doctreedir) / "bn3d_generated" / PLOT_NAME
        draw_plot(data, target)
        uri = "/" + os.path.relpath(target, self.env.srcdir).replace(os.sep, "/")
        what = ("speed-up of bn3d over PyTorch's CPU BatchNorm3d (higher is better; the "
                "dashed line is the target)" if has_torch(data)
                else "bn3d's time per call (torch was not installed for this run)")
        caption = f"The {what}, measured {date_text(data.get('date', ''))}."
        image = nodes.image(uri=uri, alt=caption, width="100%")
        figure = nodes.figure("", image, nodes.caption(caption, caption), align="center")
        return [figure]

    def _times(self, data: dict[str, Any]) -> list[nodes.Node]:
        threads = thread_counts(data)
        with_numpy = any("numpy" in row["seconds"] for row in data["rows"])
        by_key = {(tuple(r["shape"]), r["operation"], r["threads"]): r["seconds"]
                  for r in data["rows"]}
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
                cells = [[nodes.Text(shape_text(list(shape)))], [nodes.Text(OPERATIONS[operation])]]
                for count in threads:
                    seconds = by_key.get((shape, operation, count), {})
                    bn3d, torch = seconds.get("bn3d"), seconds.get("torch")
                    cells.append([nodes.Text("-" if bn3d is None else f"{1e3 * bn3d:.3f}")])
                    cells.append([nodes.Text("-" if torch is None else f"{1e3 * torch:.3f}")])
                    ratio = "-" if None in (bn3d, torch) else f"{torch / bn3d:.2f}x"
                    cells.append([nodes.strong(ratio, ratio)])
                if with_numpy:
                    numpy_seconds = by_key.get((shape, operation, threads[0]), {}).get("numpy")
                    cells.append([nodes.Text("-" if numpy_seconds is None
                                             else f"{1e3 * numpy_seconds:.3f}")])
                body.append(cells)
        return [make_table(headers, body, widths, "Median time per call and speed-up over torch",
                           classes=["bn3d-benchmark-times"])]

    def _bandwidth(self, data: dict[str, Any]) -> list[nodes.Node]:
        body = []
        for row in data.get("bandwidth", []):
            copy = row["copy_bytes_per_second"]
            achieved = row["train_forward_out_bytes_per_second"]
            body.append([[nodes.Text(shape_text(row["shape"]))],
                         [nodes.Text(str(row["threads"]))],
                         [nodes.Text(f"{copy / 1e9:.1f}")],
                         [nodes.Text(f"{achieved / 1e9:.1f}")],
                         [nodes.strong(f"{achieved / copy:.0%}", f"{achieved / copy:.0%}")]])
        if not body:
            return []
        return [make_table(["shape", "threads", "copy GB/s", "bn3d training forward, out= GB/s",
                            "fraction of copy"], body, [22, 10, 14, 30, 16],
                           "Bandwidth: one read of x and one write of y",
                           classes=["bn3d-benchmark-bandwidth"])]

    def _memory(self, data: dict[str, Any]) -> list[nodes.Node]:
        body = []
        for row in data.get("memory", []):
            body.append([[nodes.Text(shape_text(row["shape"]))],
                         [nodes.Text(f"{row['input_bytes'] / 2**20:.1f}")],
                         [nodes.Text(f"{row['train_forward_extra_bytes'] / 1024:.1f}")],
                         [nodes.Text(f"{row['backward_extra_bytes'] / 1024:.1f}")]])
        if not body:
            return []
        return [make_table(["shape", "input MiB", "extra KiB, training forward",
                            "extra KiB, backward"], body, [22, 14, 26, 26],
                           "Memory allocated during a call beyond its outputs",
                           classes=["bn3d-benchmark-memory"])]


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("spec_tables")  # the table helpers and the rebuild-every-time hooks
    app.add_config_value("bn3d_benchmark_results", "../benchmarks/results.json", "env",
                         types=(str,))
    app.add_directive("bn3d-benchmark", BenchmarkDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
