"""How many OpenMP threads a kernel call uses.

A process forked after its OpenMP team started cannot use OpenMP: GNU OpenMP
keeps the parent's team, whose threads do not exist in the child, and the
child's first parallel region waits for them forever (PyTorch's CPU build hangs
the same way). bn3d notices such a fork (:func:`os.register_at_fork`) and runs
every call of the child on its calling thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

from . import _kernels

__all__ = ["get_num_threads", "openmp_enabled", "set_num_threads", "threads_for"]

# Below this many elements a call runs on one thread, without OpenMP. Measured on
# a 2-core machine: one thread takes about 10 us for 32768 float32 elements
# (training forward); a warm team already helps from a few thousand elements, but
# waking a sleeping team costs 30-100 us, more than the whole call saves here.
SERIAL_BELOW = 1 << 15
# More threads than this are refused: asked for 2**31 - 1, GNU OpenMP aborts the
# process (it cannot allocate the team), as it does under PyTorch.
MAX_THREADS = 1024

_requested: int | None = None
_team_started = False  # a call of this process has used more than one thread
_forked_after_team = False  # this process was forked after its parent's team started
_this_thread = threading.local()  # .serial: calls of this thread run on it alone


def _note_fork_in_child() -> None:
    global _forked_after_team
    _forked_after_team = _forked_after_team or _team_started


os.register_at_fork(after_in_child=_note_fork_in_child)


def openmp_enabled() -> bool:
    """Return whether bn3d's kernels were compiled with OpenMP.

    Without OpenMP bn3d still works, on one thread.

    Examples
    --------
    >>> import bn3d
    >>> isinstance(bn3d.openmp_enabled(), bool)
    True
    """
    return _kernels.openmp_enabled()


def set_num_threads(n: int | None) -> None:
    """Set the number of threads bn3d's kernels use; ``None`` restores the default.

    By default bn3d follows OpenMP: ``OMP_NUM_THREADS``, or a limit set with
    ``threadpoolctl.threadpool_limits``, or else one thread per core. Results
    are bitwise identical whatever the number of threads.

    In a process forked after its parent's calls used several threads, calls
    run on one thread whatever is set here (see :mod:`bn3d._threads`); setting
    more than one there warns.

    Parameters
    ----------
    n : int or None
        A number of threads from 1 to :data:`MAX_THREADS` (1024), or None.

    Raises
    ------
    TypeError
        If ``n`` is not an int (a bool is not) or None.
    ValueError
        If ``n`` is below 1 or above :data:`MAX_THREADS`.

    Examples
    --------
    >>> import bn3d
    >>> bn3d.set_num_threads(1)
    >>> bn3d.get_num_threads()
    1
    >>> bn3d.set_num_threads(None)
    """
    global _requested
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"the number of threads must be an int or None, got {n!r}")
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(f"the number of threads must be from 1 to {MAX_THREADS}, got {n}")
        if n > 1 and _forked_after_team:
            warnings.warn(
                "this process was forked after bn3d's OpenMP threads started, and OpenMP "
                "cannot start threads in it: bn3d runs on one thread here (start processes "
                "with the 'spawn' or 'forkserver' method to use several)",
                RuntimeWarning, stacklevel=2)
    _requested = n


def get_num_threads() -> int:
    """Return the number of threads bn3d's kernels use for large inputs.

    Examples
    --------
    >>> import bn3d
    >>> bn3d.get_num_threads() >= 1
    True
    """
    if not _kernels.openmp_enabled() or _forked_after_team:
        return 1
    if _requested is not None:
        return _requested
    return _kernels.openmp_max_threads()


@contextlib.contextmanager
def serial_in_this_thread() -> Iterator[None]:
    """Run this thread's calls on this thread alone while in the block.

    For tasks of a parallel engine (Dask) that runs as many tasks at once as there are
    cores: OpenMP threads of each would compete with the others for the same cores.
    """
    previous = getattr(_this_thread, "serial", False)
    _this_thread.serial = True
    try:
        yield
    finally:
        _this_thread.serial = previous


def threads_for(elements: int) -> int:
    """Return the number of threads for a call on ``elements`` data elements."""
    global _team_started
    serial = elements < SERIAL_BELOW or getattr(_this_thread, "serial", False)
    threads = 1 if serial else get_num_threads()
    _team_started = _team_started or threads > 1
    return threads
