"""Render bn3d's executable difference spec into the documentation at build time.

Nothing here is copied from ``spec/``: every table row, quote and status comes
from :mod:`bn3d.spec` when the page is built, so the pages cannot drift from
the spec or from the facades.

Directives
----------
``.. bn3d-spec-table:: parameters | torch-states | mindspore-states``
    One of the migration document's three tables, from
    :func:`bn3d.spec.document_tables`: each row links to its spec entry and
    shows whether that entry passes when replayed against bn3d's facades (the
    implementations this build replays).
``.. bn3d-spec-claims:: SECTION``
    A compact table of the entries of one spec section (``summary``,
    ``difference-2``, ``reference``, ...): title linked to the entry, status.
``.. bn3d-spec-entries::``
    Every entry in full (claim, note, checks and their status), one section per
    entry, each the target ``spec-<id>`` of the links above.
``.. bn3d-spec-conversions::``
    The conversion checks of the parameter table (``converts`` expectations, from
    :func:`bn3d.spec.conversion_rows`): for each row, each setting converted one
    way or the other, what it converts to (or why it is refused), the policy
    given, and whether the check passes on bn3d's facades.

Pages using these directives are rebuilt on every build, as the facades they
replay may have changed without any document changing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from bn3d import spec

logger = logging.getLogger(__name__)

FACADES = tuple(spec.FACADES.values())
FACADE_TITLES = {"torch-facade": "torch facade", "mindspore-facade": "MindSpore facade"}
SECTION_TITLES = {
    "signature": "Signatures",
    "summary": "Summary",
    "parameters": "The parameter table",
    "difference-1": "Difference 1: training and inference states",
    "difference-2": "Difference 2: default modes",
    "difference-3": "Difference 3: momentum",
    "example": "The code example",
    "reference": "Not in the document: measured facts",
}
TABLE_CAPTIONS = {
    "parameters": "Parameters of torch.nn.BatchNorm3d and mindspore.nn.BatchNorm3d",
    "torch-states": "torch.nn.BatchNorm3d status under different parameters",
    "mindspore-states": "mindspore.nn.BatchNorm3d status under different parameters",
}
# Which facades a table's rows are replayed against: a state table concerns one framework.
TABLE_FACADES = {
    "parameters": FACADES,
    "torch-states": ("torch-facade",),
    "mindspore-states": ("mindspore-facade",),
}
STATUS_SYMBOLS = {spec.PASS: "\u2714", spec.FAIL: "\u2718", spec.SKIPPED: "\u2013"}


def entry_label(entry_id: str) -> str:
    """The reference label of a spec entry's section."""
    return f"spec-{entry_id}"


# -- results, computed once per build process ---------------------------------------------


class _Results:
    """The spec's entries, their replay against the facades, the document's tables and the
    conversion checks."""

    def __init__(self) -> None:
        self.entries = spec.load_spec()
        self.verified = spec.verify(FACADES, self.entries)
        self.tables = spec.document_tables(FACADES, self.entries)
        self.conversions = spec.conversion_rows(FACADES, self.entries)
        failures = [entry_id for entry_id, results in self.verified.items()
                    if any(result.status == spec.FAIL for result in results.values())]
        if failures:
            logger.info("bn3d spec: %d entries fail against the facades: %s",
                        len(failures), ", ".join(failures))


_RESULTS: _Results | None = None


def results() -> _Results:
    global _RESULTS
    if _RESULTS is None:
        _RESULTS = _Results()
    return _RESULTS


# -- node helpers ------------------------------------------------------------------------


def status_badge(status: str, facade: str | None = None) -> nodes.inline:
    """``✔ pass`` / ``✘ fail`` / ``– skipped``, coloured by CSS class."""
    text = f"{STATUS_SYMBOLS.get(status, '?')} {status}"
    if facade is not None:
        text = f"{FACADE_TITLES[facade]}: {text}"
    return nodes.inline(text, text, classes=["bn3d-status", f"bn3d-status-{status}"])


