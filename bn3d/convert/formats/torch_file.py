"""``torch.save`` files (``.pt``/``.pth``) of a state_dict, read and written without torch.

A ``torch.save`` file is a zip archive (see :mod:`._torch_zip`) of ``<name>/data.pkl``,
the pickle of the state_dict (see :mod:`._torch_pickle`), and ``<name>/data/<key>``,
the raw little-endian bytes of each storage, plus ``.format_version``,
``.storage_alignment``, ``byteorder``, ``version`` and ``.data/serialization_id``.

Reading never runs the pickle's code: only a state_dict's globals resolve, to inert
stand-ins. Records must be stored, as torch.save writes them (a compressed record is
refused, which also rules out decompression bombs). Tensors are rebuilt from their
storage offset, sizes and strides as C-contiguous copies. bfloat16 tensors are read as
float32, exactly (a bfloat16 is the upper half of a float32), and marked in
``metadata["original_dtypes"]`` so that writing gives bfloat16 back. Only little-endian
files (``byteorder`` absent or ``little``) are read.

Writing gives the file ``torch.save(state_dict, path)`` gives for the same contiguous
tensors: the same records in the same order, the same pickle, the storages 64-byte
aligned, zip64 fields past 4 GiB; only the first 20 digits of ``.data/serialization_id``
differ (see :mod:`._torch_zip`).
"""

from __future__ import annotations

import os
import reprlib
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._atomic import atomic_output
from ._checkpoint import Checkpoint, CheckpointError
from ._dtypes import CANONICAL_DTYPES, bfloat16_to_float32, bool_from_bytes, to_storage_form
from ._torch_pickle import (
    STORAGE_TYPES,
    PickleWriter,
    RestrictedUnpickler,
    StorageRef,
    TensorRecord,
    TorchDType,
)
from ._torch_zip import TorchArchiveWriter, archive_name

__all__ = ["read", "write"]

# What zipfile raises for a damaged archive (I/O errors of the file system propagate).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)
_MAX_METADATA_DEPTH = 8


def read(path: str | os.PathLike) -> Checkpoint:
    """Read the state_dict of a ``torch.save`` file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt``/``.pth`` file.

    Returns
    -------
    Checkpoint
        Format ``"torch"``; the tensors in the state_dict's order; metadata
        ``"state_dict_metadata"`` (``state_dict._metadata``) when the file has it,
        ``"original_dtypes"`` when it holds bfloat16 tensors.

    Raises
    ------
    CheckpointError
        If the file is not a torch zip archive of a state_dict, names a global a
        state_dict does not use, or is inconsistent (sizes beyond a storage,
        missing or truncated storages...).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "bn.pth")
    >>> write(path, {"weight": np.ones(2, np.float32), "num_batches_tracked": np.array(7)},
    ...       module_metadata={"": {"version": 2}})
    >>> checkpoint = read(path)
    >>> checkpoint.tensors
    {'weight': array([1., 1.], dtype=float32), 'num_batches_tracked': array(7)}
    >>> checkpoint.metadata
    {'state_dict_metadata': {'': {'version': 2}}}
    """
    with open(path, "rb") as file:
        try:
            archive = zipfile.ZipFile(file)
        except _ZIP_ERRORS as error:
            raise CheckpointError(
                path, f"is not a readable zip archive, as torch.save files are ({error})"
            ) from error
        with archive:
            reader = _ArchiveReader(path, archive)
            state = reader.unpickle()
            return reader.checkpoint(state)


