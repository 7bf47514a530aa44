"""The spec as typed data: entries, their checks, sides, inputs and steps.

Every class is a frozen dataclass, parsed once from a spec file's YAML by its
``parse`` class method, which rejects a malformed field with a
:class:`~bn3d.spec.fields.FieldError` naming it. The expectations of a check
are the kinds of :mod:`bn3d.spec.expectations`.

Numbers that the spec writes as (nested) lists stay as written (for messages);
:meth:`Input.array` and :meth:`Side.arguments` make numpy arrays of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .expectations import Expectation, parse_expectation
from .fields import FieldError, Fields, Numbers
from .implementations import FRAMEWORKS, IMPLEMENTATIONS, MODES

__all__ = ["SECTIONS", "TABLES", "Check", "Entry", "Input", "Row", "Side", "Step"]

#: The migration document's sections, in its order (entries are listed in it).
SECTIONS = ("signature", "summary", "parameters", "difference-1", "difference-2",
            "difference-3", "example", "reference")
# The cells of each of the document's tables, and how each is read; all but a label are required.
_CELLS: Mapping[str, Mapping[str, Callable[[Fields, str], Any]]] = {
    "parameters": {"number": Fields.index, "label": Fields.text, "pytorch": Fields.text,
                   "mindspore": Fields.text, "differences": Fields.text},
    "torch-states": {"training": Fields.flag, "track_running_stats": Fields.flag,
                     "status": Fields.text},
    "mindspore-states": {"use_batch_statistics": Fields.optional_flag, "status": Fields.text},
}
_OPTIONAL_CELLS = ("label",)
#: The document's tables that entries stand for rows of.
TABLES = tuple(_CELLS)
_NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_INPUT_NAME = r"^[a-z][a-z0-9_]*$"
_FLOAT_DTYPES = ("float16", "float32", "float64")
_INPUT_DTYPES = (*_FLOAT_DTYPES, "int32", "int64", "uint8", "bool")
_LOADABLE = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Side:
    """A framework's part of a check: how its module is built and set up.

    Attributes
    ----------
    framework : str
        ``'torch'`` or ``'mindspore'``.
    kwargs : Mapping[str, object]
        The constructor's keyword arguments as written: numbers, strings,
        booleans, None, or ``{'array': ..., 'dtype': ...}`` for an array.
    mode : str
        The mode set after construction, one of
        :data:`~bn3d.spec.implementations.MODES` (``'default'``: as constructed).
    load : Mapping[str, Numbers] or None
        torch only: state loaded with ``load_state_dict(strict=False)`` after
        construction.

    Examples
    --------
    >>> side = Side.parse(Fields({"kwargs": {"num_features": 2, "weight_init": {"array": [1, 2]}},
    ...                           "mode": "eval"}, "sides.torch"), "torch")
    >>> side.mode, side.arguments()["weight_init"]
    ('eval', array([1., 2.], dtype=float32))
    """

    framework: str
    kwargs: Mapping[str, Any]
    mode: str = "default"
    load: Mapping[str, Numbers] | None = None

    @classmethod
    def parse(cls, fields: Fields, framework: str) -> Side:
        """The side of ``framework`` written in ``fields``."""
        kwargs = fields.child("kwargs")
        for name in kwargs.names():
            value = kwargs.raw(name)
            if isinstance(value, Mapping):
                array = kwargs.child(name)
                array.numbers("array")
                if array.has("dtype"):
                    array.text("dtype", choices=_FLOAT_DTYPES)
                array.close()
            elif value is not None and not isinstance(value, (bool, int, float, str)):
                raise kwargs.error(name, f"{value!r} is not a number, a string, a boolean, "
                                         f"null or an array")
        load = None
        if framework == "torch" and fields.has("load"):
            values = fields.child("load")
            for name in values.names():
                if name not in _LOADABLE:
                    raise values.error(name, f"{name!r} is not one of {list(_LOADABLE)!r}")
            load = {name: values.numbers(name) for name in values.names()}
        side = cls(framework=framework, kwargs=dict(kwargs.data),
                   mode=fields.text("mode", choices=MODES[framework])
                   if fields.has("mode") else "default",
                   load=load)
        fields.close()
        return side

    def arguments(self) -> dict[str, Any]:
        """The constructor's keyword arguments, arrays as numpy arrays (float32 by default)."""
        return {
            name: np.array(value["array"], dtype=value.get("dtype", "float32"))
            if isinstance(value, Mapping) else value
            for name, value in self.kwargs.items()
        }


