"""Fallback intersphinx inventories for building the documentation offline.

intersphinx first fetches the real ``objects.inv`` of Python and numpy; where
that fails (no network, as on CI machines), it falls back to the small
inventory written here, which lists the names these pages refer to with their
real addresses. A failure with a working fallback is not a warning, so the
``-W`` build stays clean offline and gets every link online.

Add a name here when a page refers to a Python or numpy object the fallback
does not list yet (``sphinx-build -n`` shows such references).
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path

# (name, domain:role, address within the documentation) for each project. A ``$`` in an
# address stands for the name; it is expanded when the inventory is written (``expand``),
# because Sphinx itself expands only a ``$`` that ends the address.
INVENTORIES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "python": ("Python", [
        *((name, "py:class", "library/functions.html#$")
          for name in ("bool", "float", "int", "str", "tuple", "list", "dict", "object", "type")),
        ("None", "py:data", "library/constants.html#$"),
        *((name, "py:exception", "library/exceptions.html#$")
          for name in ("Exception", "ValueError", "TypeError", "RuntimeError", "KeyError",
                       "NotImplementedError", "LookupError")),
        *((f"collections.abc.{name}", "py:class", "library/collections.abc.html#$")
          for name in ("Mapping", "Sequence", "Iterable", "Callable")),
        ("typing.Any", "py:data", "library/typing.html#$"),
        ("typing.NamedTuple", "py:class", "library/typing.html#$"),
        ("pathlib.Path", "py:class", "library/pathlib.html#$"),
        ("importlib.resources.abc.Traversable", "py:class",
         "library/importlib.resources.abc.html#$"),
        ("dataclasses.dataclass", "py:function", "library/dataclasses.html#$"),
        ("doctest", "py:module", "library/doctest.html#module-$"),
        ("threading", "py:module", "library/threading.html#module-$"),
    ]),
    "numpy": ("NumPy", [
        ("numpy.ndarray", "py:class", "reference/generated/$.html#$"),
        ("numpy.dtype", "py:class", "reference/generated/$.html#$"),
        ("numpy.generic", "py:class", "reference/arrays.scalars.html#$"),
        *((f"numpy.{name}", "py:class", "reference/arrays.scalars.html#$")
          for name in ("float16", "float32", "float64", "int64", "bool")),
        ("numpy.asarray", "py:function", "reference/generated/$.html#$"),
        ("numpy.ones_like", "py:function", "reference/generated/$.html#$"),
        ("numpy.random.default_rng", "py:function", "reference/random/generator.html#$"),
        ("numpy.testing.assert_allclose", "py:function", "reference/generated/$.html#$"),
        ("numpy.testing.assert_array_max_ulp", "py:function", "reference/generated/$.html#$"),
        ("array_like", "std:term", "glossary.html#term-array_like"),
        ("array-like", "std:term", "glossary.html#term-array-like"),
    ]),
}


def expand(name: str, address: str) -> str:
    """The full address of ``name``: every ``$`` in ``address`` replaced by it.

    Parameters
    ----------
    name : str
        The object's name, as the inventory lists it.
    address : str
        Its address relative to the documentation's root, ``$`` standing for the name.

    Returns
    -------
    str
        The address with no ``$`` left.

    Examples
    --------
    >>> expand("numpy.ndarray", "reference/generated/$.html#$")
    'reference/generated/numpy.ndarray.html#numpy.ndarray'
    """
    return address.replace("$", name)


def _inventory_bytes(project: str, entries: list[tuple[str, str, str]]) -> bytes:
    """An ``objects.inv`` (version 2) listing ``entries`` with full addresses."""
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: \n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    lines = "".join(f"{name} {role} 1 {expand(name, path)} -\n" for name, role, path in entries)
    return header + zlib.compress(lines.encode())


def fallback_inventory(name: str) -> str:
    """Write the fallback inventory of ``name`` ('python' or 'numpy'); return its path."""
    project, entries = INVENTORIES[name]
    data = _inventory_bytes(project, entries)
    folder = Path(tempfile.gettempdir()) / "bn3d-docs-inventories"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{zlib.crc32(data):08x}.inv"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, path)
    return str(path)
