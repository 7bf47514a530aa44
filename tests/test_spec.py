"""The executable spec: it loads, covers the document, passes on the facades, and can fail."""

from __future__ import annotations

import copy
import doctest
import importlib
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import bn3d.mindspore_nn
import bn3d.spec as spec
import bn3d.torch_nn
from bn3d.spec.fields import Fields
from bn3d.spec.model import Check

ENTRIES = spec.load_spec()
BY_ID = {entry.id: entry for entry in ENTRIES}
DOCUMENT = Path(__file__).parent / "data" / "migration_document.txt"

# What the document contains, read off it by hand: every one of these needs an entry.
PARAMETER_ROWS = {
    ("num_features", "num_features"), ("eps", "eps"), ("momentum", "momentum"),
    ("affine", "affine"), ("track_running_stats", "use_batch_statistics"),
    ("-", "gamma_init"), ("-", "beta_init"), ("-", "moving_mean_init"),
    ("-", "moving_var_init"), ("input", "x"),
}
TORCH_STATES = {(True, True), (True, False), (False, True), (False, False)}
MINDSPORE_STATES = {True, False, None}
SECTIONS = {"signature", "summary", "parameters", "difference-1", "difference-2",
            "difference-3", "example"}


def replayed(entry: spec.Entry, implementation: str) -> spec.EntryResult:
    result = spec.replay(entry, implementation)
    if result.status == spec.SKIPPED:
        reasons = dict.fromkeys(message.partition(": ")[2] for message in result.messages)
        pytest.skip("; ".join(reasons))
    return result


def failure_text(result: spec.EntryResult) -> str:
    return "\n".join(result.messages)


# -- the spec holds on the facades (and on the real frameworks where they import) --


@pytest.mark.parametrize("implementation", ["torch-facade", "mindspore-facade"])
@pytest.mark.parametrize("entry_id", list(BY_ID))
def test_entry_holds_on_facade(entry_id, implementation):
    result = replayed(BY_ID[entry_id], implementation)
    assert result.status == spec.PASS, failure_text(result)


@pytest.mark.parametrize("entry_id", list(BY_ID))
def test_entry_holds_on_real_torch(entry_id):
    pytest.importorskip("torch")
    result = replayed(BY_ID[entry_id], "torch")
    assert result.status == spec.PASS, failure_text(result)


@pytest.mark.parametrize("entry_id", list(BY_ID))
def test_entry_holds_on_real_mindspore(entry_id):
    pytest.importorskip("mindspore")
    result = replayed(BY_ID[entry_id], "mindspore")
    assert result.status == spec.PASS, failure_text(result)


# -- the spec covers the document and quotes it --


def test_every_parameter_row_state_and_difference_has_an_entry():
    tables = spec.document_tables(implementations=())
    rows = {(row.cells["pytorch"], row.cells["mindspore"]) for row in tables["parameters"]}
    torch_states = {(row.cells["training"], row.cells["track_running_stats"])
                    for row in tables["torch-states"]}
    mindspore_states = {row.cells["use_batch_statistics"] for row in tables["mindspore-states"]}
    sections = {entry.section for entry in ENTRIES if entry.source == "document"}
    assert PARAMETER_ROWS - rows == set(), "parameter rows without an entry"
    assert TORCH_STATES - torch_states == set(), "torch states without an entry"
    assert MINDSPORE_STATES - mindspore_states == set(), "MindSpore states without an entry"
    assert SECTIONS - sections == set(), "document sections without an entry"


def test_state_entries_exercise_their_framework():
    for table, framework in (("torch-states", "torch"), ("mindspore-states", "mindspore")):
        for row in spec.document_tables(implementations=())[table]:
            checks = BY_ID[row.entry_id].checks
            assert any(framework in check.sides for check in checks), row.entry_id


def test_parameter_rows_are_in_the_documents_order():
    table = spec.document_tables(implementations=())["parameters"]
    numbers = [row.cells["number"] for row in table]
    assert numbers == list(range(1, 11))


