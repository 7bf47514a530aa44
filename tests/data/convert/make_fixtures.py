"""Write the checkpoint fixtures of bn3d.convert with the real frameworks.

Run it in an environment with PyTorch 2.13 (and safetensors), with MindSpore 2.10, or
with both: it writes the files of each framework it finds, next to this script, and
records in ``fixtures.json`` what each file holds, as the framework sees it: for every
tensor its dtype, shape and the SHA-256 of its values (C order, little-endian; a
bfloat16 tensor as float32, as bn3d reads it; a string as its text). The tests of
either environment read every file with bn3d and compare with that record.

    python tests/data/convert/make_fixtures.py

All values are binary fractions set here (no random numbers), so with the same
framework versions the files come out byte for byte the same on every run.

For the conversion's differential tests, each framework also writes a checkpoint of
the same small network (Conv3d, BatchNorm3d, ReLU, Conv3d, BatchNorm3d with
affine=False; the same values in both), ``torch_convnet.pth`` and
``mindspore_convnet.ckpt``, and its output in inference mode for a fixed input
(``convnet_input.npy``): ``torch_convnet_output.npy``, ``mindspore_convnet_output.npy``.
Each test environment has one framework: it converts the other framework's checkpoint,
loads it and compares its output with the other framework's recorded one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "fixtures.json")
CONVNET_INPUT = "convnet_input.npy"
CONVNET_OUTPUTS = {"torch": "torch_convnet_output.npy", "mindspore": "mindspore_convnet_output.npy"}
# MindSpore's names of a BatchNorm's parameters, by torch's (a BatchNorm3d adds "bn2d.").
_MINDSPORE_NAMES = {"running_mean": "moving_mean", "running_var": "moving_variance",
                    "weight": "gamma", "bias": "beta"}


def values(shape, start=0.0, step=0.375, dtype=np.float32):
    """Distinct binary fractions, exact in every float type, in C order."""
    size = int(np.prod(shape, dtype=np.int64))
    return (start + step * np.arange(size)).reshape(shape).astype(dtype)


def convnet_input():
    """The fixed input of the network, (N, C, D, H, W) = (2, 2, 3, 4, 5): binary fractions."""
    index = np.arange(2 * 2 * 3 * 4 * 5)
    return (((index * 37) % 29 - 14) / 8.0).reshape(2, 2, 3, 4, 5).astype(np.float32)


def convnet_values(torch_name, shape):
    """The values of the network's tensor ``torch_name`` (its torch name): binary fractions,
    different for every tensor, variances positive."""
    index = np.arange(int(np.prod(shape, dtype=np.int64))) + 3 * len(torch_name)
    if torch_name.endswith("running_var"):
        values = 0.5 + (index * 5 % 7) / 4.0
    elif torch_name.endswith("running_mean"):
        values = (index * 3 % 9 - 4) / 8.0
    elif len(shape) == 1 and torch_name.endswith("weight"):
        values = 0.75 + (index * 3 % 5) / 8.0
    else:
        values = (index * 7 % 13 - 6) / 16.0
    return values.reshape(shape).astype(np.float32)


def describe(array, dtype_name=None):
    """What the manifest records of one tensor (a numpy array; bfloat16 given as float32)."""
    array = np.asarray(array)
    if array.dtype.kind == "U":
        return {"dtype": "str", "shape": [], "text": str(array)}
    data = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C").tobytes()
    return {"dtype": dtype_name or array.dtype.name, "shape": list(array.shape),
            "sha256": hashlib.sha256(data).hexdigest()}


def torch_fixtures():
    """torch_net.pth, torch_dtypes.pt, torch_net.safetensors."""
    import torch
    from safetensors.torch import save_file

    def as_numpy(tensor):
        if tensor.dtype == torch.bfloat16:
            return tensor.float().numpy(), "bfloat16"
        return tensor.detach().numpy(), None

    def record(state_dict):
        return OrderedDict((name, describe(*as_numpy(tensor)))
                           for name, tensor in state_dict.items())

    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
    with torch.no_grad():
        for index, (name, tensor) in enumerate(net.state_dict().items()):
            if tensor.is_floating_point():
                start = 0.5 if name.endswith("running_var") else -1.0 + index
                tensor.copy_(torch.from_numpy(values(tuple(tensor.shape), start)))
        net[1].num_batches_tracked.fill_(7)
    state_dict = net.state_dict()
    torch.save(state_dict, os.path.join(HERE, "torch_net.pth"))
    files = {"torch_net.pth": record(state_dict)}

    base = torch.from_numpy(values((3, 4), -2.0, dtype=np.float64))
    assorted = OrderedDict([
        ("layer.bf16", torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)),
        ("layer.flag", torch.tensor([True, False, True])),
        ("count", torch.tensor(42)),
        ("half", torch.from_numpy(values((2, 2), -0.5, dtype=np.float16))),
        ("empty", torch.zeros(0, 3)),
        ("u16", torch.tensor([1, 65535], dtype=torch.uint16)),
        ("int8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("transposed", base.t()),          # strides (1, 4) of a shared storage
        ("window", base[1:, 1:3]),          # offset 5, strides (4, 1)
        ("param", torch.nn.Parameter(torch.from_numpy(values((2,), 1.0)))),
    ])
    torch.save(assorted, os.path.join(HERE, "torch_dtypes.pt"))
    files["torch_dtypes.pt"] = record(assorted)

    tensors = OrderedDict(state_dict)
    tensors["extra.bf16"] = torch.tensor([0.25, -8.0], dtype=torch.bfloat16)
    save_file(tensors, os.path.join(HERE, "torch_net.safetensors"))
    os.chmod(os.path.join(HERE, "torch_net.safetensors"), 0o644)  # safetensors makes it 0600
    files["torch_net.safetensors"] = record(tensors)

    convnet = torch_convnet()
    with torch.no_grad():
        for name, tensor in convnet.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.from_numpy(convnet_values(name, tuple(tensor.shape))))
        convnet.bn1.num_batches_tracked.fill_(12)
        convnet.bn2.num_batches_tracked.fill_(12)
        output = convnet.eval()(torch.from_numpy(convnet_input())).numpy()
    torch.save(convnet.state_dict(), os.path.join(HERE, "torch_convnet.pth"))
    files["torch_convnet.pth"] = record(convnet.state_dict())
    np.save(os.path.join(HERE, CONVNET_OUTPUTS["torch"]), output)
    np.save(os.path.join(HERE, CONVNET_INPUT), convnet_input())
    return files


def torch_convnet():
    """The network in torch, freshly initialised."""
    import torch

    class ConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv3d(2, 4, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm3d(4)
            self.relu = torch.nn.ReLU()
            self.conv2 = torch.nn.Conv3d(4, 3, 1)
            self.bn2 = torch.nn.BatchNorm3d(3, affine=False)

        def forward(self, x):
            return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    return ConvNet()


def mindspore_convnet():
    """The network in MindSpore, freshly initialised."""
    from mindspore import nn

    class ConvNet(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv3d(2, 4, 3, pad_mode="pad", padding=1, has_bias=True)
            self.bn1 = nn.BatchNorm3d(4)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv3d(4, 3, 1, has_bias=True)
            self.bn2 = nn.BatchNorm3d(3, affine=False)

        def construct(self, x):
            return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    return ConvNet()


def torch_name_of(mindspore_name):
    """The torch name of one of the network's MindSpore parameters."""
    prefix, _, local = mindspore_name.replace(".bn2d.", ".").rpartition(".")
    torch_local = {value: key for key, value in _MINDSPORE_NAMES.items()}.get(local, local)
    return f"{prefix}.{torch_local}"


