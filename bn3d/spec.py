"""The executable difference spec: load ``spec/*.yaml``, validate it, replay it.

The migration document that compares ``torch.nn.BatchNorm3d`` with
``mindspore.nn.BatchNorm3d`` is turned into data: each spec entry quotes one
claim of the document (``source: document``) or states one measured fact of the
real frameworks that the document leaves out (``source: reference``), and
carries *checks*. A check configures one or both frameworks' modules, feeds them
inputs step by step and states what must be observed. One replayer,
:func:`replay`, runs an entry against a *target* (see :mod:`bn3d._targets`);
the tests, the ``bn3d verify`` / ``bn3d example`` commands and the docs all go
through it.

A check with both a ``torch`` and a ``mindspore`` side compares the two
frameworks: the target plays its own framework and bn3d's facade of the other
framework plays the other side (:data:`bn3d._targets.PARTNER`).

The spec files ship inside the package as ``bn3d._spec`` (the repository's
``spec/`` directory); a source checkout without an install reads ``spec/``
directly. ``spec/schema.json`` describes every field.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from ._targets import FRAMEWORK, PARTNER, TARGETS, Side, TargetUnavailable, open_side

__all__ = [
    "FAIL",
    "PASS",
    "SKIPPED",
    "TARGETS",
    "CheckResult",
    "Entry",
    "EntryResult",
    "SpecError",
    "TableRow",
    "document_tables",
    "load_spec",
    "max_error",
    "replay",
    "run_check",
    "spec_files",
    "verify",
]

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
SCHEMA_NAME = "schema.json"
DEFAULT_EPS = 1e-5  # both frameworks' default
_FRAMEWORKS = ("torch", "mindspore")
_PAIRED_EXPECTATIONS = ("outputs_match", "running_stats_match")
# Expectations about the steps as a whole: they need at least one step.
_STEP_EXPECTATIONS = (*_PAIRED_EXPECTATIONS, "running_stats_follow")
_TABLES = ("parameters", "torch-states", "mindspore-states")
# The document's order; entries are listed in it.
_SECTIONS = ("signature", "summary", "parameters", "difference-1", "difference-2", "difference-3",
             "example", "reference")


class SpecError(ValueError):
    """A spec file is malformed; the message names the file, the entry and the field."""


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-5`` (no dot) as a float as YAML 1.2 does."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# -- loading and validation ----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One spec entry: a claim and the checks that execute it.

    Attributes
    ----------
    id, title, source, section : str
        ``source`` is ``'document'`` or ``'reference'``.
    text : str
        The document's words (``quote``) or the reference fact (``statement``).
    note : str or None
        Where the document is wrong or loose, or a facade deliberately differs.
    row : Mapping or None
        The row of the document's table this entry stands for.
    checks : tuple of Mapping
        As the schema describes them.
    file : str
        The spec file the entry comes from.

    Examples
    --------
    >>> entry = {e.id: e for e in load_spec()}["difference-3-momentum-relation"]
    >>> entry.source, entry.check("torch-0-3-mindspore-0-7")["sides"]["mindspore"]["kwargs"]
    ('document', {'num_features': 3, 'momentum': 0.7})
    """

    id: str
    title: str
    source: str
    section: str
    text: str
    note: str | None
    row: Mapping[str, Any] | None
    checks: tuple[Mapping[str, Any], ...]
    file: str

    def check(self, name: str) -> Mapping[str, Any]:
        """The check called ``name``."""
        for check in self.checks:
            if check["name"] == name:
                return check
        raise KeyError(f"entry {self.id!r} has no check {name!r}")


def _spec_root() -> Any:
    try:
        return importlib.resources.files("bn3d._spec")
    except ModuleNotFoundError:  # a source checkout that is not installed
        return Path(__file__).resolve().parent.parent / "spec"


def spec_files() -> list[Any]:
    """The spec's YAML files, sorted by name (``importlib.resources`` traversables).

    Examples
    --------
    >>> "parameters.yaml" in [file.name for file in spec_files()]
    True
    """
    root = _spec_root()
    return sorted((file for file in root.iterdir() if file.name.endswith(".yaml")),
                  key=lambda file: file.name)


def _schema() -> dict[str, Any]:
    return json.loads(_spec_root().joinpath(SCHEMA_NAME).read_text(encoding="utf-8"))


