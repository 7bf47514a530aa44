"""The performance targets and their evaluation on the pooled rows (pure functions).

Every target is a ratio of two times of the same case and a bound on it:
``ratio = time(numerator) / time(denominator)``, where each side is the fastest of
its implementations (the least time), and the target is met when the ratio is at
least (speed-ups) or at most (overheads) the bound. Evaluated with both threads of
the 2-core machine (``TARGET_THREADS``), float32, each library allocating its
outputs as it normally does.

=====================  ==================================================  ==============
target                 ratio                                               bound
=====================  ==================================================  ==============
``fastest-peer``       fastest of torch, onnxruntime, jax, numpy / bn3d    >= 1.2
``torch``              torch / bn3d                                        >= 2.5, 1.2, 1.3
``floor``              bn3d / faster two-pass floor (backward)             <= 1.15
``channels-last``      faster of torch_cl, jax_cl / bn3d_cl                >= 2, 1.2, 1.3
``channels-last-own``  bn3d_cl / bn3d                                      <= 1.3
``fresh-vs-out``       bn3d / bn3d_out, the 128 MiB shape only             <= 1.25
=====================  ==================================================  ==============

(bounds in the order training forward, inference forward, backward.)

In each worker process both sides of a ratio were timed taking turns, so the ratio
of that process's medians is one sample of it. A cell's ratio is the median of
those samples, its spread their least and greatest, and the spread *crosses* the
target when they fall on both sides of the bound (some processes met it and some
did not). The ratio of the pooled medians (the ``seconds`` of the row) is recorded
too, as ``pooled_ratio``; it can lie outside the spread when one process was slow
for every library, which is why it is not the one judged. (Rows without
``process_medians`` are judged on it.)
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TARGET_THREADS = 2
BIG_SHAPE = (8, 32, 32, 64, 64)  # 128 MiB of float32
TARGET_OPERATIONS = ("train_forward", "eval_forward", "backward")


@dataclass(frozen=True)
class Target:
    """One target for one operation.

    Attributes
    ----------
    key : str
        The target's name (several operations share it).
    description : str
        What is compared, for the tables.
    operation : str
    numerator, denominator : tuple of str
        Implementations; each side is the fastest of its own.
    bound : float
    at_least : bool
        Met when ``ratio >= bound`` (else when ``ratio <= bound``).
    shape : tuple of int or None
        The only shape it applies to; None for every shape.
    """

    key: str
    description: str
    operation: str
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]
    bound: float
    at_least: bool = True
    shape: tuple[int, ...] | None = None

    def meets(self, ratio: float) -> bool:
        """Whether a ratio meets the bound.

        Examples
        --------
        >>> target = Target("torch", "", "backward", ("torch",), ("bn3d",), 1.3)
        >>> target.meets(1.3), target.meets(1.29)
        (True, False)
        """
        return ratio >= self.bound if self.at_least else ratio <= self.bound


def _each(key: str, description: str, bounds: Sequence[float], numerator: tuple[str, ...],
          denominator: tuple[str, ...], at_least: bool = True,
          shape: tuple[int, ...] | None = None) -> list[Target]:
    return [Target(key, description, operation, numerator, denominator, bound, at_least, shape)
            for operation, bound in zip(TARGET_OPERATIONS, bounds)]


PEERS = ("torch", "onnxruntime", "jax", "numpy")
TARGETS: list[Target] = [
    *_each("fastest-peer", "contiguous: the fastest of PyTorch, onnxruntime, JAX, numpy "
           "over bn3d", (1.2, 1.2, 1.2), PEERS, ("bn3d",)),
    *_each("torch", "contiguous: PyTorch over bn3d", (2.5, 1.2, 1.3), ("torch",), ("bn3d",)),
    Target("floor", "contiguous: bn3d over the faster two-pass floor (benchmarks/floor.py)",
           "backward", ("bn3d",), ("floor_by_channel", "floor_two_sweeps"), 1.15, False),
    *_each("channels-last", "channels-last: the faster of PyTorch channels_last_3d and JAX "
           "NDHWC over bn3d", (2.0, 1.2, 1.3), ("torch_cl", "jax_cl"), ("bn3d_cl",)),
    *_each("channels-last-own", "bn3d channels-last over bn3d contiguous", (1.3, 1.3, 1.3),
           ("bn3d_cl",), ("bn3d",), at_least=False),
    *_each("fresh-vs-out", "bn3d with a fresh output over bn3d with out=", (1.25, 1.25, 1.25),
           ("bn3d",), ("bn3d_out",), at_least=False, shape=BIG_SHAPE),
]


def fastest(times: dict[str, float | None], names: Sequence[str]) -> tuple[str, float] | None:
    """The implementation among ``names`` with the least time, or None if none was timed.

    Examples
    --------
    >>> fastest({"torch": 2.0, "jax": 1.5, "numpy": None}, ("torch", "jax", "numpy"))
    ('jax', 1.5)
    """
    timed = [(times[name], name) for name in names if times.get(name) is not None]
    if not timed:
        return None
    time, name = min(timed)
    return name, time


def process_ratios(row: dict[str, Any], target: Target) -> list[float]:
    """The ratio in each process that timed both sides (from ``process_medians``)."""
    medians = row.get("process_medians", {})
    count = max((len(values) for values in medians.values()), default=0)
    ratios = []
    for index in range(count):
        in_process = {name: values[index] for name, values in medians.items()
                      if index < len(values)}
        top = fastest(in_process, target.numerator)
        bottom = fastest(in_process, target.denominator)
        if top and bottom and bottom[1] > 0:
            ratios.append(top[1] / bottom[1])
    return ratios


def evaluate_cell(row: dict[str, Any] | None, target: Target,
                  shape: Sequence[int], notes: dict[str, str] | None = None) -> dict[str, Any]:
    """One target on one case.

    Parameters
    ----------
    row : dict or None
        The pooled row of the case (None when the case was not measured).
    target : Target
    shape : sequence of int
    notes : dict of str to str, optional
        Why an implementation is missing, by name or by ``name/operation``
        (``"jax": "not installed"``, ``"onnxruntime/backward": "no backward"``),
        quoted in the cell's note.

    Returns
    -------
    dict
        ``target``, ``description``, ``shape``, ``operation``, ``bound``,
        ``at_least``, ``ratio`` (the median of the processes' ratios; None when a
        side was not measured), ``pooled_ratio``, ``numerator`` and
        ``denominator`` (the faster implementation of each side, pooled),
        ``met`` (None when unmeasured), ``spread`` (``[min, max]`` of the
        processes' ratios, or None), ``spread_crosses`` and ``note``.
    """
    notes = notes or {}
    seconds = row["seconds"] if row else {}
    missing = [name for name in target.numerator + target.denominator if name not in seconds]
    note = "; ".join(f"{name}: " + notes.get(f"{name}/{target.operation}",
                                            notes.get(name, "not measured"))
                     for name in missing) if row else "the run did not measure this case"
    under_load = (row or {}).get("load", {}).get("kept_under_load", 0)
    if under_load:
        note = "; ".join(filter(None, [note, f"{under_load} round(s) kept under load"]))
    top, bottom = fastest(seconds, target.numerator), fastest(seconds, target.denominator)
    cell: dict[str, Any] = {
        "target": target.key, "description": target.description, "shape": list(shape),
        "operation": target.operation, "bound": target.bound, "at_least": target.at_least,
        "ratio": None, "pooled_ratio": None, "numerator": None, "denominator": None,
        "met": None, "spread": None, "spread_crosses": None, "note": note,
    }
    if top is None or bottom is None or bottom[1] <= 0:
        return cell
    pooled = top[1] / bottom[1]
    ratios = process_ratios(row, target)
    ratio = statistics.median(ratios) if ratios else pooled
    cell.update(ratio=ratio, pooled_ratio=pooled, numerator=top[0], denominator=bottom[0],
                met=target.meets(ratio))
    if ratios:
        low, high = min(ratios), max(ratios)
        cell.update(spread=[low, high], spread_crosses=target.meets(low) != target.meets(high))
    return cell


def evaluate(rows: Sequence[dict[str, Any]], threads: int = TARGET_THREADS,
             notes: dict[str, str] | None = None,
             targets: Sequence[Target] = TARGETS) -> dict[str, Any]:
    """Every target on every measured shape at ``threads`` threads.

    Returns
    -------
    dict
        ``threads``, ``cells`` (see :func:`evaluate_cell`) and ``summary``: how many
        cells are ``met``, ``not_met``, ``unmeasured``, and ``spread_crosses``.
    """
    by_case = {(tuple(row["shape"]), row["threads"], row["operation"]): row for row in rows}
    shapes = list(dict.fromkeys(tuple(row["shape"]) for row in rows))
    cells = []
    for target in targets:
        # A target of one shape is listed (unmeasured) even when the run left its shape out.
        for shape in shapes if target.shape is None else [tuple(target.shape)]:
            row = by_case.get((shape, threads, target.operation))
            cells.append(evaluate_cell(row, target, shape, notes))
    return {"threads": threads, "cells": cells, "summary": summarise(cells)}


def summarise(cells: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Counts of the cells met, not met, unmeasured, and whose spread crosses the target."""
    return {"met": sum(cell["met"] is True for cell in cells),
            "not_met": sum(cell["met"] is False for cell in cells),
            "unmeasured": sum(cell["met"] is None for cell in cells),
            "spread_crosses": sum(bool(cell["spread_crosses"]) for cell in cells)}
