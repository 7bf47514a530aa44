"""MindSpore ``.ckpt`` files, read and written without MindSpore, with the protobuf package.

The format, as MindSpore 2.10 writes it (``mindspore/train/serialization.py``,
``checkpoint.proto``; proto2, no package)::

    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;
      required string tensor_type = 2;   // "Float32", "Int64", "BFloat16", "str"...
      required bytes tensor_content = 3; // C-order, little-endian
    }
    message MapTensorProto { repeated TensorProto tensor = 1; }

A file is a concatenation of serialized ``Checkpoint`` messages, one per parameter,
which protobuf reads as one message whose ``value`` list has them all. A 0-d tensor
has no dims. A parameter of more than 512 MiB is written as several consecutive
``Value``s with the same tag, each with the dims of the whole parameter and a 512 MiB
piece of its bytes (``save_checkpoint``; with ``async_save`` MindSpore cuts the array
into equal parts along its first axis instead); MindSpore's loader concatenates the
contents of consecutive ``Value``s with the same tag, whatever the cut.
``save_checkpoint(crc_check=True)`` appends ``b"crc_num"`` and the CRC-32 of all the
bytes before it, as 10 big-endian bytes. A string (``append_dict`` value) is a
``"str"`` tensor with dims ``[0]`` holding the text as UCS-4.

Reading is stricter than MindSpore, which loads the last of non-consecutive
duplicates and does not check sizes: a tag repeated after other tags, slices that
disagree on dims or type, a content whose length is not what the dims and type need,
a bad CRC trailer (always verified) are errors. Map tensors (``MapParameter``) and
``Int4`` (two 4-bit numbers per byte) are refused. BFloat16 tensors are read as
float32, exactly, and marked in ``metadata["original_dtypes"]``.

Writing gives the bytes ``mindspore.save_checkpoint`` gives for the same parameters,
with one exception: MindSpore (synchronous save) writes nothing for a tensor with no
elements, losing it; bn3d writes a ``Value`` with an empty content, as MindSpore's
asynchronous save does. Note that MindSpore loads dims ``[0]`` as a 0-d tensor, so an
empty 1-d tensor does not survive MindSpore's loader.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Iterator, Mapping
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

__all__ = ["SLICE_BYTES", "TENSOR_TYPES", "read", "write"]

#: The largest piece of a parameter in one ``Value``: MindSpore's ``1024 * SLICE_SIZE``.
SLICE_BYTES = 512 * 1024 * 1024
#: MindSpore's ``tensor_type`` of each canonical dtype it has.
TENSOR_TYPES = {
    "int8": "Int8", "uint8": "UInt8", "int16": "Int16", "uint16": "UInt16", "int32": "Int32",
    "uint32": "UInt32", "int64": "Int64", "uint64": "UInt64", "float16": "Float16",
    "float32": "Float32", "float64": "Float64", "bool": "Bool", "bfloat16": "BFloat16",
    "str": "str",
}
_CANONICAL = {name: canonical for canonical, name in TENSOR_TYPES.items()}
_CRC_MARK = b"crc_num"
_TRAILER = len(_CRC_MARK) + 10


@functools.cache
def _message_classes() -> tuple[type, type]:
    """The ``Checkpoint`` and ``Checkpoint.Value`` classes, from a descriptor built here."""
    descriptor_pb2 = require("google.protobuf.descriptor_pb2", "protobuf")
    descriptor_pool = require("google.protobuf.descriptor_pool", "protobuf")
    message_factory = require("google.protobuf.message_factory", "protobuf")
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="bn3d/convert/mindspore_checkpoint.proto")
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    tensor.field.add(name="tensor_type", number=2, label=field.LABEL_REQUIRED,
                     type=field.TYPE_STRING)
    tensor.field.add(name="tensor_content", number=3, label=field.LABEL_REQUIRED,
                     type=field.TYPE_BYTES)
    map_tensor = proto.message_type.add(name="MapTensorProto")
    map_tensor.field.add(name="tensor", number=1, label=field.LABEL_REPEATED,
                         type=field.TYPE_MESSAGE, type_name=".TensorProto")
    checkpoint = proto.message_type.add(name="Checkpoint")
    value = checkpoint.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, label=field.LABEL_REQUIRED, type=field.TYPE_STRING)
    value.oneof_decl.add(name="value")
    value.field.add(name="tensor", number=2, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                    type_name=".TensorProto", oneof_index=0)
    value.field.add(name="maptensor", number=3, label=field.LABEL_OPTIONAL,
                    type=field.TYPE_MESSAGE, type_name=".MapTensorProto", oneof_index=0)
    checkpoint.field.add(name="value", number=1, label=field.LABEL_REPEATED,
                         type=field.TYPE_MESSAGE, type_name=".Checkpoint.Value")
    pool = descriptor_pool.DescriptorPool()  # private: MindSpore's own may be loaded too
    pool.Add(proto)
    # GetMessageClass since protobuf 4.21; MessageFactory.GetPrototype before
    message_class = getattr(message_factory, "GetMessageClass", None)
    if message_class is None:
        message_class = message_factory.MessageFactory(pool).GetPrototype
    return (message_class(pool.FindMessageTypeByName("Checkpoint")),
            message_class(pool.FindMessageTypeByName("Checkpoint.Value")))


def read(path: str | os.PathLike) -> Checkpoint:
    """Read a MindSpore ``.ckpt`` file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    Checkpoint
        Format ``"mindspore"``; the parameters in file order (sliced ones joined);
        metadata ``"crc32"`` when the file has a (verified) CRC trailer,
        ``"original_dtypes"`` when it holds BFloat16 tensors. An empty file is an
        empty checkpoint, as MindSpore writes for no parameters (``read_checkpoint``
        refuses it when it has to guess the format).

    Raises
    ------
    CheckpointError
        For a truncated or corrupted file, a bad CRC, an unknown ``tensor_type``,
        a content that does not fit its dims, a tag repeated after other tags.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "bn.ckpt")
    >>> write(path, {"bn.gamma": np.ones(2, np.float32), "step": np.array(5)}, crc_check=True)
    >>> checkpoint = read(path)
    >>> checkpoint.tensors
    {'bn.gamma': array([1., 1.], dtype=float32), 'step': array(5)}
    >>> checkpoint.metadata
    {'crc32': 3380553122}
    """
    with open(path, "rb") as file:
        data = file.read()
    metadata: dict[str, Any] = {}
    body = memoryview(data)
    if data[-_TRAILER:-10] == _CRC_MARK:
        body = body[:-_TRAILER]
        stored, computed = int.from_bytes(data[-10:], "big"), zlib.crc32(body)
        if stored != computed:
            raise CheckpointError(
                path, f"says CRC-32 {stored} but the content before it has {computed}: the file "
                "is damaged", entry="CRC trailer")
        metadata["crc32"] = stored
    _, value_class = _message_classes()
    tensors: dict[str, np.ndarray] = {}
    original_dtypes: dict[str, str] = {}
    group: list[tuple[str, Any]] = []  # consecutive entries of one tag: (entry, tensor proto)
    for entry, chunk in _entries(path, body):
        value = _parse_value(path, entry, chunk, value_class)
        if group and value.tag != _tag(group):
            _assemble(path, group, tensors, original_dtypes)
            group = []
        if not group and value.tag in tensors:
            raise CheckpointError(
                path, "repeats a tag that earlier, non-adjacent entries have; MindSpore would "
                "silently keep only the last", entry=entry)
        group.append((entry, value))
    if group:
        _assemble(path, group, tensors, original_dtypes)
    if original_dtypes:
        metadata["original_dtypes"] = original_dtypes
    return Checkpoint(tensors, "mindspore", metadata)


def write(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    *,
    crc_check: bool = False,
    original_dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write tensors as ``mindspore.save_checkpoint`` would, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; replaced only once complete.
    tensors : mapping of str to array_like
        The parameters, in order. Element types: bool, int8/16/32/64,
        uint8/16/32/64, float16/32/64, bfloat16 (see ``original_dtypes``), and 0-d
        numpy unicode arrays (``"str"`` values).
    crc_check : bool, default False
        Append MindSpore's CRC-32 trailer, as ``save_checkpoint(crc_check=True)``.
    original_dtypes : mapping of str to str, optional
        ``{name: "bfloat16"}`` for float32 tensors to store as BFloat16 (their
        values must be bfloat16 numbers).

    Raises
    ------
    CheckpointError
        For a tensor of an element type MindSpore cannot load (complex), or a
        bfloat16 mark on values that are not bfloat16. Nothing is written then.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "w.ckpt")
    >>> write(path, {"w": np.array([1.0], np.float32)})
    >>> open(path, "rb").read()
    b'\\n\\x16\\n\\x01w\\x12\\x11\\x08\\x01\\x12\\x07Float32\\x1a\\x04\\x00\\x00\\x80?'
    """
    original_dtypes = original_dtypes or {}
    entries = []
    for name, value in tensors.items():
        kind, array = to_storage_form(path, name, value, original_dtypes)
        if kind not in TENSOR_TYPES:
            raise CheckpointError(path, f"is {kind}, which MindSpore's load_checkpoint has no "
                                  "type for", entry=f"tensor {name!r}")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as error:
            raise CheckpointError(path, "is not valid UTF-8, as protobuf strings must be",
                                  entry=f"tensor {name!r}") from error
        if kind == "str":
            content = memoryview(array.astype(array.dtype.newbyteorder("<")).tobytes())
            dims: list[int] = [0]
        else:
            content, dims = array.reshape(-1).view(np.uint8).data, list(array.shape)
        entries.append((name, TENSOR_TYPES[kind], dims, content))
    checkpoint_class, _ = _message_classes()
    with atomic_output(path) as file:
        crc = 0
        for name, tensor_type, dims, content in entries:
            starts = range(0, len(content), SLICE_BYTES) if len(content) else [0]
            for start in starts:
                message = checkpoint_class()
                value = message.value.add()
                value.tag = name
                value.tensor.dims.extend(dims)
                value.tensor.tensor_type = tensor_type
                value.tensor.tensor_content = bytes(content[start:start + SLICE_BYTES])
                serialized = message.SerializeToString()
                crc = zlib.crc32(serialized, crc)
                file.write(serialized)
        if crc_check:
            file.write(_CRC_MARK + crc.to_bytes(10, "big"))


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    """A protobuf varint at ``position``, and the position after it; ValueError if cut."""
    result = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    raise ValueError("truncated varint")