def mindspore_fixtures():
    """mindspore_net.ckpt, mindspore_net_crc.ckpt, mindspore_dtypes.ckpt,
    mindspore_sliced.ckpt, mindspore_net.safetensors."""
    import mindspore as ms
    import mindspore.train.serialization as serialization
    from mindspore import Tensor, nn

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(2, 3, 1, has_bias=True)
            self.bn = nn.BatchNorm3d(3)

        def construct(self, x):
            return self.bn(self.conv(x))

    def as_numpy(tensor):
        if isinstance(tensor, str):
            return np.array(tensor), None
        if tensor.dtype == ms.bfloat16:
            return tensor.float().asnumpy(), "bfloat16"
        return tensor.asnumpy(), None

    def record(params):
        return OrderedDict((item["name"], describe(*as_numpy(item["data"]))) for item in params)

    net = Net()
    for index, parameter in enumerate(net.get_parameters()):
        start = 0.5 if "moving_variance" in parameter.name else -1.0 + index
        parameter.set_data(Tensor(values(parameter.shape, start)))
    params = [{"name": p.name, "data": p} for p in net.get_parameters()]
    appended = [{"name": "epoch_num", "data": Tensor(np.array(3, np.int64))},
                {"name": "note", "data": "bn3d"}]
    files = {}
    for name, crc in (("mindspore_net.ckpt", False), ("mindspore_net_crc.ckpt", True)):
        path = os.path.join(HERE, name)
        if os.path.exists(path):
            os.remove(path)  # MindSpore leaves its files read-only
        ms.save_checkpoint(net, path, crc_check=crc,
                           append_dict={"epoch_num": 3, "note": "bn3d"})
        os.chmod(path, 0o644)
        files[name] = record(params + appended)

    assorted = [
        {"name": "layer.bf16", "data": Tensor(np.array([1.5, -2.0, 3.25], np.float32),
                                              ms.bfloat16)},
        {"name": "layer.flag", "data": Tensor(np.array([True, False, True]))},
        {"name": "count", "data": Tensor(np.array(42, np.int64))},
        {"name": "half", "data": Tensor(values((2, 2), -0.5, dtype=np.float16))},
        {"name": "u64", "data": Tensor(np.array([2**63 + 1], np.uint64))},
        {"name": "int8", "data": Tensor(np.array([-128, 127], np.int8))},
        {"name": "double", "data": Tensor(values((2, 3), -2.0, dtype=np.float64))},
    ]
    sliced = [{"name": "big", "data": Tensor(values((10, 100), -100.0))},
              {"name": "small", "data": Tensor(values((3,), 1.0))}]
    slice_size = serialization.SLICE_SIZE
    for name, params_, kilobytes in (("mindspore_dtypes.ckpt", assorted, slice_size),
                                     ("mindspore_sliced.ckpt", sliced, 1)):
        path = os.path.join(HERE, name)
        if os.path.exists(path):
            os.remove(path)
        serialization.SLICE_SIZE = kilobytes  # 1 KiB slices: "big" is written in 4 pieces
        try:
            ms.save_checkpoint(params_, path, crc_check=True)
        finally:
            serialization.SLICE_SIZE = slice_size
        os.chmod(path, 0o644)
        files[name] = record(params_)

    path = os.path.join(HERE, "mindspore_net.safetensors")
    if os.path.exists(path):
        os.remove(path)
    with_bf16 = params + [{"name": "extra.bf16",
                           "data": Tensor(np.array([0.25, -8.0], np.float32), ms.bfloat16)}]
    ms.save_checkpoint(with_bf16, path, format="safetensors")
    os.chmod(path, 0o644)
    files["mindspore_net.safetensors"] = record(with_bf16)

    convnet = mindspore_convnet()
    for parameter in convnet.get_parameters():
        name = torch_name_of(parameter.name)
        if name in ("bn2.weight", "bn2.bias"):
            continue  # affine=False: torch has neither; MindSpore keeps gamma=1, beta=0
        parameter.set_data(Tensor(convnet_values(name, tuple(parameter.shape))))
    output = convnet.set_train(False)(Tensor(convnet_input())).asnumpy()
    path = os.path.join(HERE, "mindspore_convnet.ckpt")
    if os.path.exists(path):
        os.remove(path)
    ms.save_checkpoint(convnet, path)
    os.chmod(path, 0o644)
    files["mindspore_convnet.ckpt"] = record([{"name": p.name, "data": p}
                                              for p in convnet.get_parameters()])
    np.save(os.path.join(HERE, CONVNET_OUTPUTS["mindspore"]), output)
    np.save(os.path.join(HERE, CONVNET_INPUT), convnet_input())
    return files


def main():
    manifest = {}
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as file:
            manifest = json.load(file, object_pairs_hook=OrderedDict)
    made = {}
    if importlib.util.find_spec("torch") is not None:
        made.update(torch_fixtures())
    if importlib.util.find_spec("mindspore") is not None:
        made.update(mindspore_fixtures())
    if not made:
        raise SystemExit("neither torch nor mindspore is installed here: nothing to write")
    manifest.update(made)
    with open(MANIFEST, "w") as file:  # one line per tensor
        file.write("{\n")
        for position, (name, tensors) in enumerate(sorted(manifest.items())):
            file.write(f" {json.dumps(name)}: {{\n")
            lines = [f"  {json.dumps(key)}: {json.dumps(info)}" for key, info in tensors.items()]
            file.write(",\n".join(lines))
            file.write("\n }" + ("," if position < len(manifest) - 1 else "") + "\n")
        file.write("}\n")
    for name in made:
        print(f"{name}: {os.path.getsize(os.path.join(HERE, name))} bytes")


if __name__ == "__main__":
    main()