def _field_name(path: Sequence[Any]) -> str:
    """``['checks', 0, 'expect', 1, 'output']`` -> ``'checks[0].expect[1].output'``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<entry>"


def _entry_label(document: Any, index: Any) -> str:
    if isinstance(index, int) and isinstance(document, list) and index < len(document):
        entry = document[index]
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            return f"entry {entry['id']!r}"
    return f"entry #{index}"


def _error_line(file: str, document: Any, error: jsonschema.ValidationError) -> str:
    if error.context:  # oneOf/anyOf: report the alternative that came closest
        error = jsonschema.exceptions.best_match(error.context)
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [name for name in error.validator_value if name not in error.instance]
        path += missing[:1]
    if not path:
        return f"{file}: {error.message}"
    return f"{file}: {_entry_label(document, path[0])}: field {_field_name(path[1:])}: " \
           f"{error.message}"


def _ragged_arrays(value: Any, field: str) -> Iterable[str]:
    """The fields under ``value`` holding nested lists that are not rectangular arrays."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _ragged_arrays(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        if any(isinstance(item, list) for item in value):
            try:
                np.array(value, dtype=np.float64)
            except (ValueError, TypeError):
                yield f"{field}: not a rectangular array of numbers"
        else:
            for index, item in enumerate(value):
                yield from _ragged_arrays(item, f"{field}[{index}]")


def _check_errors(check: Mapping[str, Any]) -> Iterable[str]:
    """``'field: problem'`` for the cross-references inside one check the schema cannot express."""
    yield from _ragged_arrays(check, "")
    sides = set(check["sides"])
    steps = check.get("steps", [])
    inputs = check.get("inputs", {})
    for index, step in enumerate(steps):
        if step["forward"] not in inputs:
            yield f"steps[{index}].forward: no input called {step['forward']!r}"
        for framework in step.get("mode", {}):
            if framework not in sides:
                yield f"steps[{index}].mode.{framework}: the check has no {framework} side"
    for index, expectation in enumerate(check["expect"]):
        ((kind, spec),) = expectation.items()
        name = f"expect[{index}].{kind}"
        if not steps and kind in _STEP_EXPECTATIONS:
            yield f"{name}: is about steps, and the check has none"
        if kind in _PAIRED_EXPECTATIONS and sides != set(_FRAMEWORKS):
            yield f"{name}: compares both frameworks, so the check needs both sides"
        if "side" in spec and spec["side"] not in sides:
            yield f"{name}.side: the check has no {spec['side']} side"
        for key in ("step", "at"):
            if isinstance(spec.get(key), int) and spec[key] >= len(steps):
                yield f"{name}.{key}: there is no step {spec[key]} (the check has {len(steps)})"
        selector = spec.get("steps")
        if isinstance(selector, list) and max(selector) >= len(steps):
            yield f"{name}.steps: there is no step {max(selector)} (the check has {len(steps)})"
        if kind == "running_stats" and "changed" in spec and spec["at"] == "setup":
            yield f"{name}.changed: needs a step for 'at', not 'setup'"
        if kind == "running_stats_follow" and spec["momentum"] is None \
                and spec["side"] != "torch":
            yield f"{name}.momentum: only torch has a cumulative average (momentum null)"


def _cross_reference_errors(file: str, document: list[Any]) -> Iterable[str]:
    for entry in document:
        names = [check["name"] for check in entry["checks"]]
        for index, check in enumerate(entry["checks"]):
            where = f"{file}: entry {entry['id']!r}: field checks[{index}]"
            if names.count(check["name"]) > 1:
                yield f"{where}.name: {check['name']!r} is used by more than one check"
            for problem in _check_errors(check):
                yield f"{where}.{problem}"


def _entry(file: str, data: Mapping[str, Any]) -> Entry:
    return Entry(
        id=data["id"],
        title=data["title"],
        source=data["source"],
        section=data["section"],
        text=data.get("quote", data.get("statement", "")),
        note=data.get("note"),
        row=data.get("row"),
        checks=tuple(data["checks"]),
        file=file,
    )


def _load_file(file: Any, validator: jsonschema.protocols.Validator) -> list[Entry]:
    name = str(file)
    try:
        document = yaml.load(file.read_text(encoding="utf-8"), Loader=_SpecLoader)
    except yaml.YAMLError as error:
        raise SpecError(f"{name}: not valid YAML: {error}") from error
    problems = [_error_line(name, document, error)
                for error in sorted(validator.iter_errors(document),
                                    key=lambda error: [str(p) for p in error.absolute_path])]
    if not problems:
        problems = list(_cross_reference_errors(name, document))
    if problems:
        raise SpecError("\n".join(problems))
    return [_entry(name, data) for data in document]


