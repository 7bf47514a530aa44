"""The last-level cache size, above which the kernels stream their outputs.

A pass whose arrays are larger than the last-level cache cannot keep them
there; writing its output with non-temporal stores then saves reading each
output line before writing it, and leaves the cache to the input.
"""

from __future__ import annotations

from pathlib import Path

from . import _kernels

__all__ = ["configure_streaming", "last_level_cache_bytes"]

DEFAULT_CACHE_BYTES = 32 * 2**20
_SYSFS_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def _parse_size(text: str) -> int:
    """``'32768K'`` -> 33554432."""
    text = text.strip()
    if text and text[-1].upper() in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1].upper()]
    return int(text)


def last_level_cache_bytes(caches: Path = _SYSFS_CACHES) -> int | None:
    """Return the size of the last data cache of this machine's first CPU.

    Read from Linux's sysfs (the cache of the highest level that holds data);
    None where it is not available.

    Examples
    --------
    >>> from bn3d._cache import last_level_cache_bytes
    >>> size = last_level_cache_bytes()
    >>> size is None or size > 0
    True
    """
    best: tuple[int, int] | None = None
    for index in sorted(caches.glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if best is None or level > best[0]:
            best = (level, size)
    return None if best is None else best[1]


def configure_streaming() -> None:
    """Let calls whose arrays are larger than the last-level cache stream their outputs.

    Uses 32 MiB where the cache size cannot be read.
    """
    size = last_level_cache_bytes()
    _kernels.set_stream_threshold(DEFAULT_CACHE_BYTES if size is None else size)
