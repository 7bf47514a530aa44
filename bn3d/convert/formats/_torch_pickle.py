"""The pickle of a ``torch.save`` file (``data.pkl``): a restricted reader and an exact writer.

Reading. A state_dict's pickle names only a few globals: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` (``_rebuild_tensor_v3`` with
``torch.storage.UntypedStorage`` and a ``torch.<dtype>`` for the unsigned types
uint16/32/64), ``torch._utils._rebuild_parameter`` (a state_dict saved with
``keep_vars=True``) and the storage classes ``torch.FloatStorage`` and the like, and
refers to storages through persistent ids ``("storage", storage_class, key, location,
numel)``. :class:`RestrictedUnpickler` resolves exactly these names, to inert
stand-ins defined here: any other global (``os.system``, ``builtins.eval``, numpy's
reconstructors...) is refused when the pickle names it, before anything is called.
Tensors come out as :class:`TensorRecord`, which only remember their arguments;
the caller checks them and reads the storages.

Writing. :class:`PickleWriter` emits the opcodes CPython's pickler (protocol 2) emits
for a torch state_dict, memo entries included, so that ``data.pkl`` is the one torch
writes for the same tensors when each has a contiguous storage of its own (what bn3d
writes: views sharing a storage are written as copies).
"""

from __future__ import annotations

import io
import os
import pickle
import reprlib
import struct
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ._checkpoint import CheckpointError

__all__ = [
    "STORAGE_TYPES",
    "TORCH_DTYPES",
    "PickleWriter",
    "RestrictedUnpickler",
    "StorageRef",
    "StorageType",
    "TensorRecord",
    "TorchDType",
]


class _Inert:
    """A stand-in object that a pickle may not modify (no BUILD)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on {type(self).__name__} is not allowed")


class StorageType(_Inert):
    """A torch storage class as a pickle names it, such as ``torch.FloatStorage``."""

    __slots__ = ("name", "dtype", "module")

    def __init__(self, module: str, name: str, dtype: str):
        self.module, self.name, self.dtype = module, name, dtype

    def __repr__(self):
        return f"{self.module}.{self.name}"


class TorchDType(_Inert):
    """A torch dtype as a pickle names it, such as ``torch.uint16``."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: str):
        self.dtype = dtype

    def __repr__(self):
        return f"torch.{self.dtype}"


class StorageRef(_Inert):
    """A storage of the archive: ``data/<key>``, ``numel`` elements of ``storage_type``."""

    __slots__ = ("storage_type", "key", "location", "numel")

    def __init__(self, storage_type: StorageType, key: str, location: str, numel: int):
        self.storage_type, self.key, self.location, self.numel = (
            storage_type, key, location, numel)


class TensorRecord(_Inert):
    """The arguments a pickle gave a tensor rebuild function; checked by the caller."""

    __slots__ = ("function", "args")

    def __init__(self, function: str, args: tuple):
        self.function, self.args = function, args


def _storage_types() -> dict[str, StorageType]:
    names = {
        "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
        "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
        "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
        "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
        "ComplexDoubleStorage": "complex128",
    }
    return {dtype: StorageType("torch", name, dtype) for name, dtype in names.items()}


#: The typed storage class of each canonical dtype that has one.
STORAGE_TYPES = _storage_types()
UNTYPED_STORAGE = StorageType("torch.storage", "UntypedStorage", "uint8")
#: The torch dtypes a ``_rebuild_tensor_v3`` may name.
TORCH_DTYPES = {
    name: TorchDType(name)
    for name in ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                 "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128")
}


def _rebuild_tensor_v2(*args):
    return TensorRecord("_rebuild_tensor_v2", args)


def _rebuild_tensor_v3(*args):
    return TensorRecord("_rebuild_tensor_v3", args)


