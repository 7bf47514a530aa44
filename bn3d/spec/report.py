"""The migration document's tables, each row with the entry that checks it and its status,
and the conversion checks of the parameter table's rows.

The documentation renders them (``docs/_ext/spec_tables.py``), so that the
pages show what the replay found in the build that made them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .expectations import Converts
from .implementations import FRAMEWORKS
from .loading import load_spec
from .model import TABLES, Entry
from .runner import replay

__all__ = ["ConversionRow", "TableRow", "conversion_rows", "document_tables"]


@dataclass(frozen=True)
class TableRow:
    """A row of one of the document's tables, with the entry that checks it.

    Attributes
    ----------
    table : str
        ``'parameters'``, ``'torch-states'`` or ``'mindspore-states'``.
    entry_id : str
    cells : Mapping[str, object]
        The row as the entry records it (e.g. ``pytorch``, ``mindspore``,
        ``differences`` for the parameter table).
    quote : str
        The document's words for the row.
    note : str or None
    status : Mapping[str, str]
        implementation -> ``'pass'`` / ``'fail'`` / ``'skipped'``.

    Examples
    --------
    >>> row = document_tables(implementations=("torch-facade",))["torch-states"][0]
    >>> row.cells["training"], row.cells["track_running_stats"], row.status
    (True, True, {'torch-facade': 'pass'})
    """

    table: str
    entry_id: str
    cells: Mapping[str, Any]
    quote: str
    note: str | None
    status: Mapping[str, str]


def document_tables(implementations: Sequence[str] = ("torch-facade", "mindspore-facade"),
                    entries: Sequence[Entry] | None = None) -> dict[str, list[TableRow]]:
    """The rows of the document's parameter table and its two state tables, each replayed.

    Parameters
    ----------
    implementations : sequence of str, default both facades
        The implementations whose status each row reports.
    entries : sequence of Entry, optional
        Default: :func:`~bn3d.spec.load_spec`.

    Returns
    -------
    dict
        ``'parameters'``, ``'torch-states'``, ``'mindspore-states'`` -> rows in
        the document's order.

    Examples
    --------
    >>> tables = document_tables(implementations=())
    >>> [row.cells["pytorch"] for row in tables["parameters"]][:3]
    ['num_features', 'eps', 'momentum']
    """
    entries = load_spec() if entries is None else entries
    tables: dict[str, list[TableRow]] = {name: [] for name in TABLES}
    for entry in entries:
        if entry.row is None:
            continue
        status = {implementation: replay(entry, implementation).status
                  for implementation in implementations}
        tables[entry.row.table].append(
            TableRow(entry.row.table, entry.id, entry.row.cells, entry.text, entry.note, status))
    tables["parameters"].sort(key=lambda row: row.cells["number"])
    return tables


@dataclass(frozen=True)
class ConversionRow:
    """One ``converts`` expectation of a parameter-table entry: a setting carried across.

    Attributes
    ----------
    entry_id, check : str
        The entry and the check it belongs to.
    row : Mapping[str, object]
        The parameter table's row (``number``, ``pytorch``, ``mindspore``...).
    source, target : str
        The framework converted from, and to.
    source_kwargs, target_kwargs : Mapping[str, object]
        The two sides' constructor arguments, as the spec writes them.
    source_load, target_load : Mapping[str, object]
        The state a torch side loads after construction (empty otherwise).
    policies : Mapping[str, object]
        The policies the conversion is given.
    refused : str or None
        The start of the refusal's message, if the conversion is refused.
    status : Mapping[str, str]
        implementation -> the check's status.

    Examples
    --------
    >>> rows = conversion_rows(implementations=("torch-facade",))
    >>> row = next(row for row in rows if row.check == "torch-0-3-converts-to-mindspore-0-7")
    >>> row.source, row.source_kwargs, row.target_kwargs, row.status
    ('torch', {'num_features': 3, 'momentum': 0.3}, {'num_features': 3, 'momentum': 0.7}, \
{'torch-facade': 'pass'})
    """

    entry_id: str
    check: str
    row: Mapping[str, Any]
    source: str
    target: str
    source_kwargs: Mapping[str, Any]
    target_kwargs: Mapping[str, Any]
    source_load: Mapping[str, Any]
    target_load: Mapping[str, Any]
    policies: Mapping[str, Any]
    refused: str | None
    status: Mapping[str, str]


def conversion_rows(implementations: Sequence[str] = ("torch-facade", "mindspore-facade"),
                    entries: Sequence[Entry] | None = None) -> list[ConversionRow]:
    """Every ``converts`` expectation of the parameter table's entries, with its check replayed.

    Parameters
    ----------
    implementations : sequence of str, default both facades
    entries : sequence of Entry, optional
        Default: :func:`~bn3d.spec.load_spec`.

    Returns
    -------
    list of ConversionRow
        In the table's order, then the entry's.
    """
    entries = load_spec() if entries is None else entries
    rows = []
    table = sorted(((entry, entry.row) for entry in entries
                    if entry.row is not None and entry.row.table == "parameters"),
                   key=lambda pair: pair[1].cells["number"])
    for entry, row in table:
        results = {implementation: replay(entry, implementation)
                   for implementation in implementations}
        for index, check in enumerate(entry.checks):
            for expectation in check.expect:
                if not isinstance(expectation, Converts):
                    continue
                target = next(framework for framework in FRAMEWORKS
                              if framework != expectation.source)
                source, other = check.sides[expectation.source], check.sides[target]
                rows.append(ConversionRow(
                    entry.id, check.name, row.cells,
                    expectation.source, target, source.kwargs, other.kwargs,
                    source.load or {}, other.load or {}, dict(expectation.policies),
                    expectation.refused,
                    {implementation: result.checks[index].status
                     for implementation, result in results.items()}))
    return rows
