"""The console report of ``bench.py``: markdown tables from the results (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OPERATION_NAMES = {
    "train_forward": "training forward",
    "eval_forward": "inference forward",
    "backward": "backward",
    "forward_backward": "forward + backward",
}
CONTIGUOUS = ["bn3d", "bn3d_out", "torch", "onnxruntime", "jax", "numpy", "floor_by_channel",
              "floor_two_sweeps"]
CHANNELS_LAST = ["bn3d_cl", "torch_cl", "jax_cl"]


def shape_text(shape: Sequence[int]) -> str:
    """``(8,32,32,64,64)``."""
    return "(" + ",".join(map(str, shape)) + ")"


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(rows)


def milliseconds(spread: dict[str, float] | None, pooled: float | None) -> str:
    """``12.345 (11.900-13.000)``: the pooled median and the processes' min-max, in ms.

    Examples
    --------
    >>> milliseconds({"min": 0.0119, "median": 0.0123, "max": 0.013}, 0.012345)
    '12.345 (11.900-13.000)'
    >>> milliseconds(None, None)
    '-'
    """
    if pooled is None:
        return "-"
    text = f"{1e3 * pooled:.3f}"
    if spread is not None:
        text += f" ({1e3 * spread['min']:.3f}-{1e3 * spread['max']:.3f})"
    return text


def times_table(results: dict[str, Any], threads: int, names: Sequence[str]) -> str:
    """Median ms per call (min-max of the processes) of ``names``, at ``threads`` threads."""
    rows = [row for row in results["rows"] if row["threads"] == threads]
    present = [name for name in names if any(name in row["seconds"] for row in rows)]
    lines = [[shape_text(row["shape"]), OPERATION_NAMES[row["operation"]]]
             + [milliseconds(row.get("spread", {}).get(name), row["seconds"].get(name))
                for name in present]
             for row in rows]
    return table(["shape", "operation", *present], lines)


def ratio_text(cell: dict[str, Any]) -> str:
    """A target cell's ratio, ``2.71x`` (``-`` when unmeasured)."""
    return "-" if cell["ratio"] is None else f"{cell['ratio']:.2f}x"


def targets_table(targets: dict[str, Any]) -> str:
    """Every target cell: ratio of the medians, bound, met, processes' spread."""
    lines = []
    for cell in targets["cells"]:
        bound = (">= " if cell["at_least"] else "<= ") + f"{cell['bound']:g}x"
        met = {True: "met", False: "NOT MET", None: "unmeasured"}[cell["met"]]
        spread = ("-" if cell["spread"] is None
                  else f"{cell['spread'][0]:.2f}-{cell['spread'][1]:.2f}"
                  + (" crosses" if cell["spread_crosses"] else ""))
        against = ("" if cell["numerator"] is None
                   else f"{cell['numerator']} / {cell['denominator']}")
        lines.append([cell["target"], shape_text(cell["shape"]),
                      OPERATION_NAMES[cell["operation"]], against, ratio_text(cell), bound, met,
                      spread, cell["note"]])
    return table(["target", "shape", "operation", "ratio of", "median", "target", "",
                  "processes", "note"], lines)


def crossing_cells(targets: dict[str, Any]) -> list[str]:
    """The cells whose spread across processes crosses their target, one line each."""
    return [f"{cell['target']} {shape_text(cell['shape'])} "
            f"{OPERATION_NAMES[cell['operation']]}: median {ratio_text(cell)}, processes "
            f"{cell['spread'][0]:.2f}-{cell['spread'][1]:.2f}, target "
            f"{'>=' if cell['at_least'] else '<='} {cell['bound']:g}"
            for cell in targets["cells"] if cell["spread_crosses"]]


def load_text(load: dict[str, Any]) -> str:
    """One paragraph on the load rule's work."""
    set_aside, kept = load["set_aside"], load["kept_under_load"]
    text = (f"load rule: {load['rounds_kept']} rounds kept; {len(set_aside)} set aside because "
            f"other processes used more than {load['limit_cores']} core")
    if set_aside:
        loads = [record["others_cores"] for record in set_aside]
        text += f" ({min(loads):.2f} to {max(loads):.2f} cores)"
    text += f"; {len(kept)} kept under load after {load['max_retries']} retries"
    return text