def _rebuild_parameter(*args):
    return TensorRecord("_rebuild_parameter", args)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): UNTYPED_STORAGE,
    **{("torch", storage.name): storage for storage in STORAGE_TYPES.values()},
    **{("torch", name): dtype for name, dtype in TORCH_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickle a torch state_dict's ``data.pkl``, resolving only a state_dict's globals.

    Parameters
    ----------
    data : bytes
        The pickle.
    path : str or os.PathLike
        The checkpoint file, for error messages.
    member : str
        The zip member the pickle comes from, for error messages.

    Examples
    --------
    >>> import pickle
    >>> RestrictedUnpickler(pickle.dumps({"a": 1}, protocol=2), "f.pth", "f/data.pkl").load()
    {'a': 1}
    >>> hostile = b"cos\\nsystem\\n(S'echo hacked'\\ntR."
    >>> RestrictedUnpickler(hostile, "f.pth", "f/data.pkl").load()
    Traceback (most recent call last):
    ...
    bn3d.convert.formats.CheckpointError: f.pth, zip member 'f/data.pkl': \
names the global os.system, which a state_dict does not use; refused, nothing was executed
    """

    def __init__(self, data: bytes, path: str | os.PathLike, member: str):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._entry = f"zip member {member!r}"
        self._storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise CheckpointError(
                self._path, f"names the global {module}.{name}, which a state_dict does not use; "
                "refused, nothing was executed", entry=self._entry)
        return allowed

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (
            type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"
            and isinstance(pid[1], StorageType) and type(pid[2]) is str
            and type(pid[3]) is str and type(pid[4]) is int and pid[4] >= 0
        ):
            raise CheckpointError(
                self._path, f"has the persistent id {reprlib.repr(pid)}, which is not a storage "
                "('storage', storage class, key, location, numel)", entry=self._entry)
        _, storage_type, key, location, numel = pid
        known = self._storages.get(key)
        if known is None:
            known = self._storages[key] = StorageRef(storage_type, key, location, numel)
        elif known.storage_type is not storage_type or known.numel != numel:
            raise CheckpointError(
                self._path, f"uses storage {key!r} both as {known.numel} x {known.storage_type} "
                f"and as {numel} x {storage_type}", entry=self._entry)
        return known


class PickleWriter:
    """Emit a torch state_dict pickle (protocol 2) as CPython's pickler does for torch.

    Memo entries follow CPython's pickler: every string, tuple, dict and reduced
    object gets one, globals and the strings torch shares between tensors (the
    ``"storage"`` tag, the location, the ``"version"`` keys of ``_metadata``) are
    written once and fetched afterwards.

    Examples
    --------
    >>> import pickle, pickletools
    >>> writer = PickleWriter()
    >>> writer.state_dict([], module_metadata={"": {"version": 1}})
    >>> data = writer.getvalue()
    >>> result = pickle.loads(data)
    >>> result, result._metadata
    (OrderedDict(), OrderedDict([('', {'version': 1})]))
    """

    _BATCH = 1000  # CPython's pickler batches SETITEMS by 1000

    def __init__(self):
        self._out = bytearray(b"\x80\x02")
        self._memo: dict[Any, int] = {}
        self._memo_size = 0

    def getvalue(self) -> bytes:
        """The pickle, with its STOP opcode."""
        return bytes(self._out) + b"."

    def state_dict(
        self,
        tensors: list[tuple[str, tuple]],
        module_metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """An OrderedDict of tensors, with ``_metadata`` when given.

        Each tensor is ``(name, (function, storage_class, key, numel, size, stride,
        dtype))``: ``function`` is ``"_rebuild_tensor_v2"`` or ``"_rebuild_tensor_v3"``
        (which takes the torch ``dtype`` name; None for v2).
        """
        self._global("collections", "OrderedDict")
        self._out += b")R"
        self._put()
        self._items([(lambda name=name: self._string(name),
                      lambda spec=spec: self._tensor(*spec)) for name, spec in tensors])
        if module_metadata is not None:
            self._out += b"}"
            self._put()
            self._string("_metadata")
            self._global("collections", "OrderedDict")
            self._out += b")R"
            self._put()
            self._items([(lambda prefix=prefix: self._string(prefix),
                          lambda value=value: self._value(value))
                         for prefix, value in module_metadata.items()])
            self._out += b"sb"

    def _tensor(self, function, storage_class, key, numel, size, stride, dtype):
        self._global("torch._utils", function)
        self._out += b"("
        self._out += b"("  # the persistent id
        self._string("storage", shared=True)
        self._global(*storage_class)
        self._string(key, shared=True)
        self._string("cpu", shared=True)
        self._int(numel)
        self._out += b"t"
        self._put()
        self._out += b"Q"
        self._int(0)
        self._tuple_of_ints(size)
        self._tuple_of_ints(stride)
        self._out += b"\x89"  # requires_grad=False
        self._global("collections", "OrderedDict")
        self._out += b")R"  # backward hooks: an empty OrderedDict
        self._put()
        if dtype is not None:
            self._global("torch", dtype)
        self._out += b"t"
        self._put()
        self._out += b"R"
        self._put()

    def _items(self, items):
        for start in range(0, len(items), self._BATCH):
            batch = items[start:start + self._BATCH]
            if len(batch) > 1:
                self._out += b"("
            for save_key, save_value in batch:
                save_key()
                save_value()
            self._out += b"u" if len(batch) > 1 else b"s"

    def _value(self, value):
        if value is None:
            self._out += b"N"
        elif value is True or value is False:
            self._out += b"\x88" if value else b"\x89"
        elif type(value) is int:
            self._int(value)
        elif type(value) is float:
            self._out += b"G" + struct.pack(">d", value)
        elif type(value) is str:
            self._string(value)
        elif isinstance(value, Mapping):
            self._out += b"}"
            self._put()
            self._items([(lambda key=key: self._string(key, shared=True),
                          lambda item=item: self._value(item)) for key, item in value.items()])
        else:
            raise TypeError(f"cannot write {type(value).__name__} values into _metadata")

    def _global(self, module: str, name: str):
        if not self._get(("global", module, name)):
            self._out += f"c{module}\n{name}\n".encode("ascii")
            self._put(("global", module, name))

    def _string(self, text: str, shared: bool = False):
        if type(text) is not str:
            raise TypeError(f"cannot write {type(text).__name__} keys into _metadata")
        if shared and self._get(("str", text)):
            return
        encoded = text.encode("utf-8", "surrogatepass")
        self._out += b"X" + struct.pack("<I", len(encoded)) + encoded
        self._put(("str", text) if shared else None)

    def _tuple_of_ints(self, values):
        values = tuple(values)
        if not values:
            self._out += b")"
            return
        if len(values) > 3:
            self._out += b"("
        for value in values:
            self._int(value)
        self._out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")
        self._put()

    def _int(self, value: int):
        if 0 <= value <= 0xFF:
            self._out += b"K" + bytes([value])
        elif 0 <= value <= 0xFFFF:
            self._out += b"M" + struct.pack("<H", value)
        elif -0x80000000 <= value <= 0x7FFFFFFF:
            self._out += b"J" + struct.pack("<i", value)
        else:
            encoded = pickle.encode_long(value)
            self._out += b"\x8a" + bytes([len(encoded)]) + encoded

    def _put(self, key=None):
        index = self._memo_size
        self._memo_size += 1
        if key is not None:
            self._memo[key] = index
        self._out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def _get(self, key) -> bool:
        index = self._memo.get(key)
        if index is None:
            return False
        self._out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)
        return True