@dataclass(frozen=True)
class Input:
    """A named input of a check: literal values, or seeded normal random numbers.

    Attributes
    ----------
    dtype : str
        Of the array made (default float32).
    value : Numbers or None
        The values, as written.
    seed : int or None
        For random values: the seed of ``numpy.random.default_rng``…
    shape : tuple of int
        … the shape …
    loc, scale : float
        … and the mean and standard deviation of the normal distribution.

    Examples
    --------
    >>> Input.parse(Fields({"random": {"seed": 1, "shape": [2, 3]}}, "inputs.x")).array().shape
    (2, 3)
    """

    dtype: str = "float32"
    value: Numbers | None = None
    seed: int | None = None
    shape: tuple[int, ...] = ()
    loc: float = 0.0
    scale: float = 1.0

    @classmethod
    def parse(cls, fields: Fields) -> Input:
        """The input written in ``fields``."""
        dtype = fields.text("dtype", choices=_INPUT_DTYPES) if fields.has("dtype") else "float32"
        if fields.has("value") == fields.has("random"):
            raise FieldError(fields.path, "needs either 'value' or 'random'")
        if fields.has("value"):
            made = cls(dtype=dtype, value=fields.numbers("value"))
        else:
            random = fields.child("random")
            made = cls(dtype=dtype, seed=random.index("seed"), shape=random.shape("shape"),
                       loc=random.number("loc") if random.has("loc") else 0.0,
                       scale=random.number("scale", minimum=0)
                       if random.has("scale") else 1.0)
            random.close()
        fields.close()
        return made

    def array(self) -> np.ndarray:
        """A fresh numpy array of the input."""
        if self.value is not None:
            return np.array(self.value, dtype=np.float64).astype(self.dtype)
        rng = np.random.default_rng(self.seed)
        return rng.normal(self.loc, self.scale, self.shape).astype(self.dtype)


@dataclass(frozen=True)
class Step:
    """A forward call of every side, after optional mode switches.

    Attributes
    ----------
    forward : str
        The name of the input to call the modules on.
    mode : Mapping[str, str]
        framework -> the mode set before the call.
    keyword : bool
        Pass the input by its documented keyword (torch ``input=``, MindSpore ``x=``).

    Examples
    --------
    >>> Step.parse(Fields({"forward": "x", "mode": {"torch": "eval"}}, "steps[0]"))
    Step(forward='x', mode={'torch': 'eval'}, keyword=False)
    """

    forward: str
    mode: Mapping[str, str]
    keyword: bool = False

    @classmethod
    def parse(cls, fields: Fields) -> Step:
        """The step written in ``fields``."""
        mode: dict[str, str] = {}
        if fields.has("mode"):
            modes = fields.child("mode")
            if not modes.names():
                raise FieldError(modes.path, "{} should be non-empty")
            for framework in FRAMEWORKS:
                if modes.has(framework):
                    mode[framework] = modes.text(framework, choices=MODES[framework])
            modes.close()
        step = cls(forward=fields.text("forward"), mode=mode,
                   keyword=fields.flag("keyword") if fields.has("keyword") else False)
        fields.close()
        return step


@dataclass(frozen=True)
class Check:
    """One executable check of an entry.

    Attributes
    ----------
    name : str
        Unique within its entry.
    sides : Mapping[str, Side]
        framework -> its side, in the file's order.
    inputs : Mapping[str, Input]
    steps : tuple of Step
    expect : tuple of Expectation
    skip : Mapping[str, str]
        implementation -> why the check does not apply to it.

    Examples
    --------
    >>> check = Check.parse(Fields({
    ...     "name": "trains", "sides": {"torch": {"kwargs": {"num_features": 2}}},
    ...     "expect": [{"attribute": {"side": "torch", "path": "training", "equals": True}}],
    ... }, "checks[0]"))
    >>> list(check.sides), check.steps, check.expect[0].kind
    (['torch'], (), 'attribute')
    """

    name: str
    sides: Mapping[str, Side]
    inputs: Mapping[str, Input]
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...]
    skip: Mapping[str, str]

    @classmethod
    def parse(cls, fields: Fields) -> Check:
        """The check written in ``fields``."""
        sides_fields = fields.child("sides")
        sides = {framework: Side.parse(sides_fields.child(framework), framework)
                 for framework in sides_fields.names() if framework in FRAMEWORKS}
        sides_fields.close()
        if not sides:
            raise FieldError(sides_fields.path, "{} should be non-empty")
        inputs = {}
        if fields.has("inputs"):
            inputs_fields = fields.child("inputs")
            for name in inputs_fields.names():
                if not re.search(_INPUT_NAME, name):
                    raise inputs_fields.error(name, f"{name!r} does not match {_INPUT_NAME!r}")
            inputs = {name: Input.parse(inputs_fields.child(name))
                      for name in inputs_fields.names()}
        skip = {}
        if fields.has("skip"):
            skip_fields = fields.child("skip")
            skip = {name: skip_fields.text(name) for name in skip_fields.names()}
            for name in skip:
                if name not in IMPLEMENTATIONS:
                    raise skip_fields.error(name, f"{name!r} is not one of "
                                                  f"{list(IMPLEMENTATIONS)!r}")
        check = cls(
            name=fields.text("name", pattern=_NAME),
            sides=sides,
            inputs=inputs,
            steps=tuple(Step.parse(Fields(item, path))
                        for path, item in fields.items("steps"))
            if fields.has("steps") else (),
            expect=tuple(parse_expectation(item, path)
                         for path, item in fields.items("expect", min_items=1)),
            skip=skip,
        )
        fields.close()
        return check


