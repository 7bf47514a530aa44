"""Atomic file output: a temporary file in the target's directory, renamed when complete."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success, flush, fsync and rename it to ``path``.

    The temporary file is created in the directory of ``path`` (so that the final
    ``os.replace`` is atomic), with the permissions a plain ``open(path, "wb")``
    would give. If the body raises, the temporary file is removed and ``path`` is
    left as it was: there is never a half-written output file.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.

    Yields
    ------
    BinaryIO
        The temporary file, open for writing.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> target = os.path.join(folder, "out.bin")
    >>> with atomic_output(target) as file:
    ...     _ = file.write(b"complete")
    >>> open(target, "rb").read()
    b'complete'
    >>> try:
    ...     with atomic_output(target) as file:
    ...         _ = file.write(b"half")
    ...         raise RuntimeError("interrupted")
    ... except RuntimeError:
    ...     pass
    >>> open(target, "rb").read(), os.listdir(folder)
    (b'complete', ['out.bin'])
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(temporary, flags, 0o666)  # the umask applies, as for open()
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable where the platform allows it (POSIX)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(descriptor)
