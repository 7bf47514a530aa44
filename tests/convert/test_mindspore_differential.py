"""bn3d's MindSpore files against real MindSpore 2.10: the same bytes, read both ways exactly.

Skipped unless MindSpore imports; it needs its own environment (numpy<2).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from convert_helpers import FIXTURES, described, make_fixtures, manifest, sample

from bn3d.convert.formats import Checkpoint, mindspore_ckpt, read_checkpoint, write_checkpoint

ms = pytest.importorskip("mindspore")
serialization = pytest.importorskip("mindspore.train.serialization")

MS_DTYPES = {
    "bool": ms.bool_, "int8": ms.int8, "uint8": ms.uint8, "int16": ms.int16,
    "uint16": ms.uint16, "int32": ms.int32, "uint32": ms.uint32, "int64": ms.int64,
    "uint64": ms.uint64, "float16": ms.float16, "float32": ms.float32, "float64": ms.float64,
    "bfloat16": ms.bfloat16,
}


class Net(ms.nn.Cell):
    """Conv3d + BatchNorm3d."""

    def __init__(self):
        super().__init__()
        self.conv = ms.nn.Conv3d(2, 3, 1, has_bias=True)
        self.bn = ms.nn.BatchNorm3d(3)

    def construct(self, x):
        return self.bn(self.conv(x))


def random_net(seed: int = 0) -> Net:
    rng = np.random.default_rng(seed)
    net = Net()
    for parameter in net.get_parameters():
        values = rng.uniform(0.5, 2.0, parameter.shape).astype(np.float32)
        parameter.set_data(ms.Tensor(values))
    return net


def as_numpy(value) -> np.ndarray:
    if isinstance(value, str):
        return np.array(value)
    if value.dtype == ms.bfloat16:
        return value.float().asnumpy()
    return value.asnumpy()


def every_dtype_params() -> list[dict]:
    params = []
    for dtype, ms_dtype in MS_DTYPES.items():
        matrix = sample(dtype)
        source = matrix.astype(np.float32) if dtype == "bfloat16" else matrix
        params.append({"name": f"{dtype}.matrix", "data": ms.Tensor(source, ms_dtype)})
        params.append({"name": f"{dtype}.scalar", "data": ms.Tensor(source[1, 3], ms_dtype)})
    return params


def save(params, path, **kwargs):
    """mindspore.save_checkpoint, into a path that may exist (MindSpore makes it read-only)."""
    if os.path.exists(path):
        os.remove(path)
    ms.save_checkpoint(params, str(path), **kwargs)


def test_mindspore_loads_bn3d_files_into_a_cell(tmp_path):
    net = random_net()
    save(net, tmp_path / "theirs.ckpt")
    write_checkpoint(tmp_path / "ours.ckpt", read_checkpoint(tmp_path / "theirs.ckpt"),
                     "mindspore")
    fresh = Net()
    not_loaded = ms.load_param_into_net(fresh, ms.load_checkpoint(str(tmp_path / "ours.ckpt")),
                                        strict_load=True)
    assert not_loaded == ([], [])
    for mine, theirs in zip(fresh.get_parameters(), net.get_parameters()):
        assert mine.name == theirs.name
        assert as_numpy(mine).tobytes() == as_numpy(theirs).tobytes(), mine.name


@pytest.mark.parametrize("crc_check", [False, True])
def test_bn3d_writes_the_bytes_mindspore_writes(tmp_path, crc_check):
    params = every_dtype_params() + [{"name": p.name, "data": p}
                                     for p in random_net().get_parameters()]
    save(params, tmp_path / "theirs.ckpt", crc_check=crc_check,
         append_dict={"epoch_num": 3, "note": "bn3d ünïcode"})
    checkpoint = read_checkpoint(tmp_path / "theirs.ckpt")
    write_checkpoint(tmp_path / "ours.ckpt", Checkpoint(checkpoint.tensors, "torch", {
        "original_dtypes": checkpoint.metadata["original_dtypes"]}), "mindspore",
        crc_check=crc_check)
    assert (tmp_path / "ours.ckpt").read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()


def test_sliced_parameters_are_written_and_joined_as_mindspore_does(tmp_path, monkeypatch):
    """MindSpore slices a parameter above 512 MiB; both thresholds lowered to 1 KiB."""
    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)  # KiB
    monkeypatch.setattr(mindspore_ckpt, "SLICE_BYTES", 1024)
    big = make_fixtures.values((7, 300), -50.0)  # 8400 bytes: 9 slices
    params = [{"name": "big", "data": ms.Tensor(big)},
              {"name": "bf16", "data": ms.Tensor(big[:2], ms.bfloat16)}]
    save(params, tmp_path / "theirs.ckpt", crc_check=True)
    checkpoint = read_checkpoint(tmp_path / "theirs.ckpt")
    assert checkpoint.tensors["big"].tobytes() == big.tobytes()
    write_checkpoint(tmp_path / "ours.ckpt", checkpoint, "mindspore")
    assert (tmp_path / "ours.ckpt").read_bytes() == (tmp_path / "theirs.ckpt").read_bytes()
    loaded = ms.load_checkpoint(str(tmp_path / "ours.ckpt"), crc_check=True)
    assert loaded["big"].asnumpy().tobytes() == big.tobytes()


def test_bn3d_reads_mindspore_files_bitwise(tmp_path):
    params = every_dtype_params()
    save(params, tmp_path / "theirs.ckpt", append_dict={"note": "text"})
    checkpoint = read_checkpoint(tmp_path / "theirs.ckpt")
    for item in params:
        expected = as_numpy(item["data"])
        array = checkpoint.tensors[item["name"]]
        assert array.dtype == expected.dtype and array.shape == expected.shape, item["name"]
        assert array.tobytes() == expected.tobytes(), item["name"]
    assert str(checkpoint.tensors["note"]) == "text"


def test_mindspore_accepts_the_crc_bn3d_writes_and_bn3d_the_one_mindspore_writes(tmp_path):
    tensors = {"w": sample("float32"), "step": np.array(9)}
    write_checkpoint(tmp_path / "ours.ckpt", tensors, "mindspore", crc_check=True)
    loaded = ms.load_checkpoint(str(tmp_path / "ours.ckpt"), crc_check=True)
    assert loaded["w"].asnumpy().tobytes() == tensors["w"].tobytes()
    save([{"name": name, "data": ms.Tensor(value)} for name, value in tensors.items()],
         tmp_path / "theirs.ckpt", crc_check=True)
    assert read_checkpoint(tmp_path / "theirs.ckpt").metadata["crc32"] == (
        read_checkpoint(tmp_path / "ours.ckpt").metadata["crc32"])


def test_mindspore_safetensors_are_read_and_written_as_mindspore_does(tmp_path):
    params = every_dtype_params()
    save(params, tmp_path / "theirs.safetensors", format="safetensors")
    checkpoint = read_checkpoint(tmp_path / "theirs.safetensors")
    assert checkpoint.format == "mindspore-safetensors"
    for item in params:
        assert checkpoint.tensors[item["name"]].tobytes() == as_numpy(item["data"]).tobytes()
    write_checkpoint(tmp_path / "ours.safetensors", checkpoint, "mindspore-safetensors")
    assert (tmp_path / "ours.safetensors").read_bytes() == (
        tmp_path / "theirs.safetensors").read_bytes()
    loaded = ms.load_checkpoint(str(tmp_path / "ours.safetensors"), format="safetensors")
    for item in params:
        assert loaded[item["name"]].dtype == item["data"].dtype


def test_mindspore_verifies_the_safetensors_crc_bn3d_writes(tmp_path):
    write_checkpoint(tmp_path / "ours.safetensors", {"w": sample("float64")},
                     "mindspore-safetensors", crc_check=True)
    loaded = ms.load_checkpoint(str(tmp_path / "ours.safetensors"), format="safetensors",
                                crc_check=True)
    assert loaded["w"].asnumpy().tobytes() == sample("float64").tobytes()


@pytest.mark.parametrize("name", [name for name in sorted(manifest())
                                  if name.startswith("mindspore")])
def test_the_committed_mindspore_fixtures_hold_what_mindspore_reads(name):
    loaded = ms.load_checkpoint(str(FIXTURES / name),
                                format="safetensors" if name.endswith("safetensors") else "ckpt")
    expected = manifest()[name]
    assert sorted(loaded) == sorted(expected)
    for key, value in loaded.items():
        dtype = "bfloat16" if not isinstance(value, str) and value.dtype == ms.bfloat16 else None
        assert make_fixtures.describe(as_numpy(value), dtype) == expected[key], key
    assert described(read_checkpoint(FIXTURES / name)) == expected
