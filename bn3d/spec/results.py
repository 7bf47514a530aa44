"""What replaying the spec found: the status of each check and of each entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FAIL", "PASS", "SKIPPED", "CheckResult", "EntryResult"]

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, its sides run on given implementations.

    Attributes
    ----------
    name : str
        The check's name.
    status : str
        ``'pass'``, ``'fail'`` or ``'skipped'``.
    messages : tuple of str
        What differed (fail) or why it did not run (skipped).
    implementations : Mapping[str, str]
        framework -> the implementation that ran its side.
    outputs : Mapping[str, Mapping[int, numpy.ndarray]]
        framework -> step -> output, for the steps that produced one.

    Examples
    --------
    >>> CheckResult("trains", SKIPPED, ("the check has no mindspore side",)).status
    'skipped'
    """

    name: str
    status: str
    messages: tuple[str, ...] = ()
    implementations: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[int, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class EntryResult:
    """The outcome of one entry replayed on one implementation: its checks' results combined.

    Attributes
    ----------
    entry_id : str
    implementation : str
    checks : tuple of CheckResult

    Examples
    --------
    >>> result = EntryResult("some-entry", "torch-facade", (
    ...     CheckResult("a", PASS), CheckResult("b", SKIPPED, ("no torch here",))))
    >>> result.status, result.messages
    ('pass', [])
    """

    entry_id: str
    implementation: str
    checks: tuple[CheckResult, ...]

    @property
    def status(self) -> str:
        """``'fail'`` if a check failed, else ``'pass'`` if a check passed, else ``'skipped'``."""
        statuses = {check.status for check in self.checks}
        return FAIL if FAIL in statuses else PASS if PASS in statuses else SKIPPED

    @property
    def messages(self) -> list[str]:
        """``'check-name: message'`` for each failure (or skip reason if nothing ran)."""
        wanted = FAIL if self.status == FAIL else SKIPPED if self.status == SKIPPED else None
        return [f"{check.name}: {message}" for check in self.checks
                if check.status == wanted for message in check.messages]
