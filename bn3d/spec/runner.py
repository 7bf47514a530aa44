"""Running checks: each side on an implementation, then every expectation checked.

:func:`run_check` runs one check with a given implementation for each of its
sides. :func:`replay` runs an entry's checks against one implementation: that
implementation runs its framework's side, and bn3d's facade of the other
framework runs the other side, if the check has one. :func:`verify` replays
every entry against several implementations.

Nothing an implementation does makes these raise: an error at setup or at a
step is recorded, and fails the check unless a ``raises`` expectation expects
it; an expectation that cannot be evaluated fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .fields import Moment
from .implementations import (
    FACADES,
    FRAMEWORK_OF,
    IMPLEMENTATIONS,
    Implementation,
    ImplementationUnavailable,
    open_implementation,
)
from .loading import load_spec
from .model import Check, Entry, Side, Step
from .results import FAIL, PASS, SKIPPED, CheckResult, EntryResult
from .trace import CheckTrace, Probe, SideTrace, moment_text

__all__ = ["replay", "run_check", "verify"]


def _observe(trace: SideTrace, probes: Iterable[Probe]) -> None:
    for probe in probes:
        try:
            value = probe.read(trace.implementation)
        except Exception as error:  # recorded and reported as a failure
            value = error
        trace.observed[(probe.name, probe.moment)] = value


def _setup(trace: SideTrace, side: Side) -> None:
    implementation = trace.implementation
    try:
        implementation.build(trace.arguments)
        if side.load is not None:
            implementation.load({name: np.asarray(value, dtype=np.float64)
                                 for name, value in side.load.items()})
        implementation.set_mode(side.mode)
        trace.stats_after["setup"] = implementation.running_stats()
    except Exception as error:  # expected errors are part of the spec
        trace.errors["setup"] = error


def _step(trace: SideTrace, index: int, step: Step, x: np.ndarray) -> None:
    implementation = trace.implementation
    try:
        mode = step.mode.get(implementation.framework)
        if mode is not None:
            implementation.set_mode(mode)
        trace.stats_before[index] = implementation.running_stats()
        trace.scale_shift_before[index] = implementation.scale_shift()
        try:
            # A copy: a side that wrote into its input would change the other side's
            # input and the reference computed from it.
            trace.outputs[index] = implementation.forward(x.copy(), step.keyword)
        except Exception as error:  # expected errors are part of the spec
            trace.errors[index] = error
        trace.stats_after[index] = implementation.running_stats()
    except Exception as error:  # the module's mode or state could not be used: fails the check
        trace.errors[index] = error


def _execute(check: Check, implementations: Mapping[str, Implementation]) -> CheckTrace:
    """Run the check's sides on ``implementations`` (framework -> implementation)."""
    inputs = {name: spec.array() for name, spec in check.inputs.items()}
    trace = CheckTrace(
        sides={framework: SideTrace(implementation, check.sides[framework].arguments())
               for framework, implementation in implementations.items()},
        step_inputs=tuple(inputs[step.forward] for step in check.steps),
    )
    probes: dict[str, list[Probe]] = {framework: [] for framework in trace.sides}
    for expectation in check.expect:
        for probe in expectation.probes(trace.step_count):
            probes[probe.side].append(probe)
    for framework, side in trace.sides.items():
        _setup(side, check.sides[framework])
        if side.alive:
            _observe(side, (probe for probe in probes[framework] if probe.moment == "setup"))
    for index, step in enumerate(check.steps):
        for framework, side in trace.sides.items():
            if side.alive:
                _step(side, index, step, trace.step_inputs[index])
                _observe(side, (probe for probe in probes[framework] if probe.moment == index))
    return trace


def _failures(check: Check, trace: CheckTrace) -> list[str]:
    """What differed from the check's expectations, and the errors none of them expected."""
    messages: list[str] = []
    claimed: set[tuple[str, Moment]] = set()
    for expectation in check.expect:
        claimed.update(expectation.claims())
        try:
            message = expectation.failure(trace)
        except Exception as error:  # a module returning nonsense fails the check
            message = f"{expectation.kind} could not be evaluated: " \
                      f"{type(error).__name__}: {error}"
        if message:
            messages.append(message)
    for framework, side in trace.sides.items():
        for moment in side.errors:
            if (framework, moment) not in claimed:
                messages.append(f"{side.implementation} raised {moment_text(moment)}: "
                                f"{side.error_text(moment)}")
    return messages


