"""Reading a spec file's YAML mappings field by field, into typed values.

The typed model (:mod:`bn3d.spec.model`, :mod:`bn3d.spec.expectations`) parses
each entry through :class:`Fields`, which checks each field's type as it is read
and, at :meth:`Fields.close`, rejects the fields that nothing read. A malformed
entry is therefore rejected even where ``jsonschema`` is not installed. A
problem raises :class:`FieldError`, which names the field by its path inside the
entry (``checks[0].expect[1].output.tol``); the wording follows ``jsonschema``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np

__all__ = ["FieldError", "Fields", "Moment", "Numbers", "SpecError", "StepSelector"]

#: When a side is looked at: ``'setup'`` (after construction, state loading and the
#: initial mode) or the index of a forward step (after that step).
Moment = Union[str, int]
#: A number or a rectangular nested list of numbers, as the spec writes it.
Numbers = Union[float, list]
#: Which forward steps: ``'all'`` or a list of step indices.
StepSelector = Union[str, list[int]]


class SpecError(ValueError):
    """A spec file is malformed; the message names the file, the entry and the field."""


class FieldError(SpecError):
    """One field of an entry is malformed.

    Parameters
    ----------
    path : str
        The field's path inside its entry, e.g. ``'checks[0].steps[1].forward'``;
        empty for the entry itself.
    problem : str
        What is wrong with it.

    Examples
    --------
    >>> str(FieldError("checks[0].name", "'X' does not match '^[a-z]+$'"))
    "field checks[0].name: 'X' does not match '^[a-z]+$'"
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"field {path or '<entry>'}: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_numbers(value: Any) -> bool:
    return _is_number(value) or (isinstance(value, list) and all(map(_is_numbers, value)))


