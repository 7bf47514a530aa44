"""The migration document's tables, each row with the entry that checks it and its status.

The documentation renders them (``docs/_ext/spec_tables.py``), so that the
pages show what the replay found in the build that made them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .loading import load_spec
from .model import TABLES, Entry
from .runner import replay

__all__ = ["TableRow", "document_tables"]


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