def run_check(check: Check, implementations: Mapping[str, str]) -> CheckResult:
    """Run one check with the given implementation running each of its sides.

    Parameters
    ----------
    check : Check
        One of :attr:`Entry.checks <bn3d.spec.Entry>`.
    implementations : Mapping[str, str]
        framework -> implementation, for each of the check's sides:
        ``{'torch': 'torch-facade'}`` for instance.

    Returns
    -------
    CheckResult
        ``'skipped'`` if an implementation's module does not import here.

    Examples
    --------
    >>> from bn3d.spec import load_spec
    >>> entry = {e.id: e for e in load_spec()}["difference-2-pytorch-trains-by-default"]
    >>> run_check(entry.checks[0], {"torch": "torch-facade"}).status
    'pass'
    """
    try:
        opened = {framework: open_implementation(implementations[framework])
                  for framework in check.sides}
    except ImplementationUnavailable as error:
        return CheckResult(check.name, SKIPPED, (str(error),), dict(implementations))
    trace = _execute(check, opened)
    messages = _failures(check, trace)
    return CheckResult(
        check.name,
        FAIL if messages else PASS,
        tuple(messages),
        {framework: implementation.name for framework, implementation in opened.items()},
        {framework: dict(side.outputs) for framework, side in trace.sides.items()},
    )


def _replay_check(check: Check, implementation: str) -> CheckResult:
    framework = FRAMEWORK_OF[implementation]
    if implementation in check.skip:
        return CheckResult(check.name, SKIPPED, (check.skip[implementation],))
    if framework not in check.sides:
        return CheckResult(check.name, SKIPPED, (f"the check has no {framework} side",))
    implementations = {other: FACADES[other] for other in check.sides}
    implementations[framework] = implementation
    return run_check(check, implementations)


def replay(entry: Entry, implementation: str) -> EntryResult:
    """Replay every check of ``entry`` with ``implementation`` running its framework's side.

    A check without a side for that framework, or that lists the implementation
    under ``skip``, is skipped; a check that compares both frameworks has the
    other side run by bn3d's facade of the other framework.

    Parameters
    ----------
    entry : Entry
    implementation : str
        One of :data:`~bn3d.spec.IMPLEMENTATIONS`.

    Returns
    -------
    EntryResult

    Raises
    ------
    ValueError
        If ``implementation`` is not one of :data:`~bn3d.spec.IMPLEMENTATIONS`.

    Examples
    --------
    >>> from bn3d.spec import load_spec
    >>> entry = {e.id: e for e in load_spec()}["difference-2-pytorch-trains-by-default"]
    >>> replay(entry, "torch-facade").status
    'pass'
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; expected one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    return EntryResult(entry.id, implementation,
                       tuple(_replay_check(check, implementation) for check in entry.checks))


def verify(implementations: Sequence[str] = IMPLEMENTATIONS,
           entries: Sequence[Entry] | None = None) -> dict[str, dict[str, EntryResult]]:
    """Replay every entry against every implementation.

    Parameters
    ----------
    implementations : sequence of str, default all of :data:`~bn3d.spec.IMPLEMENTATIONS`
    entries : sequence of Entry, optional
        Default: :func:`~bn3d.spec.load_spec`.

    Returns
    -------
    dict
        entry id -> implementation -> :class:`~bn3d.spec.EntryResult`, in spec order.

    Examples
    --------
    >>> results = verify(["torch-facade"])
    >>> results["torch-state-eval-tracking"]["torch-facade"].status
    'pass'
    """
    entries = load_spec() if entries is None else entries
    return {entry.id: {implementation: replay(entry, implementation)
                       for implementation in implementations}
            for entry in entries}
