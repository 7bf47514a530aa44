"""Checkpoint files from one framework to the other: the names and values, the documented
defaults, marks and policies, one report line per choice, errors that name the file and the
entry, nothing half-written, and the proof by replay passing and failing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from convert_helpers import CONV, mindspore_bn, torch_bn

from bn3d.convert import (
    ConversionError,
    Policies,
    Selection,
    check_conversion,
    convert_checkpoint,
    convert_tensors,
)
from bn3d.convert.formats import Checkpoint, read_checkpoint, write_checkpoint

# (affine, bias, track); affine=False with track_running_stats=False leaves no state at all.
COMBINATIONS = [(affine, bias, track) for affine, bias, track
                in itertools.product((True, False), (True, False), (True, False))
                if affine or track]


def texts(report_or_lines, kind):
    lines = report_or_lines.of(kind) if hasattr(report_or_lines, "of") else [
        line for line in report_or_lines if line.kind == kind]
    return [f"{line.subject}: {line.text}" for line in lines]


@pytest.mark.parametrize(("affine", "bias", "track"), COMBINATIONS)
def test_every_torch_layer_converts_to_mindspore_and_back(tmp_path, affine, bias, track):
    source = {**CONV, **torch_bn("bn", affine=affine, bias=bias, track=track)}
    write_checkpoint(tmp_path / "a.pth", source, "torch")
    selection = Selection(no_running_stats=() if track else ("bn",))
    report = convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore",
                                selection=selection, policies=Policies(bias_false="zero-beta"),
                                check=True)
    converted = read_checkpoint(tmp_path / "b.ckpt").tensors
    assert list(converted) == list(CONV) + ["bn.bn2d.moving_mean", "bn.bn2d.moving_variance",
                                            "bn.bn2d.gamma", "bn.bn2d.beta"]
    assert converted["bn.bn2d.gamma"].tolist() == [1.5 if affine else 1.0] * 3
    assert converted["bn.bn2d.beta"].tolist() == [0.5 if affine and bias else 0.0] * 3
    assert converted["bn.bn2d.moving_variance"].tolist() == [2.0 if track else 1.0] * 3
    assert not report.failed and len(report.of("check")) == 1
    marks = Selection(affine_false=() if affine else ("bn",),
                      no_bias=("bn",) if affine and not bias else (),
                      no_running_stats=() if track else ("bn",))
    convert_checkpoint(tmp_path / "b.ckpt", tmp_path / "c.pth", "torch", selection=marks,
                       counter=4)
    back = read_checkpoint(tmp_path / "c.pth")
    assert list(back.tensors) == list(source)
    for name, value in source.items():
        assert np.array_equal(back.tensors[name], value) and back.tensors[name].dtype == (
            value.dtype), name


def test_a_torch_layer_with_neither_affine_nor_running_statistics_has_nothing_to_convert(
        tmp_path):
    write_checkpoint(tmp_path / "a.pth", {**CONV, **torch_bn("bn", affine=False, track=False)},
                     "torch")
    with pytest.raises(ConversionError, match="pattern 'bn': matches none of the 1 prefixes "
                                              "with a weight or a bias: stem.conv"):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore",
                           selection=Selection(no_running_stats=("bn",)))


def test_the_report_has_one_line_per_fact_in_a_fixed_format(tmp_path):
    tensors = {**CONV, **torch_bn("enc.bn", affine=False), **torch_bn("head.bn", bias=False),
               "step": np.array(10)}
    write_checkpoint(tmp_path / "a.pth", tensors, "torch")
    report = convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore",
                                policies=Policies(bias_false="zero-beta"))
    assert [line.kind for line in report.lines] == [
        "convert", "assume",
        "layer", "build", "default", "default",
        "layer", "build", "build", "policy", "default",
        "passed", "passed", "passed", "wrote"]
    assert str(report).splitlines()[2:11] == [
        "layer    enc.bn: BatchNorm3d, 3 channels, float32: running_mean, running_var, "
        "num_batches_tracked -> bn2d.moving_mean, bn2d.moving_variance, bn2d.gamma, bn2d.beta",
        "build    enc.bn: nn.BatchNorm3d(3, eps=1e-05, momentum=0.9, affine=False, "
        "use_batch_statistics=None)",
        "default  enc.bn: affine=False: gamma=1 and beta=0 written (MindSpore keeps gamma and "
        "beta and applies them; 1 and 0 leave the output as torch's)",
        "default  enc.bn: num_batches_tracked (4) dropped: MindSpore's BatchNorm3d has no batch "
        "counter",
        "layer    head.bn: BatchNorm3d, 3 channels, float32: weight, running_mean, running_var, "
        "num_batches_tracked -> bn2d.moving_mean, bn2d.moving_variance, bn2d.gamma, bn2d.beta",
        "build    head.bn: nn.BatchNorm3d(3, eps=1e-05, momentum=0.9, affine=True, "
        "use_batch_statistics=None)",
        "build    head.bn: layer.bn2d.beta.requires_grad = False",
        "policy   head.bn: bias=False: beta fixed at 0 and frozen (policy bias_false='zero-beta')",
        "default  head.bn: num_batches_tracked (4) dropped: MindSpore's BatchNorm3d has no batch "
        "counter",
    ]
    assert texts(report, "passed") == ["stem.conv.weight: float32 [3, 1, 3, 3, 3]",
                                       "stem.conv.bias: float32 [3]", "step: int64 []"]
    assert texts(report, "wrote")[0].endswith("11 tensors; BatchNorm layers converted: 2, "
                                              "tensors passed through: 3")


def test_a_policy_left_out_is_a_refusal_naming_the_layer_and_the_policy(tmp_path):
    write_checkpoint(tmp_path / "a.pth", torch_bn("head.bn", bias=False), "torch")
    with pytest.raises(ConversionError, match="a.pth, layer 'head.bn': torch bias=False .* "
                                              "--bias-false zero-beta"):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore")
    assert not (tmp_path / "b.ckpt").exists()


def test_momentum_none_is_assumed_only_with_a_fixed_momentum_which_the_check_replays(tmp_path):
    write_checkpoint(tmp_path / "a.pth", torch_bn("bn"), "torch")
    with pytest.raises(ConversionError, match="torch momentum=None"):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore",
                           source_settings={"momentum": None})
    report = convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore",
                                source_settings={"momentum": None},
                                policies=Policies(momentum_none=0.05), check=True)
    assert texts(report, "assume") == ["every layer: eps=1e-05, momentum=None (as given: a "
                                       "checkpoint stores neither)"]
    assert texts(report, "policy") == ["bn: momentum=None (a cumulative average) replaced by the "
                                       "fixed momentum 0.05 (policy momentum_none=0.05)"]
    assert "momentum 0.05 (torch) / 0.95 (MindSpore)" in texts(report, "check")[0]


@pytest.mark.parametrize("counter", [0, 123])
def test_mindspore_to_torch_writes_the_counter_and_torchs_module_versions(tmp_path, counter):
    write_checkpoint(tmp_path / "a.ckpt", {**mindspore_bn("b1"), **mindspore_bn("b2")},
                     "mindspore")
    report = convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch",
                                counter=counter)
    converted = read_checkpoint(tmp_path / "b.pth")
    assert converted.tensors["b1.num_batches_tracked"] == counter
    assert converted.tensors["b1.num_batches_tracked"].dtype == np.int64
    assert converted.metadata["state_dict_metadata"] == {"b1": {"version": 2},
                                                         "b2": {"version": 2}}
    verb = "given" if counter else "written"
    assert texts(report, "default")[0] == (
        f"b1: num_batches_tracked={counter} {verb}: MindSpore has no batch counter (give "
        "another with counter=N, bn3d convert --counter N)")


def test_gamma_and_beta_of_a_layer_marked_affine_false_must_be_1_and_0_unless_kept(tmp_path):
    tensors = mindspore_bn("bn")
    tensors["bn.bn2d.gamma"] = np.array([1.0, 2.0, 1.0], np.float32)
    write_checkpoint(tmp_path / "a.ckpt", tensors, "mindspore")
    marked = Selection(affine_false=("bn",))
    with pytest.raises(ConversionError, match="a.ckpt, layer 'bn': the torch layer has "
                                              "affine=False, but gamma/beta are not all 1/0"):
        convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch", selection=marked)
    report = convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch",
                                selection=marked, check=True,
                                policies=Policies(affine_false_values="keep"))
    assert read_checkpoint(tmp_path / "b.pth").tensors["bn.weight"].tolist() == [1.0, 2.0, 1.0]
    assert texts(report, "policy") == ["bn: affine=False with gamma/beta other than 1/0: kept as "
                                       "weight/bias of an affine=True torch layer, to be frozen "
                                       "(policy affine_false_values='keep')"]
    assert texts(report, "build")[1:] == ["bn: layer.weight.requires_grad_(False)",
                                          "bn: layer.bias.requires_grad_(False)"]
    assert not report.failed


def test_a_layer_marked_bias_false_must_have_a_zero_beta(tmp_path):
    tensors = mindspore_bn("bn")
    tensors["bn.bn2d.beta"][1] = 0.5
    write_checkpoint(tmp_path / "a.ckpt", tensors, "mindspore")
    with pytest.raises(ConversionError, match="bias=False, but beta is not all 0"):
        convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch",
                           selection=Selection(no_bias=("bn",)))


@pytest.mark.parametrize(("tensors", "framework", "entry"), [
    ({**mindspore_bn("bn"), "bn.weight": np.ones(3, np.float32)}, "mindspore", "bn.weight"),
    ({**torch_bn("bn"), "bn.bn2d.gamma": np.ones(3, np.float32)}, "torch", "bn.bn2d.gamma"),
])
def test_a_name_written_twice_after_mapping_is_an_error_naming_both_origins(tmp_path, tensors,
                                                                            framework, entry):
    source = tmp_path / ("a.ckpt" if framework == "mindspore" else "a.pth")
    write_checkpoint(source, tensors, framework)
    target = "torch" if framework == "mindspore" else "mindspore"
    with pytest.raises(ConversionError, match=f"tensor '{entry}': would be written twice: "):
        convert_checkpoint(source, tmp_path / "b.safetensors", target)
    assert not (tmp_path / "b.safetensors").exists()


def test_a_failed_conversion_leaves_an_existing_output_as_it_was(tmp_path):
    write_checkpoint(tmp_path / "a.pth", {**torch_bn("bn"), "bn.bn2d.gamma": np.ones(3)}, "torch")
    (tmp_path / "b.ckpt").write_bytes(b"before")
    with pytest.raises(ConversionError):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore")
    assert (tmp_path / "b.ckpt").read_bytes() == b"before"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.pth", "b.ckpt"]


@pytest.mark.parametrize(("destination", "format", "to", "expected"), [
    ("b.ckpt", None, "mindspore", "mindspore"),
    ("b.safetensors", None, "mindspore", "mindspore-safetensors"),
    ("b.safetensors", None, "torch", "torch-safetensors"),
    ("b.pt", None, "torch", "torch"),
    ("b.bin", "torch-safetensors", "torch", "torch-safetensors"),
])
def test_the_output_format_comes_from_the_suffix_or_format(tmp_path, destination, format, to,
                                                           expected):
    source = tmp_path / ("a.pth" if to == "mindspore" else "a.ckpt")
    tensors = torch_bn("bn") if to == "mindspore" else mindspore_bn("bn")
    write_checkpoint(source, tensors, "torch" if to == "mindspore" else "mindspore")
    convert_checkpoint(source, tmp_path / destination, to, format=format)
    assert read_checkpoint(tmp_path / destination).format == expected


@pytest.mark.parametrize(("destination", "format", "problem"), [
    ("b.pth", None, "b.pth: is a torch file name \\(.pth\\), but the conversion is to mindspore"),
    ("b.bin", None, "b.bin: cannot tell the output format from the suffix '.bin'"),
    ("b.ckpt", "torch", "format 'torch' is not a mindspore format \\(mindspore, "
                        "mindspore-safetensors\\)"),
])
def test_an_output_format_of_the_wrong_framework_is_refused(tmp_path, destination, format,
                                                            problem):
    write_checkpoint(tmp_path / "a.pth", torch_bn("bn"), "torch")
    with pytest.raises(ConversionError, match=problem):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / destination, "mindspore",
                           format=format)


def test_a_checkpoint_of_the_target_framework_is_refused(tmp_path):
    write_checkpoint(tmp_path / "a.ckpt", mindspore_bn("bn"), "mindspore")
    with pytest.raises(ConversionError, match="a.ckpt: is a mindspore checkpoint already"):
        convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.ckpt", "mindspore")


def test_a_string_going_to_torch_names_the_exclude_that_leaves_it_out(tmp_path):
    write_checkpoint(tmp_path / "a.ckpt", {**mindspore_bn("bn"), "note": np.array("hi")},
                     "mindspore")
    with pytest.raises(ConversionError, match="tensor 'note': is a string \\('hi'\\), which "
                                              "torch files cannot hold: .*--exclude 'note'"):
        convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch")
    report = convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch",
                                selection=Selection(exclude=("note",)))
    assert texts(report, "excluded") == ["note: string 'hi'"]


def test_bfloat16_marks_follow_their_tensors_new_names():
    checkpoint = Checkpoint({**mindspore_bn("bn"), "w": np.ones(2, np.float32)}, "mindspore",
                            {"original_dtypes": {"bn.bn2d.gamma": "bfloat16", "w": "bfloat16"}})
    converted = convert_tensors(checkpoint, "torch").checkpoint
    assert converted.metadata["original_dtypes"] == {"bn.weight": "bfloat16", "w": "bfloat16"}


def test_the_check_passes_on_a_faithful_conversion_and_fails_on_a_tampered_one(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {"bn.weight": rng.uniform(0.5, 2.0, 5).astype(np.float32),
               "bn.bias": rng.normal(0, 1, 5).astype(np.float32),
               "bn.running_mean": rng.normal(0, 2, 5).astype(np.float32),
               "bn.running_var": rng.uniform(0.5, 3.0, 5).astype(np.float32),
               "bn.num_batches_tracked": np.array(50)}
    write_checkpoint(tmp_path / "a.pth", tensors, "torch")
    convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore")
    assert not check_conversion(tmp_path / "a.pth", tmp_path / "b.ckpt").failed
    converted = read_checkpoint(tmp_path / "b.ckpt").tensors
    for name in ("bn.bn2d.moving_mean", "bn.bn2d.gamma", "bn.bn2d.beta"):
        tampered = dict(converted)
        tampered[name] = tampered[name] * np.float32(1.001)
        write_checkpoint(tmp_path / "t.ckpt", tampered, "mindspore")
        report = check_conversion(tmp_path / "a.pth", tmp_path / "t.ckpt")
        assert report.failed and texts(report, "check")[0].startswith("bn: FAIL: largest "), name
    del converted["bn.bn2d.beta"]
    write_checkpoint(tmp_path / "t.ckpt", converted, "mindspore")
    assert texts(check_conversion(tmp_path / "a.pth", tmp_path / "t.ckpt"), "check") == [
        "bn: FAIL: cannot load the layer: the MindSpore checkpoint has no 'bn.bn2d.beta'"]


def test_the_check_replays_the_converted_momentum(tmp_path, monkeypatch):
    """A conversion that kept torch's momentum as MindSpore's would fail the training steps."""
    from bn3d.convert import settings

    write_checkpoint(tmp_path / "a.pth", torch_bn("bn"), "torch")
    monkeypatch.setattr(settings, "complement_momentum", lambda momentum: float(momentum))
    report = convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.ckpt", "mindspore",
                                check=True)
    assert report.failed
    assert "0 in outputs" not in texts(report, "check")[0]
    assert "momentum 0.1 (torch) / 0.1 (MindSpore)" in texts(report, "check")[0]


def test_layers_without_bn2d_are_replayed_too(tmp_path):
    write_checkpoint(tmp_path / "a.ckpt", mindspore_bn("stem.bn", bn2d=False), "mindspore")
    report = convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.pth", "torch", check=True,
                                selection=Selection(without_bn2d=("stem.bn",)))
    assert list(read_checkpoint(tmp_path / "b.pth").tensors) == [
        "stem.bn.weight", "stem.bn.bias", "stem.bn.running_mean", "stem.bn.running_var",
        "stem.bn.num_batches_tracked"]
    assert texts(report, "build")[0] == (
        "stem.bn: nn.BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, "
        "track_running_stats=True)  # or BatchNorm1d: the same arguments")
    assert not report.failed and len(report.of("check")) == 1


def test_source_settings_are_eps_and_momentum_only():
    with pytest.raises(ConversionError, match="source_settings gives affine"):
        convert_tensors(Checkpoint(torch_bn("bn"), "torch"), "mindspore",
                        source_settings={"affine": False})
