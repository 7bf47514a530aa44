"""``bn3d verify`` and ``bn3d example``: the spec replayed from the command line."""

from __future__ import annotations

import re
import sys

import pytest

import bn3d.torch_nn
from bn3d.cli import main
from bn3d.spec import ImplementationUnavailable, load_spec


def test_verify_prints_a_table_and_a_summary_line_last(capsys):
    status = main(["verify", "--target", "torch-facade"])
    lines = capsys.readouterr().out.splitlines()
    ids = [entry.id for entry in load_spec()]
    assert status == 0
    assert lines[0].split() == ["entry", "torch-facade"]
    assert lines[1].split() == ["signature-pytorch", "pass"]
    assert [line.split()[0] for line in lines[1:1 + len(ids)]] == ids
    assert lines[-1].startswith(f"{len(ids)} entries x 1 implementation(s): ")
    assert " 0 fail, " in lines[-1]


def test_verify_all_has_a_column_per_implementation(capsys):
    main(["verify"])
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split() == ["entry", "torch-facade", "mindspore-facade", "torch", "mindspore"]


class TorchStartingInEval(bn3d.torch_nn.BatchNorm3d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval()


def test_verify_exits_1_and_says_what_failed(monkeypatch, capsys):
    monkeypatch.setattr(bn3d.torch_nn, "BatchNorm3d", TorchStartingInEval)
    status = main(["verify", "--target", "torch-facade"])
    out = capsys.readouterr().out
    assert status == 1
    assert ("FAIL difference-2-pytorch-trains-by-default [torch-facade] new-module-trains: "
            "torch-facade training is False, expected True") in out
    assert " 0 fail, " not in out.splitlines()[-1]


@pytest.mark.parametrize("command", ["verify", "example"])
def test_a_malformed_spec_is_reported_without_a_traceback(monkeypatch, tmp_path, capsys,
                                                          command):
    broken = tmp_path / "broken.yaml"
    broken.write_text("- id: broken-entry\n  title: 3\n", encoding="utf-8")
    monkeypatch.setattr("bn3d.spec.loading.spec_files", lambda: [broken])
    assert main([command]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"bn3d {command}: the spec is malformed: ")
    assert "broken.yaml: entry 'broken-entry': field " in error


def test_verify_rejects_an_unknown_implementation(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["verify", "--target", "tensorflow"])
    assert caught.value.code == 2


def test_example_prints_outputs_beside_the_documented_ones(capsys):
    status = main(["example"])
    out = capsys.readouterr().out
    assert status == 0
    assert "-1.3411034" in out and "-1.3411039" in out  # the two documented channel-1 values
    assert "largest difference between the facades:" in out
    assert out.splitlines()[-1] == "example-outputs/side-by-side: pass"


def test_example_without_a_facade_says_why(monkeypatch, capsys):
    def unavailable(implementation):
        raise ImplementationUnavailable(f"{implementation} is not here")

    monkeypatch.setattr("bn3d.spec.runner.open_implementation", unavailable)
    assert main(["example"]) == 1
    assert capsys.readouterr().out == "cannot run the example: torch-facade is not here\n"


@pytest.mark.parametrize(("command", "last_line"), [
    (["verify", "--target", "torch-facade"],
     r"\d+ entries x 1 implementation\(s\): \d+ pass, 0 fail, \d+ skipped"),
    (["example"], r"example-outputs/side-by-side: pass"),
])
def test_verify_and_example_run_without_jsonschema(monkeypatch, capsys, command, last_line):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    assert main(command) == 0
    assert re.fullmatch(last_line, capsys.readouterr().out.splitlines()[-1])
