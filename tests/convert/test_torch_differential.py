"""bn3d's torch files against real PyTorch 2.13: each reads what the other writes, exactly."""

from __future__ import annotations

import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from convert_helpers import FIXTURES, described, make_fixtures, manifest, sample

from bn3d.convert.formats import Checkpoint, read_checkpoint, write_checkpoint

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

TORCH_DTYPES = {
    "bool": torch.bool, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "uint16": torch.uint16, "int32": torch.int32, "uint32": torch.uint32, "int64": torch.int64,
    "uint64": torch.uint64, "float16": torch.float16, "float32": torch.float32,
    "float64": torch.float64, "complex64": torch.complex64, "complex128": torch.complex128,
    "bfloat16": torch.bfloat16,
}


def as_torch(dtype: str, array: np.ndarray):
    if dtype == "bfloat16":
        return torch.from_numpy(np.array(array, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def raw(tensor):
    """The bytes of a tensor, for a bitwise comparison (NaN included)."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def as_numpy(tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy()
    return tensor.detach().numpy()


def small_net(seed: int = 0):
    """Conv3d + BatchNorm3d with random weights and running statistics after a step."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
    net(torch.randn(2, 2, 2, 2, 2))
    return net


def every_dtype_state_dict(count: int = 1):
    """An OrderedDict of contiguous tensors of every dtype, matrices, 0-d and empty."""
    state = OrderedDict()
    for index in range(count):
        for dtype, torch_dtype in TORCH_DTYPES.items():
            matrix = as_torch(dtype, sample(dtype))
            assert matrix.dtype == torch_dtype
            state[f"block{index}.{dtype}.matrix"] = matrix
            state[f"block{index}.{dtype}.scalar"] = matrix[1, 3].clone()
            state[f"block{index}.{dtype}.empty"] = torch.zeros(0, 3, dtype=torch_dtype)
    return state


def test_torch_loads_bn3d_files_and_a_net_takes_them_strictly(tmp_path):
    net = small_net()
    torch.save(net.state_dict(), tmp_path / "theirs.pth")
    write_checkpoint(tmp_path / "ours.pth", read_checkpoint(tmp_path / "theirs.pth"), "torch")
    loaded = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert loaded._metadata == net.state_dict()._metadata
    fresh = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
    fresh.load_state_dict(loaded, strict=True)
    for name, tensor in net.state_dict().items():
        assert fresh.state_dict()[name].dtype == tensor.dtype
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_bn3d_writes_the_bytes_torch_writes_but_20_digits_of_the_id(tmp_path):
    """Over 1000 tensors of every dtype: memo indices past 255, SETITEMS batches of 1000."""
    state = every_dtype_state_dict(count=25)
    assert len(state) > 1000
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "ours").mkdir()
    write_checkpoint(tmp_path / "ours" / "model.pt", read_checkpoint(tmp_path / "model.pt"),
                     "torch")
    theirs, ours = (tmp_path / "model.pt").read_bytes(), (tmp_path / "ours/model.pt").read_bytes()
    assert len(ours) == len(theirs)
    with zipfile.ZipFile(tmp_path / "model.pt") as archive:
        assert zipfile.ZipFile(tmp_path / "ours/model.pt").read("model/data.pkl") == (
            archive.read("model/data.pkl"))
        identifier = archive.getinfo("model/.data/serialization_id")
    differing = [index for index, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert differing and min(differing) > identifier.header_offset  # all in the last record
    assert len(differing) <= 28  # 20 digits, and the record's CRC in two places


def test_torch_finds_every_storage_where_its_offset_calculation_says(tmp_path, monkeypatch):
    """torch.load(mmap=True) computes the storages' offsets from miniz's layout rules;
    TORCH_SERIALIZATION_DEBUG makes it check each against the zip's own offsets."""
    from torch.utils.serialization import config

    state = every_dtype_state_dict()
    write_checkpoint(tmp_path / "ours.pt", Checkpoint(
        {name: as_numpy(tensor) for name, tensor in state.items()}, "torch",
        {"original_dtypes": {name: "bfloat16" for name in state if "bfloat16" in name}}),
        "torch")
    monkeypatch.setenv("TORCH_SERIALIZATION_DEBUG", "1")
    config.load.calculate_storage_offsets = True
    try:
        loaded = torch.load(tmp_path / "ours.pt", weights_only=True, mmap=True)
    finally:
        config.load.calculate_storage_offsets = False
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(raw(loaded[name]), raw(tensor)), name


def test_bn3d_reads_torch_files_bitwise_views_and_parameters_included(tmp_path):
    state = every_dtype_state_dict()
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state["view.transposed"] = base.t()
    state["view.window"] = base[1:3, 2:5]
    state["view.expanded"] = torch.arange(3.0).expand(2, 3)
    state["param"] = torch.nn.Parameter(torch.arange(4.0))
    torch.save(state, tmp_path / "theirs.pt")
    checkpoint = read_checkpoint(tmp_path / "theirs.pt")
    assert list(checkpoint.tensors) == list(state)
    for name, tensor in state.items():
        array = checkpoint.tensors[name]
        expected = as_numpy(tensor)
        assert array.dtype == expected.dtype and array.shape == expected.shape, name
        assert array.tobytes() == np.ascontiguousarray(expected).tobytes(), name
    assert checkpoint.metadata["original_dtypes"] == {
        name: "bfloat16" for name in state if ".bfloat16." in name}


def test_a_missing_buffer_fails_strict_loading_as_with_a_torch_written_file(tmp_path):
    """``_metadata`` says BatchNorm is version 2, so a missing num_batches_tracked is an
    error; without it torch would quietly fill in a 0."""
    state = small_net().state_dict()
    del state["1.num_batches_tracked"]
    torch.save(state, tmp_path / "theirs.pth")
    write_checkpoint(tmp_path / "ours.pth", read_checkpoint(tmp_path / "theirs.pth"), "torch")
    messages = []
    for name in ("theirs.pth", "ours.pth"):
        net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
        with pytest.raises(RuntimeError, match="num_batches_tracked") as raised:
            net.load_state_dict(torch.load(tmp_path / name, weights_only=True), strict=True)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    tensors = read_checkpoint(tmp_path / "theirs.pth").tensors  # the same, without _metadata
    write_checkpoint(tmp_path / "plain.pth", tensors, "torch")
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
    net.load_state_dict(torch.load(tmp_path / "plain.pth", weights_only=True), strict=True)


def test_safetensors_files_of_torch_are_read_and_written_bitwise(tmp_path):
    state = OrderedDict((name, tensor) for name, tensor in every_dtype_state_dict().items()
                        if "complex128" not in name and "uint32" not in name)
    safetensors_torch.save_file(state, tmp_path / "theirs.safetensors")
    checkpoint = read_checkpoint(tmp_path / "theirs.safetensors")
    assert checkpoint.format == "torch-safetensors" and "safetensors_metadata" not in (
        checkpoint.metadata)
    for name, tensor in state.items():
        assert checkpoint.tensors[name].tobytes() == as_numpy(tensor).tobytes(), name
    write_checkpoint(tmp_path / "ours.safetensors", checkpoint, "torch-safetensors")
    loaded = safetensors_torch.load_file(tmp_path / "ours.safetensors")
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(raw(loaded[name]), raw(tensor)), name
    assert (tmp_path / "ours.safetensors").read_bytes() == (
        tmp_path / "theirs.safetensors").read_bytes()


@pytest.mark.parametrize("name", ["torch_net.pth", "torch_dtypes.pt", "torch_net.safetensors",
                                  "torch_convnet.pth"])
def test_the_committed_torch_fixtures_hold_what_torch_reads(name):
    if name.endswith(".safetensors"):
        state = safetensors_torch.load_file(FIXTURES / name)
    else:
        state = torch.load(FIXTURES / name, weights_only=True)
    expected = manifest()[name]
    assert sorted(state) == sorted(expected)
    for key, tensor in state.items():
        dtype = "bfloat16" if tensor.dtype == torch.bfloat16 else None
        assert make_fixtures.describe(as_numpy(tensor), dtype) == expected[key], key
    assert described(read_checkpoint(FIXTURES / name)) == expected
