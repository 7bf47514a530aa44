"""Where bn3d's arrays come from: fresh numpy arrays, whose large blocks a bounded pool
recycles once they are freed (``bn3d/_src/output_pool.h``).

A fresh array of 128 MiB costs a page fault per 4 KiB page the first time it is
written, as long as a training forward takes to compute it. bn3d allocates its
outputs and temporaries through a numpy memory handler (NEP 49) set only around its
own allocations, never process-wide: when such an array is freed, its block is kept
for a later call, up to a limit (256 MiB by default, ``BN3D_OUTPUT_POOL_BYTES`` at
import, :func:`set_output_pool_limit` at any time; 0 keeps nothing). An array
always has its own memory for its whole life.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from . import _output_pool

__all__ = ["empty", "output_pool_stats", "pooled", "set_output_pool_limit"]


def set_output_pool_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` bytes of the freed blocks of bn3d's outputs for reuse.

    Blocks of bn3d's arrays of at least 1 MiB that have been freed are kept, their pages
    already mapped, so that a later output of the same size costs no page faults. The
    pool frees the oldest blocks beyond the limit at once; 0 returns all of them to
    the system and keeps none.

    Parameters
    ----------
    nbytes : int
        At least 0.

    Examples
    --------
    >>> import bn3d
    >>> bn3d.set_output_pool_limit(64 * 2**20)
    >>> bn3d.output_pool_stats()["limit"]
    67108864
    >>> bn3d.set_output_pool_limit(256 * 2**20)
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"the pool's limit must be an int, got {nbytes!r}")
    if nbytes < 0:
        raise ValueError(f"the pool's limit must be at least 0 bytes, got {nbytes}")
    _output_pool.set_limit(nbytes)


def output_pool_stats() -> dict[str, int]:
    """The output pool's limit, the bytes and blocks it keeps now, and how many
    allocations it served from kept blocks (``reused``) or with new ones (``fresh``).

    Examples
    --------
    >>> import bn3d
    >>> sorted(bn3d.output_pool_stats())
    ['fresh', 'kept_blocks', 'kept_bytes', 'limit', 'reused']
    """
    return dict(_output_pool.stats())


@contextlib.contextmanager
def pooled(nbytes: int) -> Iterator[None]:
    """numpy allocates through the pool within the block, if ``nbytes`` is large enough
    to be worth it (only in this thread's context)."""
    if nbytes < _output_pool.SMALLEST:
        yield
        return
    previous = _output_pool.install()
    try:
        yield
    finally:
        _output_pool.restore(previous)


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new C-ordered array; a large one's block comes from (and returns to) the pool."""
    with pooled(np.dtype(dtype).itemsize * int(np.prod(shape))):
        return np.empty(shape, dtype)


_limit = os.environ.get("BN3D_OUTPUT_POOL_BYTES")
if _limit:
    set_output_pool_limit(int(_limit))
