"""Bad and hostile files: a CheckpointError naming the file and the entry; nothing executed."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from convert_helpers import FIXTURES, Payload, payloads, torch_file

from bn3d.convert.formats import CheckpointError, mindspore_ckpt, read_checkpoint, write_checkpoint
from bn3d.convert.formats._torch_pickle import PickleWriter


def tensor_pickle(numel, size, stride, offset=0, storage=("torch", "FloatStorage")) -> bytes:
    """A state_dict pickle of one tensor 'w', as torch writes it, with chosen geometry."""
    writer = PickleWriter()
    writer.state_dict([("w", ("_rebuild_tensor_v2", storage, "0", numel, size, stride, None))])
    data = writer.getvalue()
    if offset:  # the storage offset is the BININT1 0 right after BINPERSID
        at = data.index(b"Q") + 1
        data = data[:at] + b"K" + bytes([offset]) + data[at + 2:]
    return data


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval",
                                     "numpy reconstruct", "subprocess.Popen"])
def test_a_pickle_naming_any_other_global_is_refused_without_running_it(
        tmp_path, protocol, payload):
    marker = tmp_path / "pwned"
    state = OrderedDict(w=payloads(marker)[payload])
    path = torch_file(tmp_path / "evil.pth", pickle.dumps(state, protocol=protocol))
    with pytest.raises(CheckpointError, match="names the global .*nothing was executed") as raised:
        read_checkpoint(path)
    assert raised.value.path == str(path)
    assert raised.value.entry == "zip member 'evil/data.pkl'"
    assert not marker.exists()


def test_the_refusal_names_the_forbidden_global(tmp_path):
    path = torch_file(tmp_path / "evil.pth", b"cos\nsystem\n(S'touch pwned'\ntR.")
    with pytest.raises(CheckpointError, match=r"global os\.system"):
        read_checkpoint(path)


def test_build_on_a_tensor_is_refused(tmp_path):
    data = tensor_pickle(2, (2,), (1,))
    data = data[:-2] + b"}b" + data[-2:]  # BUILD the last object, the tensor, before SETITEM
    path = torch_file(tmp_path / "b.pth", data, [("0", bytes(8))])
    with pytest.raises(CheckpointError, match="not a valid pickle"):
        read_checkpoint(path)


VALID = tensor_pickle(2, (2,), (1,))
DEEP = b"]" * 100_000 + b"a" * 99_999  # a list nested 100000 deep


@pytest.mark.parametrize(("old", "new", "problem"), [
    (b"\x89h\x00", b"K\x01h\x00", "requires_grad"),  # requires_grad=1, not a bool
    (b"h\x00)Rq\x0b", b"h\x00)Rq\x0bX\x01\x00\x00\x00kK\x01s", "empty hooks"),  # hooks
    (b"QK\x00", b"QJ\xff\xff\xff\xff", "offset"),  # storage offset -1
    (b"K\x01\x85q\x0a", b"K\x01K\x01\x86q\x0a", "strides"),  # 2 strides for 1 size
    (b"q\x0bt", b"q\x0b}X\x01\x00\x00\x00kK\x01st", "empty hooks"),  # tensor metadata
    (b"K\x02\x85q\t", DEEP + b"\x85q\t", "sizes"),  # sizes nested too deep to print
    (b"_rebuild_tensor_v2\nq\x03", b"_rebuild_tensor_v3\nq\x03", "_rebuild_tensor_v3"),
    (b"q\x0bt", b"q\x0bctorch\nfloat32\nt", "_rebuild_tensor_v2 arguments"),
])
def test_arguments_that_do_not_describe_a_tensor_are_refused(tmp_path, old, new, problem):
    assert VALID.count(old) == 1
    path = torch_file(tmp_path / "args.pth", VALID.replace(old, new), [("0", bytes(8))])
    with pytest.raises(CheckpointError, match=problem) as raised:
        read_checkpoint(path)
    assert raised.value.entry == "tensor 'w'"


def test_the_valid_pickle_those_mutations_start_from_is_read(tmp_path):
    path = torch_file(tmp_path / "valid.pth", VALID, [("0", bytes(8))])
    assert read_checkpoint(path).tensors["w"].tolist() == [0.0, 0.0]


def test_a_parameter_of_something_else_than_a_tensor_is_refused(tmp_path):
    data = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_parameter\n"
            b"(K\x01\x89ccollections\nOrderedDict\n)RtRs.")
    with pytest.raises(CheckpointError, match="_rebuild_parameter arguments"):
        read_checkpoint(torch_file(tmp_path / "param.pth", data))


def test_a_compressed_record_is_refused(tmp_path):
    source = zipfile.ZipFile(FIXTURES / "torch_net.pth")
    with zipfile.ZipFile(tmp_path / "deflated.pth", "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    with pytest.raises(CheckpointError, match="is compressed") as raised:
        read_checkpoint(tmp_path / "deflated.pth")
    assert raised.value.entry == "zip member 'torch_net/data.pkl'"


class PersistentPickler(pickle.Pickler):
    def __init__(self, file, pid):
        super().__init__(file, protocol=2)
        self.pid = pid

    def persistent_id(self, obj):
        return self.pid if isinstance(obj, Payload) else None


@pytest.mark.parametrize("pid", ["data/0", ("storage", "FloatStorage", "0", "cpu", 2),
                                 ("storage", OrderedDict, "0", "cpu", 2),
                                 ("module", OrderedDict, "0", "cpu", 2),
                                 ("storage", OrderedDict, "0", "cpu", -1)])
def test_a_persistent_id_that_is_not_a_storage_is_refused(tmp_path, pid):
    buffer = io.BytesIO()
    PersistentPickler(buffer, pid).dump(OrderedDict(w=Payload(print)))
    path = torch_file(tmp_path / "pid.pth", buffer.getvalue())
    with pytest.raises(CheckpointError, match="persistent id .* not a storage") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "zip member 'evil/data.pkl'"


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_a_truncated_torch_file_is_refused(tmp_path, keep):
    data = (FIXTURES / "torch_net.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="zip archive") as raised:
        read_checkpoint(path, "torch")
    assert raised.value.path == str(path)


def test_a_damaged_storage_is_refused_naming_its_member(tmp_path):
    data = bytearray((FIXTURES / "torch_net.pth").read_bytes())
    start = data.index(b"torch_net/data/2") + len("torch_net/data/2")
    start += 4 + struct.unpack("<H", data[start + 2:start + 4])[0]  # past the padding field
    data[start] ^= 0xFF
    path = tmp_path / "damaged.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupted") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "zip member 'torch_net/data/2'"


@pytest.mark.parametrize(("numel", "size", "stride", "offset", "stored", "problem"), [
    (4, (2, 3), (3, 1), 0, 16, "reaches element 5 of storage '0', which has 4"),
    (6, (2, 3), (3, 1), 1, 24, "reaches element 6 of storage '0', which has 6"),
    (6, (2, 3), (3, 1), 0, 20, "holds 20 bytes where the pickle needs 24"),
])
def test_sizes_that_do_not_fit_the_storage_are_refused(
        tmp_path, numel, size, stride, offset, stored, problem):
    path = torch_file(tmp_path / "geometry.pth", tensor_pickle(numel, size, stride, offset),
                      [("0", bytes(stored))])
    with pytest.raises(CheckpointError, match=problem) as raised:
        read_checkpoint(path)
    assert raised.value.entry in ("tensor 'w'", "zip member 'evil/data/0'")


def test_a_missing_storage_is_refused(tmp_path):
    path = torch_file(tmp_path / "missing.pth", tensor_pickle(2, (2,), (1,)))
    with pytest.raises(CheckpointError, match="is missing") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "zip member 'evil/data/0'"


def test_bool_storage_bytes_other_than_0_and_1_are_refused(tmp_path):
    path = torch_file(tmp_path / "bool.pth",
                      tensor_pickle(2, (2,), (1,), storage=("torch", "BoolStorage")),
                      [("0", b"\x01\x07")])
    with pytest.raises(CheckpointError, match="other than 0 and 1"):
        read_checkpoint(path)


def test_a_big_endian_torch_file_is_refused(tmp_path):
    path = torch_file(tmp_path / "big.pth", tensor_pickle(1, (1,), (1,)), [("0", bytes(4))],
                      byteorder=b"big")
    with pytest.raises(CheckpointError, match="only little-endian") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "zip member 'evil/byteorder'"


@pytest.mark.parametrize(("state", "problem", "entry"), [
    ([1, 2], "holds a value of type list, not a state_dict", "zip member 'evil/data.pkl'"),
    ({"epoch": 3}, "is a value of type int, not a tensor", "tensor 'epoch'"),
    ({"nested": {"w": 1}}, "is a value of type dict, not a tensor", "tensor 'nested'"),
    ({1: 2}, "state_dict keys are str", "zip member 'evil/data.pkl'"),
])
def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path, state, problem, entry):
    path = torch_file(tmp_path / "state.pth", pickle.dumps(state, protocol=2))
    with pytest.raises(CheckpointError, match=problem) as raised:
        read_checkpoint(path)
    assert raised.value.entry == entry


def test_a_legacy_torch_file_is_refused_by_name(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.")
    with pytest.raises(CheckpointError, match="legacy"):
        read_checkpoint(path)


def value_message(tag, dims, tensor_type, content) -> bytes:
    """One serialized MindSpore Checkpoint message with one Value."""
    checkpoint_class, _ = mindspore_ckpt._message_classes()
    message = checkpoint_class()
    value = message.value.add()
    value.tag = tag
    value.tensor.dims.extend(dims)
    value.tensor.tensor_type = tensor_type
    value.tensor.tensor_content = content
    return message.SerializeToString()


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_mindspore_file_is_refused_naming_the_entry(tmp_path, keep):
    data = (FIXTURES / "mindspore_net.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated|not a valid Checkpoint.Value") as raised:
        read_checkpoint(path, "mindspore")
    assert raised.value.entry.startswith("protobuf entry")


def test_a_truncated_mindspore_entry_is_named_by_its_tag(tmp_path):
    data = value_message("bn.gamma", [3], "Float32", bytes(12))
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointError, match="the file is truncated") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "protobuf entry 0 at byte 0 (tag 'bn.gamma')"


@pytest.mark.parametrize("where", ["content", "trailer"])
def test_a_bad_crc_is_refused(tmp_path, where):
    data = bytearray((FIXTURES / "mindspore_net_crc.ckpt").read_bytes())
    data[40 if where == "content" else -1] ^= 0x01
    path = tmp_path / "bad.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="the file is damaged") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "CRC trailer"


@pytest.mark.parametrize(("tensor_type", "problem"), [
    ("Float33", "unknown tensor_type 'Float33'; MindSpore's are BFloat16, Bool"),
    ("float32", "unknown tensor_type 'float32'"),
    ("Int4", "two 4-bit numbers per byte"),
])
def test_a_wrong_tensor_type_is_refused(tmp_path, tensor_type, problem):
    path = tmp_path / "type.ckpt"
    path.write_bytes(value_message("w", [2], tensor_type, bytes(8)))
    with pytest.raises(CheckpointError, match=problem) as raised:
        read_checkpoint(path)
    assert raised.value.entry == "tag 'w'"


@pytest.mark.parametrize(("dims", "content", "problem"), [
    ([2, 3], bytes(20), "holds 20 bytes where dims \\[2, 3\\] of Float32 need 24"),
    ([], bytes(8), "holds 8 bytes where dims \\[\\] of Float32 need 4"),
    ([0], bytes(4), "holds 4 bytes where dims \\[0\\] of Float32 need 0"),
    ([-1, 2], bytes(8), "negative dims"),
])
def test_dims_that_do_not_match_the_content_are_refused(tmp_path, dims, content, problem):
    path = tmp_path / "dims.ckpt"
    path.write_bytes(value_message("w", dims, "Float32", content))
    with pytest.raises(CheckpointError, match=problem):
        read_checkpoint(path)


def test_a_tag_repeated_after_other_tags_is_refused(tmp_path):
    path = tmp_path / "dup.ckpt"
    path.write_bytes(value_message("w", [1], "Float32", bytes(4))
                     + value_message("b", [1], "Float32", bytes(4))
                     + value_message("w", [1], "Float32", bytes(4)))
    with pytest.raises(CheckpointError, match="repeats a tag") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "protobuf entry 2 at byte 48"  # after two 24-byte messages


def test_adjacent_entries_of_one_tag_must_add_up_to_one_parameter(tmp_path):
    whole = value_message("w", [2], "Float32", bytes(8))
    path = tmp_path / "twice.ckpt"
    path.write_bytes(whole + whole)
    with pytest.raises(CheckpointError, match="holds 16 bytes where dims \\[2\\]") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "tag 'w' (2 slices)"


def test_adjacent_slices_with_different_dims_are_refused(tmp_path):
    path = tmp_path / "slices.ckpt"
    path.write_bytes(value_message("w", [2], "Float32", bytes(4))
                     + value_message("w", [1], "Float32", bytes(4)))
    with pytest.raises(CheckpointError, match="the slices are not one parameter"):
        read_checkpoint(path)


def test_a_map_tensor_is_refused_by_name(tmp_path):
    checkpoint_class, _ = mindspore_ckpt._message_classes()
    message = checkpoint_class()
    value = message.value.add()
    value.tag = "embedding"
    value.maptensor.tensor.add(tensor_type="Int64", tensor_content=b"")
    path = tmp_path / "map.ckpt"
    path.write_bytes(message.SerializeToString())
    with pytest.raises(CheckpointError, match="map tensor") as raised:
        read_checkpoint(path)
    assert raised.value.entry == "protobuf entry 0 at byte 0 (tag 'embedding')"


def test_a_file_that_is_no_protobuf_is_refused(tmp_path):
    path = tmp_path / "random.ckpt"
    path.write_bytes(bytes(range(7, 200)))
    with pytest.raises(CheckpointError, match="not a MindSpore checkpoint"):
        read_checkpoint(path)


def test_an_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        read_checkpoint(tmp_path / "empty.ckpt")


def safetensors_bytes(header: str, data: bytes = b"") -> bytes:
    encoded = header.encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize(("content", "problem"), [
    (safetensors_bytes('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                       '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
     "occurs twice in the header"),
    (safetensors_bytes('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(4)),
     "not a valid safetensors file"),
    (safetensors_bytes('{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', bytes(1)),
     "has dtype F8_E4M3, which bn3d does not read"),
    (safetensors_bytes('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}') + bytes(4),
     "not JSON"),
    (safetensors_bytes('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')[:-4],
     "the file is truncated"),
])
def test_a_bad_safetensors_file_is_refused(tmp_path, content, problem):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as raised:
        read_checkpoint(path, "torch-safetensors")
    assert raised.value.path == str(path)


def test_a_mindspore_safetensors_crc_that_does_not_match_is_refused(tmp_path):
    write_checkpoint(tmp_path / "a.safetensors", {"w": np.ones(2, np.float32)},
                     "mindspore-safetensors", crc_check=True)
    data = bytearray((tmp_path / "a.safetensors").read_bytes())
    data[-1] ^= 0x01
    (tmp_path / "a.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="crc_num .* the file is damaged") as raised:
        read_checkpoint(tmp_path / "a.safetensors")
    assert raised.value.entry == "__metadata__"


FAILURES = [("torch", "zlib.crc32"), ("mindspore", "zlib.crc32")] + [
    (format, "os.fsync") for format in ("torch", "mindspore", "torch-safetensors",
                                        "mindspore-safetensors")]


@pytest.mark.parametrize(("format", "failing"), FAILURES)
def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(
        tmp_path, monkeypatch, format, failing):
    """A failure while writing (a CRC) or once written (fsync) cleans up."""
    path = tmp_path / "model.out"
    path.write_bytes(b"previous content")
    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:  # let the first call through: the file is partly written
            raise OSError("disk full")
        return 0

    monkeypatch.setattr(failing, fail)
    tensors = {"a": np.ones(3, np.float32), "b": np.zeros(2)}
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, tensors, format)
        write_checkpoint(path, tensors, format)  # fsync: the first write succeeded
    assert os.listdir(tmp_path) == ["model.out"]
    if failing == "zlib.crc32":
        assert path.read_bytes() == b"previous content"


def test_a_write_into_a_missing_folder_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_checkpoint(tmp_path / "missing" / "a.pth", {"w": np.ones(1)}, "torch")
    assert os.listdir(tmp_path) == []


def message_ends(data: bytes) -> set[int]:
    """Where the messages of a .ckpt end: a cut there leaves a valid, shorter checkpoint."""
    ends, position = {0}, 0
    for _, chunk in mindspore_ckpt._entries("f", memoryview(data)):
        position = data.index(chunk, position) + len(chunk)
        ends.add(position)
    return ends


@pytest.mark.parametrize(("name", "format"), [
    ("torch_net.pth", "torch"), ("mindspore_net.ckpt", "mindspore"),
    ("torch_net.safetensors", "torch-safetensors")])
def test_a_fixture_cut_anywhere_gives_a_checkpoint_error(tmp_path, name, format):
    """No truncation point makes a reader fail with anything but CheckpointError."""
    data = (FIXTURES / name).read_bytes()
    valid = message_ends(data) if format == "mindspore" else set()
    path = tmp_path / name
    for end in range(0, len(data)):
        if end in valid:
            continue
        path.write_bytes(data[:end])
        with pytest.raises(CheckpointError):
            read_checkpoint(path, format)
