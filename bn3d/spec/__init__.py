"""The executable difference spec: load ``spec/*.yaml``, replay it, report it.

The migration document that compares ``torch.nn.BatchNorm3d`` with
``mindspore.nn.BatchNorm3d`` is turned into data: each *entry* quotes one claim
of the document (``source: document``) or states one measured fact of the real
frameworks that the document leaves out (``source: reference``), and carries
*checks*. A check configures one or both frameworks' modules, feeds them inputs
step by step and lists *expectations*: what must be observed. One runner,
:func:`replay`, runs an entry's checks; the tests, the ``bn3d verify`` and
``bn3d example`` commands and the docs all go through it.

Vocabulary
----------
framework
    ``torch`` or ``mindspore``: whose ``BatchNorm3d`` semantics.
implementation
    One of the four things a check runs on (:data:`IMPLEMENTATIONS`):
    ``torch-facade`` and ``mindspore-facade`` (bn3d's :mod:`bn3d.torch_nn` and
    :mod:`bn3d.mindspore_nn`), ``torch`` and ``mindspore`` (the real frameworks,
    where they import). Each implements one framework. ``bn3d verify --target``
    names one.
side
    A framework's part of a check (the YAML's ``sides:``): how its module is
    built and set up. Replaying an entry against an implementation runs that
    implementation's framework's side on it, and the other framework's side,
    if the check has one, on bn3d's facade of the other framework.

Modules
-------
:mod:`~bn3d.spec.loading`
    finding and loading the YAML files (PyYAML; ``jsonschema`` if installed);
:mod:`~bn3d.spec.model`
    the typed model: :class:`Entry`, :class:`Check`, :class:`Side`, ``Input``, ``Step``;
:mod:`~bn3d.spec.expectations`
    the expectation kinds, each defined once;
:mod:`~bn3d.spec.oracle`
    the float64 reference the expectations (and the tests) compare with;
:mod:`~bn3d.spec.implementations`
    the adapters to the four implementations;
:mod:`~bn3d.spec.runner`
    running checks; :mod:`~bn3d.spec.trace` what the sides did meanwhile;
:mod:`~bn3d.spec.results`, :mod:`~bn3d.spec.report`
    the outcomes, and the document's tables with them for the docs;
:mod:`~bn3d.spec.fields`
    reading YAML field by field, with errors naming the field.

The spec files are the repository's ``spec/`` folder, installed as the package
data ``bn3d._spec``; ``spec/schema.json`` describes every field. ``import
bn3d.spec`` needs numpy only: PyYAML is imported when the spec is first loaded.
"""

from .expectations import EXPECTATIONS, Expectation
from .fields import SpecError
from .implementations import (
    FACADES,
    FRAMEWORKS,
    IMPLEMENTATIONS,
    ImplementationUnavailable,
    open_implementation,
)
from .loading import load_spec, spec_files
from .model import Check, Entry, Side
from .oracle import max_error
from .report import ConversionRow, TableRow, conversion_rows, document_tables
from .results import FAIL, PASS, SKIPPED, CheckResult, EntryResult
from .runner import replay, run_check, verify

__all__ = [
    "EXPECTATIONS",
    "FACADES",
    "FAIL",
    "FRAMEWORKS",
    "IMPLEMENTATIONS",
    "PASS",
    "SKIPPED",
    "Check",
    "CheckResult",
    "ConversionRow",
    "Entry",
    "EntryResult",
    "Expectation",
    "ImplementationUnavailable",
    "Side",
    "SpecError",
    "TableRow",
    "conversion_rows",
    "document_tables",
    "load_spec",
    "max_error",
    "open_implementation",
    "replay",
    "run_check",
    "spec_files",
    "verify",
]
