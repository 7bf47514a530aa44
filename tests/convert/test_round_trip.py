"""Every format gives back what bn3d wrote into it: names, order, dtypes, shapes, bits."""

from __future__ import annotations

import os

import numpy as np
import pytest
from convert_helpers import assert_same_tensors, sample

from bn3d.convert.formats import (
    FORMATS,
    Checkpoint,
    CheckpointError,
    detect_format,
    read_checkpoint,
    write_checkpoint,
)

INTEGERS = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
FLOATS = ["float16", "float32", "float64", "bfloat16"]
DTYPES = {
    "torch": INTEGERS + FLOATS + ["complex64", "complex128"],
    "mindspore": INTEGERS + FLOATS,
    "torch-safetensors": INTEGERS + FLOATS + ["complex64"],
    "mindspore-safetensors": INTEGERS + FLOATS + ["complex64"],
}
SUFFIX = {"torch": ".pth", "mindspore": ".ckpt", "torch-safetensors": ".safetensors",
          "mindspore-safetensors": ".safetensors"}
CASES = [(format, dtype) for format in FORMATS for dtype in DTYPES[format]]


def tensors_of(dtype: str) -> tuple[dict, dict]:
    """A matrix, a 0-d tensor and an empty tensor of one type, and the bfloat16 marks."""
    matrix = sample(dtype)
    tensors = {"layer.0.weight": matrix, "layer.0.num_batches_tracked": matrix[1, 3].copy(),
               "layer.1.empty": matrix[:0, :3].copy()}
    marks = {name: "bfloat16" for name in tensors} if dtype == "bfloat16" else {}
    return tensors, marks