def load_spec(files: Iterable[Any] | None = None) -> list[Entry]:
    """Load and validate spec files (by default the package's own).

    Parameters
    ----------
    files : iterable of path-like or traversable, optional
        YAML files; default :func:`spec_files`.

    Returns
    -------
    list of Entry
        In the document's order of sections, then in file order.

    Raises
    ------
    SpecError
        If a file is not valid YAML, does not follow ``schema.json``, refers to
        inputs, sides or steps that its check does not have, or reuses an id.
        Each line of the message names the file, the entry and the field.

    Examples
    --------
    >>> entries = load_spec()
    >>> sorted({entry.source for entry in entries})
    ['document', 'reference']
    """
    validator = jsonschema.Draft202012Validator(_schema())
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for file in spec_files() if files is None else files:
        file = Path(file) if isinstance(file, str) else file
        for entry in _load_file(file, validator):
            if entry.id in seen:
                raise SpecError(f"{entry.file}: entry {entry.id!r}: field id: the id is "
                                f"already used in {seen[entry.id]}")
            seen[entry.id] = entry.file
            entries.append(entry)
    return sorted(entries, key=lambda entry: _SECTIONS.index(entry.section))


# -- float64 reference arithmetic (the spec's own oracle) --------------------------------


def _reduce_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _batch_stats(x: np.ndarray, variance: str = "biased") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (biased or unbiased) variance of ``x`` in float64."""
    xd = np.asarray(x, dtype=np.float64)
    axes = _reduce_axes(xd)
    count = int(np.prod([xd.shape[axis] for axis in axes]))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xd.sum(axis=axes) / count
        squares = ((xd - _per_channel(mean, xd.ndim)) ** 2).sum(axis=axes)
        var = squares / (count - 1 if variance == "unbiased" else count)
    return mean, var


def _normalised(x: np.ndarray, mean: np.ndarray, var: np.ndarray, scale: Any, shift: Any,
                eps: float) -> np.ndarray:
    xd = np.asarray(x, dtype=np.float64)
    y = (xd - _per_channel(mean, xd.ndim)) / np.sqrt(_per_channel(var, xd.ndim) + eps)
    if scale is not None:
        y = y * _per_channel(scale, xd.ndim)
    if shift is not None:
        y = y + _per_channel(shift, xd.ndim)
    return y


def max_error(actual: Any, expected: Any) -> float:
    """The spec's error measure: ``max |actual - expected| / max(1, |expected|)``.

    NaN only matches NaN and an infinity only itself; a shape mismatch is an
    infinite error.

    Examples
    --------
    >>> from bn3d.spec import max_error
    >>> max_error([1.0, 4.0, float("inf")], [1.0, 2.0, float("inf")])
    1.0
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0
    same = (np.isnan(actual) & np.isnan(expected)) | (actual == expected)
    with np.errstate(invalid="ignore"):
        error = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
    error = np.where(same, 0.0, error)
    return float(np.max(np.where(np.isnan(error), np.inf, error)))


# -- running a check -------------------------------------------------------------------------


def _make_input(spec: Mapping[str, Any]) -> np.ndarray:
    dtype = spec.get("dtype", "float32")
    if "value" in spec:
        return np.array(spec["value"], dtype=np.float64).astype(dtype)
    random = spec["random"]
    rng = np.random.default_rng(random["seed"])
    data = rng.normal(random.get("loc", 0.0), random.get("scale", 1.0), tuple(random["shape"]))
    return data.astype(dtype)


def _kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: np.array(value["array"], dtype=value.get("dtype", "float32"))
        if isinstance(value, Mapping) else value
        for name, value in spec.items()
    }


@dataclass
class _Trace:
    """What one side did and showed during a check."""

    side: Side
    kwargs: dict[str, Any]
    errors: dict[Any, BaseException] = field(default_factory=dict)  # moment -> exception
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    stats_before: dict[int, Any] = field(default_factory=dict)
    stats_after: dict[Any, Any] = field(default_factory=dict)  # moment -> stats or None
    scale_shift_before: dict[int, Any] = field(default_factory=dict)
    observed: dict[tuple[str, Any], Any] = field(default_factory=dict)  # (probe, moment)

    @property
    def alive(self) -> bool:
        return "setup" not in self.errors

    def error_text(self, moment: Any) -> str:
        error = self.errors[moment]
        return f"{type(error).__name__}: {self.side.error_message(error)}"


