"""The expectation kinds: what a check can state must be observed, each defined once.

An expectation is one item of a check's ``expect:`` list, ``{kind: {fields}}``.
Each kind is one frozen dataclass here, registered in :data:`EXPECTATIONS`
under its YAML name, and says

- how it is parsed (:meth:`Expectation.parse`),
- which references to sides and steps it makes that the check must have
  (:meth:`Expectation.problems`),
- what must be read from a side while the check runs (:meth:`Expectation.probes`)
  and which errors it expects (:meth:`Expectation.claims`),
- and how it is checked against what the sides did (:meth:`Expectation.failure`).

``spec/schema.json`` describes the same kinds for editors and ``jsonschema``;
:func:`bn3d.spec.load_spec` refuses to load if the two lists of kinds differ.
A *paired* kind compares the two frameworks' sides; every other kind is about
one side, named by its ``side`` field. Tolerances are the largest allowed
:func:`~bn3d.spec.oracle.max_error`.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from .fields import FieldError, Fields, Moment, Numbers, StepSelector
from .implementations import FRAMEWORKS, Implementation
from .oracle import DEFAULT_EPS, batch_norm, batch_stats, max_error
from .trace import CheckTrace, Probe, SideTrace, Stats, moment_text

__all__ = [
    "EXPECTATIONS",
    "Attribute",
    "Converts",
    "Expectation",
    "Expected",
    "NormalisedWith",
    "Output",
    "OutputsMatch",
    "Raises",
    "Repr",
    "RunningStats",
    "RunningStatsFollow",
    "RunningStatsMatch",
    "StateKeys",
    "Trainable",
    "parse_expectation",
]

#: kind -> its class, in the order of the schema's description.
EXPECTATIONS: dict[str, type[Expectation]] = {}
_FLOAT_DTYPES = ("float16", "float32", "float64")
_ATTRIBUTE_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"

_Kind = TypeVar("_Kind", bound="type[Expectation]")


def _kind(cls: _Kind) -> _Kind:
    """Register an expectation class under its ``kind``."""
    EXPECTATIONS[cls.kind] = cls
    return cls


def parse_expectation(data: object, path: str) -> Expectation:
    """Parse one item of a check's ``expect:`` list.

    Parameters
    ----------
    data : object
        ``{kind: {fields}}`` as YAML loaded it.
    path : str
        Where it is inside its entry, for error messages.

    Returns
    -------
    Expectation

    Raises
    ------
    FieldError
        If the kind is unknown or a field is malformed.

    Examples
    --------
    >>> parse_expectation({"outputs_match": {"tol": 2e-6}}, "checks[0].expect[0]")
    OutputsMatch(tol=2e-06, steps='all', holds=True)
    >>> parse_expectation({"outputs_equal": {"tol": 2e-6}}, "checks[0].expect[0]")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bn3d.spec.fields.FieldError: field checks[0].expect[0]: unknown expectation kind \
    'outputs_equal'; expected one of outputs_match, running_stats_match, output, ...
    """
    fields = Fields(data, path)
    names = fields.names()
    if len(names) != 1:
        raise FieldError(path, f"{data!r} should have exactly one expectation kind")
    (kind,) = names
    if kind not in EXPECTATIONS:
        raise FieldError(path, f"unknown expectation kind {kind!r}; expected one of "
                               f"{', '.join(EXPECTATIONS)}")
    kind_fields = fields.child(kind)
    expectation = EXPECTATIONS[kind].parse(kind_fields)
    kind_fields.close()
    return expectation


class Expectation(abc.ABC):
    """What a check states must be observed: the base of every kind.

    Subclasses set :attr:`kind`, their YAML name, and are frozen dataclasses of
    their fields.
    """

    kind: ClassVar[str]
    #: Whether the kind is about the forward steps, so that the check needs some.
    about_steps: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def parse(cls, fields: Fields) -> Expectation:
        """The expectation written in ``fields`` (the mapping under the kind's name)."""

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        """``(field, problem)`` for each side or step it refers to that the check lacks.

        ``field`` is relative to the kind ('' for the expectation as a whole).
        """
        if self.about_steps and not step_count:
            yield "", "is about steps, and the check has none"

    def probes(self, step_count: int) -> Iterator[Probe]:
        """What the runner must read from a side, and when, for :meth:`failure`."""
        return iter(())

    def claims(self) -> Iterator[tuple[str, Moment]]:
        """``(framework, moment)`` of each error this expectation expects."""
        return iter(())

    @abc.abstractmethod
    def failure(self, trace: CheckTrace) -> str | None:
        """None when the expectation holds on ``trace``, else what differed."""


def _step_problem(name: str, step: Moment, step_count: int) -> Iterator[tuple[str, str]]:
    if isinstance(step, int) and step >= step_count:
        yield name, f"there is no step {step} (the check has {step_count})"


def _selector_problem(selector: StepSelector, step_count: int) -> Iterator[tuple[str, str]]:
    if isinstance(selector, list):
        yield from _step_problem("steps", max(selector), step_count)


def _selected_steps(selector: StepSelector, count: int) -> list[int]:
    return list(range(count)) if isinstance(selector, str) else list(selector)


def _equal(value: Any, expected: Any, tol: float) -> bool:
    if expected is None or isinstance(expected, (bool, str)):
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(expected, bool):
            return isinstance(value, (bool, np.bool_)) and bool(value) == expected
        return value is expected if expected is None else bool(value == expected)
    if value is None or isinstance(value, (bool, str)):
        return False
    return max_error(value, expected) <= tol


def _shown(value: Any) -> str:
    """``value`` for a message: arrays as flat lists of numbers with up to 8 significant digits."""
    if not isinstance(value, np.ndarray):
        return repr(value)
    if value.dtype.kind == "f":
        return repr([float(f"{number:.8g}") for number in value.ravel()])
    return repr(value.ravel().tolist())


def _needs_one_of(fields: Fields, names: tuple[str, ...]) -> None:
    if not any(fields.has(name) for name in names):
        raise FieldError(fields.path, f"needs at least one of {', '.join(names)}")


def _tolerance_with(fields: Fields, names: tuple[str, ...]) -> float | None:
    """``tol``, which values in fields ``names`` need."""
    if fields.has("tol"):
        return fields.number("tol", minimum=0)
    for name in names:
        if fields.has(name):
            raise fields.error("tol", f"'tol' is a dependency of {name!r}")
    return None


# -- paired: both frameworks' sides compared --


@dataclass(frozen=True)
class _Paired(Expectation):
    """Both sides' values agree within ``tol`` at the selected steps (``holds: false``: not)."""

    tol: float
    steps: StepSelector = "all"
    holds: bool = True

    about_steps: ClassVar[bool] = True
    what: ClassVar[str]

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(tol=fields.number("tol", minimum=0),
                   steps=fields.steps("steps") if fields.has("steps") else "all",
                   holds=fields.flag("holds") if fields.has("holds") else True)

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        if set(sides) != set(FRAMEWORKS):
            yield "", "compares both frameworks, so the check needs both sides"
        yield from _selector_problem(self.steps, step_count)

    @staticmethod
    @abc.abstractmethod
    def read(side: SideTrace, step: int) -> tuple[Any, ...] | None:
        """The arrays compared at ``step`` (None if the side has none)."""

    def failure(self, trace: CheckTrace) -> str | None:
        torch, mindspore = trace.sides["torch"], trace.sides["mindspore"]
        steps = _selected_steps(self.steps, trace.step_count)
        errors = []
        for step in steps:
            problem = torch.missing_output(step) or mindspore.missing_output(step)
            if problem:
                return problem
            ours, theirs = self.read(torch, step), self.read(mindspore, step)
            if ours is None or theirs is None:
                lacking = torch if ours is None else mindspore
                return f"step {step}: {lacking.implementation} has no {self.what}"
            errors.append(max(max_error(a, b) for a, b in zip(ours, theirs)))
        label = f"{self.what} of {torch.implementation} and {mindspore.implementation}"
        if self.holds:
            worst = int(np.argmax(errors))
            if errors[worst] > self.tol:
                return (f"{label} differ at step {steps[worst]} by {errors[worst]:.3g} "
                        f"(tol {self.tol:g})")
        elif errors[-1] <= self.tol:
            return (f"{label} were expected to differ at step {steps[-1]} but agree within "
                    f"{self.tol:g}")
        return None


@_kind
@dataclass(frozen=True)
class OutputsMatch(_Paired):
    """``outputs_match``: both sides' outputs agree within ``tol`` at the selected steps.

    With ``holds: false``, they do not (at the last selected step).

    Examples
    --------
    >>> parse_expectation({"outputs_match": {"tol": 0, "holds": False}}, "expect[0]")
    OutputsMatch(tol=0, steps='all', holds=False)
    """

    kind: ClassVar[str] = "outputs_match"
    what: ClassVar[str] = "outputs"

    @staticmethod
    def read(side: SideTrace, step: int) -> tuple[Any, ...] | None:
        return (side.outputs[step],)


@_kind
@dataclass(frozen=True)
class RunningStatsMatch(_Paired):
    """``running_stats_match``: torch's running statistics equal MindSpore's moving ones.

    ``running_mean`` / ``running_var`` against ``moving_mean`` / ``moving_variance``,
    within ``tol``, after each selected step; with ``holds: false``, they do not
    after the last of them.

    Examples
    --------
    >>> parse_expectation({"running_stats_match": {"tol": 2e-6, "steps": [1]}}, "expect[0]")
    RunningStatsMatch(tol=2e-06, steps=[1], holds=True)
    """

    kind: ClassVar[str] = "running_stats_match"
    what: ClassVar[str] = "running statistics"

    @staticmethod
    def read(side: SideTrace, step: int) -> Stats:
        return side.stats_after[step]


# -- about one side --


@dataclass(frozen=True)
class _OneSide(Expectation):
    """An expectation about the side of framework ``side``."""

    side: str

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        if self.side not in sides:
            yield "side", f"the check has no {self.side} side"


def _side(fields: Fields) -> str:
    return fields.text("side", choices=FRAMEWORKS)


@_kind
@dataclass(frozen=True)
class Output(_OneSide):
    """``output``: one side's output at a step has this shape, dtype and/or values.

    Values are compared within ``tol``.

    Examples
    --------
    >>> parse_expectation({"output": {"side": "torch", "step": 0, "dtype": "float32"}},
    ...                   "expect[0]")
    Output(side='torch', step=0, value=None, shape=None, dtype='float32', tol=None)
    """

    step: int
    value: Numbers | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    tol: float | None = None

    kind: ClassVar[str] = "output"

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        _needs_one_of(fields, ("value", "shape", "dtype"))
        return cls(side=_side(fields), step=fields.index("step"),
                   value=fields.numbers("value") if fields.has("value") else None,
                   shape=fields.shape("shape") if fields.has("shape") else None,
                   dtype=fields.text("dtype", choices=_FLOAT_DTYPES)
                   if fields.has("dtype") else None,
                   tol=_tolerance_with(fields, ("value",)))

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        yield from _step_problem("step", self.step, step_count)

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        problem = side.missing_output(self.step)
        if problem:
            return problem
        output = side.outputs[self.step]
        where = f"{side.implementation} step {self.step} output"
        if self.shape is not None and output.shape != self.shape:
            return f"{where}: shape {list(output.shape)}, expected {list(self.shape)}"
        if self.dtype is not None and output.dtype != np.dtype(self.dtype):
            return f"{where}: dtype {output.dtype}, expected {self.dtype}"
        if self.value is not None and self.tol is not None:
            error = max_error(output, self.value)
            if error > self.tol:
                return f"{where} differs from the expected values by {error:.3g} " \
                       f"(tol {self.tol:g}): got {_shown(output)}"
        return None


@_kind
@dataclass(frozen=True)
class NormalisedWith(_OneSide):
    """``normalised_with``: one side's output at a step is normalised with these statistics.

    The reference is :func:`~bn3d.spec.oracle.batch_norm` in float64, with the
    batch statistics (biased variance) or with the running statistics as they
    were before the step, scaled and shifted by the side's own weight / gamma
    and bias / beta as they were before the step, with the side's ``eps``
    (default 1e-5). The output must be within ``tol`` of that reference and
    not of the other one, so that the inputs tell the two apart.

    Examples
    --------
    >>> parse_expectation({"normalised_with": {"side": "torch", "step": 0, "stats": "running",
    ...                                        "tol": 1e-5}}, "expect[0]")
    NormalisedWith(side='torch', step=0, stats='running', tol=1e-05)
    """

    step: int
    stats: str
    tol: float

    kind: ClassVar[str] = "normalised_with"

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(side=_side(fields), step=fields.index("step"),
                   stats=fields.text("stats", choices=("batch", "running")),
                   tol=fields.number("tol", minimum=0))

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        yield from _step_problem("step", self.step, step_count)

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        problem = side.missing_output(self.step)
        if problem:
            return problem
        x = trace.step_inputs[self.step]
        eps = side.arguments.get("eps", DEFAULT_EPS)
        scale, shift = side.scale_shift_before[self.step]
        references = {"batch": batch_norm(x, scale, shift, eps)}
        running = side.stats_before[self.step]
        if running is not None:
            references["running"] = batch_norm(x, scale, shift, eps, *running)
        where = f"{side.implementation} step {self.step}"
        if self.stats not in references:
            return f"{where}: has no running statistics to normalise with"
        output = side.outputs[self.step]
        errors = {stats: max_error(output, reference) for stats, reference in references.items()}
        if errors[self.stats] > self.tol:
            others = ", ".join(f"{stats} statistics by {error:.3g}"
                               for stats, error in errors.items() if stats != self.stats)
            return (f"{where}: output differs from the {self.stats}-statistics reference by "
                    f"{errors[self.stats]:.3g} (tol {self.tol:g})"
                    + (f"; from the {others}" if others else ""))
        if any(error <= self.tol for stats, error in errors.items() if stats != self.stats):
            return f"{where}: the inputs do not tell batch from running statistics apart"
        return None


@_kind
@dataclass(frozen=True)
class RunningStats(_OneSide):
    """``running_stats``: one side's running (moving) statistics at a moment.

    Whether they exist, whether the step changed them, and their values (within ``tol``).

    Examples
    --------
    >>> parse_expectation({"running_stats": {"side": "mindspore", "at": 0, "changed": False}},
    ...                   "expect[0]")
    RunningStats(side='mindspore', at=0, exist=None, changed=False, mean=None, var=None, tol=None)
    """

    at: Moment
    exist: bool | None = None
    changed: bool | None = None
    mean: Numbers | None = None
    var: Numbers | None = None
    tol: float | None = None

    kind: ClassVar[str] = "running_stats"

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        _needs_one_of(fields, ("exist", "changed", "mean", "var"))
        return cls(side=_side(fields), at=fields.moment("at"),
                   exist=fields.flag("exist") if fields.has("exist") else None,
                   changed=fields.flag("changed") if fields.has("changed") else None,
                   mean=fields.numbers("mean") if fields.has("mean") else None,
                   var=fields.numbers("var") if fields.has("var") else None,
                   tol=_tolerance_with(fields, ("mean", "var")))

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        yield from _step_problem("at", self.at, step_count)
        if self.changed is not None and self.at == "setup":
            yield "changed", "needs a step for 'at', not 'setup'"

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        if not side.alive:
            return side.missing_output(0)
        stats = side.stats_after[self.at]
        where = f"{side.implementation} " \
                f"{'at setup' if self.at == 'setup' else f'after step {self.at}'}"
        if self.exist is not None and (stats is not None) != self.exist:
            return f"{where}: running statistics {'do not ' if stats is None else ''}exist"
        if self.changed is not None:
            before = side.stats_before.get(self.at) if isinstance(self.at, int) else None
            if stats is None or before is None:
                return f"{where}: no running statistics to compare"
            changed = any(max_error(after, old) != 0 for after, old in zip(stats, before))
            if changed != self.changed:
                return f"{where}: running statistics {'' if changed else 'un'}changed, " \
                       f"expected {'changed' if self.changed else 'unchanged'}"
        for index, (name, expected) in enumerate((("mean", self.mean), ("var", self.var))):
            if expected is not None and self.tol is not None:
                if stats is None:
                    return f"{where}: no running statistics"
                error = max_error(stats[index], expected)
                if error > self.tol:
                    return f"{where}: running {name} {_shown(stats[index])}, expected " \
                           f"{expected} (error {error:.3g}, tol {self.tol:g})"
        return None


@_kind
@dataclass(frozen=True)
class RunningStatsFollow(_OneSide):
    """``running_stats_follow``: one side's running statistics follow its framework's update.

    At each selected step they move from their value before the step to the
    update rule applied in float64 with the batch mean and the unbiased (or
    biased) batch variance: torch ``(1 - m) * r + m * b`` (``momentum: null``:
    the cumulative average, weight ``1 / num_batches_tracked``), MindSpore
    ``m * r + (1 - m) * b``. An empty batch leaves them as they were.

    Examples
    --------
    >>> parse_expectation({"running_stats_follow": {"side": "torch", "momentum": None,
    ...                                             "tol": 1e-6}}, "expect[0]")
    RunningStatsFollow(side='torch', momentum=None, tol=1e-06, variance='unbiased', steps='all')
    """

    momentum: float | None
    tol: float
    variance: str = "unbiased"
    steps: StepSelector = "all"

    kind: ClassVar[str] = "running_stats_follow"
    about_steps: ClassVar[bool] = True

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(side=_side(fields), momentum=fields.optional_number("momentum"),
                   tol=fields.number("tol", minimum=0),
                   variance=fields.text("variance", choices=("unbiased", "biased"))
                   if fields.has("variance") else "unbiased",
                   steps=fields.steps("steps") if fields.has("steps") else "all")

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        yield from _selector_problem(self.steps, step_count)
        if self.momentum is None and self.side != "torch":
            yield "momentum", "only torch has a cumulative average (momentum null)"

    def probes(self, step_count: int) -> Iterator[Probe]:
        if self.momentum is None:
            for step in range(step_count):
                yield Probe(self.side, step, "num_batches_tracked", _read_batch_count)

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        for step in _selected_steps(self.steps, trace.step_count):
            problem = side.missing_output(step)
            if problem:
                return problem
            before, after = side.stats_before[step], side.stats_after[step]
            if before is None or after is None:
                return f"{side.implementation} step {step}: no running statistics"
            weight = self._batch_weight(side, step)
            if weight is None:
                return f"{side.implementation} step {step}: num_batches_tracked is not " \
                       f"positive after the step, so there is no cumulative average to check"
            x = trace.step_inputs[step]
            expected: tuple[np.ndarray, ...]
            if x.shape[0] == 0:
                expected = before  # an empty batch leaves them as they were
            else:
                expected = tuple((1.0 - weight) * np.asarray(old, np.float64) + weight * new
                                 for old, new in zip(before, batch_stats(x, self.variance)))
            error = max(max_error(a, e) for a, e in zip(after, expected))
            if error > self.tol:
                return (f"{side.implementation} step {step}: running mean / variance "
                        f"{' / '.join(map(_shown, after))} do not follow the {self.side} "
                        f"update with momentum {self.momentum} ({self.variance} variance): "
                        f"expected {' / '.join(map(_shown, expected))} "
                        f"(error {error:.3g}, tol {self.tol:g})")
        return None

    def _batch_weight(self, side: SideTrace, step: int) -> float | None:
        """The weight of the batch statistics in the side's update.

        None when torch's cumulative average has no positive batch count to divide by.
        """
        if self.momentum is not None:
            return 1.0 - self.momentum if self.side == "mindspore" else self.momentum
        count = side.observed[("num_batches_tracked", step)]
        return 1.0 / float(count) if isinstance(count, (int, np.ndarray)) and count > 0 else None


def _read_batch_count(implementation: Implementation) -> Any:
    return implementation.value("num_batches_tracked")


@dataclass(frozen=True)
class Expected:
    """A value an expectation compares with (wrapped, as None is a value too)."""

    value: Any


@_kind
@dataclass(frozen=True)
class Attribute(_OneSide):
    """``attribute``: an attribute of one side's module, by dotted path, at a moment.

    Tensors and Parameters are read as numpy arrays. It equals a value (null:
    None; numbers within ``tol``, by default exactly), has a shape, or lies
    within bounds.

    Examples
    --------
    >>> parse_expectation({"attribute": {"side": "torch", "path": "training", "equals": True}},
    ...                   "expect[0]")  # doctest: +NORMALIZE_WHITESPACE
    Attribute(side='torch', path='training', at='setup', equals=Expected(value=True), shape=None,
              within=None, tol=0.0)
    """

    path: str
    at: Moment = "setup"
    equals: Expected | None = None
    shape: tuple[int, ...] | None = None
    within: tuple[float, float] | None = None
    tol: float = 0.0

    kind: ClassVar[str] = "attribute"

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        _needs_one_of(fields, ("equals", "shape", "within"))
        equals = None
        if fields.has("equals"):
            value = fields.raw("equals")
            if not (value is None or isinstance(value, (bool, str))):
                value = fields.numbers("equals")
            equals = Expected(value)
        return cls(side=_side(fields),
                   path=fields.text("path", pattern=_ATTRIBUTE_PATH),
                   at=fields.moment("at") if fields.has("at") else "setup",
                   equals=equals,
                   shape=fields.shape("shape") if fields.has("shape") else None,
                   within=fields.bounds("within") if fields.has("within") else None,
                   tol=fields.number("tol", minimum=0) if fields.has("tol") else 0.0)

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        yield from _step_problem("at", self.at, step_count)

    def probes(self, step_count: int) -> Iterator[Probe]:
        yield Probe(self.side, self.at, self.path, self._read)

    def _read(self, implementation: Implementation) -> Any:
        return implementation.value(self.path)

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        try:
            value = side.probed(self.path, self.at)
        except LookupError as error:
            return str(error)
        where = f"{side.implementation} {self.path}"
        if self.equals is not None and not _equal(value, self.equals.value, self.tol):
            return f"{where} is {_shown(value)}, expected {self.equals.value!r}"
        if self.shape is not None and np.shape(value) != self.shape:
            return f"{where} has shape {list(np.shape(value))}, expected {list(self.shape)}"
        if self.within is not None:
            low, high = self.within
            array = np.asarray(value, dtype=np.float64)
            if not np.all((array >= low) & (array <= high)):
                return f"{where} = {_shown(value)} is not within [{low}, {high}]"
        return None


@_kind
@dataclass(frozen=True)
class Raises(_OneSide):
    """``raises``: one side raises at setup (construction, loading, mode) or at a forward step.

    The exception's type name must be ``type`` and its message ``message``
    (``match: prefix``: start with it). MindSpore's appended C++ call stack is
    not part of the message. An error that no ``raises`` expects fails the check.

    Examples
    --------
    >>> parse_expectation({"raises": {"side": "torch", "at": "setup", "type": "ValueError",
    ...                               "message": "bad"}}, "expect[0]")
    Raises(side='torch', at='setup', type='ValueError', message='bad', match='exact')
    """

    at: Moment
    type: str
    message: str
    match: str = "exact"

    kind: ClassVar[str] = "raises"

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(side=_side(fields), at=fields.moment("at"),
                   type=fields.text("type", pattern="^[A-Za-z]+$"),
                   message=fields.text("message"),
                   match=fields.text("match", choices=("exact", "prefix"))
                   if fields.has("match") else "exact")

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        yield from _step_problem("at", self.at, step_count)

    def claims(self) -> Iterator[tuple[str, Moment]]:
        yield self.side, self.at

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        where = moment_text(self.at)
        if self.at not in side.errors:
            return f"{side.implementation}: expected {self.type} {where}, nothing was raised"
        error = side.errors[self.at]
        message = side.implementation.error_message(error)
        matched = (message.startswith(self.message) if self.match == "prefix"
                   else message == self.message)
        if type(error).__name__ != self.type or not matched:
            return (f"{side.implementation} {where}: expected {self.type}: {self.message!r}, "
                    f"got {type(error).__name__}: {message!r}")
        return None


@dataclass(frozen=True)
class _Listing(_OneSide):
    """Something the side's module lists, read at setup, equals ``equals``."""

    equals: Any

    @staticmethod
    @abc.abstractmethod
    def read(implementation: Implementation) -> Any:
        """Read the listing from the module."""

    def probes(self, step_count: int) -> Iterator[Probe]:
        yield Probe(self.side, "setup", self.kind, self.read)

    def failure(self, trace: CheckTrace) -> str | None:
        side = trace.sides[self.side]
        try:
            value = side.probed(self.kind, "setup")
        except LookupError as error:
            return str(error)
        expected = self.equals if isinstance(self.equals, str) else list(self.equals)
        if value != expected:
            return f"{side.implementation} {self.kind}: {value!r}, expected {expected!r}"
        return None


@_kind
@dataclass(frozen=True)
class Repr(_Listing):
    """``repr``: the ``repr()`` of one side's module after setup.

    Examples
    --------
    >>> parse_expectation({"repr": {"side": "torch", "equals": "BatchNorm3d(2)"}}, "expect[0]")
    Repr(side='torch', equals='BatchNorm3d(2)')
    """

    equals: str

    kind: ClassVar[str] = "repr"

    @staticmethod
    def read(implementation: Implementation) -> Any:
        return repr(implementation.module)

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(side=_side(fields), equals=fields.text("equals"))


@_kind
@dataclass(frozen=True)
class StateKeys(_Listing):
    """``state_keys``: torch's ``state_dict()`` keys or MindSpore's ``parameters_dict()`` keys.

    In order, after setup.

    Examples
    --------
    >>> parse_expectation({"state_keys": {"side": "torch", "equals": ["weight", "bias"]}},
    ...                   "expect[0]")
    StateKeys(side='torch', equals=('weight', 'bias'))
    """

    equals: tuple[str, ...]

    kind: ClassVar[str] = "state_keys"

    @staticmethod
    def read(implementation: Implementation) -> Any:
        return implementation.state_keys()

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(side=_side(fields), equals=fields.strings("equals"))


@_kind
@dataclass(frozen=True)
class Trainable(_Listing):
    """``trainable``: the names of MindSpore's ``trainable_params()``, in order, after setup.

    Examples
    --------
    >>> parse_expectation({"trainable": {"side": "mindspore", "equals": ["bn2d.gamma"]}},
    ...                   "expect[0]")
    Trainable(side='mindspore', equals=('bn2d.gamma',))
    """

    equals: tuple[str, ...]

    kind: ClassVar[str] = "trainable"

    @staticmethod
    def read(implementation: Implementation) -> Any:
        return implementation.trainable()

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        return cls(side=fields.text("side", choices=("mindspore",)),
                   equals=fields.strings("equals"))


def _read_state(implementation: Implementation) -> Any:
    return implementation.state()


@_kind
@dataclass(frozen=True)
class Converts(Expectation):
    """``converts``: one side's layer converts to the other side's (:mod:`bn3d.convert`).

    The ``from`` side's constructor arguments, converted to the other framework by
    :func:`bn3d.convert.convert_settings` with the ``policies`` given, are the
    other side's (every argument but the initialisers, whose values the state
    carries); and the ``from`` side's state after setup (torch's ``state_dict()``,
    MindSpore's ``parameters_dict()``), converted by :mod:`bn3d.convert.state`,
    is the other side's state after setup, within ``tol`` (default: exactly).
    Each policy given must be stated in a note of the conversion. With
    ``refused``, the conversion must be refused instead, with a message starting
    with it. Whether the two layers then compute the same is for the check's
    ``outputs_match`` and ``running_stats_match`` to say.

    Examples
    --------
    >>> parse_expectation({"converts": {"from": "torch", "policies": {"momentum_none": 0.1}}},
    ...                   "expect[0]")
    Converts(source='torch', policies=(('momentum_none', 0.1),), refused=None, tol=0.0)
    """

    source: str
    policies: tuple[tuple[str, Any], ...] = ()
    refused: str | None = None
    tol: float = 0.0

    kind: ClassVar[str] = "converts"

    @classmethod
    def parse(cls, fields: Fields) -> Expectation:
        from ..convert import ConversionError, Policies  # bn3d.convert stands on the spec

        policies: tuple[tuple[str, Any], ...] = ()
        if fields.has("policies"):
            given = fields.child("policies")
            policies = tuple((name, given.raw(name)) for name in given.names())
            try:
                Policies(**dict(policies))
            except (ConversionError, TypeError) as error:
                raise FieldError(given.path, str(error)) from None
            given.close()
        return cls(source=fields.text("from", choices=FRAMEWORKS), policies=policies,
                   refused=fields.text("refused", non_empty=True)
                   if fields.has("refused") else None,
                   tol=fields.number("tol", minimum=0) if fields.has("tol") else 0.0)

    def problems(self, sides: Collection[str], step_count: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(sides, step_count)
        if set(sides) != set(FRAMEWORKS):
            yield "", "converts one framework's layer to the other's, so the check needs both " \
                      "sides"

    def probes(self, step_count: int) -> Iterator[Probe]:
        for framework in FRAMEWORKS:
            yield Probe(framework, "setup", "state", _read_state)

    def failure(self, trace: CheckTrace) -> str | None:
        from ..convert import ConversionError, Policies, convert_settings

        target = next(framework for framework in FRAMEWORKS if framework != self.source)
        source_side, target_side = trace.sides[self.source], trace.sides[target]
        policies = Policies(**dict(self.policies))
        try:
            source_settings = _settings_of(self.source, source_side.arguments)
            converted = convert_settings(source_settings, policies)
        except ConversionError as error:
            if self.refused is not None and str(error).startswith(self.refused):
                return None
            return f"converting the {self.source} side's settings raised: {error}"
        if self.refused is not None:
            return (f"the {self.source} side's settings were expected to be refused "
                    f"({self.refused!r}...) but convert to {converted.code()}")
        expected = _settings_of(target, target_side.arguments)
        if _constructor(converted) != _constructor(expected):
            return (f"the {self.source} side's settings convert to {converted.code()}, but the "
                    f"{target} side's are {expected.code()}")
        try:
            state = source_side.probed("state", "setup")
            target_state = target_side.probed("state", "setup")
        except LookupError as error:
            return str(error)
        converted_state, notes = _converted_state(self.source, state, source_settings,
                                                  converted, policies)
        notes += converted.notes
        for name, _ in self.policies:
            if not any(f"policy {name}=" in note for note in notes):
                return f"the policy {name} was given but no note of the conversion states it"
        if list(converted_state) != list(target_state):
            return (f"the {self.source} side's state converts to {list(converted_state)}, but "
                    f"the {target} side's is {list(target_state)}")
        for name, value in converted_state.items():
            difference = max_error(value, target_state[name])
            if difference > self.tol:
                return (f"the {self.source} side's state converts to {name} = {_shown(value)}, "
                        f"but the {target} side has {_shown(target_state[name])} (error "
                        f"{difference:.3g}, tol {self.tol:g})")
        return None


def _settings_of(framework: str, arguments: dict[str, Any]) -> Any:
    from ..convert import MindSporeSettings, TorchSettings

    return (TorchSettings if framework == "torch" else MindSporeSettings)(**arguments)


def _constructor(settings: Any) -> dict[str, Any]:
    """The constructor's arguments but the initialisers (the state carries their values)."""
    return {name: value for name, value in settings.arguments().items()
            if not name.endswith("_init")}


def _converted_state(source: str, state: dict[str, Any], source_settings: Any, converted: Any,
                     policies: Any) -> tuple[dict[str, Any], list[str]]:
    """A side's state converted to the other framework's names, and the notes' texts."""
    from ..convert.layers import MINDSPORE_NAMES
    from ..convert.state import mindspore_state_to_torch, torch_state_to_mindspore

    if source == "torch":
        parameters, notes = torch_state_to_mindspore(state, source_settings)
        return ({f"bn2d.{MINDSPORE_NAMES[role]}": value for role, value in parameters.items()},
                [note.text for note in notes])
    by_role = {role: state[f"bn2d.{name}"] for role, name in MINDSPORE_NAMES.items()}
    torch_state, _, notes = mindspore_state_to_torch(by_role, converted, policies)
    return torch_state, [note.text for note in notes]