def _entries(path: str | os.PathLike, body: memoryview) -> Iterator[tuple[str, bytes]]:
    """The serialized ``Value``s of the top-level ``Checkpoint`` stream, with their names."""
    position = index = 0
    while position < len(body):
        start = position
        entry = f"protobuf entry {index} at byte {start}"
        try:
            key, position = _varint(body, position)
        except ValueError as error:
            raise CheckpointError(path, "is cut short: the file is truncated",
                                  entry=entry) from error
        if key != 0x0A:  # field 1 (value), length-delimited
            raise CheckpointError(
                path, f"has protobuf field {key >> 3} (wire type {key & 7}) where a "
                "Checkpoint has only field 1 (value): not a MindSpore checkpoint", entry=entry)
        try:
            length, position = _varint(body, position)
        except ValueError as error:
            raise CheckpointError(path, "is cut short: the file is truncated",
                                  entry=entry) from error
        end = position + length
        if end > len(body):
            tag = _peek_tag(body[position:])
            named = f"{entry} (tag {tag!r})" if tag is not None else entry
            raise CheckpointError(
                path, f"needs {length} bytes but the file has {len(body) - position} left: "
                "the file is truncated", entry=named)
        yield entry, bytes(body[position:end])
        position = end
        index += 1


def _peek_tag(chunk: memoryview) -> str | None:
    """The tag at the start of a (possibly cut) serialized ``Value``, if readable."""
    try:
        if len(chunk) and chunk[0] == 0x0A:
            length, start = _varint(chunk, 1)
            if start + length <= len(chunk):
                return bytes(chunk[start:start + length]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        pass
    return None


def _parse_value(path, entry: str, chunk: bytes, value_class: Any) -> Any:
    tag = _peek_tag(memoryview(chunk))
    named = f"{entry} (tag {tag!r})" if tag is not None else entry
    try:
        value = value_class.FromString(chunk)
    except Exception as error:  # protobuf's DecodeError, or a RuntimeError of its C code
        raise CheckpointError(path, f"is not a valid Checkpoint.Value ({error})",
                              entry=named) from error
    if not value.IsInitialized():
        missing = ", ".join(value.FindInitializationErrors())
        raise CheckpointError(path, f"lacks required fields: {missing}", entry=named)
    named = f"{entry} (tag {value.tag!r})"
    if value.HasField("maptensor"):
        raise CheckpointError(path, "is a map tensor (MapParameter), which bn3d does not read",
                              entry=named)
    if not value.HasField("tensor"):
        raise CheckpointError(path, "has no tensor", entry=named)
    return value


def _tag(group: list[tuple[str, Any]]) -> str:
    return group[0][1].tag


def _assemble(path, group, tensors: dict, original_dtypes: dict) -> None:
    """Join the entries of one tag into one array."""
    tag = _tag(group)
    entry = f"tag {tag!r}" + (f" ({len(group)} slices)" if len(group) > 1 else "")
    first = group[0][1].tensor
    for other_entry, other in group[1:]:
        if list(other.tensor.dims) != list(first.dims) or (
                other.tensor.tensor_type != first.tensor_type):
            raise CheckpointError(
                path, f"has dims {list(other.tensor.dims)} and type {other.tensor.tensor_type!r} "
                f"where the first slice of {tag!r} has {list(first.dims)} and "
                f"{first.tensor_type!r}: the slices are not one parameter", entry=other_entry)
    content = bytearray().join(value.tensor.tensor_content for _, value in group)  # writable
    tensor_type, dims = first.tensor_type, list(first.dims)
    canonical = _CANONICAL.get(tensor_type)
    if canonical is None:
        if tensor_type == "Int4":
            problem = "has type 'Int4' (two 4-bit numbers per byte), which bn3d does not read"
        else:
            problem = (f"has the unknown tensor_type {tensor_type!r}; MindSpore's are "
                       f"{', '.join(sorted(_CANONICAL))} and Int4")
        raise CheckpointError(path, problem, entry=entry)
    if any(dim < 0 for dim in dims):
        raise CheckpointError(path, f"has negative dims {dims}", entry=entry)
    if canonical == "str":
        if dims != [0] or len(content) % 4:
            raise CheckpointError(path, f"is a 'str' with dims {dims} and {len(content)} bytes; "
                                  "a string has dims [0] and 4 bytes per character", entry=entry)
        characters = len(content) // 4
        text = np.frombuffer(bytes(content), f"<U{characters}")[0] if characters else ""
        tensors[tag] = np.array(text)
        return
    dtype = CANONICAL_DTYPES[canonical]
    needed = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if len(content) != needed:
        raise CheckpointError(path, f"holds {len(content)} bytes where dims {dims} of "
                              f"{tensor_type} need {needed}", entry=entry)
    raw = np.frombuffer(content, np.uint8)
    if canonical == "bool":
        array = bool_from_bytes(raw)
        if array is None:
            raise CheckpointError(path, "is Bool but holds bytes other than 0 and 1", entry=entry)
    else:
        array = raw.view(dtype)
    array = array.reshape(dims)
    if canonical == "bfloat16":
        array = bfloat16_to_float32(array)
        original_dtypes[tag] = "bfloat16"
    tensors[tag] = array