def _probes(check: Mapping[str, Any], framework: str) -> dict[Any, list[str]]:
    """What to read from a side at each moment: ``{moment: [probe, ...]}``."""
    probes: dict[Any, list[str]] = {}
    for expectation in check["expect"]:
        ((kind, spec),) = expectation.items()
        if spec.get("side") != framework:
            continue
        if kind == "attribute":
            probes.setdefault(spec.get("at", "setup"), []).append("attribute:" + spec["path"])
        elif kind in ("repr", "state_keys", "trainable"):
            probes.setdefault("setup", []).append(kind)
        elif kind == "running_stats_follow" and spec["momentum"] is None:
            for step in range(len(check.get("steps", []))):
                probes.setdefault(step, []).append("attribute:num_batches_tracked")
    return probes


def _observe(trace: _Trace, probes: Iterable[str], moment: Any) -> None:
    for probe in probes:
        try:
            if probe.startswith("attribute:"):
                value = trace.side.value(probe.partition(":")[2])
            elif probe == "repr":
                value = repr(trace.side.module)
            else:
                value = getattr(trace.side, probe)()
        except Exception as error:  # recorded and reported as a failure
            value = error
        trace.observed[(probe, moment)] = value


def _setup(trace: _Trace, side_spec: Mapping[str, Any]) -> None:
    try:
        trace.side.build(trace.kwargs)
        if "load" in side_spec:
            trace.side.load({name: np.asarray(value, dtype=np.float64)
                             for name, value in side_spec["load"].items()})
        trace.side.set_mode(side_spec.get("mode", "default"))
        trace.stats_after["setup"] = trace.side.running_stats()
    except Exception as error:  # expected errors are part of the spec
        trace.errors["setup"] = error


def _step(trace: _Trace, index: int, step: Mapping[str, Any], x: np.ndarray) -> None:
    side = trace.side
    try:
        mode = step.get("mode", {}).get(side.framework)
        if mode is not None:
            side.set_mode(mode)
        trace.stats_before[index] = side.running_stats()
        trace.scale_shift_before[index] = side.scale_shift()
        try:
            # A copy: a side that wrote into its input would change the other side's
            # input and the reference computed from it.
            trace.outputs[index] = side.forward(x.copy(), step.get("keyword", False))
        except Exception as error:  # expected errors are part of the spec
            trace.errors[index] = error
        trace.stats_after[index] = side.running_stats()
    except Exception as error:  # the module's mode or state could not be used: fails the check
        trace.errors[index] = error


def _execute(check: Mapping[str, Any], sides: Mapping[str, Side]
             ) -> tuple[dict[str, _Trace], dict[str, np.ndarray]]:
    inputs = {name: _make_input(spec) for name, spec in check.get("inputs", {}).items()}
    traces = {framework: _Trace(side, _kwargs(check["sides"][framework]["kwargs"]))
              for framework, side in sides.items()}
    probes = {framework: _probes(check, framework) for framework in traces}
    for framework, trace in traces.items():
        _setup(trace, check["sides"][framework])
        if trace.alive:
            _observe(trace, probes[framework].get("setup", []), "setup")
    for index, step in enumerate(check.get("steps", [])):
        for framework, trace in traces.items():
            if trace.alive:
                _step(trace, index, step, inputs[step["forward"]])
                _observe(trace, probes[framework].get(index, []), index)
    return traces, inputs


def _selected_steps(selector: Any, count: int) -> list[int]:
    return list(range(count)) if selector in (None, "all") else list(selector)


def _needs_output(trace: _Trace, step: int) -> str | None:
    if not trace.alive:
        return f"{trace.side} raised at setup: {trace.error_text('setup')}"
    if step in trace.errors:
        return f"{trace.side} raised at step {step}: {trace.error_text(step)}"
    return None


