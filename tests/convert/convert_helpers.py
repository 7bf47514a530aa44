"""What the tests of bn3d.convert share: the fixtures, their manifest, sample tensors, small
BatchNorm checkpoints, hostile torch files."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from bn3d.convert.formats import Checkpoint
from bn3d.convert.formats._torch_zip import TorchArchiveWriter

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "convert"

_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)


def manifest() -> dict:
    """fixtures.json: per fixture file, per tensor, what the framework that wrote it holds."""
    with open(FIXTURES / "fixtures.json") as file:
        return json.load(file)


def described(checkpoint: Checkpoint) -> dict:
    """A checkpoint as the manifest records one (bfloat16 tensors by their float32 values)."""
    marks = checkpoint.metadata.get("original_dtypes", {})
    return {name: make_fixtures.describe(array, marks.get(name))
            for name, array in checkpoint.tensors.items()}


def float_samples(dtype) -> np.ndarray:
    """Values that only a bitwise comparison tells apart: signed zeros, NaN, inf, subnormals."""
    info = np.finfo(dtype)
    return np.array([[0.0, -0.0, np.nan, np.inf, -np.inf, info.smallest_subnormal],
                     [info.max, info.min, 1.0 / 3.0, -2.5, 1e-3, info.eps]], dtype=dtype)


def sample(dtype_name: str) -> np.ndarray:
    """A (2, 6) array of the canonical element type ``dtype_name`` (bfloat16: float32 values)."""
    if dtype_name == "bool":
        return np.array([[True, False, True, True, False, False]] * 2)
    if dtype_name == "bfloat16":  # bfloat16 numbers: float32 with the low 16 bits zero
        bits = np.array([0x0000, 0x8000, 0x7FC0, 0x7F80, 0xFF80, 0x0001,
                         0x7F7F, 0xFF7F, 0x3EAB, 0xC020, 0x3A83, 0x3C00], np.uint32)
        return (bits << np.uint32(16)).view(np.float32).reshape(2, 6)
    dtype = np.dtype(dtype_name)
    if dtype.kind == "f":
        return float_samples(dtype)
    if dtype.kind == "c":
        real = float_samples(np.float32 if dtype.itemsize == 8 else np.float64)
        result = np.empty(real.shape, dtype)
        result.real, result.imag = real, real[::-1]
        return result
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 0, 1, info.max // 3, info.min // 5]] * 2, dtype=dtype)


def assert_same_tensors(actual: dict, expected: dict, ordered: bool = True) -> None:
    """Same names (in the same order), same dtypes and shapes, same bytes."""
    assert list(actual) == list(expected) if ordered else sorted(actual) == sorted(expected)
    for name, array in expected.items():
        assert type(actual[name]) is np.ndarray, name
        array = np.asarray(array)
        assert actual[name].dtype == array.dtype, name
        assert actual[name].shape == array.shape, name
        assert actual[name].tobytes() == array.tobytes(), name


def torch_bn(prefix: str, channels: int = 3, *, affine: bool = True, bias: bool = True,
             track: bool = True, dtype=np.float32) -> dict[str, np.ndarray]:
    """A torch BatchNorm's state_dict entries at ``prefix``."""
    name = (lambda local: f"{prefix}.{local}") if prefix else (lambda local: local)
    state = {}
    if affine:
        state[name("weight")] = np.full(channels, 1.5, dtype)
        if bias:
            state[name("bias")] = np.full(channels, 0.5, dtype)
    if track:
        state[name("running_mean")] = np.full(channels, 0.25, dtype)
        state[name("running_var")] = np.full(channels, 2.0, dtype)
        state[name("num_batches_tracked")] = np.array(4)
    return state


def mindspore_bn(prefix: str, channels: int = 3, *, bn2d: bool = True) -> dict[str, np.ndarray]:
    """A MindSpore BatchNorm3d's parameters at ``prefix`` (without bn2d: a BatchNorm2d's)."""
    level = f"{prefix}.bn2d" if bn2d else prefix
    return {f"{level}.moving_mean": np.zeros(channels, np.float32),
            f"{level}.moving_variance": np.ones(channels, np.float32),
            f"{level}.gamma": np.ones(channels, np.float32),
            f"{level}.beta": np.zeros(channels, np.float32)}


#: A convolution's tensors, which are no BatchNorm's.
CONV = {"stem.conv.weight": np.zeros((3, 1, 3, 3, 3), np.float32),
        "stem.conv.bias": np.zeros(3, np.float32)}


def torch_file(path, pickle_data: bytes, storages=(), byteorder=b"little"):
    """A torch-style archive around any pickle."""
    with open(path, "wb") as file:
        archive = TorchArchiveWriter(file, "evil")
        archive.write_record("data.pkl", pickle_data)
        archive.write_record("byteorder", byteorder)
        for key, data in storages:
            archive.write_record(f"data/{key}", data)
        archive.write_record("version", b"3\n")
        archive.finish()
    return path


class Payload:
    """Pickles into a call of ``function(*args)``: what a malicious checkpoint carries."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker):
    command = f"touch {marker}"
    return {
        "os.system": Payload(os.system, command),
        "builtins.exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Payload(eval, f"open({str(marker)!r}, 'w')"),
        "numpy reconstruct": np.arange(3),  # numpy's _reconstruct and dtype globals
        "subprocess.Popen": Payload(__import__("subprocess").Popen, ["touch", str(marker)]),
    }