def bandwidth_table(results: dict[str, Any]) -> str:
    """numpy copy against bn3d's training forward into ``out=``, in GB/s."""
    lines = []
    for row in results["bandwidth"]:
        copy = row["copy_bytes_per_second"]
        achieved = row["train_forward_out_bytes_per_second"]
        lines.append([shape_text(row["shape"]), str(row["threads"]), f"{copy / 1e9:.1f}",
                      f"{achieved / 1e9:.1f}", f"{achieved / copy:.0%}"])
    return table(["shape", "threads", "copy GB/s", "bn3d train forward with out= GB/s",
                  "fraction"], lines)


def page_fault_table(results: dict[str, Any]) -> str:
    """The cases where an implementation takes fresh pages from the system on every call."""
    names = list(dict.fromkeys(name for row in results["rows"]
                               for name in row["page_faults_per_call"]))
    lines = []
    for row in results["rows"]:
        faults = row["page_faults_per_call"]
        if any(value >= 1 for value in faults.values()):
            lines.append([shape_text(row["shape"]), OPERATION_NAMES[row["operation"]],
                          str(row["threads"])]
                         + [f"{faults[name]:.0f}" if name in faults else "-" for name in names])
    return table(["shape", "operation", "threads", *names], lines)


def memory_table(results: dict[str, Any]) -> str:
    """The peak bytes bn3d's calls allocate beyond their outputs, in KiB."""
    lines = [[shape_text(row["shape"]), f"{row['input_bytes'] / 2**20:.1f}",
              f"{row['train_forward_extra_bytes'] / 1024:.1f}",
              f"{row['backward_extra_bytes'] / 1024:.1f}"]
             + [f"{row[key] / 1024:.1f}" if key in row else "-"
                for key in ("train_forward_channels_last_extra_bytes",
                            "backward_channels_last_extra_bytes")]
             for row in results["memory"]]
    return table(["shape", "input MiB", "extra KiB, train forward", "extra KiB, backward",
                  "channels-last train forward", "channels-last backward"], lines)


def differences_text(results: dict[str, Any], tolerance: float = 1e-3) -> list[str]:
    """Implementations whose output differs from bn3d's by more than ``tolerance``."""
    return [f"{shape_text(row['shape'])} {OPERATION_NAMES[row['operation']]} "
            f"{row['threads']}t: {name} differs from bn3d by up to {value:.1e}"
            for row in results["rows"]
            for name, value in row.get("max_abs_difference", {}).items() if value > tolerance]


def report(results: dict[str, Any]) -> str:
    """Everything ``bench.py`` prints after a run."""
    machine = results["machine"]
    parts = [f"{machine['cpu']}, {machine['cores']} cores, {results['date']}"]
    for threads in results["settings"]["threads"]:
        parts.append(f"contiguous, {threads} thread(s), ms per call: the median of every run "
                     f"(the least and greatest of the processes' medians)\n"
                     + times_table(results, threads, CONTIGUOUS))
        if any(name in row["seconds"] for row in results["rows"] for name in CHANNELS_LAST):
            parts.append(f"channels-last, {threads} thread(s)\n"
                         + times_table(results, threads, CHANNELS_LAST))
    targets = results["targets"]
    summary = targets["summary"]
    parts.append(f"targets at {targets['threads']} threads: {summary['met']} met, "
                 f"{summary['not_met']} not met, {summary['unmeasured']} unmeasured\n"
                 + targets_table(targets))
    crossing = crossing_cells(targets)
    parts.append("cells whose spread crosses the target:\n"
                 + ("\n".join(crossing) if crossing else "none"))
    parts.append(load_text(results["load"]))
    differences = differences_text(results)
    if differences:
        parts.append("outputs that differ:\n" + "\n".join(differences))
    parts.append(bandwidth_table(results))
    parts.append(memory_table(results))
    parts.append("page faults per call (4 KiB pages, or 2 MiB where numpy asks for huge "
                 "pages):\n" + page_fault_table(results))
    parts.append("notes:\n" + "\n".join(f"- {name}: {note}"
                                        for name, note in results["notes"].items()))
    return "\n\n".join(parts)
