"""safetensors files of either framework, through the safetensors package.

A safetensors file is an 8-byte little-endian header length, a JSON header (each
tensor's dtype, shape and byte range, and an optional ``__metadata__`` of strings),
then the tensors' bytes. The frameworks differ only in the metadata, as measured:

- MindSpore 2.10's ``save_checkpoint(format="safetensors")`` writes
  ``{"format": "ms"}`` (none when there are no tensors), plus ``"crc_num"`` (the
  CRC-32 of each name's UTF-8 bytes and tensor's bytes, names sorted) when
  ``crc_check=True``;
- ``safetensors.torch.save_file`` writes no metadata unless given some (it does not
  add ``{"format": "pt"}``; libraries such as transformers pass that themselves).

The safetensors package writes the metadata entries in an order that changes from
one process to the next (a hash map): a file with two or more entries, such as
MindSpore's with ``crc_num``, is not byte-reproducible, by MindSpore either.

So a file whose metadata has ``format == "ms"`` is ``"mindspore-safetensors"`` and
any other is ``"torch-safetensors"``.

bn3d uses the package's own serializer and deserializer (``safetensors.serialize``
with ``TensorSpec``, ``safetensors.deserialize``), which ``safetensors.numpy`` wraps,
because ``safetensors.numpy`` has no bfloat16: BF16 tensors are read as float32,
exactly, marked in ``metadata["original_dtypes"]``, and written back as BF16.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._atomic import atomic_output
from ._checkpoint import Checkpoint, CheckpointError
from ._dtypes import (
    CANONICAL_DTYPES,
    bfloat16_to_float32,
    bool_from_bytes,
    require,
    to_storage_form,
)

__all__ = ["read", "write"]

_CANONICAL = {
    "BOOL": "bool", "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16",
    "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
    "F32": "float32", "F64": "float64", "BF16": "bfloat16", "C64": "complex64",
}
_SPEC_DTYPES = {canonical: canonical for canonical in _CANONICAL.values()}


def read(path: str | os.PathLike) -> Checkpoint:
    """Read a safetensors file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    Checkpoint
        Format ``"mindspore-safetensors"`` if the metadata says ``format: ms``,
        else ``"torch-safetensors"``; the tensors in the order of their bytes in
        the file; metadata ``"safetensors_metadata"`` (the header's
        ``__metadata__``) when present, ``"crc32"`` when a MindSpore ``crc_num``
        was verified, ``"original_dtypes"`` for BF16 tensors.

    Raises
    ------
    CheckpointError
        For a truncated or malformed file, a name given twice, a dtype numpy
        cannot hold (other than BF16), or a MindSpore ``crc_num`` that does not
        match.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "bn.safetensors")
    >>> write(path, {"bn.gamma": np.ones(2, np.float32)}, mindspore=True, crc_check=True)
    >>> checkpoint = read(path)
    >>> checkpoint.format, checkpoint.tensors
    ('mindspore-safetensors', {'bn.gamma': array([1., 1.], dtype=float32)})
    >>> sorted(checkpoint.metadata["safetensors_metadata"].items()), checkpoint.metadata["crc32"]
    ([('crc_num', '2147098879'), ('format', 'ms')], 2147098879)
    """
    with open(path, "rb") as file:
        data = file.read()
    header = _header(path, data)
    safetensors = require("safetensors", "safetensors")
    try:
        views = dict(safetensors.deserialize(data))
    except Exception as error:  # SafetensorError, or a panic of the Rust code
        raise CheckpointError(path, f"is not a valid safetensors file ({error})") from error
    raw_metadata = header.get("__metadata__")
    names = sorted((name for name in header if name != "__metadata__"),
                   key=lambda name: (header[name]["data_offsets"][0], name))
    tensors: dict[str, np.ndarray] = {}
    original_dtypes: dict[str, str] = {}
    for name in names:
        view = views[name]
        canonical = _CANONICAL.get(view["dtype"])
        entry = f"tensor {name!r}"
        if canonical is None:
            raise CheckpointError(path, f"has dtype {view['dtype']}, which bn3d does not read "
                                  f"(it reads {', '.join(_CANONICAL)})", entry=entry)
        raw = np.frombuffer(view["data"], np.uint8)
        if canonical == "bool":
            array = bool_from_bytes(raw)
            if array is None:
                raise CheckpointError(path, "is BOOL but holds bytes other than 0 and 1",
                                      entry=entry)
        else:
            array = raw.view(CANONICAL_DTYPES[canonical])
        array = array.reshape(view["shape"])
        if canonical == "bfloat16":
            array = bfloat16_to_float32(array)
            original_dtypes[name] = "bfloat16"
        tensors[name] = array
    metadata: dict[str, Any] = {}
    if raw_metadata is not None:
        metadata["safetensors_metadata"] = dict(raw_metadata)
    mindspore = raw_metadata is not None and raw_metadata.get("format") == "ms"
    if mindspore and raw_metadata is not None and "crc_num" in raw_metadata:
        metadata["crc32"] = _verified_crc(path, raw_metadata["crc_num"], tensors, views)
    if original_dtypes:
        metadata["original_dtypes"] = original_dtypes
    return Checkpoint(tensors, "mindspore-safetensors" if mindspore else "torch-safetensors",
                      metadata)


def write(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    *,
    mindspore: bool = False,
    crc_check: bool = False,
    header_metadata: Mapping[str, str] | None = None,
    original_dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write tensors into a safetensors file, as torch's or MindSpore's, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; replaced only once complete.
    tensors : mapping of str to array_like
        The tensors. Element types: bool, int8/16/32/64, uint8/16/32/64,
        float16/32/64, complex64, bfloat16 (see ``original_dtypes``).
    mindspore : bool, default False
        Write MindSpore's metadata (``{"format": "ms"}``), as
        ``mindspore.save_checkpoint(format="safetensors")`` does.
    crc_check : bool, default False
        With ``mindspore``: add MindSpore's ``crc_num``.
    header_metadata : mapping of str to str, optional
        Further ``__metadata__`` entries. For MindSpore, its ``"format"`` and
        ``"crc_num"`` are replaced by the ones written.
    original_dtypes : mapping of str to str, optional
        ``{name: "bfloat16"}`` for float32 tensors to store as BF16 (their values
        must be bfloat16 numbers).

    Raises
    ------
    CheckpointError
        For a tensor safetensors cannot hold (complex128, strings), metadata that is
        not strings, or a bfloat16 mark on values that are not bfloat16. Nothing is
        written then.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> write(path, {"w": np.array([1.0], np.float32)})
    >>> data = open(path, "rb").read()
    >>> int.from_bytes(data[:8], "little"), data[8:64]
    (56, b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  ')
    >>> data[64:]
    b'\\x00\\x00\\x80?'
    """
    if crc_check and not mindspore:
        raise ValueError("crc_check is MindSpore's (crc_num); torch safetensors files have none")
    original_dtypes = original_dtypes or {}
    arrays = {}
    for name, value in tensors.items():
        kind, array = to_storage_form(path, name, value, original_dtypes)
        if kind not in _SPEC_DTYPES:
            raise CheckpointError(path, f"is {kind}, which safetensors files cannot hold",
                                  entry=f"tensor {name!r}")
        arrays[name] = (kind, array)
    metadata = dict(header_metadata or {})
    for key, value in metadata.items():
        if type(key) is not str or type(value) is not str:
            raise CheckpointError(path, f"has the metadata entry {key!r}: {value!r}; safetensors "
                                  "metadata maps str to str", entry="__metadata__")
    if mindspore:
        metadata.pop("crc_num", None)
        metadata["format"] = "ms"
        if crc_check:
            crc = 0
            for name in sorted(arrays):
                crc = zlib.crc32(name.encode("utf-8"), crc)
                crc = zlib.crc32(arrays[name][1].reshape(-1).view(np.uint8).data, crc)
            metadata["crc_num"] = str(crc)
        if not arrays:  # MindSpore then calls save_file without metadata
            metadata = {}
    safetensors = require("safetensors", "safetensors")
    specs = {
        name: safetensors.TensorSpec(dtype=_SPEC_DTYPES[kind], shape=array.shape,
                                     data_ptr=array.ctypes.data, data_len=array.nbytes)
        for name, (kind, array) in arrays.items()
    }
    serialized = safetensors.serialize(specs, metadata=metadata or None)  # arrays stay alive
    with atomic_output(path) as file:
        file.write(serialized)