class _Checker:
    """Compares one check's expectations with what its sides did."""

    def __init__(self, check: Mapping[str, Any], traces: Mapping[str, _Trace],
                 inputs: Mapping[str, np.ndarray]) -> None:
        self.check = check
        self.traces = traces
        self.inputs = inputs
        self.steps = check.get("steps", [])

    def failures(self) -> list[str]:
        messages: list[str] = []
        claimed: set[tuple[str, Any]] = set()
        for expectation in self.check["expect"]:
            ((kind, spec),) = expectation.items()
            if kind == "raises":
                claimed.add((spec["side"], spec["at"]))
            try:
                message = getattr(self, "_" + kind)(spec)
            except Exception as error:  # a module returning nonsense fails the check
                message = f"{kind} could not be evaluated: {type(error).__name__}: {error}"
            if message:
                messages.append(message)
        for framework, trace in self.traces.items():
            for moment in trace.errors:
                if (framework, moment) not in claimed:
                    where = "at setup" if moment == "setup" else f"at step {moment}"
                    messages.append(f"{trace.side} raised {where}: {trace.error_text(moment)}")
        return messages

    def _x(self, step: int) -> np.ndarray:
        return self.inputs[self.steps[step]["forward"]]

    # Each method below returns None when the expectation holds, else what differed.

    def _raises(self, spec: Mapping[str, Any]) -> str | None:
        trace = self.traces[spec["side"]]
        moment = spec["at"]
        where = "at setup" if moment == "setup" else f"at step {moment}"
        if moment not in trace.errors:
            return f"{trace.side}: expected {spec['type']} {where}, nothing was raised"
        error = trace.errors[moment]
        message = trace.side.error_message(error)
        expected = spec["message"]
        matched = (message.startswith(expected) if spec.get("match") == "prefix"
                   else message == expected)
        if type(error).__name__ != spec["type"] or not matched:
            return (f"{trace.side} {where}: expected {spec['type']}: {expected!r}, "
                    f"got {type(error).__name__}: {message!r}")
        return None

    def _outputs_match(self, spec: Mapping[str, Any]) -> str | None:
        return self._pair_match(spec, "outputs", lambda trace, step: (trace.outputs[step],))

    def _running_stats_match(self, spec: Mapping[str, Any]) -> str | None:
        return self._pair_match(spec, "running statistics",
                                lambda trace, step: trace.stats_after[step])

    def _pair_match(self, spec: Mapping[str, Any], what: str, read: Any) -> str | None:
        """Compare ``read(trace, step)`` (a tuple of arrays, or None) between the two sides."""
        torch, mindspore = self.traces["torch"], self.traces["mindspore"]
        steps = _selected_steps(spec.get("steps"), len(self.steps))
        errors = []
        for step in steps:
            problem = _needs_output(torch, step) or _needs_output(mindspore, step)
            if problem:
                return problem
            values = read(torch, step), read(mindspore, step)
            if None in values:
                return f"step {step}: {torch.side if values[0] is None else mindspore.side} " \
                       f"has no {what}"
            errors.append(max(max_error(a, b) for a, b in zip(*values)))
        label = f"{what} of {torch.side} and {mindspore.side}"
        if spec.get("holds", True):
            worst = int(np.argmax(errors))
            if errors[worst] > spec["tol"]:
                return (f"{label} differ at step {steps[worst]} by {errors[worst]:.3g} "
                        f"(tol {spec['tol']:g})")
        elif errors[-1] <= spec["tol"]:
            return (f"{label} were expected to differ at step {steps[-1]} but agree within "
                    f"{spec['tol']:g}")
        return None

    def _output(self, spec: Mapping[str, Any]) -> str | None:
        trace = self.traces[spec["side"]]
        step = spec["step"]
        problem = _needs_output(trace, step)
        if problem:
            return problem
        output = trace.outputs[step]
        where = f"{trace.side} step {step} output"
        if "shape" in spec and list(output.shape) != spec["shape"]:
            return f"{where}: shape {list(output.shape)}, expected {spec['shape']}"
        if "dtype" in spec and output.dtype != np.dtype(spec["dtype"]):
            return f"{where}: dtype {output.dtype}, expected {spec['dtype']}"
        if "value" in spec:
            error = max_error(output, spec["value"])
            if error > spec["tol"]:
                return f"{where} differs from the expected values by {error:.3g} " \
                       f"(tol {spec['tol']:g}): got {_shown(output)}"
        return None

    def _normalised_with(self, spec: Mapping[str, Any]) -> str | None:
        trace = self.traces[spec["side"]]
        step = spec["step"]
        problem = _needs_output(trace, step)
        if problem:
            return problem
        x = self._x(step)
        eps = trace.kwargs.get("eps", DEFAULT_EPS)
        scale, shift = trace.scale_shift_before[step]
        references = {"batch": _normalised(x, *_batch_stats(x), scale, shift, eps)}
        running = trace.stats_before[step]
        if running is not None:
            references["running"] = _normalised(x, *running, scale, shift, eps)
        wanted = spec["stats"]
        where = f"{trace.side} step {step}"
        if wanted not in references:
            return f"{where}: has no running statistics to normalise with"
        output = trace.outputs[step]
        errors = {stats: max_error(output, reference) for stats, reference in references.items()}
        if errors[wanted] > spec["tol"]:
            others = ", ".join(f"{stats} statistics by {error:.3g}"
                               for stats, error in errors.items() if stats != wanted)
            return (f"{where}: output differs from the {wanted}-statistics reference by "
                    f"{errors[wanted]:.3g} (tol {spec['tol']:g})"
                    + (f"; from the {others}" if others else ""))
        if any(error <= spec["tol"] for stats, error in errors.items() if stats != wanted):
            return f"{where}: the inputs do not tell batch from running statistics apart"
        return None

    def _running_stats(self, spec: Mapping[str, Any]) -> str | None:
        trace = self.traces[spec["side"]]
        moment = spec["at"]
        if not trace.alive:
            return _needs_output(trace, 0)
        stats = trace.stats_after[moment]
        where = f"{trace.side} {'at setup' if moment == 'setup' else f'after step {moment}'}"
        if "exist" in spec and (stats is not None) != spec["exist"]:
            return f"{where}: running statistics {'do not ' if stats is None else ''}exist"
        if "changed" in spec:
            before = trace.stats_before.get(moment)
            if stats is None or before is None:
                return f"{where}: no running statistics to compare"
            changed = any(max_error(after, old) != 0 for after, old in zip(stats, before))
            if changed != spec["changed"]:
                return f"{where}: running statistics {'' if changed else 'un'}changed, " \
                       f"expected {'changed' if spec['changed'] else 'unchanged'}"
        for index, name in enumerate(("mean", "var")):
            if name in spec:
                if stats is None:
                    return f"{where}: no running statistics"
                error = max_error(stats[index], spec[name])
                if error > spec["tol"]:
                    return f"{where}: running {name} {_shown(stats[index])}, expected " \
                           f"{spec[name]} (error {error:.3g}, tol {spec['tol']:g})"
        return None

    def _running_stats_follow(self, spec: Mapping[str, Any]) -> str | None:
        framework = spec["side"]
        trace = self.traces[framework]
        for step in _selected_steps(spec.get("steps"), len(self.steps)):
            problem = _needs_output(trace, step)
            if problem:
                return problem
            before, after = trace.stats_before[step], trace.stats_after[step]
            if before is None or after is None:
                return f"{trace.side} step {step}: no running statistics"
            weight = self._batch_weight(spec, trace, step)
            if weight is None:
                return f"{trace.side} step {step}: num_batches_tracked is not positive after " \
                       f"the step, so there is no cumulative average to check"
            batch = _batch_stats(self._x(step), spec.get("variance", "unbiased"))
            if self._x(step).shape[0] == 0:
                expected = before  # an empty batch leaves them as they were
            else:
                expected = tuple((1.0 - weight) * np.asarray(old, np.float64) + weight * new
                                 for old, new in zip(before, batch))
            error = max(max_error(a, e) for a, e in zip(after, expected))
            if error > spec["tol"]:
                return (f"{trace.side} step {step}: running mean / variance "
                        f"{' / '.join(map(_shown, after))} do not follow the {framework} update "
                        f"with momentum {spec['momentum']} ({spec.get('variance', 'unbiased')} "
                        f"variance): expected {' / '.join(map(_shown, expected))} "
                        f"(error {error:.3g}, tol {spec['tol']:g})")
        return None

    @staticmethod
    def _batch_weight(spec: Mapping[str, Any], trace: _Trace, step: int) -> float | None:
        """The weight of the batch statistics in the side's running-statistics update.

        None when torch's cumulative average has no positive batch count to divide by.
        """
        momentum = spec["momentum"]
        if trace.side.framework == "mindspore":
            return 1.0 - momentum
        if momentum is not None:
            return momentum
        count = trace.observed[("attribute:num_batches_tracked", step)]
        return 1.0 / float(count) if isinstance(count, (int, np.ndarray)) and count > 0 else None

    def _observed(self, spec: Mapping[str, Any], probe: str, moment: Any) -> Any:
        trace = self.traces[spec["side"]]
        if not trace.alive:
            raise LookupError(_needs_output(trace, 0))
        value = trace.observed[(probe, moment)]
        if isinstance(value, Exception):
            raise LookupError(f"{trace.side}: reading {probe} raised "
                              f"{type(value).__name__}: {value}")
        return value

    def _attribute(self, spec: Mapping[str, Any]) -> str | None:
        moment = spec.get("at", "setup")
        try:
            value = self._observed(spec, "attribute:" + spec["path"], moment)
        except LookupError as error:
            return str(error)
        where = f"{self.traces[spec['side']].side} {spec['path']}"
        if "equals" in spec and not _equal(value, spec["equals"], spec.get("tol", 0.0)):
            return f"{where} is {_shown(value)}, expected {spec['equals']!r}"
        if "shape" in spec and list(np.shape(value)) != spec["shape"]:
            return f"{where} has shape {list(np.shape(value))}, expected {spec['shape']}"
        if "within" in spec:
            low, high = spec["within"]
            array = np.asarray(value, dtype=np.float64)
            if not np.all((array >= low) & (array <= high)):
                return f"{where} = {_shown(value)} is not within [{low}, {high}]"
        return None

    def _listing(self, spec: Mapping[str, Any], probe: str) -> str | None:
        try:
            value = self._observed(spec, probe, "setup")
        except LookupError as error:
            return str(error)
        if value != spec["equals"]:
            return f"{self.traces[spec['side']].side} {probe}: {value!r}, " \
                   f"expected {spec['equals']!r}"
        return None

    def _repr(self, spec: Mapping[str, Any]) -> str | None:
        return self._listing(spec, "repr")

    def _state_keys(self, spec: Mapping[str, Any]) -> str | None:
        return self._listing(spec, "state_keys")

    def _trainable(self, spec: Mapping[str, Any]) -> str | None:
        return self._listing(spec, "trainable")


