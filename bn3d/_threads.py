"""How many OpenMP threads a kernel call uses."""

from __future__ import annotations

from . import _kernels

__all__ = ["get_num_threads", "openmp_enabled", "set_num_threads", "threads_for"]

# Below this many elements a call runs on one thread, without OpenMP. Measured on
# a 2-core machine: one thread takes about 10 us for 32768 float32 elements
# (training forward); a warm team already helps from a few thousand elements, but
# waking a sleeping team costs 30-100 us, more than the whole call saves here.
SERIAL_BELOW = 1 << 15

_requested: int | None = None


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

    Parameters
    ----------
    n : int or None
        A positive number of threads, or None.

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
        if n < 1:
            raise ValueError(f"the number of threads must be at least 1, got {n}")
    _requested = n


def get_num_threads() -> int:
    """Return the number of threads bn3d's kernels use for large inputs.

    Examples
    --------
    >>> import bn3d
    >>> bn3d.get_num_threads() >= 1
    True
    """
    if not _kernels.openmp_enabled():
        return 1
    if _requested is not None:
        return _requested
    return _kernels.openmp_max_threads()


def threads_for(elements: int) -> int:
    """Return the number of threads for a call on ``elements`` data elements."""
    return 1 if elements < SERIAL_BELOW else get_num_threads()
