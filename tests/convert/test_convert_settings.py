"""A layer's settings from one dialect to the other: the exact correspondences, the refusals
and their policies, the code lines, round trips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bn3d.convert import (
    ConversionError,
    Initialiser,
    MindSporeSettings,
    Policies,
    TorchSettings,
    convert_settings,
)
from bn3d.convert.settings import complement_momentum
from bn3d.mindspore_nn import Normal, One, TruncatedNormal, Uniform, Zero

ALL_POLICIES = Policies(momentum_none=0.1, bias_false="zero-beta", affine_false_values="keep",
                        use_batch_statistics_false="eval", initialisers="init-calls")


@pytest.mark.parametrize(("affine", "track", "bias", "momentum"), list(itertools.product(
    (True, False), (True, False), (True, False), (0.1, 0.25, None))))
def test_every_torch_combination_converts_or_is_refused_naming_its_policy(affine, track, bias,
                                                                          momentum):
    settings = TorchSettings(16, momentum=momentum, affine=affine, track_running_stats=track,
                             bias=bias)
    needs = [] if momentum is not None else ["momentum_none"]
    needs += ["bias_false"] if affine and not bias else []
    if needs:
        with pytest.raises(ConversionError, match=f"Policies\\({needs[0]}="):
            convert_settings(settings)
    converted = convert_settings(settings, ALL_POLICIES)
    assert converted.affine is affine
    assert converted.use_batch_statistics is (None if track else True)
    assert converted.momentum == (0.9 if momentum in (0.1, None) else 0.75)
    assert converted.frozen == (("beta",) if affine and not bias else ())
    assert [note.split(" (policy ")[1].split("=")[0] for note in converted.notes] == needs


@pytest.mark.parametrize(("affine", "track", "bias", "momentum"), list(itertools.product(
    (True, False), (True, False), (True, False), (0.1, 0.01, 0.3, 0.999))))
def test_torch_settings_round_trip_through_mindspore(affine, track, bias, momentum):
    settings = TorchSettings(7, eps=1e-3, momentum=momentum, affine=affine,
                             track_running_stats=track, bias=bias or not affine)
    policies = Policies(bias_false="zero-beta")
    back = convert_settings(convert_settings(settings, policies), policies)
    assert back == settings


@pytest.mark.parametrize(("use_batch_statistics", "track", "keep_eval"),
                         [(None, True, False), (True, False, False), (False, True, True)])
def test_use_batch_statistics_maps_to_track_running_stats(use_batch_statistics, track,
                                                           keep_eval):
    settings = MindSporeSettings(4, use_batch_statistics=use_batch_statistics)
    converted = convert_settings(settings, Policies(use_batch_statistics_false="eval"))
    assert (converted.track_running_stats, converted.keep_eval) == (track, keep_eval)
    assert convert_settings(converted) == settings


def test_use_batch_statistics_false_is_refused_without_its_policy():
    with pytest.raises(ConversionError, match="use_batch_statistics_false='eval'"):
        convert_settings(MindSporeSettings(4, use_batch_statistics=False))


def test_momentum_converts_exactly_and_round_trips():
    for momentum in (0.0, 0.1, 0.01, 0.3, 0.5, 0.9, 0.99, 0.999, 1.0, 0.123456789):
        assert complement_momentum(complement_momentum(momentum)) == momentum
    assert convert_settings(MindSporeSettings(3, momentum=0.9)).momentum == 0.1


@pytest.mark.parametrize(("settings", "problem"), [
    (TorchSettings(3, momentum=1.5), "momentum=1.5: MindSpore's momentum is in \\[0, 1\\]"),
    (TorchSettings(3, eps=0.0), "eps=0.0: MindSpore's BatchNorm accepts eps in \\(0, 1\\]"),
    (TorchSettings(3, eps=2.0), "eps=2.0"),
    (TorchSettings(0), "num_features=0: MindSpore's BatchNorm3d needs at least 1 channel"),
    (TorchSettings(3, dtype="float64"), "dtype float64: MindSpore's BatchNorm3d computes in "
                                        "float16 or float32 only"),
])
def test_torch_settings_mindspore_does_not_accept_are_refused(settings, problem):
    with pytest.raises(ConversionError, match=problem):
        convert_settings(settings, ALL_POLICIES)


def test_affine_false_with_gamma_and_beta_other_than_1_and_0_needs_a_policy():
    settings = MindSporeSettings(3, affine=False, gamma_init=2.0, beta_init="zeros")
    with pytest.raises(ConversionError, match="MindSpore affine=False with gamma_init=2.0, "
                                              "beta_init='zeros': MindSpore applies gamma"):
        convert_settings(settings)
    kept = convert_settings(settings, Policies(affine_false_values="keep",
                                               initialisers="init-calls"))
    assert (kept.affine, kept.frozen) == (True, ("weight", "bias"))
    assert kept.setup_code("bn") == ["nn.init.constant_(bn.weight, 2.0)",
                                     "bn.weight.requires_grad_(False)",
                                     "bn.bias.requires_grad_(False)"]
    assert convert_settings(kept) == settings  # frozen weight and bias: MindSpore's affine=False


def test_affine_false_with_the_default_initialisers_is_exact_both_ways():
    assert convert_settings(MindSporeSettings(3, affine=False)) == TorchSettings(3, affine=False)
    assert convert_settings(TorchSettings(3, affine=False)) == MindSporeSettings(3, affine=False)


@pytest.mark.parametrize("initialisers", ["ignore", "init-calls"])
def test_initialisers_other_than_the_defaults_need_a_policy_going_to_torch(initialisers):
    settings = MindSporeSettings(3, gamma_init="normal", moving_var_init=4.0)
    with pytest.raises(ConversionError, match="MindSpore gamma_init=Normal\\(sigma=0.01, "
                                              "mean=0.0\\), moving_var_init=4.0: torch's"):
        convert_settings(settings)
    converted = convert_settings(settings, Policies(initialisers=initialisers))
    assert converted.notes[0].endswith(f"(policy initialisers='{initialisers}')")
    expected = ["nn.init.normal_(bn.weight, mean=0.0, std=0.01)",
                "nn.init.constant_(bn.running_var, 4.0)"]
    assert converted.setup_code("bn") == (expected if initialisers == "init-calls" else [])


def test_moving_statistics_initialisers_do_not_matter_without_running_statistics():
    settings = MindSporeSettings(3, moving_mean_init=5.0, use_batch_statistics=True)
    assert convert_settings(settings).track_running_stats is False


@pytest.mark.parametrize(("init", "kind", "parameters"), [
    ("Ones", "constant", (1.0,)), ("zero", "constant", (0.0,)), (One(), "constant", (1.0,)),
    (Zero(), "constant", (0.0,)), (3, "constant", (3.0,)), (-0.5, "constant", (-0.5,)),
    ("normal", "normal", (0.01, 0.0)), (Normal(0.2, 1.0), "normal", (0.2, 1.0)),
    ("UNIFORM", "uniform", (0.07,)), (Uniform(0.5), "uniform", (0.5,)),
    ("truncatedNormal", "truncated_normal", (0.01, 0.0, -2.0, 2.0)),
    (TruncatedNormal(1.0, 0.5, -1.0, 1.0), "truncated_normal", (1.0, 0.5, -1.0, 1.0)),
    (np.array([1.0, 2.5], np.float32), "values", (1.0, 2.5)),
])
def test_every_form_of_mindspore_initialiser_is_understood(init, kind, parameters):
    assert Initialiser.of(init, "gamma_init") == Initialiser(kind, parameters)


@pytest.mark.parametrize("init", ["xavier_uniform", "bogus", np.ones((2, 2)), [object()]])
def test_initialisers_a_1d_parameter_cannot_have_are_refused(init):
    with pytest.raises(ConversionError, match="gamma_init="):
        Initialiser.of(init, "gamma_init")


@pytest.mark.parametrize(("init", "mindspore", "torch"), [
    ("ones", "'ones'", "nn.init.ones_(bn.weight)"),
    (0.5, "0.5", "nn.init.constant_(bn.weight, 0.5)"),
    (Normal(0.02, 1.0), "Normal(sigma=0.02, mean=1.0)",
     "nn.init.normal_(bn.weight, mean=1.0, std=0.02)"),
    ("uniform", "Uniform(scale=0.07)", "nn.init.uniform_(bn.weight, a=-0.07, b=0.07)"),
    ("truncatednormal", "TruncatedNormal(sigma=0.01, mean=0.0, a=-2.0, b=2.0)",
     "nn.init.trunc_normal_(bn.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)"),
    (np.array([1.0, 2.0]), "Tensor(np.array([1.0, 2.0], np.float32))",
     "bn.weight.data.copy_(torch.tensor([1.0, 2.0]))"),
])
def test_initialisers_print_as_code_of_each_framework(init, mindspore, torch):
    initialiser = Initialiser.of(init, "gamma_init")
    assert (str(initialiser), initialiser.torch_code("bn.weight")) == (mindspore, torch)


def test_code_lines_name_every_constructor_argument_and_only_what_differs_of_the_rest():
    assert TorchSettings(64).code() == (
        "nn.BatchNorm3d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)")
    assert MindSporeSettings(64, beta_init=0.5, dtype=np.float16).code() == (
        "nn.BatchNorm3d(64, eps=1e-05, momentum=0.9, affine=True, use_batch_statistics=None, "
        "beta_init=0.5, dtype=mindspore.float16)")
    assert MindSporeSettings(8).code("BatchNorm2d").startswith("nn.BatchNorm2d(8, ")


@pytest.mark.parametrize(("make", "problem"), [
    (lambda: MindSporeSettings(3, momentum=1.5), "MindSpore's momentum is a number in \\[0, 1\\]"),
    (lambda: MindSporeSettings(0), "num_features=0: must be an int of at least 1"),
    (lambda: MindSporeSettings(3, dtype="float64"), "computes in float16 or float32 only"),
    (lambda: MindSporeSettings(3, use_batch_statistics=1), "must be a bool or None"),
    (lambda: TorchSettings(3, affine=1), "affine=1: must be a bool"),
    (lambda: TorchSettings(3.0), "num_features=3.0"),
    (lambda: TorchSettings(3, frozen=("gamma",)), "frozen=\\('gamma',\\): may name weight, bias"),
    (lambda: Policies(momentum_none=2.0), "a fixed momentum is a number in \\[0, 1\\]"),
    (lambda: Policies(initialisers="copy"), "the choices are 'ignore', 'init-calls'"),
])
def test_settings_and_policies_the_frameworks_refuse_are_refused_when_made(make, problem):
    with pytest.raises(ConversionError, match=problem):
        make()


def test_settings_of_the_facades():
    from bn3d.mindspore_nn import BatchNorm3d as Cell
    from bn3d.torch_nn import BatchNorm3d as Module

    assert TorchSettings.of(Module(5, eps=0.01, momentum=None, bias=False)) == TorchSettings(
        5, eps=0.01, momentum=None, bias=False)
    assert TorchSettings.of(Module(5, affine=False, track_running_stats=False)).dtype == "float32"
    cell = Cell(5, momentum=0.95, use_batch_statistics=True, dtype=np.float16)
    cell.beta.requires_grad = False
    assert MindSporeSettings.of(cell) == MindSporeSettings(
        5, momentum=0.95, use_batch_statistics=True, dtype="float16", frozen=("beta",))
