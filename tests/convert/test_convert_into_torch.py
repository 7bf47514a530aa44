"""bn3d convert against real PyTorch 2.13: a MindSpore checkpoint (written by real MindSpore,
committed) converted by bn3d loads into the same network in torch with strict=True and gives
MindSpore's recorded output; torch checkpoints survive the trip through MindSpore's names; the
code lines bn3d prints build the layers they describe.

Skipped unless torch imports; the MindSpore side is in test_convert_into_mindspore.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import FIXTURES, make_fixtures

from bn3d.cli import main
from bn3d.convert import (
    Initialiser,
    MindSporeSettings,
    Policies,
    TorchSettings,
    convert_settings,
    to_torch,
)
from bn3d.convert.check import FLOAT32_TOLERANCE
from bn3d.mindspore_nn import BatchNorm3d as MindSporeFacade
from bn3d.spec.oracle import max_error

torch = pytest.importorskip("torch")


def convert(*arguments: str) -> None:
    assert main(["convert", *map(str, arguments)]) == 0


def output(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


def test_mindspores_checkpoint_converted_loads_strictly_and_gives_mindspores_output(tmp_path,
                                                                                   capsys):
    convert(FIXTURES / "mindspore_convnet.ckpt", "--to", "torch", "-o", tmp_path / "net.pth",
            "--affine-false", "bn2", "--counter", "12", "--check")
    report = capsys.readouterr().out
    assert report.count("\ncheck    ") == 2 and "FAIL" not in report
    net = make_fixtures.torch_convnet()
    result = net.load_state_dict(torch.load(tmp_path / "net.pth", weights_only=True),
                                 strict=True)
    assert result.missing_keys == result.unexpected_keys == []
    x = np.load(FIXTURES / make_fixtures.CONVNET_INPUT)
    expected = np.load(FIXTURES / make_fixtures.CONVNET_OUTPUTS["mindspore"])
    assert max_error(output(net, x), expected) <= FLOAT32_TOLERANCE
    assert int(net.bn1.num_batches_tracked) == 12


def test_without_marking_the_affine_false_layer_torch_sees_its_gamma_and_beta(tmp_path, capsys):
    convert(FIXTURES / "mindspore_convnet.ckpt", "--to", "torch", "-o", tmp_path / "net.pth")
    net = make_fixtures.torch_convnet()
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "bn2.weight", '
                                           '"bn2.bias"'):
        net.load_state_dict(torch.load(tmp_path / "net.pth", weights_only=True), strict=True)


@pytest.mark.parametrize("middle", ["net.ckpt", "net.safetensors"])
def test_a_torch_checkpoint_survives_the_trip_through_mindspore_names(tmp_path, middle, capsys):
    convert(FIXTURES / "torch_convnet.pth", "--to", "mindspore", "-o", tmp_path / middle)
    convert(tmp_path / middle, "--to", "torch", "-o", tmp_path / "back.pth",
            "--affine-false", "bn2", "--counter", "12")
    original = torch.load(FIXTURES / "torch_convnet.pth", weights_only=True)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    if middle.endswith(".ckpt"):  # safetensors files keep no order
        assert list(back) == list(original)
    assert sorted(back) == sorted(original)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    net = make_fixtures.torch_convnet()
    net.load_state_dict(back, strict=True)


def test_the_converted_file_has_torchs_module_versions_so_strict_loading_behaves_the_same(
        tmp_path, capsys):
    """With _metadata version 2, a missing counter fails strict loading, as for a file torch
    wrote; without it, torch would quietly start the counter at 0."""
    convert(FIXTURES / "mindspore_convnet.ckpt", "--to", "torch", "-o", tmp_path / "net.pth",
            "--affine-false", "bn2")
    ours = torch.load(tmp_path / "net.pth", weights_only=True)
    theirs = torch.load(FIXTURES / "torch_convnet.pth", weights_only=True)
    for prefix in ("bn1", "bn2"):
        assert ours._metadata[prefix] == theirs._metadata[prefix] == {"version": 2}
    messages = []
    for state in (ours, theirs):
        del state["bn1.num_batches_tracked"]
        with pytest.raises(RuntimeError, match="num_batches_tracked") as raised:
            make_fixtures.torch_convnet().load_state_dict(state, strict=True)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(("settings", "policies"), [
    (MindSporeSettings(8, momentum=0.99, use_batch_statistics=True), None),
    (MindSporeSettings(8, eps=1e-3, affine=False), None),
    (MindSporeSettings(8, gamma_init="zeros", beta_init=0.5, moving_var_init=2.0),
     Policies(initialisers="init-calls")),
    (MindSporeSettings(8, use_batch_statistics=False), Policies(use_batch_statistics_false="eval")),
    (MindSporeSettings(8, affine=False, gamma_init=2.0),
     Policies(affine_false_values="keep", initialisers="init-calls")),
])
def test_the_printed_torch_code_builds_the_layer_it_describes(settings, policies):
    converted = convert_settings(settings, policies)
    namespace = {"nn": torch.nn, "torch": torch}
    bn = eval(converted.code(), namespace)  # noqa: S307 - the code bn3d prints, run as a user would
    for statement in converted.setup_code("bn"):
        exec(statement, {**namespace, "bn": bn})  # noqa: S102
    assert (bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (
        converted.num_features, converted.eps, converted.momentum, converted.affine,
        converted.track_running_stats)
    assert bn.training is not converted.keep_eval
    initial = MindSporeFacade(**{name: value.parameters[0] if isinstance(value, Initialiser)
                                 else value for name, value in settings.arguments().items()})
    expected = {"weight": initial.gamma, "bias": initial.beta,
                "running_mean": initial.moving_mean, "running_var": initial.moving_variance}
    for name, tensor in bn.state_dict().items():
        if name in expected:
            assert np.array_equal(tensor.numpy(), expected[name].asnumpy()), name
    for name in converted.frozen:
        assert not getattr(bn, name).requires_grad


def test_a_torch_code_line_of_bias_false_and_float16_builds_that_layer():
    settings = TorchSettings(5, momentum=None, bias=False, dtype="float16")
    bn = eval(settings.code(), {"nn": torch.nn, "torch": torch})  # noqa: S307
    assert bn.bias is None and bn.weight.dtype == torch.float16 and bn.momentum is None


def test_a_converted_cell_runs_in_real_torch_as_the_cell(tmp_path):
    """A MindSpore facade, trained a few steps, converted by to_torch: its state loaded
    strictly into real torch's layer built from the printed code line gives the cell's
    outputs, in eval mode and in a further training step."""
    rng = np.random.default_rng(5)
    cell = MindSporeFacade(6, momentum=0.8, gamma_init=1.5, beta_init=-0.25).set_train()
    for _ in range(3):
        cell(rng.normal(2.0, 3.0, (4, 6, 2, 3, 2)).astype(np.float32))
    module = to_torch(cell, counter=3)
    real = eval(convert_settings(MindSporeSettings.of(cell)).code(), {"nn": torch.nn})  # noqa: S307
    real.load_state_dict({name: torch.from_numpy(value)
                          for name, value in module.state_dict().items()}, strict=True)
    x = rng.normal(2.0, 3.0, (4, 6, 2, 3, 2)).astype(np.float32)
    assert max_error(output(real, x), cell.set_train(False)(x)) <= FLOAT32_TOLERANCE
    with torch.no_grad():
        trained = real.train()(torch.from_numpy(x)).numpy()
    assert max_error(trained, cell.set_train(True)(x)) <= FLOAT32_TOLERANCE
    assert max_error(real.running_mean.numpy(), cell.moving_mean.asnumpy()) <= FLOAT32_TOLERANCE