def _path(parent: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{parent}[{name}]"
    return f"{parent}.{name}" if parent else name


class Fields:
    """One YAML mapping of a spec entry, read a field at a time.

    Every reader takes a required field: for an optional one, ask :meth:`has`
    first. A missing field, a value of the wrong type or (at :meth:`close`) a
    field that no reader asked for raises :class:`FieldError`.

    Parameters
    ----------
    data : object
        The mapping as YAML loaded it.
    path : str, default ''
        Where it is inside its entry.

    Examples
    --------
    >>> fields = Fields({"tol": 1e-6, "holds": False}, "expect[0].outputs_match")
    >>> fields.number("tol", minimum=0), fields.flag("holds"), fields.has("steps")
    (1e-06, False, False)
    >>> fields.close()
    >>> Fields({"tol": "small"}, "expect[0].outputs_match").number("tol")
    Traceback (most recent call last):
    ...
    bn3d.spec.fields.FieldError: field expect[0].outputs_match.tol: 'small' is not of type 'number'
    """

    def __init__(self, data: object, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise FieldError(path, f"{data!r} is not of type 'object'")
        self.data: Mapping[Any, Any] = data
        self.path = path
        self._read: set[Any] = set()

    def at(self, name: str | int) -> str:
        """The path of field ``name``, or of item ``name`` of a list."""
        return _path(self.path, name)

    def error(self, name: str | int, problem: str) -> FieldError:
        """A :class:`FieldError` about field ``name``."""
        return FieldError(self.at(name), problem)

    def has(self, name: str) -> bool:
        """Whether field ``name`` is present."""
        return name in self.data

    def names(self) -> list[str]:
        """The field names, in the file's order: for mappings whose keys the author chooses."""
        names = list(self.data)
        for name in names:
            if not isinstance(name, str):
                raise FieldError(self.path, f"{name!r} is not of type 'string'")
        return names

    def raw(self, name: str) -> Any:
        """Field ``name`` as YAML loaded it."""
        if name not in self.data:
            raise FieldError(self.at(name), f"{name!r} is a required property")
        self._read.add(name)
        return self.data[name]

    def close(self) -> None:
        """Reject the fields that no reader asked for."""
        unexpected = [name for name in self.data if name not in self._read]
        if unexpected:
            names = ", ".join(repr(name) for name in unexpected)
            verb = "was" if len(unexpected) == 1 else "were"
            raise FieldError(self.path, f"Additional properties are not allowed ({names} "
                                        f"{verb} unexpected)")

    # -- scalars

    def text(self, name: str, *, choices: Sequence[str] | None = None,
             pattern: str | None = None, non_empty: bool = False) -> str:
        """A string, one of ``choices``, matching ``pattern`` or non-empty if asked."""
        value = self.raw(name)
        if not isinstance(value, str):
            raise self.error(name, f"{value!r} is not of type 'string'")
        if non_empty and not value:
            raise self.error(name, "'' should be non-empty")
        if choices is not None and value not in choices:
            raise self.error(name, f"{value!r} is not one of {list(choices)!r}")
        if pattern is not None and not re.search(pattern, value):
            raise self.error(name, f"{value!r} does not match {pattern!r}")
        return value

    def flag(self, name: str) -> bool:
        """A boolean."""
        value = self.raw(name)
        if not isinstance(value, bool):
            raise self.error(name, f"{value!r} is not of type 'boolean'")
        return value

    def optional_flag(self, name: str) -> bool | None:
        """A boolean or null (a required field)."""
        return None if self.raw(name) is None else self.flag(name)

    def number(self, name: str, *, minimum: float | None = None) -> float:
        """A number: an int or a float, not a boolean (kept as written, for messages)."""
        return self._number(name, self.raw(name), minimum)

    def optional_number(self, name: str) -> float | None:
        """A number or null (a required field)."""
        value = self.raw(name)
        return None if value is None else self._number(name, value, None)

    def index(self, name: str) -> int:
        """A non-negative integer."""
        return self._index(name, self.raw(name))

    def moment(self, name: str) -> Moment:
        """``'setup'`` or a step index."""
        value = self.raw(name)
        if value == "setup":
            return "setup"
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise self.error(name, f"{value!r} is not 'setup' or a step index")

    def _number(self, name: str | int, value: Any, minimum: float | None) -> float:
        if not _is_number(value):
            raise self.error(name, f"{value!r} is not of type 'number'")
        if minimum is not None and value < minimum:
            raise self.error(name, f"{value!r} is less than the minimum of {minimum!r}")
        return value  # type: ignore[no-any-return]

    def _index(self, name: str | int, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(name, f"{value!r} is not of type 'integer'")
        if value < 0:
            raise self.error(name, f"{value!r} is less than the minimum of 0")
        return value

    # -- arrays and lists

    def numbers(self, name: str) -> Numbers:
        """A number or a rectangular nested list of numbers (``.nan`` is NaN)."""
        value = self.raw(name)
        if not _is_numbers(value):
            raise self.error(name, f"{value!r} is not a number or a nested list of numbers")
        try:
            np.array(value, dtype=np.float64)
        except ValueError:
            raise self.error(name, "not a rectangular array of numbers") from None
        return value  # type: ignore[no-any-return]

    def bounds(self, name: str) -> tuple[float, float]:
        """Two numbers, ``[low, high]``."""
        value = self.sequence(name)
        if len(value) != 2:
            raise self.error(name, f"{value!r} is not a pair of numbers")
        low, high = (Fields({}, self.at(name))._number(index, item, None)
                     for index, item in enumerate(value))
        return low, high

    def shape(self, name: str) -> tuple[int, ...]:
        """A list of non-negative integers."""
        items = Fields({}, self.at(name))
        return tuple(items._index(index, size) for index, size in enumerate(self.sequence(name)))

    def strings(self, name: str) -> tuple[str, ...]:
        """A list of strings."""
        value = self.sequence(name)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise FieldError(_path(self.at(name), index), f"{item!r} is not of type 'string'")
        return tuple(value)

    def steps(self, name: str) -> StepSelector:
        """``'all'`` or a non-empty list of step indices."""
        value = self.raw(name)
        if value == "all":
            return "all"
        if not isinstance(value, list) or not value:
            raise self.error(name, f"{value!r} is not 'all' or a non-empty list of step indices")
        items = Fields({}, self.at(name))
        return [items._index(index, step) for index, step in enumerate(value)]

    def sequence(self, name: str, *, min_items: int = 0) -> list[Any]:
        """A list (its items are for the caller to read)."""
        value = self.raw(name)
        if not isinstance(value, list):
            raise self.error(name, f"{value!r} is not of type 'array'")
        if len(value) < min_items:
            raise self.error(name, f"{value!r} should be non-empty")
        return value

    def items(self, name: str, *, min_items: int = 0) -> Iterator[tuple[str, Any]]:
        """``(path, item)`` for each item of a list."""
        for index, item in enumerate(self.sequence(name, min_items=min_items)):
            yield _path(self.at(name), index), item

    def child(self, name: str) -> Fields:
        """A mapping, as :class:`Fields`."""
        return Fields(self.raw(name), self.at(name))