def _equal(value: Any, expected: Any, tol: float) -> bool:
    if expected is None or isinstance(expected, (bool, str)):
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(expected, bool):
            return isinstance(value, (bool, np.bool_)) and bool(value) == expected
        return value is expected if expected is None else value == expected
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


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one pairing of targets.

    Attributes
    ----------
    name : str
    status : str
        ``'pass'``, ``'fail'`` or ``'skipped'``.
    messages : tuple of str
        What differed (fail) or why it did not run (skipped).
    players : Mapping[str, str]
        framework -> the target that played it.
    outputs : Mapping[str, Mapping[int, numpy.ndarray]]
        framework -> step -> output, for the steps that produced one.
    """

    name: str
    status: str
    messages: tuple[str, ...] = ()
    players: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[int, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class EntryResult:
    """The outcome of one entry on one target: its checks' results combined.

    ``status`` is ``'fail'`` if a check failed, else ``'pass'`` if a check
    passed, else ``'skipped'``.
    """

    entry_id: str
    target: str
    checks: tuple[CheckResult, ...]

    @property
    def status(self) -> str:
        statuses = {check.status for check in self.checks}
        return FAIL if FAIL in statuses else PASS if PASS in statuses else SKIPPED

    @property
    def messages(self) -> list[str]:
        """``'check-name: message'`` for each failure (or skip reason if nothing ran)."""
        wanted = FAIL if self.status == FAIL else SKIPPED if self.status == SKIPPED else None
        return [f"{check.name}: {message}" for check in self.checks
                if check.status == wanted for message in check.messages]


def run_check(check: Mapping[str, Any], players: Mapping[str, str]) -> CheckResult:
    """Run one check with the given target playing each framework it configures.

    Parameters
    ----------
    check : Mapping
        One of :attr:`Entry.checks`.
    players : Mapping[str, str]
        ``{'torch': target, 'mindspore': target}`` for the check's sides.

    Returns
    -------
    CheckResult
        ``'skipped'`` if a player's module does not import.

    Examples
    --------
    >>> entry = {e.id: e for e in load_spec()}["difference-2-pytorch-trains-by-default"]
    >>> run_check(entry.checks[0], {"torch": "torch-facade"}).status
    'pass'
    """
    try:
        sides = {framework: open_side(players[framework]) for framework in check["sides"]}
    except TargetUnavailable as error:
        return CheckResult(check["name"], SKIPPED, (str(error),), dict(players))
    traces, inputs = _execute(check, sides)
    messages = _Checker(check, traces, inputs).failures()
    return CheckResult(
        check["name"],
        FAIL if messages else PASS,
        tuple(messages),
        {framework: str(side) for framework, side in sides.items()},
        {framework: dict(trace.outputs) for framework, trace in traces.items()},
    )


def _replay_check(check: Mapping[str, Any], target: str) -> CheckResult:
    framework = FRAMEWORK[target]
    if target in check.get("skip", {}):
        return CheckResult(check["name"], SKIPPED, (check["skip"][target],))
    if framework not in check["sides"]:
        return CheckResult(check["name"], SKIPPED, (f"the check has no {framework} side",))
    players = {other: PARTNER[target] for other in check["sides"] if other != framework}
    players[framework] = target
    return run_check(check, players)


def replay(entry: Entry, target: str) -> EntryResult:
    """Replay every check of ``entry`` with ``target`` playing its framework.

    Checks that configure only the other framework, or that list ``target``
    under ``skip``, are skipped; a check that compares both frameworks has the
    other one played by bn3d's facade of it.

    Parameters
    ----------
    entry : Entry
    target : str
        One of :data:`TARGETS`.

    Returns
    -------
    EntryResult

    Examples
    --------
    >>> entry = {e.id: e for e in load_spec()}["difference-2-pytorch-trains-by-default"]
    >>> replay(entry, "torch-facade").status
    'pass'
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    return EntryResult(entry.id, target, tuple(_replay_check(check, target)
                                               for check in entry.checks))


