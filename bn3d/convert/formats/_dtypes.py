"""Element types shared by the formats: canonical names, bfloat16, bool bytes, optional imports."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from ._checkpoint import CheckpointError

__all__ = [
    "CANONICAL_DTYPES",
    "bfloat16_to_float32",
    "bool_from_bytes",
    "float32_to_bfloat16",
    "require",
    "to_storage_form",
]

#: Canonical element type names and their little-endian numpy dtypes. ``bfloat16``
#: is stored as its 16 bits (uint16); numpy has no bfloat16.
CANONICAL_DTYPES = {
    "bool": np.dtype("?"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "int64": np.dtype("<i8"),
    "uint64": np.dtype("<u8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "complex64": np.dtype("<c8"),
    "complex128": np.dtype("<c16"),
    "bfloat16": np.dtype("<u2"),
}


def require(module: str, package: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError that names bn3d's extra.

    Examples
    --------
    >>> require("json", "json").__name__
    'json'
    >>> require("no_such_module_here", "nothing")
    Traceback (most recent call last):
    ...
    ImportError: this needs the optional package 'nothing': pip install "bn3d[convert]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"this needs the optional package {package!r}: pip install \"bn3d[convert]\""
        ) from error


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 numbers given as their 16 bits: exact.

    Examples
    --------
    >>> import numpy as np
    >>> bfloat16_to_float32(np.array([0x3FC0, 0xC000, 0x7F80], np.uint16))
    array([ 1.5, -2. ,  inf], dtype=float32)
    """
    widened = np.left_shift(np.asarray(bits, dtype="<u2"), 16, dtype="<u4")
    return np.asarray(widened).view("<f4")  # 0-d stays an array, not a numpy scalar


def float32_to_bfloat16(values: np.ndarray) -> np.ndarray | None:
    """The 16 bits of float32 values as bfloat16, or None if a value is not a bfloat16.

    A float32 is a bfloat16 when its lower 16 bits are zero; nothing is rounded.

    Examples
    --------
    >>> import numpy as np
    >>> float32_to_bfloat16(np.array([1.5, -2.0], np.float32))
    array([16320, 49152], dtype=uint16)
    >>> float32_to_bfloat16(np.array([0.1], np.float32)) is None
    True
    """
    words = np.asarray(values, dtype="<f4", order="C").view("<u4")
    if np.any(words & np.uint32(0xFFFF)):
        return None
    return np.asarray(np.right_shift(words, 16).astype("<u2"))


def bool_from_bytes(raw: np.ndarray) -> np.ndarray | None:
    """A bool array from bytes that are each 0 or 1, or None if another byte occurs.

    Examples
    --------
    >>> import numpy as np
    >>> bool_from_bytes(np.array([0, 1, 1], np.uint8))
    array([False,  True,  True])
    >>> bool_from_bytes(np.array([0, 2], np.uint8)) is None
    True
    """
    raw = np.asarray(raw, dtype=np.uint8)
    if np.any(raw > 1):
        return None
    return raw.view(np.bool_)


def to_storage_form(
    path: str | os.PathLike,
    name: Any,
    value: Any,
    original_dtypes: Mapping[str, str],
) -> tuple[str, np.ndarray]:
    """The canonical type name of a tensor to write, and its C-contiguous little-endian array.

    bfloat16 tensors (float32 arrays that ``original_dtypes`` marks as bfloat16, or
    arrays of a numpy bfloat16 extension type such as ml_dtypes') come back as
    their 16 bits (uint16). A numpy unicode scalar array comes back as ``"str"``.

    Examples
    --------
    >>> import numpy as np
    >>> to_storage_form("f", "w", [1.0, 2.0], {})
    ('float64', array([1., 2.]))
    >>> to_storage_form("f", "w", np.array([1.5], np.float32), {"w": "bfloat16"})
    ('bfloat16', array([16320], dtype=uint16))
    """
    if not isinstance(name, str):
        raise CheckpointError(path, f"tensor names must be str, got {type(name).__name__}",
                              entry=f"tensor {name!r}")
    entry = f"tensor {name!r}"
    array = np.asarray(value)
    if array.dtype.name == "bfloat16" and array.dtype.itemsize == 2:
        return "bfloat16", np.asarray(array, order="C").view("<u2")
    if original_dtypes.get(name) == "bfloat16":
        if array.dtype != np.float32:
            raise CheckpointError(
                path, f"is marked bfloat16 but is {array.dtype}; give float32 values", entry=entry)
        bits = float32_to_bfloat16(array)
        if bits is None:
            raise CheckpointError(
                path, "is marked bfloat16 but holds float32 values that are not bfloat16 "
                "numbers (lower 16 bits not zero); round them, or drop the mark", entry=entry)
        return "bfloat16", bits
    if array.dtype.kind == "U" and array.ndim == 0:
        return "str", array
    canonical = array.dtype.name
    if canonical not in CANONICAL_DTYPES or canonical == "bfloat16":
        raise CheckpointError(path, f"has the unsupported element type {array.dtype}", entry=entry)
    return canonical, np.asarray(array, dtype=CANONICAL_DTYPES[canonical], order="C")
