"""Which tensors are BatchNorm layers: groups, patterns, marks, and the checks that a group is
one BatchNorm's."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import CONV, mindspore_bn, torch_bn

from bn3d.convert import ConversionError, Selection
from bn3d.convert.layers import find_layers
from bn3d.convert.patterns import matches, read_pattern_file, select


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("encoder.*.bn", "encoder.block1.bn", True),
    ("encoder.*.bn", "encoder.a.b.bn", False),
    ("encoder.**.bn", "encoder.a.b.bn", True),
    ("**", "anything.at.all", True),
    ("layer?.bn", "layer1.bn", True),
    ("layer?.bn", "layer.bn", False),
    ("layer[12].bn", "layer2.bn", True),
    ("layer[!12].bn", "layer2.bn", False),
    ("layer1.bn", "layer1.bn1", False),
    ("a+b.bn", "a+b.bn", True),
])
def test_patterns_match_whole_dotted_names(pattern, name, expected):
    assert matches(pattern, name) is expected


def test_a_pattern_matching_nothing_is_an_error_listing_the_candidates():
    with pytest.raises(ConversionError) as raised:
        select(["decoder.*"], ["encoder.bn", "head.bn"], what="BatchNorm groups",
               option="layers (--layers)", path="m.pth")
    assert str(raised.value) == ("m.pth, layers (--layers) pattern 'decoder.*': matches none of "
                                 "the 2 BatchNorm groups: encoder.bn, head.bn")


def test_a_pattern_file_lists_one_pattern_a_line(tmp_path):
    (tmp_path / "layers.txt").write_text("# BatchNorm3d layers\nencoder.*.bn\n\n  head.bn # x\n")
    assert read_pattern_file(tmp_path / "layers.txt") == ("encoder.*.bn", "head.bn")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ConversionError, match="lists no pattern"):
        read_pattern_file(tmp_path / "empty.txt")


@pytest.mark.parametrize(("affine", "bias"), [(True, True), (True, False), (False, True)])
def test_torch_groups_are_prefixes_with_running_statistics(affine, bias):
    tensors = {**CONV, **torch_bn("stem.bn", affine=affine, bias=bias), **torch_bn("")}
    layout = find_layers(tensors, "torch")
    assert [layer.prefix for layer in layout.layers] == ["stem.bn", ""]
    roles = list(layout.layers[0].names)
    assert roles == (["weight"] if affine else []) + (["bias"] if affine and bias else []) + [
        "running_mean", "running_var", "num_batches_tracked"]
    assert layout.layers[0].bn2d and layout.layers[0].num_features == 3


def test_a_prefix_with_a_running_mean_but_no_running_var_is_no_group():
    tensors = torch_bn("bn")
    del tensors["bn.running_var"]
    assert find_layers(tensors, "torch").layers == ()


def test_layers_patterns_choose_the_batchnorm3d_layers_and_warn_of_the_others():
    tensors = {**torch_bn("encoder.0.bn"), **torch_bn("encoder.1.bn"), **torch_bn("head.bn")}
    layout = find_layers(tensors, "torch", Selection(layers=("encoder.*.bn",)))
    assert [layer.prefix for layer in layout.layers] == ["encoder.0.bn", "encoder.1.bn"]
    assert layout.warnings == (("head.bn", "a BatchNorm group that no layers pattern selects: "
                                           "passed through unchanged"),)


def test_without_bn2d_layers_are_converted_without_the_bn2d_level():
    tensors = {**torch_bn("stem.bn"), **torch_bn("block.bn")}
    layout = find_layers(tensors, "torch", Selection(without_bn2d=("stem.*",)))
    assert [(layer.prefix, layer.bn2d) for layer in layout.layers] == [("stem.bn", False),
                                                                       ("block.bn", True)]


def test_a_layer_selected_both_ways_is_an_error():
    with pytest.raises(ConversionError, match="layer 'bn': is selected both as a BatchNorm3d"):
        find_layers(torch_bn("bn"), "torch", Selection(layers=("bn",), without_bn2d=("bn",)))


def test_mindspore_bn2d_groups_are_batchnorm3d_and_the_others_only_when_selected():
    tensors = {**mindspore_bn("layer.bn"), **mindspore_bn("stem.bn", bn2d=False), **CONV}
    layout = find_layers(tensors, "mindspore")
    assert [(layer.prefix, layer.bn2d) for layer in layout.layers] == [("layer.bn", True)]
    assert layout.layers[0].names["weight"] == "layer.bn.bn2d.gamma"
    assert layout.warnings[0][0] == "stem.bn" and "--without-bn2d" in layout.warnings[0][1]
    selected = find_layers(tensors, "mindspore", Selection(without_bn2d=("stem.bn",)))
    assert [(layer.prefix, layer.bn2d) for layer in selected.layers] == [("layer.bn", True),
                                                                         ("stem.bn", False)]
    assert selected.warnings == ()


def test_a_mindspore_layer_lacking_a_parameter_is_an_error_naming_it():
    tensors = mindspore_bn("bn")
    del tensors["bn.bn2d.gamma"]
    with pytest.raises(ConversionError, match="tensor 'bn.bn2d.gamma': is missing"):
        find_layers(tensors, "mindspore", path="m.ckpt")


def test_marks_match_converted_layers_and_must_match_one():
    tensors = {**mindspore_bn("a.bn"), **mindspore_bn("b.bn")}
    layout = find_layers(tensors, "mindspore", Selection(affine_false=("a.*",),
                                                         no_running_stats=("*.bn",)))
    assert [sorted(layer.marks) for layer in layout.layers] == [
        ["affine_false", "no_running_stats"], ["no_running_stats"]]
    with pytest.raises(ConversionError, match="no_bias \\(--no-bias\\) pattern 'c.bn'"):
        find_layers(tensors, "mindspore", Selection(no_bias=("c.bn",)))


def test_a_torch_checkpoint_shows_affine_and_bias_itself():
    with pytest.raises(ConversionError, match="affine_false \\(--affine-false\\) is for "
                                              "MindSpore checkpoints"):
        find_layers(torch_bn("bn"), "torch", Selection(affine_false=("bn",)))


def test_torch_layers_without_running_statistics_are_found_by_marking_them():
    tensors = {**CONV, **torch_bn("bn", track=False)}
    assert find_layers(tensors, "torch").layers == ()
    layout = find_layers(tensors, "torch", Selection(no_running_stats=("bn",)))
    assert [(layer.prefix, list(layer.names)) for layer in layout.layers] == [
        ("bn", ["weight", "bias"])]
    with pytest.raises(ConversionError, match="tensor 'stem.conv.weight': has shape "
                                              "\\[3, 1, 3, 3, 3\\]; a BatchNorm's weight"):
        find_layers(tensors, "torch", Selection(no_running_stats=("stem.conv",)))
    with pytest.raises(ConversionError, match="is marked no_running_stats .* but has running"):
        find_layers(torch_bn("bn"), "torch", Selection(no_running_stats=("bn",)))


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("bn.running_mean", np.zeros(3, np.int64), "is int64; a BatchNorm's running_mean holds "
                                               "floating-point numbers"),
    ("bn.running_var", np.ones(4, np.float32), "is float32 of shape \\[4\\] where 'bn.weight' "
                                               "of the same layer is float32 of shape \\[3\\]"),
    ("bn.bias", np.zeros(3, np.float64), "is float64 of shape \\[3\\] where 'bn.weight'"),
    ("bn.weight", np.ones((3, 1), np.float32), "has shape \\[3, 1\\]; a BatchNorm's weight has "
                                               "one value per channel"),
    ("bn.num_batches_tracked", np.array(4.0), "is float64 of shape \\[\\]; num_batches_tracked "
                                              "is one integer"),
    ("bn.num_batches_tracked", np.array([1, 2]), "is int64 of shape \\[2\\]; num_batches_tracked"),
])
def test_tensors_that_are_not_one_batchnorms_are_errors_naming_file_and_entry(name, value,
                                                                              problem):
    tensors = {**torch_bn("bn"), name: value}
    with pytest.raises(ConversionError, match=f"^m.pth, tensor '{name}': {problem}"):
        find_layers(tensors, "torch", path="m.pth")


def test_excluded_tensors_are_left_out_before_anything_else():
    tensors = {**torch_bn("bn"), "optimizer.bn.running_mean": np.zeros(2, np.float32),
               "optimizer.bn.running_var": np.zeros(2, np.float32)}
    layout = find_layers(tensors, "torch", Selection(exclude=("optimizer.**",)))
    assert [layer.prefix for layer in layout.layers] == ["bn"]
    assert layout.excluded == ("optimizer.bn.running_mean", "optimizer.bn.running_var")


def test_a_selection_takes_sequences_of_patterns_not_a_string():
    with pytest.raises(ConversionError, match="write \\('bn',\\)"):
        Selection(layers="bn")