def verify(targets: Sequence[str] = TARGETS,
           entries: Sequence[Entry] | None = None) -> dict[str, dict[str, EntryResult]]:
    """Replay every entry against every target.

    Parameters
    ----------
    targets : sequence of str, default all of :data:`TARGETS`
    entries : sequence of Entry, optional
        Default: :func:`load_spec`.

    Returns
    -------
    dict
        entry id -> target -> :class:`EntryResult`, in spec order.

    Examples
    --------
    >>> results = verify(["torch-facade"])
    >>> results["torch-state-eval-tracking"]["torch-facade"].status
    'pass'
    """
    entries = load_spec() if entries is None else entries
    return {entry.id: {target: replay(entry, target) for target in targets}
            for entry in entries}


# -- the document's tables, for the docs ---------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """A row of one of the document's tables, with the entry that checks it.

    Attributes
    ----------
    table : str
        ``'parameters'``, ``'torch-states'`` or ``'mindspore-states'``.
    entry_id : str
    cells : Mapping[str, Any]
        The row as the entry records it (e.g. ``pytorch``, ``mindspore``,
        ``differences`` for the parameter table).
    quote : str
        The document's words for the row.
    note : str or None
    status : Mapping[str, str]
        target -> ``'pass'`` / ``'fail'`` / ``'skipped'``.
    """

    table: str
    entry_id: str
    cells: Mapping[str, Any]
    quote: str
    note: str | None
    status: Mapping[str, str]


def document_tables(targets: Sequence[str] = ("torch-facade", "mindspore-facade"),
                    entries: Sequence[Entry] | None = None) -> dict[str, list[TableRow]]:
    """The rows of the document's parameter table and its two mode tables, each replayed.

    Parameters
    ----------
    targets : sequence of str
        The targets whose pass status each row reports.
    entries : sequence of Entry, optional
        Default: :func:`load_spec`.

    Returns
    -------
    dict
        ``'parameters'``, ``'torch-states'``, ``'mindspore-states'`` -> rows in
        the document's order.

    Examples
    --------
    >>> tables = document_tables(targets=())
    >>> [row.cells["pytorch"] for row in tables["parameters"]][:3]
    ['num_features', 'eps', 'momentum']
    """
    entries = load_spec() if entries is None else entries
    tables: dict[str, list[TableRow]] = {name: [] for name in _TABLES}
    for entry in entries:
        if entry.row is None:
            continue
        cells = {name: value for name, value in entry.row.items() if name != "table"}
        status = {target: replay(entry, target).status for target in targets}
        tables[entry.row["table"]].append(
            TableRow(entry.row["table"], entry.id, cells, entry.text, entry.note, status))
    tables["parameters"].sort(key=lambda row: row.cells["number"])
    return tables
