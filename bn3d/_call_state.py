"""The lock and per-thread call records that both facades keep beside their state."""

from __future__ import annotations

import threading
from typing import Any


class CallState:
    """A lock serialising a module's calls, and each thread's record of its latest call.

    Neither is part of the module's state: a copy or an unpickled module gets
    its own lock and no records. Subclasses call :meth:`_init_call_state`
    first in ``__init__``.
    """

    def _init_call_state(self) -> None:
        self._lock = threading.RLock()
        self._last_call = threading.local()

    def _record_call(self, record: Any) -> None:
        """Remember ``record`` as this thread's most recent call."""
        self._last_call.record = record

    def _recorded_call(self) -> Any:
        """This thread's most recent record, or None."""
        return getattr(self._last_call, "record", None)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_last_call"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_call_state()
