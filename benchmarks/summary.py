"""Pool the workers' raw times into the rows of ``results.json`` (pure functions).

Each worker process measures every case at one thread count and returns, per case
(shape, thread count, operation), each implementation's kept call times, its page
faults per call, its CPU per wall second, how far its output is from bn3d's, and
the rounds it kept or set aside. Here the workers of a thread count are pooled:
for each implementation, the median of every process's calls (``seconds``), the
median of each process (``process_medians``, None where a process did not measure
it) and their min / median / max (``spread``). The processes keep the order they
ran in, in every case, so that ratios can be taken process by process.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

Row = dict[str, Any]
CASE_KEYS = ("shape", "threads", "operation")


def spread(values: Iterable[float]) -> dict[str, float]:
    """The least, median and greatest of some values.

    Examples
    --------
    >>> spread([3.0, 1.0, 2.0, 10.0])
    {'min': 1.0, 'median': 2.5, 'max': 10.0}
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    return {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1]}


def case_key(row: Row) -> tuple[tuple[int, ...], int, str]:
    """The case a row measures: ``(shape, threads, operation)``."""
    return tuple(row["shape"]), row["threads"], row["operation"]


def pool_case(parts: Sequence[Row]) -> Row:
    """One case's row from the raw rows of the processes that measured it.

    Parameters
    ----------
    parts : sequence of dict
        The workers' raw rows of one case, in process order: each with ``times``
        (implementation -> seconds of every kept call), ``page_faults``,
        ``cpu_per_wall``, ``max_abs_difference`` and ``rounds`` (``kept`` and
        ``set_aside`` lists of round records).

    Returns
    -------
    dict
        The row of ``results.json`` (see ``bench.py``'s docstring).
    """
    names = list(dict.fromkeys(name for part in parts for name in part["times"]))
    measured = {name: [part for part in parts if part["times"].get(name)] for name in names}
    # Aligned with ``parts``: None where a process did not measure the implementation.
    medians = {name: [statistics.median(part["times"][name]) if part["times"].get(name)
                      else None for part in parts] for name in names}
    kept = [record for part in parts for record in part["rounds"]["kept"]]
    limit = parts[0]["rounds"].get("limit_cores")
    loads = [record["others_cores"] for record in kept if record["others_cores"] is not None]
    return {
        **{key: parts[0][key] for key in CASE_KEYS},
        "seconds": {name: statistics.median(value for part in measured[name]
                                            for value in part["times"][name])
                    for name in names if measured[name]},
        "spread": {name: spread(m for m in medians[name] if m is not None)
                   for name in names if measured[name]},
        "process_medians": medians,
        "page_faults_per_call": _median_of(parts, "page_faults", names),
        "cpu_per_wall": _median_of(parts, "cpu_per_wall", names),
        "max_abs_difference": {
            name: max(part["max_abs_difference"][name] for part in parts
                      if part["max_abs_difference"].get(name) is not None)
            for name in names
            if any(part["max_abs_difference"].get(name) is not None for part in parts)},
        "load": {
            "rounds_kept": len(kept),
            "set_aside": sum(len(part["rounds"]["set_aside"]) for part in parts),
            "kept_under_load": sum(1 for load in loads if limit is not None and load > limit),
            "max_others_cores_kept": max(loads) if loads else None,
        },
    }


def _median_of(parts: Sequence[Row], field: str, names: Sequence[str]) -> dict[str, float]:
    values = {name: [part[field][name] for part in parts if part[field].get(name) is not None]
              for name in names}
    return {name: statistics.median(found) for name, found in values.items() if found}


def pool_rows(workers: Sequence[dict[str, Any]]) -> list[Row]:
    """Every case's row, in the order the cases were measured.

    Parameters
    ----------
    workers : sequence of dict
        The workers' outputs in the order they ran; each has ``rows``.
    """
    grouped: dict[tuple, list[Row]] = {}
    for worker in workers:
        for row in worker["rows"]:
            grouped.setdefault(case_key(row), []).append(row)
    return [pool_case(parts) for parts in grouped.values()]


def set_aside_rounds(workers: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every round set aside by the load rule, and every one kept under load, with its case.

    Returns
    -------
    dict
        ``set_aside`` and ``kept_under_load``: lists of round records, each with the
        case's ``shape``, ``threads`` and ``operation`` and the ``process`` index.
    """
    found: dict[str, list[dict[str, Any]]] = {"set_aside": [], "kept_under_load": []}
    for worker in workers:
        for row in worker["rows"]:
            case = {key: row[key] for key in CASE_KEYS} | {"process": worker["process"]}
            limit = row["rounds"].get("limit_cores")
            found["set_aside"] += [case | record for record in row["rounds"]["set_aside"]]
            found["kept_under_load"] += [
                case | record for record in row["rounds"]["kept"]
                if limit is not None and record["others_cores"] is not None
                and record["others_cores"] > limit]
    return found


def pool_bandwidth(workers: Sequence[dict[str, Any]]) -> list[Row]:
    """Copy and ``out=`` training forward bandwidth, per shape and thread count."""
    grouped: dict[tuple, list[Row]] = {}
    for worker in workers:
        for row in worker["bandwidth"]:
            grouped.setdefault((tuple(row["shape"]), row["threads"]), []).append(row)
    pooled = []
    for (shape, threads), parts in grouped.items():
        moved = parts[0]["bytes"]
        copy = statistics.median(t for part in parts for t in part["times"]["copy"])
        out = statistics.median(t for part in parts for t in part["times"]["out"])
        pooled.append({"shape": list(shape), "threads": threads, "bytes": moved,
                       "copy_bytes_per_second": moved / copy,
                       "train_forward_out_bytes_per_second": moved / out})
    return pooled


def results_document(workers: Sequence[dict[str, Any]], settings: dict[str, Any],
                     machine: dict[str, Any], versions: dict[str, str | None], date: str,
                     implementations: dict[str, dict[str, str]],
                     target_threads: int = 2) -> dict[str, Any]:
    """The whole ``results.json`` (schema 2, described in ``bench.py``'s docstring).

    Parameters
    ----------
    workers : sequence of dict
        The workers' outputs, in the order they ran.
    settings : dict
        The run's settings (``repeat`` per process, ``rounds``, ``processes``,
        ``threads``, ``shapes``, ``load`` limits, ...).
    machine, versions, date, implementations
        Recorded as given (``implementations``: what each name stands for).
    target_threads : int
        The thread count the targets are evaluated at.
    """
    from targets import evaluate  # beside this file

    rows = pool_rows(workers)
    found: dict[str, list[str]] = {}
    for worker in workers:
        for name, note in worker["notes"].items():
            if note not in found.setdefault(name, []):
                found[name].append(note)
    notes = {name: " | ".join(texts) for name, texts in found.items()}
    present = {name for row in rows for name in row["seconds"]}
    load = settings["load"]
    return {
        "schema": 2,
        "date": date,
        "machine": machine,
        "versions": versions,
        "settings": settings,
        # The old top-level fields, which the documentation of older runs reads.
        "repeat": settings["repeat"] * settings["processes"],
        "rounds": settings["rounds"],
        "processes": settings["processes"],
        "implementations": {name: description for name, description in implementations.items()
                            if name in present},
        "notes": notes,
        "rows": rows,
        "load": {**load, "rounds_kept": sum(row["load"]["rounds_kept"] for row in rows),
                 **set_aside_rounds(workers)},
        "bandwidth": pool_bandwidth(workers),
        "memory": workers[0]["memory"] if workers else [],
        "targets": evaluate(rows, target_threads, notes),
    }