def write(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    *,
    module_metadata: Mapping[str, Mapping[str, Any]] | None = None,
    original_dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write tensors as ``torch.save(state_dict, path)`` would, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; replaced only once complete.
    tensors : mapping of str to array_like
        The state_dict's tensors, in order. Element types: bool, int8/16/32/64,
        uint8/16/32/64, float16/32/64, complex64/128, and bfloat16 (see
        ``original_dtypes``).
    module_metadata : mapping, optional
        ``state_dict._metadata``: per module prefix, a dict such as ``{"version": 2}``
        (values: int, float, str, bool, None or such dicts).
    original_dtypes : mapping of str to str, optional
        ``{name: "bfloat16"}`` for float32 tensors to store as bfloat16 (their
        values must be bfloat16 numbers).

    Raises
    ------
    CheckpointError
        For a tensor of an element type torch files cannot hold, a bfloat16 mark
        on values that are not bfloat16, or metadata that is not plain data.
        Nothing is written then.

    Examples
    --------
    >>> import os, tempfile, zipfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pth")
    >>> write(path, {"0.weight": np.zeros((3, 2, 1, 1, 1), np.float32)})
    >>> zipfile.ZipFile(path).namelist()  # doctest: +NORMALIZE_WHITESPACE
    ['net/data.pkl', 'net/.format_version', 'net/.storage_alignment', 'net/byteorder',
     'net/data/0', 'net/version', 'net/.data/serialization_id']
    """
    original_dtypes = original_dtypes or {}
    storages = []
    specs = []
    for index, (name, value) in enumerate(tensors.items()):
        kind, array = to_storage_form(path, name, value, original_dtypes)
        if kind == "str":
            raise CheckpointError(path, "is a string; torch files hold tensors only",
                                  entry=f"tensor {name!r}")
        key = str(index)
        spec: tuple[Any, ...]
        if kind in STORAGE_TYPES:
            spec = ("_rebuild_tensor_v2", ("torch", STORAGE_TYPES[kind].name), key, array.size,
                    array.shape, _contiguous_strides(array.shape), None)
        else:  # uint16/32/64 have no typed storage class: torch pickles them with v3
            spec = ("_rebuild_tensor_v3", ("torch.storage", "UntypedStorage"), key, array.nbytes,
                    array.shape, _contiguous_strides(array.shape), kind)
        specs.append((name, spec))
        storages.append(array.reshape(-1).view(np.uint8).data)
    writer = PickleWriter()
    try:
        writer.state_dict(specs, module_metadata=module_metadata)
    except TypeError as error:
        raise CheckpointError(path, f"has state_dict metadata torch files cannot hold: {error}",
                              entry="state_dict._metadata") from error
    pickle_data = writer.getvalue()
    with atomic_output(path) as file:
        archive = TorchArchiveWriter(file, archive_name(os.fsdecode(path)))
        archive.write_record("data.pkl", pickle_data)
        archive.write_record(".format_version", b"1")
        archive.write_record(".storage_alignment", b"64")
        archive.write_record("byteorder", b"little")
        for index, storage in enumerate(storages):
            archive.write_record(f"data/{index}", storage)
        archive.write_record("version", b"3\n")
        archive.finish()


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch's strides of a contiguous tensor (a dimension of size 0 counts as 1)."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


class _ArchiveReader:
    """The records of one open torch archive, and the state_dict they make."""

    def __init__(self, path: str | os.PathLike, archive: zipfile.ZipFile):
        self.path = path
        self.archive = archive
        infos = archive.infolist()
        if not infos:
            raise CheckpointError(path, "is an empty zip archive, not a torch.save file")
        first = infos[0].filename
        if "/" not in first:
            raise CheckpointError(path, "is not a torch.save file: its records are not in a "
                                  "folder", entry=f"zip member {first!r}")
        self.prefix = first[: first.index("/") + 1]
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.startswith(self.prefix):
                raise CheckpointError(path, f"is outside the archive folder {self.prefix!r}",
                                      entry=f"zip member {info.filename!r}")
            record = info.filename[len(self.prefix):]
            if record in self.members:
                raise CheckpointError(path, "occurs twice", entry=f"zip member {info.filename!r}")
            if info.compress_type != zipfile.ZIP_STORED:  # and no decompression bomb
                raise CheckpointError(
                    path, "is compressed; torch.save stores its records uncompressed",
                    entry=f"zip member {info.filename!r}")
            self.members[record] = info
        self._storages: dict[str, np.ndarray] = {}
        self.original_dtypes: dict[str, str] = {}
        byteorder = self.members.get("byteorder")
        if byteorder is not None:
            order = self.read_record("byteorder")
            if order != b"little":
                raise CheckpointError(
                    path, f"says the storages are {order.decode('ascii', 'replace')!r}-endian; "
                    "only little-endian files are read", entry=self.entry("byteorder"))

    def entry(self, record: str) -> str:
        return f"zip member {self.prefix + record!r}"

    def read_record(self, record: str, size: int | None = None) -> bytes:
        info = self.members.get(record)
        if info is None:
            raise CheckpointError(self.path, "is missing", entry=self.entry(record))
        if size is not None and info.file_size != size:
            raise CheckpointError(
                self.path, f"holds {info.file_size} bytes where the pickle needs {size}",
                entry=self.entry(record))
        try:
            return self.archive.read(info)
        except _ZIP_ERRORS as error:
            raise CheckpointError(self.path, f"cannot be read: truncated or corrupted ({error})",
                                  entry=self.entry(record)) from error

    def unpickle(self) -> Any:
        data = self.read_record("data.pkl")
        unpickler = RestrictedUnpickler(data, self.path, self.prefix + "data.pkl")
        try:
            return unpickler.load()
        except CheckpointError:
            raise
        except Exception as error:  # a malformed pickle fails in many ways
            raise CheckpointError(
                self.path, f"is not a valid pickle of a state_dict ({type(error).__name__}: "
                f"{error})", entry=self.entry("data.pkl")) from error

    def checkpoint(self, state: Any) -> Checkpoint:
        if not isinstance(state, dict):
            raise CheckpointError(
                self.path, f"holds {_describe(state)}, not a state_dict (a dict of tensors)",
                entry=self.entry("data.pkl"))
        tensors = {}
        for name, value in state.items():
            if type(name) is not str:
                raise CheckpointError(self.path, f"has the key {name!r}; state_dict keys are str",
                                      entry=self.entry("data.pkl"))
            tensors[name] = self.tensor(name, value)
        metadata: dict[str, Any] = {}
        module_metadata = getattr(state, "__dict__", {}).get("_metadata")
        if module_metadata is not None:
            metadata["state_dict_metadata"] = self.plain(module_metadata, 0)
        if self.original_dtypes:
            metadata["original_dtypes"] = dict(self.original_dtypes)
        return Checkpoint(tensors, "torch", metadata)

    def plain(self, value: Any, depth: int) -> Any:
        """``_metadata`` as plain dicts and scalars, or an error."""
        if value is None or type(value) in (bool, int, float, str):
            return value
        if isinstance(value, dict) and depth < _MAX_METADATA_DEPTH:
            if all(type(key) is str for key in value):
                return {key: self.plain(item, depth + 1) for key, item in value.items()}
        raise CheckpointError(self.path, f"state_dict._metadata holds {_describe(value)}; only "
                              "dicts of str keys and plain values are read",
                              entry=self.entry("data.pkl"))

    def tensor(self, name: str, record: Any) -> np.ndarray:
        """The array a rebuild record describes, as a C-contiguous copy."""
        entry = f"tensor {name!r}"
        if not isinstance(record, TensorRecord):
            raise CheckpointError(self.path, f"is {_describe(record)}, not a tensor", entry=entry)
        storage, offset, size, stride, dtype = self.arguments(record, entry)
        elements = self.elements(storage, dtype, entry)
        if int(np.prod(size, dtype=object)) == 0:
            array = np.empty(size, dtype=elements.dtype)
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= elements.size:
                raise CheckpointError(
                    self.path, f"reaches element {last} of storage {storage.key!r}, which has "
                    f"{elements.size} (offset {offset}, sizes {size}, strides {stride})",
                    entry=entry)
            view = np.lib.stride_tricks.as_strided(
                elements[offset:], shape=size,
                strides=tuple(s * elements.itemsize for s in stride), writeable=False)
            array = np.array(view, order="C")
        if dtype == "bfloat16":
            self.original_dtypes[name] = "bfloat16"
            return bfloat16_to_float32(array)
        return array

    def arguments(self, record: TensorRecord, entry: str) -> tuple:
        """(storage, offset, sizes, strides, dtype) of a rebuild call, checked."""
        args = record.args
        if record.function == "_rebuild_parameter":  # (tensor, requires_grad, hooks)
            if not (len(args) == 3 and isinstance(args[0], TensorRecord)
                    and args[0].function != "_rebuild_parameter" and type(args[1]) is bool
                    and _is_empty_mapping(args[2])):
                raise CheckpointError(
                    self.path, f"has _rebuild_parameter arguments {reprlib.repr(args)}, not "
                    "(tensor, requires_grad, empty hooks)", entry=entry)
            record, args = args[0], args[0].args
        # v2: (storage, offset, sizes, strides, requires_grad, hooks[, metadata]);
        # v3: the same with an untyped storage, then the dtype, then [metadata]
        typed = record.function == "_rebuild_tensor_v2"
        extra = args[6:] if typed else args[7:]
        dtype = None
        if not typed and len(args) >= 7 and isinstance(args[6], TorchDType):
            dtype = args[6].dtype
        storage, offset, size, stride = (args + (None,) * 4)[:4]
        if typed and isinstance(storage, StorageRef):
            dtype = storage.storage_type.dtype
        if not (
            dtype is not None and len(args) >= 6 and len(extra) <= 1
            and all(_is_empty_mapping(item, none_too=True) for item in extra)
            and isinstance(storage, StorageRef)
            and (storage.storage_type.module == "torch") == typed
            and _is_count(offset) and _is_counts(size) and _is_counts(stride)
            and len(size) == len(stride) and type(args[4]) is bool
            and _is_empty_mapping(args[5])
        ):
            raise CheckpointError(
                self.path, f"has {record.function} arguments {reprlib.repr(args)}, not those of a "
                "tensor (storage, offset, sizes, strides, requires_grad, empty hooks)",
                entry=entry)
        return storage, offset, size, stride, dtype

    def elements(self, storage: StorageRef, dtype: str, entry: str) -> np.ndarray:
        """The storage's elements as ``dtype`` (uint16 for bfloat16)."""
        numpy_dtype = CANONICAL_DTYPES[dtype]
        raw = self._storages.get(storage.key)
        if raw is None:
            typed = storage.storage_type.module == "torch"
            size = storage.numel * (numpy_dtype.itemsize if typed else 1)
            raw = np.frombuffer(self.read_record(f"data/{storage.key}", size), np.uint8)
            self._storages[storage.key] = raw
        if raw.size % numpy_dtype.itemsize:
            raise CheckpointError(
                self.path, f"reads storage {storage.key!r} of {raw.size} bytes as {dtype}, whose "
                f"elements have {numpy_dtype.itemsize}", entry=entry)
        if dtype == "bool":
            elements = bool_from_bytes(raw)
            if elements is None:
                raise CheckpointError(self.path, f"is bool but its storage {storage.key!r} holds "
                                      "bytes other than 0 and 1", entry=entry)
            return elements
        return raw.view(numpy_dtype)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_counts(value: Any) -> bool:
    return type(value) is tuple and all(_is_count(item) for item in value)


def _is_empty_mapping(value: Any, none_too: bool = False) -> bool:
    return (none_too and value is None) or (isinstance(value, dict) and not value)


def _describe(value: Any) -> str:
    if isinstance(value, TensorRecord):
        return "a tensor"
    return f"a value of type {type(value).__name__}"