def _header(path: str | os.PathLike, data: bytes) -> dict[str, Any]:
    """The JSON header, with duplicate names refused (the library keeps one silently)."""
    if len(data) < 8:
        raise CheckpointError(path, f"has {len(data)} bytes, fewer than a safetensors header's "
                              "length field: the file is truncated")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise CheckpointError(path, f"announces a {length}-byte header but has "
                              f"{len(data) - 8} bytes after its length: the file is truncated")

    def unique(pairs):
        result = {}
        for name, value in pairs:
            if name in result:
                raise CheckpointError(path, "occurs twice in the header",
                                      entry=f"tensor {name!r}")
            result[name] = value
        return result

    try:
        header = json.loads(data[8:8 + length].decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"has a header that is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise CheckpointError(path, "has a header that is not a JSON object")
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(type(v) is str for v in info.values()):
                raise CheckpointError(path, "is not a map of str to str", entry="__metadata__")
        elif not (isinstance(info, dict) and isinstance(info.get("data_offsets"), list)
                  and len(info["data_offsets"]) == 2
                  and all(type(o) is int for o in info["data_offsets"])):
            raise CheckpointError(path, "has no valid data_offsets", entry=f"tensor {name!r}")
    return header


def _verified_crc(path, stored: str, tensors: dict, views: dict) -> int:
    """MindSpore's safetensors ``crc_num``, checked against the names and bytes."""
    try:
        expected = int(stored)
    except ValueError as error:
        raise CheckpointError(path, f"has crc_num {stored!r}, not a number",
                              entry="__metadata__") from error
    crc = 0
    for name in sorted(tensors):
        crc = zlib.crc32(name.encode("utf-8"), crc)
        crc = zlib.crc32(views[name]["data"], crc)
    if crc != expected:
        raise CheckpointError(path, f"says crc_num {expected} but the names and tensors have "
                              f"{crc}: the file is damaged", entry="__metadata__")
    return expected
