"""Glob patterns over dotted names (layers, tensors), and files that list them.

A pattern matches a whole dotted name, such as ``encoder.block1.bn``:

- ``*`` matches any characters within one component (no dot): ``encoder.*.bn``
  matches ``encoder.block1.bn`` but not ``encoder.a.b.bn``;
- ``**`` matches any characters, dots included: ``encoder.**.bn`` matches both
  (and ``**`` alone matches every name);
- ``?`` matches one character other than a dot; ``[abc]``, ``[0-9]`` and
  ``[!abc]`` match one character of (or not of) a set;
- everything else matches itself.

A pattern that matches nothing is an error (:func:`select`): a misspelt pattern
would otherwise convert nothing, silently.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence

from .errors import ConversionError

__all__ = ["matches", "read_pattern_file", "select"]


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
            continue
        character = pattern[index]
        closing = pattern.find("]", index + 2) if character == "[" else -1
        if character == "*":
            parts.append("[^.]*")
        elif character == "?":
            parts.append("[^.]")
        elif closing != -1:
            members = pattern[index + 1:closing]
            negated = members.startswith("!")
            members = members[1:] if negated else members
            parts.append(f"[{'^' if negated else ''}{members.replace(chr(92), chr(92) * 2)}]")
            index = closing + 1
            continue
        else:
            parts.append(re.escape(character))
        index += 1
    return re.compile("".join(parts) + r"\Z")


def matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` matches the whole of the dotted ``name``.

    Parameters
    ----------
    pattern : str
        A glob pattern (see the module's docstring).
    name : str

    Returns
    -------
    bool

    Examples
    --------
    >>> matches("encoder.*.bn", "encoder.block1.bn"), matches("encoder.*.bn", "encoder.a.b.bn")
    (True, False)
    >>> matches("encoder.**.bn", "encoder.a.b.bn"), matches("layer[12].bn", "layer2.bn")
    (True, True)
    """
    return _compiled(pattern).match(name) is not None


def select(patterns: Sequence[str], names: Iterable[str], *, what: str, option: str,
           path: str | os.PathLike | None = None) -> list[str]:
    """The names that at least one of ``patterns`` matches, in the order of ``names``.

    Parameters
    ----------
    patterns : sequence of str
    names : iterable of str
        The candidates.
    what : str
        What the candidates are, for the error message (``"BatchNorm layers"``).
    option : str
        The option the patterns came from, for the error message
        (``"layers (--layers)"``).
    path : str or os.PathLike, optional
        The checkpoint file, for the error message.

    Returns
    -------
    list of str

    Raises
    ------
    ConversionError
        If a pattern matches none of the candidates; the message lists them.

    Examples
    --------
    >>> select(["*.bn"], ["a.bn", "a.conv", "b.bn"], what="layers", option="layers")
    ['a.bn', 'b.bn']
    >>> select(["c.*"], ["a.bn", "b.bn"], what="BatchNorm layers", option="layers (--layers)")
    Traceback (most recent call last):
    ...
    bn3d.convert.ConversionError: layers (--layers) pattern 'c.*': matches none of the 2 \
BatchNorm layers: a.bn, b.bn
    """
    names = list(names)
    for pattern in patterns:
        if not any(matches(pattern, name) for name in names):
            shown = ", ".join(name or "(top level)" for name in names[:20])
            more = f", ... ({len(names) - 20} more)" if len(names) > 20 else ""
            listing = f": {shown}{more}" if names else " (there are none)"
            raise ConversionError(f"matches none of the {len(names)} {what}{listing}",
                                  path=path, entry=f"{option} pattern {pattern!r}")
    return [name for name in names if any(matches(pattern, name) for pattern in patterns)]


def read_pattern_file(path: str | os.PathLike) -> tuple[str, ...]:
    """The patterns a file lists: one per line; blank lines and ``#`` comments ignored.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    tuple of str

    Raises
    ------
    ConversionError
        If the file lists no pattern.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "layers.txt")
    >>> with open(path, "w") as file:
    ...     _ = file.write("# the encoder's BatchNorm3d layers\\nencoder.*.bn\\n\\n")
    ...     _ = file.write("head.bn  # and one more\\n")
    >>> read_pattern_file(path)
    ('encoder.*.bn', 'head.bn')
    """
    with open(path, encoding="utf-8") as file:
        lines = [line.partition("#")[0].strip() for line in file]
    patterns = tuple(line for line in lines if line)
    if not patterns:
        raise ConversionError("lists no pattern (one per line; # starts a comment)", path=path)
    return patterns
