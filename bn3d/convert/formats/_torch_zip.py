"""The zip container of ``torch.save`` files: records written byte for byte as torch writes them.

torch writes its archives with miniz (``caffe2/serialize/inline_container.cc``), not
with a general zip tool. What this module reproduces, as measured with torch 2.13:

- every record is stored (no compression), under one folder, the *archive name*;
- a local header has version 0, flags ``0x0808`` (a data descriptor follows; UTF-8
  names) or ``0x0800`` for an empty record, time and date 0, and zero CRC and sizes
  (they follow in the data descriptor);
- the local header's extra field pads the data to a multiple of 64 bytes from the
  start of the file: ``b"FB"``, the padding length (2 bytes), then that many ``b"Z"``,
  after a zip64 field (id 1) when the record's size or offset reaches 4 GiB;
- a data descriptor ``PK\\x07\\x08``, CRC-32, sizes (4 bytes each, or 8 after a zip64
  field) follows every non-empty record;
- the central directory repeats the names without padding (zip64 fields only when
  needed), then a zip64 end record, its locator and the classic end record, always.

``.data/serialization_id`` is torch's 40 digits: 20 of a hash of the record names,
then 20 of torch's combination of the records' CRCs (reproduced exactly). The first
half is not torch's (torch hashes with ``std::hash`` over an unordered set); torch
only logs the id.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import BinaryIO

__all__ = ["ALIGNMENT", "TorchArchiveWriter", "archive_name"]

#: torch's storage alignment (``.storage_alignment``), in bytes.
ALIGNMENT = 64
_MAX32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1


def archive_name(path: str) -> str:
    """The folder torch puts the records of ``torch.save(obj, path)`` in.

    The file's base name without its last extension; ``"archive"`` for a path that
    is not ASCII (torch then writes through Python) or leaves no name.

    Examples
    --------
    >>> archive_name("/models/net.pth"), archive_name("a.b.pt"), archive_name("ü.pt")
    ('net', 'a.b', 'archive')
    """
    try:
        path.encode("ascii")
    except UnicodeEncodeError:
        return "archive"
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    if "." in base:
        base = base[: base.rindex(".")]
    return base or "archive"


def _zip64_field(size: int | None, compressed: int | None, offset: int | None) -> bytes:
    values = [value for value in (size, compressed, offset) if value is not None]
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


def _hash_combine(seed: int, value: int) -> int:
    """c10::hash_combine on 64-bit size_t."""
    mixed = (value + 0x9E3779B9 + ((seed << 6) & _MASK64) + (seed >> 2)) & _MASK64
    return (seed ^ mixed) & _MASK64


class TorchArchiveWriter:
    """Write records into a torch-style zip archive on a file open for writing.

    Parameters
    ----------
    file : BinaryIO
        Where the archive goes, written sequentially from its current position,
        which must be the start of the file.
    name : str
        The archive name (the folder of every record).

    Examples
    --------
    >>> import io, zipfile
    >>> buffer = io.BytesIO()
    >>> writer = TorchArchiveWriter(buffer, "net")
    >>> writer.write_record("data/0", b"1234")
    >>> writer.finish()
    >>> archive = zipfile.ZipFile(buffer)
    >>> archive.namelist()
    ['net/data/0', 'net/.data/serialization_id']
    >>> archive.read("net/data/0"), archive.infolist()[0].header_offset
    (b'1234', 0)
    >>> buffer.getvalue().index(b"1234")
    64
    """

    def __init__(self, file: BinaryIO, name: str):
        self._file = file
        self._prefix = name + "/"
        self._offset = 0
        self._central: list[bytes] = []
        self._names: list[str] = []
        self._combined_crc = 0

    def write_record(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Append one stored record, its data aligned to :data:`ALIGNMENT` bytes."""
        full_name = (self._prefix + name).encode("utf-8")
        data = memoryview(data).cast("B")
        size = data.nbytes
        offset = self._offset
        crc = zlib.crc32(data)
        big_size, big_offset = size >= _MAX32, offset >= _MAX32
        zip64_local = b""
        if big_size or big_offset:
            zip64_local = _zip64_field(
                size if big_size else None, 0 if big_size else None, offset if big_offset else None)
        data_start = offset + 30 + len(full_name) + len(zip64_local) + 4
        padding = -data_start % ALIGNMENT
        extra = zip64_local + b"FB" + struct.pack("<H", padding) + b"Z" * padding
        flags = 0x0808 if size else 0x0800
        header = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 0, flags, 0, 0, 0, 0, 0, 0, len(full_name), len(extra))
        self._write(header + full_name + extra)
        self._write(data)
        if size:
            if zip64_local:
                descriptor = struct.pack("<IIQQ", 0x08074B50, crc, size, size)
            else:
                descriptor = struct.pack("<IIII", 0x08074B50, crc, size, size)
            self._write(descriptor)
            self._combined_crc = _hash_combine(self._combined_crc, crc)
        zip64_central = b""
        if big_size or big_offset:
            zip64_central = _zip64_field(
                size if big_size else None, size if big_size else None,
                offset if big_offset else None)
        self._central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, flags, 0, 0, 0, crc,
                min(size, _MAX32), min(size, _MAX32), len(full_name), len(zip64_central),
                0, 0, 0, 0, min(offset, _MAX32))
            + full_name + zip64_central)
        self._names.append(name)

    def finish(self) -> None:
        """Write ``.data/serialization_id`` and the central directory."""
        names_digest = hashlib.sha256("\0".join(sorted(self._names)).encode("utf-8")).digest()
        names_hash = int.from_bytes(names_digest[:8], "little")
        self.write_record(".data/serialization_id",
                          f"{names_hash:020d}{self._combined_crc:020d}".encode("ascii"))
        directory = b"".join(self._central)
        directory_offset = self._offset
        self._write(directory)
        count = len(self._central)
        end64_offset = self._offset
        self._write(struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x002D, 0, 0, count, count,
            len(directory), directory_offset))
        self._write(struct.pack("<IIQI", 0x07064B50, 0, end64_offset, 1))
        self._write(struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
            min(len(directory), _MAX32), min(directory_offset, _MAX32), 0))

    def _write(self, data) -> None:
        self._file.write(data)
        self._offset += memoryview(data).nbytes
