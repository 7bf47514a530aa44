"""Files written by the real frameworks (tests/data/convert) are read exactly, without them.

``fixtures.json`` records what each framework holds in each file (dtype, shape, SHA-256
of the values), as ``make_fixtures.py`` saw it. bn3d must read the same, bit for bit,
in either test environment, and writing what it read must give the framework's bytes.
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest
from convert_helpers import FIXTURES, described, manifest

from bn3d.convert.formats import mindspore_ckpt, read_checkpoint, write_checkpoint
from bn3d.convert.formats._torch_zip import TorchArchiveWriter

FORMATS = {
    "torch_net.pth": "torch", "torch_dtypes.pt": "torch",
    "torch_net.safetensors": "torch-safetensors",
    "mindspore_net.ckpt": "mindspore", "mindspore_net_crc.ckpt": "mindspore",
    "mindspore_dtypes.ckpt": "mindspore", "mindspore_sliced.ckpt": "mindspore",
    "mindspore_net.safetensors": "mindspore-safetensors",
    "torch_convnet.pth": "torch", "mindspore_convnet.ckpt": "mindspore",
}


def test_every_fixture_is_in_the_manifest():
    assert sorted(manifest()) == sorted(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_fixtures_are_read_as_their_framework_holds_them(name):
    checkpoint = read_checkpoint(FIXTURES / name)
    assert checkpoint.format == FORMATS[name]
    expected = manifest()[name]
    actual = described(checkpoint)
    if FORMATS[name].endswith("safetensors"):  # safetensors keeps no order of its own
        actual, expected = dict(sorted(actual.items())), dict(sorted(expected.items()))
    assert list(actual.items()) == list(expected.items())


def test_the_torch_fixture_keeps_its_module_versions():
    metadata = read_checkpoint(FIXTURES / "torch_net.pth").metadata
    assert metadata["state_dict_metadata"] == {
        "": {"version": 1}, "0": {"version": 1}, "1": {"version": 2}}


def test_the_torch_fixture_of_views_reads_offsets_strides_and_shared_storages():
    tensors = read_checkpoint(FIXTURES / "torch_dtypes.pt").tensors
    base = (-2.0 + 0.375 * np.arange(12)).reshape(3, 4)
    assert (tensors["transposed"] == base.T).all()
    assert (tensors["window"] == base[1:, 1:3]).all()


def test_rewriting_the_torch_fixture_gives_torch_bytes_but_20_digits_of_its_id(tmp_path):
    """Records, offsets, padding, descriptors, pickle, central directory: as torch wrote them.

    Only the first 20 digits of ``.data/serialization_id`` (torch hashes the record names
    with ``std::hash`` over an unordered set) and that record's CRC differ.
    """
    theirs_path, ours_path = FIXTURES / "torch_net.pth", tmp_path / "torch_net.pth"
    write_checkpoint(ours_path, read_checkpoint(theirs_path), "torch")
    theirs, ours = theirs_path.read_bytes(), ours_path.read_bytes()
    assert len(ours) == len(theirs)
    archive = zipfile.ZipFile(ours_path)
    identifier = archive.getinfo("torch_net/.data/serialization_id")
    data_at = identifier.header_offset + 30 + len(identifier.filename) + struct.unpack(
        "<H", ours[identifier.header_offset + 28:identifier.header_offset + 30])[0]
    central_at = ours.rindex(b"PK\x01\x02")  # the last entry is the identifier's
    may_differ = (set(range(data_at, data_at + 20))  # the name hash digits
                  | set(range(data_at + 44, data_at + 48))  # CRC in the data descriptor
                  | set(range(central_at + 16, central_at + 20)))  # CRC in the directory
    differing = {index for index, (a, b) in enumerate(zip(ours, theirs)) if a != b}
    assert differing <= may_differ
    assert ours[data_at + 20:data_at + 40] == theirs[data_at + 20:data_at + 40]


def id_digits_at(data: bytes, path) -> int:
    """Where the digits of ``.data/serialization_id`` start in a torch file."""
    archive = zipfile.ZipFile(path)
    info = next(info for info in archive.infolist() if info.filename.endswith("serialization_id"))
    extra = struct.unpack("<H", data[info.header_offset + 28:info.header_offset + 30])[0]
    return info.header_offset + 30 + len(info.filename) + extra


@pytest.mark.parametrize("name", ["torch_net.pth", "torch_dtypes.pt"])
def test_the_archive_writer_rebuilds_torch_archives_from_their_records(tmp_path, name):
    """Given torch's own records, the container is torch's, byte for byte: headers, the
    64-byte padding, data descriptors (none for an empty storage), central directory,
    zip64 end records; the combined-CRC half of the serialization id included."""
    theirs = (FIXTURES / name).read_bytes()
    archive = zipfile.ZipFile(FIXTURES / name)
    stem = archive.namelist()[0].split("/")[0]
    with open(tmp_path / name, "wb") as file:
        writer = TorchArchiveWriter(file, stem)
        for info in archive.infolist()[:-1]:  # all but .data/serialization_id
            writer.write_record(info.filename[len(stem) + 1:], archive.read(info))
        writer.finish()
    ours = (tmp_path / name).read_bytes()
    digits = id_digits_at(ours, tmp_path / name)
    assert digits == id_digits_at(theirs, FIXTURES / name)
    assert ours[:digits] == theirs[:digits]
    assert ours[digits + 20:digits + 40] == theirs[digits + 20:digits + 40]
    central_at = ours.rindex(b"PK\x01\x02")  # the identifier's entry, CRC at +16
    assert ours[digits + 48:central_at + 16] == theirs[digits + 48:central_at + 16]
    assert ours[central_at + 20:] == theirs[central_at + 20:]


@pytest.mark.parametrize("name", ["mindspore_net.ckpt", "mindspore_net_crc.ckpt",
                                  "mindspore_dtypes.ckpt", "mindspore_sliced.ckpt",
                                  "mindspore_net.safetensors"])
def test_rewriting_a_mindspore_fixture_gives_mindspore_bytes(tmp_path, monkeypatch, name):
    if name == "mindspore_sliced.ckpt":  # written by MindSpore with 1 KiB slices
        monkeypatch.setattr(mindspore_ckpt, "SLICE_BYTES", 1024)
    out = tmp_path / name
    checkpoint = read_checkpoint(FIXTURES / name)
    write_checkpoint(out, checkpoint, checkpoint.format)
    assert out.read_bytes() == (FIXTURES / name).read_bytes()


def test_the_sliced_fixture_has_four_slices_of_one_parameter():
    data = (FIXTURES / "mindspore_sliced.ckpt").read_bytes()
    entries = list(mindspore_ckpt._entries("f", memoryview(data[:-17])))
    assert len(entries) == 5  # big: 4000 bytes in 1024-byte pieces, then small
    assert read_checkpoint(FIXTURES / "mindspore_sliced.ckpt").tensors["big"].shape == (10, 100)
