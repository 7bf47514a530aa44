"""The error of a conversion that cannot be done as asked."""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """A layer, a setting or a checkpoint entry that cannot be converted as asked.

    The message says what cannot be converted, why, and what to do about it (the
    policy that would resolve it, where there is one). When it concerns a file it
    names the file and the entry.

    Parameters
    ----------
    problem : str
        What is wrong, and what to do.
    path : str or os.PathLike, optional
        The checkpoint file concerned.
    entry : str, optional
        The entry of the file or the layer concerned, with its kind, such as
        ``"tensor 'bn.running_mean'"`` or ``"layer 'encoder.bn'"``.

    Examples
    --------
    >>> error = ConversionError("is int64; a running mean holds floating-point numbers",
    ...                         path="model.pth", entry="tensor 'bn.running_mean'")
    >>> print(error)
    model.pth, tensor 'bn.running_mean': is int64; a running mean holds floating-point numbers
    >>> print(ConversionError("momentum=None has no MindSpore equivalent"))
    momentum=None has no MindSpore equivalent
    """

    __module__ = "bn3d.convert"

    def __init__(self, problem: str, *, path: str | os.PathLike | None = None,
                 entry: str | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        self.entry = entry
        where = ", ".join(part for part in (self.path, entry) if part)
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self) -> tuple[Callable[..., ConversionError], tuple[str, str | None,
                                                                        str | None]]:
        return _rebuild, (self.problem, self.path, self.entry)

    def within(self, *, path: str | os.PathLike | None = None,
               entry: str | None = None) -> ConversionError:
        """The same problem, located: in file ``path``, at ``entry`` (where not located yet).

        Examples
        --------
        >>> print(ConversionError("bias=False has no equivalent").within(
        ...     path="a.pth", entry="layer 'bn'"))
        a.pth, layer 'bn': bias=False has no equivalent
        """
        return ConversionError(self.problem, path=self.path if self.path else path,
                               entry=self.entry if self.entry else entry)


def _rebuild(problem: str, path: str | None, entry: str | None) -> ConversionError:
    return ConversionError(problem, path=path, entry=entry)