def value_cell(value: Any) -> list[nodes.Node]:
    """A table cell's content: names and constants as code, ``-`` as plain text."""
    if isinstance(value, bool) or value is None:
        return [nodes.literal(text=repr(value))]
    text = str(value)
    if text == "-" or " " in text:
        return [nodes.Text(text)]
    return [nodes.literal(text=text)]


def entry_link(env: BuildEnvironment, entry_id: str, text: str | None = None,
               literal: bool = True) -> addnodes.pending_xref:
    inner_class = nodes.literal if literal else nodes.inline
    content = inner_class(text or entry_id, text or entry_id)
    return addnodes.pending_xref(
        "", content, refdomain="std", reftype="ref", reftarget=entry_label(entry_id),
        refexplicit=True, refwarn=True, refdoc=env.docname,
    )


def paragraph(*children: nodes.Node, classes: Sequence[str] = ()) -> nodes.paragraph:
    return nodes.paragraph("", "", *children, classes=list(classes))


def make_table(headers: Sequence[str], rows: Iterable[Sequence[Sequence[nodes.Node]]],
               widths: Sequence[int], caption: str | None = None,
               classes: Sequence[str] = ()) -> nodes.table:
    """A docutils table; each cell is a list of paragraphs or inline nodes."""
    table = nodes.table(classes=["bn3d-table", "colwidths-given", *classes])
    if caption:
        table += nodes.title(caption, caption)
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += _row([[nodes.Text(header)] for header in headers])
    body = nodes.tbody()
    group += body
    for cells in rows:
        body += _row(cells)
    return table


