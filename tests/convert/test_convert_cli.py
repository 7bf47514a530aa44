"""``bn3d convert`` as a user runs it: the report on stdout, errors on stderr, exit statuses,
options, and hostile files refused with nothing executed and nothing written."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
from convert_helpers import CONV, FIXTURES, mindspore_bn, payloads, torch_bn, torch_file

from bn3d.cli import main
from bn3d.convert.formats import read_checkpoint, write_checkpoint


def run(capsys, *arguments) -> tuple[int, str, str]:
    status = main(["convert", *map(str, arguments)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_torch_fixture_converts_and_checks_as_the_docs_show(tmp_path, capsys):
    status, out, err = run(capsys, FIXTURES / "torch_net.pth", "--to", "mindspore", "-o",
                           tmp_path / "model.ckpt", "--check")
    assert (status, err) == (0, "")
    assert [line.split()[0] for line in out.splitlines()] == [
        "convert", "assume", "layer", "build", "default", "passed", "passed", "wrote", "check"]
    assert out.splitlines()[-1].startswith("check    1: pass: largest difference 0 in outputs")
    assert list(read_checkpoint(tmp_path / "model.ckpt").tensors) == [
        "0.weight", "0.bias", "1.bn2d.moving_mean", "1.bn2d.moving_variance", "1.bn2d.gamma",
        "1.bn2d.beta"]


def test_options_reach_the_conversion(tmp_path, capsys):
    write_checkpoint(tmp_path / "a.ckpt", {**mindspore_bn("enc.0.bn"), **mindspore_bn("head.bn"),
                                           **mindspore_bn("stem.bn", bn2d=False),
                                           "moments.x": np.zeros(2, np.float32)}, "mindspore")
    (tmp_path / "layers.txt").write_text("enc.*.bn  # the encoder\n")
    status, out, _ = run(capsys, tmp_path / "a.ckpt", "--to", "torch", "-o", tmp_path / "b.pt",
                         "--layers-file", tmp_path / "layers.txt", "--without-bn2d", "stem.bn",
                         "--affine-false", "stem.bn", "--exclude", "moments.**",
                         "--counter", "9", "--eps", "0.001", "--momentum", "0.99")
    assert status == 0
    tensors = read_checkpoint(tmp_path / "b.pt").tensors
    assert "stem.bn.weight" not in tensors and tensors["enc.0.bn.num_batches_tracked"] == 9
    assert "head.bn.bn2d.gamma" in tensors  # not selected: passed through, with a warning
    assert "warning  head.bn: a BatchNorm group that no layers pattern selects" in out
    assert "excluded moments.x: float32 [2]" in out
    assert "nn.BatchNorm3d(3, eps=0.001, momentum=0.01, affine=True, track_running_stats=True)" \
        in out


def test_momentum_none_is_refused_until_a_policy_says_what_to_use(tmp_path, capsys):
    write_checkpoint(tmp_path / "a.pth", torch_bn("bn"), "torch")
    status, out, err = run(capsys, tmp_path / "a.pth", "--to", "mindspore", "-o",
                           tmp_path / "b.ckpt", "--momentum", "None")
    assert (status, out) == (2, "")
    assert err.startswith(f"bn3d convert: {tmp_path / 'a.pth'}, layer 'bn': torch momentum=None")
    assert "--momentum-none 0.1" in err and not (tmp_path / "b.ckpt").exists()
    status, out, _ = run(capsys, tmp_path / "a.pth", "--to", "mindspore", "-o",
                         tmp_path / "b.ckpt", "--momentum", "None", "--momentum-none", "0.1")
    assert status == 0 and "(policy momentum_none=0.1)" in out


def test_a_pattern_that_matches_nothing_is_an_error_and_nothing_is_written(tmp_path, capsys):
    write_checkpoint(tmp_path / "a.pth", {**CONV, **torch_bn("bn")}, "torch")
    status, out, err = run(capsys, tmp_path / "a.pth", "--to", "mindspore", "-o",
                           tmp_path / "b.ckpt", "--layers", "encoder.*")
    assert (status, out) == (2, "")
    assert "layers (--layers) pattern 'encoder.*': matches none of the 1 BatchNorm groups: bn" \
        in err
    assert not (tmp_path / "b.ckpt").exists()


def test_a_failed_check_exits_1_and_says_the_output_was_written(tmp_path, capsys, monkeypatch):
    from bn3d.convert import state

    write_checkpoint(tmp_path / "a.pth", torch_bn("bn"), "torch")
    broken = state.torch_state_to_mindspore

    def swapped(parameters, settings):  # running_mean and running_var exchanged
        converted, notes = broken(parameters, settings)
        converted["running_mean"], converted["running_var"] = (converted["running_var"],
                                                               converted["running_mean"])
        return converted, notes

    monkeypatch.setattr("bn3d.convert.checkpoints.torch_state_to_mindspore", swapped)
    status, out, err = run(capsys, tmp_path / "a.pth", "--to", "mindspore", "-o",
                           tmp_path / "b.ckpt", "--check")
    assert status == 1
    assert out.splitlines()[-1].startswith("check    bn: FAIL: largest difference")
    assert "the check failed for 1 layer(s)" in err and (tmp_path / "b.ckpt").exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_a_malicious_pickle_is_refused_nothing_runs_and_nothing_is_written(tmp_path, capsys,
                                                                            payload):
    marker = tmp_path / "pwned"
    state = OrderedDict(w=payloads(marker)[payload])
    path = torch_file(tmp_path / "evil.pth", pickle.dumps(state, protocol=2))
    status, out, err = run(capsys, path, "--to", "mindspore", "-o", tmp_path / "out.ckpt",
                           "--check")
    assert (status, out) == (2, "")
    assert err.startswith(f"bn3d convert: {path}, zip member 'evil/data.pkl': ")
    assert "nothing was executed" in err
    assert not marker.exists()
    assert sorted(item.name for item in tmp_path.iterdir()) == ["evil.pth"]


def test_a_file_that_is_no_checkpoint_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "a.ckpt").write_bytes(b"\x00\x01garbage")
    status, _, err = run(capsys, tmp_path / "a.ckpt", "--to", "torch", "-o", tmp_path / "b.pth")
    assert status == 2 and err.startswith("bn3d convert: ") and "Traceback" not in err


def test_the_target_framework_and_the_output_are_required(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["convert", "model.pth"])
    assert raised.value.code == 2
    assert "the following arguments are required: --to, -o/--output" in capsys.readouterr().err