@dataclass(frozen=True)
class Row:
    """The row of one of the document's tables that an entry stands for.

    Attributes
    ----------
    table : str
        One of :data:`TABLES`: ``'parameters'``, ``'torch-states'`` or
        ``'mindspore-states'``.
    cells : Mapping[str, object]
        The row's cells: for the parameter table ``number``, ``pytorch``,
        ``mindspore``, ``differences`` (and an optional ``label``); for the
        state tables the settings and the ``status`` text.

    Examples
    --------
    >>> Row.parse(Fields({"table": "mindspore-states", "use_batch_statistics": None,
    ...                   "status": "…"}, "row")).cells
    {'use_batch_statistics': None, 'status': '…'}
    """

    table: str
    cells: Mapping[str, Any]

    @classmethod
    def parse(cls, fields: Fields) -> Row:
        """The row written in ``fields``."""
        table = fields.text("table", choices=TABLES)
        cells = {name: read(fields, name) for name, read in _CELLS[table].items()
                 if name not in _OPTIONAL_CELLS or fields.has(name)}
        fields.close()
        return cls(table=table, cells=cells)


@dataclass(frozen=True)
class Entry:
    """One spec entry: a claim and the checks that execute it.

    Attributes
    ----------
    id, title : str
    source : str
        ``'document'`` (a claim of the migration document, quoted) or
        ``'reference'`` (a measured fact that the document leaves out).
    section : str
        One of :data:`SECTIONS`.
    text : str
        The document's words (``quote``) or the reference fact (``statement``).
    note : str or None
        Where the document is wrong or loose, or a facade deliberately differs.
    row : Row or None
        The row of the document's table this entry stands for.
    checks : tuple of Check
    file : str
        The spec file the entry comes from.

    Examples
    --------
    >>> from bn3d.spec import load_spec
    >>> entry = {e.id: e for e in load_spec()}["difference-3-momentum-relation"]
    >>> entry.source, entry.check("torch-0-3-mindspore-0-7").sides["mindspore"].kwargs
    ('document', {'num_features': 3, 'momentum': 0.7})
    """

    id: str
    title: str
    source: str
    section: str
    text: str
    note: str | None
    row: Row | None
    checks: tuple[Check, ...]
    file: str

    @classmethod
    def parse(cls, fields: Fields, file: str) -> Entry:
        """The entry written in ``fields``, from ``file``."""
        source = fields.text("source", choices=("document", "reference"))
        wording, other = ("quote", "statement") if source == "document" \
            else ("statement", "quote")
        if fields.has(other):
            raise fields.error(other, f"a {source} entry has a {wording}, not a {other}")
        section = fields.text("section", choices=SECTIONS)
        if source == "reference" and section != "reference":
            raise fields.error("section", "a reference entry belongs to section 'reference'")
        entry = cls(
            id=fields.text("id", pattern=_NAME),
            title=fields.text("title", non_empty=True),
            source=source,
            section=section,
            text=fields.text(wording, non_empty=True),
            note=fields.text("note", non_empty=True) if fields.has("note") else None,
            row=Row.parse(fields.child("row")) if fields.has("row") else None,
            checks=tuple(Check.parse(Fields(item, path))
                         for path, item in fields.items("checks", min_items=1)),
            file=file,
        )
        fields.close()
        return entry

    def check(self, name: str) -> Check:
        """The check called ``name``.

        Raises
        ------
        KeyError
            If the entry has none.
        """
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"entry {self.id!r} has no check {name!r}")
