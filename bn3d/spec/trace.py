"""What a check's sides did and showed while it ran: the runner records, the expectations read.

A :class:`SideTrace` holds one side's errors (by moment), outputs and state
(running statistics, scale and shift) around each forward step, and the values
its expectations asked to be read (:class:`Probe`). A :class:`CheckTrace` holds
the traces of a check's sides and the input of each step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .fields import Moment
from .implementations import Implementation

__all__ = ["CheckTrace", "Probe", "SideTrace", "Stats", "moment_text"]

#: Running (moving) mean and variance, or None where the module has none.
Stats = Optional[tuple[np.ndarray, np.ndarray]]


def moment_text(moment: Moment) -> str:
    """``'at setup'`` or ``'at step 2'``.

    Examples
    --------
    >>> moment_text("setup"), moment_text(2)
    ('at setup', 'at step 2')
    """
    return "at setup" if moment == "setup" else f"at step {moment}"


@dataclass(frozen=True)
class Probe:
    """A value to read from one side's module at one moment, for an expectation.

    Attributes
    ----------
    side : str
        The framework whose side is read.
    moment : 'setup' or int
    name : str
        What is read, as messages name it: an attribute path, ``'repr'``,
        ``'state_keys'`` or ``'trainable'``.
    read : callable
        Reads it from an :class:`~bn3d.spec.implementations.Implementation`.
    """

    side: str
    moment: Moment
    name: str
    read: Callable[[Implementation], Any]


@dataclass
class SideTrace:
    """What one side did and showed during a check.

    Attributes
    ----------
    implementation : Implementation
        What ran the side.
    arguments : dict
        Its constructor's arguments (arrays as numpy arrays).
    errors : dict
        moment -> the exception raised then.
    outputs : dict
        step -> output.
    stats_before, stats_after : dict
        step (and ``'setup'`` for after) -> running statistics, or None.
    scale_shift_before : dict
        step -> (scale, shift) before it.
    observed : dict
        (probe name, moment) -> the value read, or the exception reading raised.
    """

    implementation: Implementation
    arguments: dict[str, Any]
    errors: dict[Moment, BaseException] = field(default_factory=dict)
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    stats_before: dict[int, Stats] = field(default_factory=dict)
    stats_after: dict[Moment, Stats] = field(default_factory=dict)
    scale_shift_before: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    observed: dict[tuple[str, Moment], Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        """Whether the side got through its setup."""
        return "setup" not in self.errors

    def error_text(self, moment: Moment) -> str:
        """``'Type: message'`` of the exception raised at ``moment``."""
        error = self.errors[moment]
        return f"{type(error).__name__}: {self.implementation.error_message(error)}"

    def missing_output(self, step: int) -> str | None:
        """Why the side has no output at ``step`` (it raised), or None if it has one."""
        for moment in ("setup", step):
            if moment in self.errors:
                return f"{self.implementation} raised {moment_text(moment)}: " \
                       f"{self.error_text(moment)}"
        return None

    def probed(self, name: str, moment: Moment) -> Any:
        """The value probe ``name`` read at ``moment``.

        Raises
        ------
        LookupError
            With the message to report, if the side raised at setup or reading raised.
        """
        if not self.alive:
            raise LookupError(self.missing_output(0))
        value = self.observed[(name, moment)]
        if isinstance(value, Exception):
            raise LookupError(f"{self.implementation}: reading {name} raised "
                              f"{type(value).__name__}: {value}")
        return value


@dataclass(frozen=True)
class CheckTrace:
    """The traces of a check's sides, and what each step fed them.

    Attributes
    ----------
    sides : Mapping[str, SideTrace]
        framework -> its side's trace, for the sides that ran.
    step_inputs : tuple of numpy.ndarray
        The input of each forward step.
    """

    sides: Mapping[str, SideTrace]
    step_inputs: tuple[np.ndarray, ...]

    @property
    def step_count(self) -> int:
        """How many forward steps the check has."""
        return len(self.step_inputs)