def normalised(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("entry_id", [e.id for e in ENTRIES if e.source == "document"])
def test_document_entry_quotes_the_document(entry_id):
    document = normalised(DOCUMENT.read_text(encoding="utf-8"))
    for part in BY_ID[entry_id].text.split(" … "):
        assert normalised(part) in document


def test_reference_entries_are_marked_as_not_from_the_document():
    for entry in ENTRIES:
        assert (entry.source == "reference") == (entry.section == "reference"), entry.id


def test_document_tables_report_each_implementations_status():
    row = spec.document_tables(implementations=("torch-facade",))["torch-states"][0]
    assert row.status == {"torch-facade": spec.PASS}
    assert row.quote.startswith("True True Expected training status.")


# -- one registry of expectation kinds, checked against the schema; few dependencies --


def test_registry_and_schema_list_the_same_expectation_kinds():
    from bn3d.spec.loading import schema

    assert list(spec.EXPECTATIONS) == list(schema()["$defs"]["expectation"]["properties"])


def test_loading_refuses_a_registry_that_differs_from_the_schema(monkeypatch):
    monkeypatch.delitem(spec.EXPECTATIONS, "trainable")
    with pytest.raises(spec.SpecError, match=r"only in the schema: \['trainable'\]"):
        spec.load_spec()


def test_typed_model_alone_loads_the_spec_as_with_the_schema():
    pytest.importorskip("jsonschema")
    with_schema = spec.load_spec(validate=True)
    assert [repr(entry) for entry in spec.load_spec(validate=False)] == \
        [repr(entry) for entry in with_schema]


def test_loading_without_jsonschema_uses_the_typed_model_and_validating_says_what_to_install(
        monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    assert [entry.id for entry in spec.load_spec()] == list(BY_ID)
    with pytest.raises(ImportError, match=r"needs jsonschema: pip install 'bn3d\[spec\]'"):
        spec.load_spec(validate=True)


def test_importing_bn3d_and_its_spec_needs_numpy_only(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules.update(yaml=None, jsonschema=None, torch=None, mindspore=None)
        import bn3d, bn3d.cli, bn3d.spec
        print("imported")
    """)
    # From an empty directory, so the installed bn3d is imported, not the source tree.
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=tmp_path)
    assert process.stdout == "imported\n", process.stderr


SPEC_MODULES = sorted(info.name for info in pkgutil.iter_modules(spec.__path__, "bn3d.spec."))


@pytest.mark.parametrize("name", SPEC_MODULES)
def test_docstring_examples_of_the_spec_modules_run(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


# -- a malformed spec fails, naming the file, the entry and the field --

VALID_ENTRY = {
    "id": "probe-entry",
    "title": "a probe",
    "source": "document",
    "section": "summary",
    "quote": "In PyTorch, the network is in training mode by default",
    "checks": [{
        "name": "probe-check",
        "sides": {"torch": {"kwargs": {"num_features": 2}}},
        "inputs": {"x": {"random": {"seed": 1, "shape": [2, 2, 1, 1, 2]}}},
        "steps": [{"forward": "x"}],
        "expect": [{"attribute": {"side": "torch", "path": "training", "equals": True}}],
    }],
}


def write_spec(tmp_path: Path, entries: list, name: str = "probe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(params=[True, False], ids=["with-schema", "typed-model-only"])
def validate(request) -> bool:
    """Each malformed spec is rejected by the JSON schema, and by the typed model on its own."""
    if request.param:
        pytest.importorskip("jsonschema")
    return request.param


@pytest.fixture
def spec_error(tmp_path, validate):
    def load_changed(change) -> str:
        entry = copy.deepcopy(VALID_ENTRY)
        change(entry)
        path = write_spec(tmp_path, [entry])
        with pytest.raises(spec.SpecError) as caught:
            spec.load_spec([path], validate=validate)
        return str(caught.value)

    return load_changed


def test_valid_probe_spec_loads(tmp_path, validate):
    (entry,) = spec.load_spec([write_spec(tmp_path, [VALID_ENTRY])], validate=validate)
    assert entry.id == "probe-entry" and entry.file.endswith("probe.yaml")


def test_wrong_field_type_names_file_entry_and_field(spec_error):
    def change(entry):
        entry["checks"][0]["expect"] = [{"outputs_match": {"tol": "small"}}]

    message = spec_error(change)
    assert "probe.yaml" in message
    assert "entry 'probe-entry'" in message
    assert "checks[0].expect[0].outputs_match.tol" in message
    assert "'small' is not of type 'number'" in message


def test_missing_quote_names_the_field(spec_error):
    message = spec_error(lambda entry: entry.pop("quote"))
    assert "probe.yaml: entry 'probe-entry': field quote:" in message


def test_unknown_expectation_kind_names_the_field(spec_error):
    def change(entry):
        entry["checks"][0]["expect"] = [{"outputs_equal": {"tol": 1e-6}}]

    message = spec_error(change)
    assert "entry 'probe-entry': field checks[0].expect[0]" in message
    assert "outputs_equal" in message


def test_step_naming_a_missing_input_names_the_field(spec_error):
    def change(entry):
        entry["checks"][0]["steps"] = [{"forward": "y"}]

    message = spec_error(change)
    assert "entry 'probe-entry': field checks[0].steps[0].forward: no input called 'y'" in message


def test_expectation_about_a_missing_step_names_the_field(spec_error):
    def change(entry):
        entry["checks"][0]["expect"] = [
            {"normalised_with": {"side": "torch", "step": 3, "stats": "batch", "tol": 1e-5}}]

    message = spec_error(change)
    assert "field checks[0].expect[0].normalised_with.step: there is no step 3" in message


def test_paired_expectation_needs_both_sides(spec_error):
    def change(entry):
        entry["checks"][0]["expect"] = [{"outputs_match": {"tol": 1e-6}}]

    message = spec_error(change)
    assert "field checks[0].expect[0].outputs_match: compares both frameworks" in message


def test_ragged_array_names_the_field(spec_error):
    def change(entry):
        entry["checks"][0]["inputs"] = {"x": {"value": [[[[[1.0, 2.0]]], [[[3.0]]]]]}}

    message = spec_error(change)
    assert "field checks[0].inputs.x.value: not a rectangular array of numbers" in message


def test_expectation_about_steps_needs_steps(spec_error):
    def change(entry):
        del entry["checks"][0]["steps"]
        entry["checks"][0]["expect"] = [
            {"running_stats_follow": {"side": "torch", "momentum": 0.1, "tol": 1e-6}}]

    message = spec_error(change)
    assert "field checks[0].expect[0].running_stats_follow: is about steps, and the check has " \
           "none" in message


def test_reference_entry_must_not_quote_the_document(spec_error):
    def change(entry):
        entry.update(source="reference", section="reference")

    message = spec_error(change)
    assert "entry 'probe-entry'" in message and "statement" in message


def test_duplicate_ids_across_files_are_rejected(tmp_path, validate):
    first = write_spec(tmp_path, [VALID_ENTRY], "first.yaml")
    second = write_spec(tmp_path, [VALID_ENTRY], "second.yaml")
    with pytest.raises(spec.SpecError, match=r"second\.yaml: entry 'probe-entry': field id: "
                                             r"the id is already used in .*first\.yaml"):
        spec.load_spec([first, second], validate=validate)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- id: [unclosed\n", encoding="utf-8")
    with pytest.raises(spec.SpecError, match=r"broken\.yaml: not valid YAML"):
        spec.load_spec([path])


def test_exponents_without_a_dot_are_floats(tmp_path):
    lines = yaml.safe_dump([VALID_ENTRY], sort_keys=False).splitlines()
    at = next(index for index, line in enumerate(lines) if line.strip() == "equals: true")
    lines.insert(at, lines[at].replace("equals: true", "tol: 1e-5"))
    path = tmp_path / "probe.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    (loaded,) = spec.load_spec([path])
    assert loaded.checks[0].expect[0].tol == 1e-5


# -- the replayer fails when what it replays is wrong --


def run_probe(check_changes: dict, implementation: str = "torch-facade") -> spec.CheckResult:
    check = copy.deepcopy(VALID_ENTRY["checks"][0])
    check.update(check_changes)
    return spec.run_check(Check.parse(Fields(check, "checks[0]")), {"torch": implementation})


def test_replay_fails_on_wrong_statistics():
    result = run_probe({"expect": [
        {"normalised_with": {"side": "torch", "step": 0, "stats": "running", "tol": 1e-5}}]})
    assert result.status == spec.FAIL
    assert "differs from the running-statistics reference" in result.messages[0]


def test_replay_fails_when_an_expected_error_is_not_raised():
    result = run_probe({"expect": [
        {"raises": {"side": "torch", "at": 0, "type": "ValueError", "message": "no"}}]})
    assert result.status == spec.FAIL
    assert "expected ValueError at step 0, nothing was raised" in result.messages[0]


def test_replay_fails_on_an_unexpected_error():
    result = run_probe({"sides": {"torch": {"kwargs": {"num_features": 3}}}})
    assert result.status == spec.FAIL
    assert result.messages == (
        "torch-facade raised at step 0: RuntimeError: running_mean should contain 2 elements "
        "not 3",)


def test_replay_fails_on_a_wrong_error_message():
    result = run_probe({
        "sides": {"torch": {"kwargs": {"num_features": 3}}},
        "expect": [{"raises": {"side": "torch", "at": 0, "type": "RuntimeError",
                               "message": "running_mean should contain 3 elements not 2"}}]})
    assert result.status == spec.FAIL
    assert "got RuntimeError: 'running_mean should contain 2 elements not 3'" in result.messages[0]


def test_replay_fails_when_inputs_cannot_tell_the_statistics_apart():
    result = run_probe({
        "sides": {"torch": {"kwargs": {"num_features": 2}, "load": {
            "running_mean": [0.0, 0.0], "running_var": [0.0, 0.0]}}},
        "inputs": {"x": {"value": [[[[[0.0, 0.0]]], [[[0.0, 0.0]]]]]}},
        "expect": [{"normalised_with": {"side": "torch", "step": 0, "stats": "batch",
                                        "tol": 1e-5}}]})
    assert result.messages == (
        "torch-facade step 0: the inputs do not tell batch from running statistics apart",)


class TorchTrainingAsAnInt(bn3d.torch_nn.BatchNorm3d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.training = 1


def test_replay_wants_a_bool_where_the_spec_says_true(monkeypatch):
    monkeypatch.setattr(bn3d.torch_nn, "BatchNorm3d", TorchTrainingAsAnInt)
    result = run_probe({})
    assert result.status == spec.FAIL
    assert "training is 1, expected True" in result.messages[0]


def test_replay_fails_when_unchanged_statistics_are_missing():
    result = run_probe({
        "sides": {"torch": {"kwargs": {"num_features": 2, "track_running_stats": False}}},
        "expect": [{"running_stats": {"side": "torch", "at": 0, "changed": False}}]})
    assert result.status == spec.FAIL
    assert "no running statistics to compare" in result.messages[0]


def test_absent_framework_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "mindspore", None)
    result = spec.replay(BY_ID["signature-mindspore"], "mindspore")
    assert result.status == spec.SKIPPED
    assert "mindspore is not importable" in result.messages[0]


def test_entry_about_the_other_framework_is_skipped():
    result = spec.replay(BY_ID["difference-2-pytorch-trains-by-default"], "mindspore-facade")
    assert result.status == spec.SKIPPED
    assert result.messages == ["new-module-trains: the check has no mindspore side"]


# -- deliberately broken facades make the replay fail --


class TorchStartingInEval(bn3d.torch_nn.BatchNorm3d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval()


class TorchWithMindSporesMomentum(bn3d.torch_nn.BatchNorm3d):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, **kwargs):
        super().__init__(num_features, eps, 1.0 - momentum, **kwargs)


class TorchWithShiftedOutput(bn3d.torch_nn.BatchNorm3d):
    def forward(self, input):
        return super().forward(input) + 1e-3


@pytest.mark.parametrize(("broken", "entry_id", "symptom"), [
    (TorchStartingInEval, "difference-2-pytorch-trains-by-default", "training is False"),
    (TorchWithMindSporesMomentum, "torch-state-training-tracking",
     "do not follow the torch update with momentum 0.1"),
    (TorchWithShiftedOutput, "torch-state-eval-tracking", "differs from the running-statistics"),
])
def test_broken_torch_facade_fails_the_replay(monkeypatch, broken, entry_id, symptom):
    monkeypatch.setattr(bn3d.torch_nn, "BatchNorm3d", broken)
    result = spec.replay(BY_ID[entry_id], "torch-facade")
    assert result.status == spec.FAIL
    assert symptom in failure_text(result)


@pytest.fixture
def mindspore_nn():
    return bn3d.mindspore_nn


def test_mindspore_facade_with_torchs_momentum_fails_the_relation(monkeypatch, mindspore_nn):
    class WithTorchsMomentum(mindspore_nn.BatchNorm3d):
        def __init__(self, num_features, eps=1e-5, momentum=0.9, **kwargs):
            super().__init__(num_features, eps, 1.0 - momentum, **kwargs)

    monkeypatch.setattr(mindspore_nn, "BatchNorm3d", WithTorchsMomentum)
    for entry_id in ("difference-3-momentum-relation", "summary-default-momentum"):
        result = spec.replay(BY_ID[entry_id], "mindspore-facade")
        assert result.status == spec.FAIL
        assert "running statistics of torch-facade and mindspore-facade differ" in \
            failure_text(result)


def test_mindspore_facade_training_by_default_fails_difference_2(monkeypatch, mindspore_nn):
    class TrainingByDefault(mindspore_nn.BatchNorm3d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.set_train()

    monkeypatch.setattr(mindspore_nn, "BatchNorm3d", TrainingByDefault)
    result = spec.replay(BY_ID["difference-2-mindspore-infers-by-default"], "mindspore-facade")
    assert result.status == spec.FAIL
    assert "training is True, expected False" in failure_text(result)


def test_mindspore_facade_dropping_gamma_without_affine_fails(monkeypatch, mindspore_nn):
    class IgnoresGammaWithoutAffine(mindspore_nn.BatchNorm3d):
        def __init__(self, num_features, *args, affine=True, gamma_init="ones", **kwargs):
            super().__init__(num_features, *args, affine=affine,
                             gamma_init=gamma_init if affine else "ones", **kwargs)

    monkeypatch.setattr(mindspore_nn, "BatchNorm3d", IgnoresGammaWithoutAffine)
    result = spec.replay(BY_ID["reference-affine-false"], "mindspore-facade")
    assert result.status == spec.FAIL
    assert "bn2d.gamma is [1.0, 1.0, 1.0], expected [2.0, 2.0, 2.0]" in failure_text(result)