def _row(cells: Iterable[Sequence[nodes.Node]]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        blocks = [node for node in content if isinstance(node, nodes.Body)]
        if blocks and len(blocks) == len(content):
            entry.extend(blocks)
        else:
            entry += paragraph(*content)
        row += entry
    return row


def rebuild_every_time(env: BuildEnvironment) -> None:
    """Have the current document read again on every build (its content is generated)."""
    if not hasattr(env, "bn3d_generated_docs"):
        env.bn3d_generated_docs = set()
    env.bn3d_generated_docs.add(env.docname)


def _note_generated(env: BuildEnvironment) -> None:
    """The current document renders the spec: rebuild it every time, and when the spec changes."""
    rebuild_every_time(env)
    for file in spec.spec_files():
        if isinstance(file, Path):
            env.note_dependency(str(file))


# -- directives --------------------------------------------------------------------------


class SpecTableDirective(SphinxDirective):
    """One of the document's tables, each row linked to its entry and replayed."""

    required_arguments = 1
    option_spec = {"caption": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        table_name = self.arguments[0]
        data = results()
        if table_name not in data.tables:
            raise self.error(f"unknown spec table {table_name!r}; expected one of "
                             f"{', '.join(data.tables)}")
        _note_generated(self.env)
        rows = data.tables[table_name]
        if not rows:
            logger.warning("bn3d spec: no entry stands for a row of the %s table", table_name,
                           location=(self.env.docname, self.lineno))
        facades = TABLE_FACADES[table_name]
        caption = self.options.get("caption", TABLE_CAPTIONS[table_name])
        if table_name == "parameters":
            headers = ["Row", "PyTorch", "MindSpore", "Differences (the document's words)",
                       "Checked by"]
            widths = [10, 17, 17, 36, 20]
            keys = ["label", "pytorch", "mindspore"]
        elif table_name == "torch-states":
            headers = ["training", "track_running_stats", "Status (the document's words)",
                       "Checked by"]
            widths = [12, 18, 48, 22]
            keys = ["training", "track_running_stats"]
        else:
            headers = ["use_batch_statistics", "Status (the document's words)", "Checked by"]
            widths = [18, 60, 22]
            keys = ["use_batch_statistics"]
        text_key = "differences" if table_name == "parameters" else "status"
        body = []
        for row in rows:
            cells: list[list[nodes.Node]] = []
            for key in keys:
                if key == "label":
                    label = row.cells.get("label") or f"Parameter {row.cells['number']}"
                    cells.append([nodes.Text(label)])
                else:
                    cells.append(value_cell(row.cells.get(key)))
            cells.append(self._text_cell(row.cells.get(text_key, ""), row.note))
            cells.append(self._checked_cell(row, facades))
            body.append(cells)
        return [make_table(headers, body, widths, caption, classes=[f"bn3d-{table_name}"])]

    @staticmethod
    def _text_cell(text: str, note: str | None) -> list[nodes.Node]:
        content: list[nodes.Node] = [paragraph(nodes.Text(text))]
        if note:
            content.append(paragraph(nodes.strong("bn3d's note: ", "bn3d's note: "),
                                     nodes.Text(note), classes=["bn3d-note"]))
        return content

    def _checked_cell(self, row: spec.TableRow, facades: Sequence[str]) -> list[nodes.Node]:
        content: list[nodes.Node] = [paragraph(entry_link(self.env, row.entry_id))]
        for facade in facades:
            content.append(paragraph(status_badge(row.status[facade], facade)))
        return content


class SpecClaimsDirective(SphinxDirective):
    """The entries of one spec section: title (linked), source and status per facade."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        section = self.arguments[0]
        if section not in SECTION_TITLES:
            raise self.error(f"unknown spec section {section!r}; expected one of "
                             f"{', '.join(SECTION_TITLES)}")
        _note_generated(self.env)
        data = results()
        entries = [entry for entry in data.entries if entry.section == section]
        if not entries:
            logger.warning("bn3d spec: no entry in section %s", section,
                           location=(self.env.docname, self.lineno))
        headers = ["Claim", *(FACADE_TITLES[facade] for facade in FACADES)]
        body = []
        for entry in entries:
            claim = [paragraph(entry_link(self.env, entry.id, entry.title, literal=False))]
            statuses = [[status_badge(data.verified[entry.id][facade].status)]
                        for facade in FACADES]
            body.append([claim, *statuses])
        return [make_table(headers, body, [64, 18, 18], classes=["bn3d-claims"])]


class SpecEntriesDirective(SphinxDirective):
    """Every spec entry in full, grouped by section, each a labelled section."""

    def run(self) -> list[nodes.Node]:
        _note_generated(self.env)
        data = results()
        output: list[nodes.Node] = []
        for section, title in SECTION_TITLES.items():
            entries = [entry for entry in data.entries if entry.section == section]
            if not entries:
                continue
            group = self._section(f"spec-section-{section}", title)
            for entry in entries:
                group += self._entry(entry, data.verified[entry.id])
            output.append(group)
        return output

    def _section(self, label: str, title: str) -> nodes.section:
        section = nodes.section(ids=[nodes.make_id(label)], names=[label])
        section += nodes.title(title, title)
        self.state.document.note_explicit_target(section, section)
        return section

    def _entry(self, entry: spec.Entry, replayed: dict[str, spec.EntryResult]) -> nodes.section:
        section = self._section(entry_label(entry.id), entry.title)
        source = ("from the migration document" if entry.source == "document"
                  else "measured on PyTorch 2.13 / MindSpore 2.10, not in the document")
        section += paragraph(
            nodes.literal(text=entry.id), nodes.Text(f" \u00b7 {source} \u00b7 "),
            nodes.literal(text=f"spec/{Path(entry.file).name}"), classes=["bn3d-entry-meta"])
        badges: list[nodes.Node] = [nodes.Text("Replayed: ")]
        for facade in FACADES:
            badges += [status_badge(replayed[facade].status, facade), nodes.Text(" ")]
        section += paragraph(*badges[:-1], classes=["bn3d-entry-meta"])
        if entry.source == "document":
            section += nodes.block_quote("", paragraph(nodes.Text(entry.text)),
                                         classes=["bn3d-quote"])
        else:
            section += paragraph(nodes.Text(entry.text))
        if entry.note:
            note = nodes.admonition("", nodes.title("bn3d's note", "bn3d's note"),
                                    paragraph(nodes.Text(entry.note)), classes=["note"])
            section += note
        section += self._checks_table(entry, replayed)
        failures = [f"{FACADE_TITLES[facade]}: {message}" for facade in FACADES
                    if replayed[facade].status == spec.FAIL
                    for message in replayed[facade].messages]
        if failures:
            items = nodes.bullet_list()
            for message in failures:
                items += nodes.list_item("", paragraph(nodes.literal(text=message)))
            section += nodes.admonition("", nodes.title("What differed in this build",
                                                         "What differed in this build"),
                                        items, classes=["error"])
        return section

    @staticmethod
    def _checks_table(entry: spec.Entry, replayed: dict[str, spec.EntryResult]) -> nodes.table:
        body = []
        for index, check in enumerate(entry.checks):
            sides = ", ".join(check.sides)
            cells: list[list[nodes.Node]] = [[nodes.literal(text=check.name)],
                                             [nodes.Text(sides)]]
            for facade in FACADES:
                result = replayed[facade].checks[index]
                cells.append([status_badge(result.status)])
            body.append(cells)
        return make_table(["Check", "Frameworks", *(FACADE_TITLES[f] for f in FACADES)], body,
                          [46, 18, 18, 18], classes=["bn3d-checks"])


def arguments_text(kwargs: dict[str, Any], load: dict[str, Any]) -> str:
    """``name=value, ...`` of a side's arguments but num_features, and the state it loads."""
    parts = [f"{name}={value['array'] if isinstance(value, dict) else value!r}"
             for name, value in kwargs.items() if name != "num_features"]
    parts += [f"{name} loaded: {value}" for name, value in load.items()]
    return ", ".join(parts) or "(defaults)"


class SpecConversionsDirective(SphinxDirective):
    """The conversion checks of the parameter table, with their replay status."""

    def run(self) -> list[nodes.Node]:
        _note_generated(self.env)
        rows = results().conversions
        if not rows:
            logger.warning("bn3d spec: no conversion check in the parameter table",
                           location=(self.env.docname, self.lineno))
        titles = {"torch": "PyTorch", "mindspore": "MindSpore"}
        body = []
        for row in rows:
            label = f"{row.row['pytorch']} / {row.row['mindspore']}"
            direction = f"{titles[row.source]} \u2192 {titles[row.target]}"
            if row.refused:
                outcome: list[nodes.Node] = [nodes.Text("refused: "),
                                             nodes.emphasis(text=f"{row.refused}\u2026")]
            else:
                outcome = [nodes.literal(text=arguments_text(row.target_kwargs,
                                                             row.target_load))]
            policies = ", ".join(f"{name}={value!r}" for name, value in row.policies.items())
            status = [paragraph(status_badge(row.status[facade], facade)) for facade in FACADES]
            body.append([
                [paragraph(entry_link(self.env, row.entry_id, label, literal=False))],
                [nodes.Text(direction)],
                [nodes.literal(text=arguments_text(row.source_kwargs, row.source_load))],
                outcome,
                [nodes.literal(text=policies)] if policies else [nodes.Text("-")],
                status,
            ])
        return [make_table(["Row", "From", "Setting", "Converts to", "Policy", "Checked"],
                           body, [14, 10, 22, 24, 14, 16], classes=["bn3d-conversions"])]


# -- rebuild the generated pages every time -------------------------------------------


def _outdated(app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str],
              removed: set[str]) -> list[str]:
    return sorted(getattr(env, "bn3d_generated_docs", set()) - removed)


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "bn3d_generated_docs", set()).discard(docname)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str],
           other: BuildEnvironment) -> None:
    if not hasattr(env, "bn3d_generated_docs"):
        env.bn3d_generated_docs = set()
    env.bn3d_generated_docs |= getattr(other, "bn3d_generated_docs", set()) & docnames


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("bn3d-spec-table", SpecTableDirective)
    app.add_directive("bn3d-spec-claims", SpecClaimsDirective)
    app.add_directive("bn3d-spec-entries", SpecEntriesDirective)
    app.add_directive("bn3d-spec-conversions", SpecConversionsDirective)
    app.connect("env-get-outdated", _outdated)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