@pytest.mark.parametrize(("format", "dtype"), CASES, ids=[f"{f}-{d}" for f, d in CASES])
def test_every_dtype_survives_a_round_trip_bitwise(tmp_path, format, dtype):
    tensors, marks = tensors_of(dtype)
    path = tmp_path / f"model{SUFFIX[format]}"
    written = Checkpoint(tensors, format, {"original_dtypes": marks} if marks else {})
    write_checkpoint(path, written, format)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == format
    # safetensors stores the tensors by alignment, then name: its order is not the writer's
    assert_same_tensors(checkpoint.tensors, tensors, ordered=not format.endswith("safetensors"))
    assert checkpoint.metadata.get("original_dtypes", {}) == marks
    assert checkpoint.tensors["layer.0.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("format", FORMATS)
def test_names_with_dots_and_non_ascii_keep_their_file_order(tmp_path, format):
    tensors = {"z.last.but.first": np.ones(1, np.float32), "bn.bn2d.gamma": np.zeros(2),
               "ünïcode.weight": np.arange(3), "a": np.array(True)}
    path = tmp_path / f"ordered{SUFFIX[format]}"
    write_checkpoint(path, tensors, format)
    names = list(read_checkpoint(path).tensors)
    if format.endswith("safetensors"):  # safetensors orders the bytes by alignment, then name
        assert sorted(names) == sorted(tensors)
    else:
        assert names == list(tensors)


def test_mindspore_strings_round_trip_as_0d_unicode_arrays(tmp_path):
    path = tmp_path / "note.ckpt"
    write_checkpoint(path, {"note": np.array("bn3d ünïcode"), "empty": np.array("")}, "mindspore")
    tensors = read_checkpoint(path).tensors
    assert tensors["note"].shape == () and str(tensors["note"]) == "bn3d ünïcode"
    assert str(tensors["empty"]) == ""


@pytest.mark.parametrize("format", FORMATS)
def test_reading_gives_writable_c_contiguous_arrays(tmp_path, format):
    path = tmp_path / f"w{SUFFIX[format]}"
    write_checkpoint(path, {"w": np.arange(6.0).reshape(2, 3)}, format)
    array = read_checkpoint(path).tensors["w"]
    assert array.flags.c_contiguous and array.flags.writeable
    array[0, 0] = 7.0


@pytest.mark.parametrize("format", FORMATS)
def test_views_and_big_endian_arrays_are_written_in_c_order_little_endian(tmp_path, format):
    base = np.arange(12.0).reshape(3, 4)
    tensors = {"transposed": base.T, "strided": base[::2, 1::2],
               "big_endian": base.astype(">f8"), "listed": [[1, 2], [3, 4]]}
    path = tmp_path / f"v{SUFFIX[format]}"
    write_checkpoint(path, tensors, format)
    read = read_checkpoint(path).tensors
    for name, value in tensors.items():
        expected = np.asarray(value)
        assert read[name].dtype == expected.dtype.newbyteorder("=")
        np.testing.assert_array_equal(read[name], expected)


def test_a_checkpoint_goes_through_every_format_unchanged(tmp_path):
    tensors = {"0.weight": sample("float32"), "1.running_var": sample("float64")[0],
               "1.num_batches_tracked": np.array(7), "extra.bf16": sample("bfloat16")}
    checkpoint = Checkpoint(tensors, "torch", {"original_dtypes": {"extra.bf16": "bfloat16"}})
    for step, format in enumerate(["mindspore", "mindspore-safetensors", "torch-safetensors",
                                   "torch", "mindspore"]):
        path = tmp_path / f"{step}{SUFFIX[format]}"
        write_checkpoint(path, checkpoint, format)
        checkpoint = read_checkpoint(path)
        assert_same_tensors({name: checkpoint.tensors[name] for name in tensors}, tensors)
        assert checkpoint.metadata["original_dtypes"] == {"extra.bf16": "bfloat16"}


def test_torch_module_metadata_goes_back_into_torch_files_only(tmp_path):
    versions = {"": {"version": 1}, "0": {"version": 1}, "1": {"version": 2}}
    torch_checkpoint = Checkpoint({"1.weight": np.ones(2)}, "torch",
                                  {"state_dict_metadata": versions})
    write_checkpoint(tmp_path / "a.pth", torch_checkpoint, "torch")
    assert read_checkpoint(tmp_path / "a.pth").metadata == {"state_dict_metadata": versions}
    write_checkpoint(tmp_path / "a.ckpt", torch_checkpoint, "mindspore")
    write_checkpoint(tmp_path / "b.pth", read_checkpoint(tmp_path / "a.ckpt"), "torch")
    assert read_checkpoint(tmp_path / "b.pth").metadata == {}


@pytest.mark.parametrize("versions", [{"": {"version": object()}}, {0: {"version": 1}},
                                      {"": {1: 2}}])
def test_torch_module_metadata_that_is_not_plain_data_is_refused(tmp_path, versions):
    checkpoint = Checkpoint({"w": np.ones(1)}, "torch", {"state_dict_metadata": versions})
    with pytest.raises(CheckpointError, match="metadata torch files cannot hold") as raised:
        write_checkpoint(tmp_path / "a.pth", checkpoint, "torch")
    assert raised.value.entry == "state_dict._metadata"
    assert os.listdir(tmp_path) == []


def test_safetensors_metadata_stays_within_its_own_format(tmp_path):
    source = Checkpoint({"w": np.ones(1)}, "torch-safetensors",
                        {"safetensors_metadata": {"format": "pt", "note": "kept"}})
    write_checkpoint(tmp_path / "a.safetensors", source, "torch-safetensors")
    assert read_checkpoint(tmp_path / "a.safetensors").metadata == {
        "safetensors_metadata": {"format": "pt", "note": "kept"}}
    write_checkpoint(tmp_path / "b.safetensors", source, "mindspore-safetensors")
    assert read_checkpoint(tmp_path / "b.safetensors").metadata == {
        "safetensors_metadata": {"format": "ms"}}


@pytest.mark.parametrize("format", ["mindspore", "mindspore-safetensors"])
def test_a_crc_is_written_again_by_default_when_the_file_read_had_one(tmp_path, format):
    path = tmp_path / f"a{SUFFIX[format]}"
    write_checkpoint(path, {"w": np.ones(3, np.float32)}, format, crc_check=True)
    checkpoint = read_checkpoint(path)
    assert "crc32" in checkpoint.metadata
    write_checkpoint(tmp_path / f"again{SUFFIX[format]}", checkpoint, format)
    again = read_checkpoint(tmp_path / f"again{SUFFIX[format]}")
    assert again.metadata["crc32"] == checkpoint.metadata["crc32"]
    write_checkpoint(tmp_path / f"none{SUFFIX[format]}", checkpoint, format, crc_check=False)
    assert "crc32" not in read_checkpoint(tmp_path / f"none{SUFFIX[format]}").metadata


def test_the_mindspore_crc_trailer_is_the_crc_of_everything_before_it(tmp_path):
    import zlib

    write_checkpoint(tmp_path / "a.ckpt", {"w": np.ones(3, np.float32)}, "mindspore",
                     crc_check=True)
    data = (tmp_path / "a.ckpt").read_bytes()
    assert data[-17:-10] == b"crc_num"
    assert data[-10:] == zlib.crc32(data[:-17]).to_bytes(10, "big")


@pytest.mark.parametrize("format", FORMATS)
def test_the_format_is_recognised_from_the_content_whatever_the_name(tmp_path, format):
    path = tmp_path / "no_extension"
    write_checkpoint(path, {"w": np.ones(1, np.float32)}, format)
    assert detect_format(path) == format
    assert read_checkpoint(path).format == format


def test_an_explicit_safetensors_flavour_is_honoured(tmp_path):
    write_checkpoint(tmp_path / "a.safetensors", {"w": np.ones(1)}, "mindspore-safetensors")
    assert read_checkpoint(tmp_path / "a.safetensors", "torch-safetensors").format == (
        "torch-safetensors")


@pytest.mark.parametrize(("format", "value", "problem"), [
    ("torch", np.array("text"), "is a string"),
    ("mindspore", np.ones(2, np.complex64), "has no type for"),
    ("torch-safetensors", np.ones(2, np.complex128), "cannot hold"),
    ("mindspore", np.array([object()]), "unsupported element type"),
])
def test_a_tensor_the_format_cannot_hold_is_refused_and_nothing_is_written(
        tmp_path, format, value, problem):
    path = tmp_path / "out.bin"
    with pytest.raises(CheckpointError, match=problem) as raised:
        write_checkpoint(path, {"fine": np.ones(2), "bad.tensor": value}, format)
    assert raised.value.entry == "tensor 'bad.tensor'" and raised.value.path == str(path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("format", FORMATS)
def test_a_bfloat16_mark_on_values_that_are_not_bfloat16_is_refused(tmp_path, format):
    checkpoint = Checkpoint({"w": np.array([0.1], np.float32)}, "torch",
                            {"original_dtypes": {"w": "bfloat16"}})
    with pytest.raises(CheckpointError, match="not bfloat16 numbers"):
        write_checkpoint(tmp_path / "out", checkpoint, format)
    assert os.listdir(tmp_path) == []


def test_crc_check_is_refused_for_torch_formats(tmp_path):
    with pytest.raises(ValueError, match="crc_check"):
        write_checkpoint(tmp_path / "a.pth", {"w": np.ones(1)}, "torch", crc_check=True)


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        write_checkpoint(tmp_path / "a", {"w": np.ones(1)}, "onnx")
    with pytest.raises(ValueError, match="format must be one of"):
        Checkpoint({}, "onnx")
