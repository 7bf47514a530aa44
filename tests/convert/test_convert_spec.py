"""The spec's conversion checks: every row of the parameter table has one, they pass, they can
fail, and the converter's tolerance is the spec's."""

from __future__ import annotations

import pytest

import bn3d.spec as spec
from bn3d.convert import settings, state
from bn3d.convert.check import FLOAT32_TOLERANCE
from bn3d.spec.expectations import Converts, OutputsMatch, RunningStatsMatch
from bn3d.spec.fields import FieldError, Fields
from bn3d.spec.model import Check

ENTRIES = spec.load_spec()
BY_ID = {entry.id: entry for entry in ENTRIES}
PARAMETER_ENTRIES = [entry for entry in ENTRIES
                     if entry.row is not None and entry.row.table == "parameters"]


def test_every_parameter_row_has_a_conversion_check_each_way_or_a_refusal():
    rows = spec.conversion_rows(implementations=())
    for entry in PARAMETER_ENTRIES:
        directions = {row.source for row in rows if row.entry_id == entry.id}
        assert directions == {"torch", "mindspore"}, entry.id


def test_the_refusals_and_policies_of_the_brief_are_in_the_spec():
    rows = spec.conversion_rows(implementations=())
    refused = {row.refused.split(" (")[0].split(":")[0] for row in rows if row.refused}
    assert refused >= {"torch momentum=None", "torch bias=False",
                       "MindSpore use_batch_statistics=False",
                       "MindSpore affine=False with gamma_init=2.0",
                       "MindSpore gamma_init='zeros'"}
    policies = {name for row in rows for name in row.policies}
    assert policies == {"momentum_none", "bias_false", "affine_false_values",
                        "use_batch_statistics_false", "initialisers"}


def test_the_replay_tolerance_is_the_spec_s_between_the_frameworks():
    tolerances = {expectation.tol for entry in PARAMETER_ENTRIES for check in entry.checks
                  if any(isinstance(item, Converts) for item in check.expect)
                  for expectation in check.expect
                  if isinstance(expectation, (OutputsMatch, RunningStatsMatch))}
    assert tolerances == {FLOAT32_TOLERANCE}


@pytest.mark.parametrize("implementation", ["torch-facade", "mindspore-facade"])
def test_a_converter_that_keeps_the_momentum_fails_the_momentum_row(monkeypatch, implementation):
    monkeypatch.setattr(settings, "complement_momentum", lambda momentum: float(momentum))
    result = spec.replay(BY_ID["parameter-momentum"], implementation)
    assert result.status == spec.FAIL
    assert any("the torch side's settings convert to nn.BatchNorm3d(3, eps=1e-05, "
               "momentum=0.1" in message for message in result.messages)


def test_a_converter_that_drops_a_value_fails_the_state_comparison(monkeypatch):
    original = state.torch_state_to_mindspore

    def forgetful(parameters, torch_settings):
        converted, notes = original(parameters, torch_settings)
        converted["weight"] = converted["weight"] * 0 + 1
        return converted, notes

    monkeypatch.setattr(state, "torch_state_to_mindspore", forgetful)
    result = spec.replay(BY_ID["parameter-gamma-init"], "torch-facade")
    assert any("state converts to bn2d.gamma = [1.0, 1.0, 1.0], but the mindspore side has "
               "[0.5, 2.0, -1.0]" in message for message in result.messages)


def test_a_refusal_the_converter_no_longer_makes_fails():
    check = Check.parse(Fields({
        "name": "refusal", "sides": {"torch": {"kwargs": {"num_features": 3}},
                                     "mindspore": {"kwargs": {"num_features": 3}}},
        "expect": [{"converts": {"from": "torch", "refused": "torch bias=False"}}]}, "c"))
    result = spec.run_check(check, {"torch": "torch-facade", "mindspore": "mindspore-facade"})
    assert result.status == spec.FAIL
    assert result.messages[0].startswith("the torch side's settings were expected to be refused")


def test_a_policy_no_note_states_fails():
    check = Check.parse(Fields({
        "name": "unstated", "sides": {"torch": {"kwargs": {"num_features": 3}},
                                      "mindspore": {"kwargs": {"num_features": 3}}},
        "expect": [{"converts": {"from": "torch", "policies": {"bias_false": "zero-beta"}}}]},
        "c"))
    result = spec.run_check(check, {"torch": "torch-facade", "mindspore": "mindspore-facade"})
    assert result.messages == ("the policy bias_false was given but no note of the conversion "
                               "states it",)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"from": "torch", "policies": {"bias_false": "zero"}}, "the choices are 'zero-beta'"),
    ({"from": "torch", "policies": {"speed": 1}}, "unexpected keyword argument 'speed'"),
    ({"from": "tensorflow"}, "'tensorflow' is not one of \\['torch', 'mindspore'\\]"),
])
def test_a_malformed_conversion_check_names_the_field(fields, problem):
    with pytest.raises(FieldError, match=problem):
        spec.expectations.parse_expectation({"converts": fields}, "expect[0]")
