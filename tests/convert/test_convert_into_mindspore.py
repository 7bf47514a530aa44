"""bn3d convert against real MindSpore 2.10: a torch checkpoint (written by real torch,
committed) converted by bn3d loads into the same network in MindSpore with every parameter
loaded and none left over, and gives torch's recorded output; MindSpore checkpoints survive
the trip through torch's names; the code lines bn3d prints build the cells they describe.

Skipped unless MindSpore imports (its own environment, numpy<2); the torch side is in
test_convert_into_torch.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from convert_helpers import FIXTURES, make_fixtures

from bn3d.cli import main
from bn3d.convert import MindSporeSettings, Policies, TorchSettings, convert_settings
from bn3d.convert.check import FLOAT32_TOLERANCE
from bn3d.spec.oracle import max_error

ms = pytest.importorskip("mindspore")


def convert(*arguments: str) -> None:
    assert main(["convert", *map(str, arguments)]) == 0


def load(path) -> dict:
    kind = "safetensors" if str(path).endswith(".safetensors") else "ckpt"
    return ms.load_checkpoint(str(path), format=kind)


@pytest.mark.parametrize("name", ["net.ckpt", "net.safetensors"])
def test_torchs_checkpoint_converted_loads_every_parameter_and_gives_torchs_output(tmp_path,
                                                                                  name, capsys):
    convert(FIXTURES / "torch_convnet.pth", "--to", "mindspore", "-o", tmp_path / name,
            "--check")
    report = capsys.readouterr().out
    assert report.count("\ncheck    ") == 2 and "FAIL" not in report
    net = make_fixtures.mindspore_convnet()
    not_loaded = ms.load_param_into_net(net, load(tmp_path / name))
    assert not_loaded == ([], [])
    x = np.load(FIXTURES / make_fixtures.CONVNET_INPUT)
    expected = np.load(FIXTURES / make_fixtures.CONVNET_OUTPUTS["torch"])
    actual = net.set_train(False)(ms.Tensor(x)).asnumpy()
    assert max_error(actual, expected) <= FLOAT32_TOLERANCE


def test_names_without_bn2d_as_troubleshooter_writes_them_load_nothing_into_batchnorm3d(tmp_path,
                                                                                         capsys):
    """Why bn2d matters: torch's names mapped to gamma/beta/moving_* without the bn2d level
    (MindSpore's TroubleShooter does so) leave every BatchNorm3d parameter unloaded."""
    convert(FIXTURES / "torch_convnet.pth", "--to", "mindspore", "-o", tmp_path / "flat.ckpt",
            "--without-bn2d", "bn*")
    net = make_fixtures.mindspore_convnet()
    not_in_net, not_in_checkpoint = ms.load_param_into_net(net, load(tmp_path / "flat.ckpt"))
    assert sorted(not_in_net) == sorted(p.name for p in net.get_parameters() if ".bn2d." in p.name)
    assert len(not_in_checkpoint) == 8


def test_a_mindspore_checkpoint_survives_the_trip_through_torch_names(tmp_path, capsys):
    convert(FIXTURES / "mindspore_convnet.ckpt", "--to", "torch", "-o", tmp_path / "net.pth",
            "--affine-false", "bn2")
    convert(tmp_path / "net.pth", "--to", "mindspore", "-o", tmp_path / "back.ckpt")
    assert (tmp_path / "back.ckpt").read_bytes() == (
        FIXTURES / "mindspore_convnet.ckpt").read_bytes()
    net = make_fixtures.mindspore_convnet()
    assert ms.load_param_into_net(net, load(tmp_path / "back.ckpt")) == ([], [])


def test_a_cell_trained_in_mindspore_converts_to_torch_and_back_into_mindspore(tmp_path, capsys):
    """Trained by real MindSpore (its moving statistics updated), saved, converted to torch
    and back: the cell loaded from the result gives the trained cell's output."""
    rng = np.random.default_rng(3)
    net = make_fixtures.mindspore_convnet().set_train(True)
    for _ in range(3):
        net(ms.Tensor(rng.normal(1.0, 2.0, (2, 2, 3, 4, 5)).astype(np.float32)))
    path = os.fspath(tmp_path / "trained.ckpt")
    ms.save_checkpoint(net, path)
    convert(path, "--to", "torch", "-o", tmp_path / "trained.pth", "--affine-false", "bn2",
            "--check")
    convert(tmp_path / "trained.pth", "--to", "mindspore", "-o", tmp_path / "again.ckpt",
            "--check")
    fresh = make_fixtures.mindspore_convnet()
    assert ms.load_param_into_net(fresh, load(tmp_path / "again.ckpt")) == ([], [])
    x = ms.Tensor(np.load(FIXTURES / make_fixtures.CONVNET_INPUT))
    assert max_error(fresh.set_train(False)(x).asnumpy(),
                     net.set_train(False)(x).asnumpy()) == 0


@pytest.mark.parametrize(("settings", "policies"), [
    (TorchSettings(8, momentum=0.01, track_running_stats=False), None),
    (TorchSettings(8, eps=1e-3, affine=False, dtype="float16"), None),
    (TorchSettings(8, momentum=None, bias=False),
     Policies(momentum_none=0.05, bias_false="zero-beta")),
])
def test_the_printed_mindspore_code_builds_the_cell_it_describes(settings, policies):
    converted = convert_settings(settings, policies)
    assert isinstance(converted, MindSporeSettings)
    namespace = {"nn": ms.nn, "mindspore": ms}
    cell = eval(converted.code(), namespace)  # noqa: S307 - the code bn3d prints, as a user would
    for statement in converted.setup_code("cell"):
        exec(statement, {**namespace, "cell": cell})  # noqa: S102
    bn2d = cell.bn2d
    assert (bn2d.num_features, bn2d.eps, bn2d.use_batch_statistics) == (
        converted.num_features, converted.eps, converted.use_batch_statistics)
    assert abs((1.0 - bn2d.momentum) - converted.momentum) < 1e-15
    assert str(bn2d.gamma.dtype).lower() == converted.dtype
    trainable = [parameter.name for parameter in cell.trainable_params()]
    assert trainable == [name for name in ("bn2d.gamma", "bn2d.beta")
                         if converted.affine and name[5:] not in converted.frozen]


def test_initialiser_objects_in_the_printed_code_are_mindspores():
    from mindspore.common.initializer import Normal, TruncatedNormal

    settings = MindSporeSettings(16, gamma_init=Normal(sigma=0.02, mean=1.0),
                                 beta_init=TruncatedNormal(sigma=0.5))
    namespace = {"nn": ms.nn, "Normal": Normal, "TruncatedNormal": TruncatedNormal}
    cell = eval(settings.code(), namespace)  # noqa: S307
    assert MindSporeSettings(16, gamma_init=Normal(sigma=0.02, mean=1.0),
                             beta_init=TruncatedNormal(sigma=0.5)) == settings
    assert cell.bn2d.gamma.shape == (16,)
