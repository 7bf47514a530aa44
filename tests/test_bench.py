"""The benchmark's logic: the load rule, the pooling of processes, the targets, the report and
the documentation's tables and plot, on synthetic numbers (nothing here is timed)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
EXTENSIONS = ROOT / "docs" / "_ext"


def import_from(directory: Path, name: str) -> ModuleType:
    """A module of ``benchmarks/`` or ``docs/_ext/``, which import their neighbours by name."""
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))


load_rule = import_from(BENCHMARKS, "load_rule")
timing = import_from(BENCHMARKS, "timing")
summary = import_from(BENCHMARKS, "summary")
targets = import_from(BENCHMARKS, "targets")
report = import_from(BENCHMARKS, "report")

SMALL = [32, 128, 4, 7, 7]
BIG = [8, 32, 32, 64, 64]
OPERATIONS = ["train_forward", "eval_forward", "backward", "forward_backward"]


# -- the load rule -------------------------------------------------------------------------------


def test_busy_ticks_add_user_nice_system_irq_softirq_and_steal():
    text = ("cpu  1000 50 300 9000 40 7 3 11 100 0\n"
            "cpu0 500 25 150 4500 20 3 1 5 50 0\nintr 12345\n")
    assert load_rule.busy_ticks(text) == 1000 + 50 + 300 + 7 + 3 + 11


def test_busy_ticks_of_an_old_kernel_without_steal():
    assert load_rule.busy_ticks("cpu  10 1 2 300 4 5 6\n") == 10 + 1 + 2 + 5 + 6


def test_busy_ticks_need_the_aggregate_line():
    with pytest.raises(ValueError, match="aggregate"):
        load_rule.busy_ticks("cpu0 1 2 3 4\n")


def test_own_ticks_count_fields_after_a_command_name_with_spaces_and_parentheses():
    fields = ["S"] + [str(n) for n in range(4, 14)] + ["250", "40"] + ["0"] * 30
    line = "777 (a (weird) name) " + " ".join(fields)
    assert load_rule.own_ticks(line) == 290


def test_others_load_is_the_busy_time_this_process_did_not_use_in_cores():
    before = load_rule.CpuSnapshot(wall=100.0, busy_ticks=5000, own_ticks=1200)
    after = load_rule.CpuSnapshot(wall=100.4, busy_ticks=5000 + 80, own_ticks=1200 + 70)
    # 80 busy ticks in 0.4 s, 70 of them ours: others used 10 ticks = 0.1 s in 0.4 s.
    assert load_rule.others_load(before, after, 100) == pytest.approx(0.25)


def test_a_process_using_both_cores_alone_shows_no_load():
    before = load_rule.CpuSnapshot(0.0, 0, 0)
    after = load_rule.CpuSnapshot(0.5, 100, 100)
    assert load_rule.others_load(before, after, 100) == 0.0


def test_others_load_needs_a_window_of_positive_length():
    snapshot = load_rule.CpuSnapshot(1.0, 0, 0)
    with pytest.raises(ValueError, match="positive"):
        load_rule.others_load(snapshot, snapshot, 100)


@pytest.mark.parametrize(("load", "loaded"), [(0.0, False), (0.25, False), (0.2501, True),
                                              (1.0, True), (-0.04, False)])
def test_a_round_is_set_aside_above_a_quarter_of_a_core(load, loaded):
    assert load_rule.is_loaded(load) is loaded


@pytest.mark.skipif(not load_rule.load_rule_available(), reason="no /proc")
def test_the_snapshots_of_this_system_parse():
    snapshot = load_rule.read_snapshot()
    assert snapshot.busy_ticks >= 0 and snapshot.own_ticks >= 0


# -- rounds under the rule -----------------------------------------------------------------------


class ScriptedMachine:
    """Snapshots whose windows show the given loads of other processes, one per round."""

    def __init__(self, loads: list[float]):
        self.loads = list(loads)
        self.calls = 0
        self.busy = 0

    def __call__(self):
        self.calls += 1
        if self.calls % 2 == 0:  # the end of a window: 1 s in which others used the load
            self.busy += round(100 * self.loads.pop(0))
        return load_rule.CpuSnapshot(float(self.calls), self.busy, 0)


def counting_functions() -> tuple[dict, dict[str, int]]:
    calls = {"a": 0, "b": 0}

    def make(name):
        def call():
            calls[name] += 1
        return call
    return {"a": make("a"), "b": make("b")}, calls


def test_round_shares_split_the_runs_evenly():
    assert timing.round_shares(10, 3) == [4, 3, 3]
    assert sum(timing.round_shares(57, 5)) == 57


def test_loaded_rounds_are_set_aside_and_run_again():
    functions, _ = counting_functions()
    machine = ScriptedMachine([0.0, 0.6, 0.1, 0.0])  # the second round's first attempt loaded
    result = timing.timed_rounds(functions, repeat=6, rounds=3, warmup_seconds=0,
                                 snapshot=machine, hz=100)
    assert [len(runs) for runs in result.times.values()] == [6, 6]
    assert [(r.round, r.attempt) for r in result.set_aside] == [(1, 0)]
    assert result.set_aside[0].others_cores == pytest.approx(0.6)
    assert [(r.round, r.attempt) for r in result.kept] == [(0, 0), (1, 1), (2, 0)]
    assert result.kept_under_load == []


def test_a_round_still_loaded_after_the_retries_is_kept_and_said_to_be():
    functions, _ = counting_functions()
    machine = ScriptedMachine([0.9, 0.8, 0.7])
    result = timing.timed_rounds(functions, repeat=2, rounds=1, warmup_seconds=0,
                                 max_retries=2, snapshot=machine, hz=100)
    assert len(result.set_aside) == 2
    assert [record.others_cores for record in result.kept_under_load] == [pytest.approx(0.7)]
    assert [len(runs) for runs in result.times.values()] == [2, 2]


def test_the_runs_of_a_set_aside_round_are_dropped():
    functions, calls = counting_functions()
    machine = ScriptedMachine([1.0, 0.0])
    result = timing.timed_rounds(functions, repeat=3, rounds=1, warmup_seconds=0,
                                 snapshot=machine, hz=100)
    # two attempts of warm-up (2 calls) and 3 timed calls each, but 3 runs kept
    assert calls == {"a": 10, "b": 10}
    assert len(result.times["a"]) == 3


def test_without_a_snapshot_reader_the_rule_is_off():
    functions, _ = counting_functions()
    result = timing.timed_rounds(functions, repeat=4, rounds=2, warmup_seconds=0,
                                 load_limit=None)
    assert result.set_aside == [] and all(r.others_cores is None for r in result.kept)


def test_the_workers_keep_glibcs_other_tunables_and_get_their_extra_variables(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    environment = timing.steady_allocator_environment({"NPROC": "2"})
    assert environment["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + timing.STEADY_MALLOC
    assert environment["NPROC"] == "2"


# -- pooling the processes -----------------------------------------------------------------------


def raw_row(shape, operation, times: dict[str, list[float]], kept_loads=(0.0,),
            set_aside=(), threads=2) -> dict:
    """A worker's raw row."""
    return {
        "shape": shape, "threads": threads, "operation": operation, "times": times,
        "cpu_per_wall": {name: 1.9 for name in times},
        "page_faults": {name: 0.0 for name in times},
        "max_abs_difference": {name: 1e-6 for name in times},
        "rounds": {"limit_cores": 0.25,
                   "kept": [{"round": i, "attempt": 0, "seconds": 0.5, "others_cores": load}
                            for i, load in enumerate(kept_loads)],
                   "set_aside": [{"round": 0, "attempt": 0, "seconds": 0.5, "others_cores": load}
                                 for load in set_aside]},
    }


# Per process: bn3d's time, and every other implementation's as a multiple of it.
SPEEDUPS = {"bn3d_out": 0.9, "torch": 3.0, "onnxruntime": 2.0, "jax": 1.5, "numpy": 8.0,
            "floor_by_channel": 0.95, "floor_two_sweeps": 1.1, "bn3d_cl": 1.2,
            "torch_cl": 3.0, "jax_cl": 2.8}


def synthetic_worker(process: int, bn3d_seconds: float, torch_factor: float = 3.0) -> dict:
    rows = []
    for shape in (BIG, SMALL):
        for operation in OPERATIONS:
            times = {"bn3d": [bn3d_seconds] * 3}
            for name, factor in SPEEDUPS.items():
                if name == "onnxruntime" and "backward" in operation:
                    continue
                if name.startswith("floor") and operation != "backward":
                    continue
                factor = torch_factor if name == "torch" else factor
                times[name] = [bn3d_seconds * factor] * 3
            rows.append(raw_row(shape, operation, times,
                                set_aside=(0.5,) if process == 1 else ()))
    return {"process": process, "threads": 2, "rows": rows,
            "bandwidth": [{"shape": BIG, "threads": 2, "bytes": 2 * 2**27,
                           "times": {"copy": [0.01, 0.012], "out": [0.02]}}],
            "memory": [{"shape": BIG, "input_bytes": 2**27, "train_forward_extra_bytes": 4096,
                        "backward_extra_bytes": 2048}],
            "notes": {"onnxruntime/backward": "no backward (an inference session)"}}


def synthetic_results() -> dict:
    """Three processes; in the middle one PyTorch is only 2.4x slower than bn3d."""
    workers = [synthetic_worker(0, 0.010), synthetic_worker(1, 0.012, torch_factor=2.4),
               synthetic_worker(2, 0.011)]
    settings = {"repeat": 3, "rounds": 1, "processes": 3, "threads": [2],
                "load": {"limit_cores": 0.25, "max_retries": 4, "min_round_seconds": 0.4,
                         "ticks_per_second": 100}}
    implementations = {name: {"library": name, "layout": "contiguous", "calls": "-"}
                       for name in ["bn3d", *SPEEDUPS]}
    return summary.results_document(
        workers, settings, {"cpu": "Test CPU", "cores": 2, "platform": "test",
                            "python": "3.11", "numpy": "2"},
        {"bn3d": "0.1.0", "torch": "2.13.0"}, "2026-12-06T12:00:00+00:00", implementations)


def test_spread_is_the_least_median_and_greatest():
    assert summary.spread([4.0, 1.0, 3.0]) == {"min": 1.0, "median": 3.0, "max": 4.0}
    with pytest.raises(ValueError):
        summary.spread([])


def test_a_case_pools_every_run_and_keeps_each_process_median_in_order():
    parts = [raw_row(SMALL, "backward", {"bn3d": [1.0, 2.0, 9.0], "torch": [5.0]}),
             raw_row(SMALL, "backward", {"bn3d": [3.0, 4.0, 5.0]}, kept_loads=(0.1, 0.3))]
    row = summary.pool_case(parts)
    assert row["seconds"] == {"bn3d": 3.5, "torch": 5.0}
    assert row["process_medians"] == {"bn3d": [2.0, 4.0], "torch": [5.0, None]}
    assert row["spread"]["bn3d"] == {"min": 2.0, "median": 3.0, "max": 4.0}
    assert row["spread"]["torch"] == {"min": 5.0, "median": 5.0, "max": 5.0}
    assert row["load"] == {"rounds_kept": 3, "set_aside": 0, "kept_under_load": 1,
                           "max_others_cores_kept": 0.3}


def test_every_round_set_aside_is_recorded_with_its_case_and_process():
    workers = [synthetic_worker(0, 0.01), synthetic_worker(1, 0.01)]
    found = summary.set_aside_rounds(workers)
    assert len(found["set_aside"]) == 2 * len(OPERATIONS)
    record = found["set_aside"][0]
    assert record["process"] == 1 and record["others_cores"] == 0.5
    assert record["shape"] == BIG and record["operation"] == "train_forward"


def test_bandwidth_is_the_moved_bytes_over_the_pooled_median():
    pooled = summary.pool_bandwidth([synthetic_worker(0, 0.01)])
    assert pooled[0]["copy_bytes_per_second"] == pytest.approx(2**28 / 0.011)
    assert pooled[0]["train_forward_out_bytes_per_second"] == pytest.approx(2**28 / 0.02)


def test_the_results_document_has_the_schema_the_docstring_describes():
    results = synthetic_results()
    assert results["schema"] == 2
    assert results["repeat"] == 9 and results["processes"] == 3
    assert {"rows", "load", "targets", "notes", "versions", "settings"} <= set(results)
    assert len(results["load"]["set_aside"]) == 2 * len(OPERATIONS)
    assert results["load"]["limit_cores"] == 0.25
    row = results["rows"][0]
    assert set(row) >= {"seconds", "spread", "process_medians", "page_faults_per_call",
                        "cpu_per_wall", "max_abs_difference", "load"}
    json.dumps(results)  # it serialises


# -- the targets ---------------------------------------------------------------------------------


def test_the_targets_table_is_the_issues():
    bounds = {(t.key, t.operation): (t.bound, t.at_least) for t in targets.TARGETS}
    assert bounds == {
        ("fastest-peer", "train_forward"): (1.2, True),
        ("fastest-peer", "eval_forward"): (1.2, True),
        ("fastest-peer", "backward"): (1.2, True),
        ("torch", "train_forward"): (2.5, True),
        ("torch", "eval_forward"): (1.2, True),
        ("torch", "backward"): (1.3, True),
        ("floor", "backward"): (1.15, False),
        ("channels-last", "train_forward"): (2.0, True),
        ("channels-last", "eval_forward"): (1.2, True),
        ("channels-last", "backward"): (1.3, True),
        ("channels-last-own", "train_forward"): (1.3, False),
        ("channels-last-own", "eval_forward"): (1.3, False),
        ("channels-last-own", "backward"): (1.3, False),
        ("fresh-vs-out", "train_forward"): (1.25, False),
        ("fresh-vs-out", "eval_forward"): (1.25, False),
        ("fresh-vs-out", "backward"): (1.25, False),
    }
    peers = next(t for t in targets.TARGETS if t.key == "fastest-peer")
    assert set(peers.numerator) == {"torch", "onnxruntime", "jax", "numpy"}
    assert all(t.shape == tuple(BIG) for t in targets.TARGETS if t.key == "fresh-vs-out")


def test_a_cell_is_judged_on_the_median_of_the_processes_ratios():
    row = {"seconds": {"bn3d": 1.0, "torch": 2.8},
           "process_medians": {"bn3d": [1.0, 1.0, 2.0], "torch": [3.0, 2.0, 5.6]}}
    target = targets.Target("torch", "", "train_forward", ("torch",), ("bn3d",), 2.5)
    cell = targets.evaluate_cell(row, target, SMALL)
    assert cell["ratio"] == pytest.approx(2.8)  # ratios 3.0, 2.0, 2.8
    assert cell["pooled_ratio"] == pytest.approx(2.8)
    assert cell["met"] is True
    assert cell["spread"] == [pytest.approx(2.0), pytest.approx(3.0)]
    assert cell["spread_crosses"] is True


def test_a_spread_on_one_side_of_the_target_does_not_cross_it():
    row = {"seconds": {"bn3d_cl": 1.3, "bn3d": 1.0},
           "process_medians": {"bn3d_cl": [1.1, 1.2], "bn3d": [1.0, 1.0]}}
    target = targets.Target("channels-last-own", "", "backward", ("bn3d_cl",), ("bn3d",), 1.3,
                            at_least=False)
    cell = targets.evaluate_cell(row, target, SMALL)
    assert cell["met"] is True and cell["spread_crosses"] is False


def test_fastest_of_the_peers_is_taken_in_each_process():
    row = {"seconds": {"bn3d": 1.0, "torch": 2.0, "jax": 1.9},
           "process_medians": {"bn3d": [1.0, 1.0], "torch": [3.0, 1.5], "jax": [1.4, 2.0]}}
    peers = next(t for t in targets.TARGETS
                 if t.key == "fastest-peer" and t.operation == "backward")
    assert targets.process_ratios(row, peers) == [1.4, 1.5]
    assert targets.evaluate_cell(row, peers, SMALL)["numerator"] == "jax"


def test_a_cell_without_one_side_is_unmeasured_and_says_why():
    row = {"seconds": {"bn3d": 1.0}, "process_medians": {"bn3d": [1.0]}}
    target = next(t for t in targets.TARGETS
                  if t.key == "fresh-vs-out" and t.operation == "backward")
    cell = targets.evaluate_cell(row, target, BIG, {"bn3d_out/backward": "no out= yet"})
    assert cell["met"] is None and cell["ratio"] is None
    assert cell["note"] == "bn3d_out: no out= yet"


def test_a_cell_says_when_its_case_kept_rounds_under_load():
    row = {"seconds": {"bn3d": 1.0, "torch": 3.0}, "load": {"kept_under_load": 2}}
    target = targets.Target("torch", "", "backward", ("torch",), ("bn3d",), 1.3)
    assert targets.evaluate_cell(row, target, SMALL)["note"] == "2 round(s) kept under load"


def test_evaluate_judges_every_shape_and_the_big_shape_alone_for_out():
    results = synthetic_results()
    cells = results["targets"]["cells"]
    keys = {(cell["target"], tuple(cell["shape"]), cell["operation"]) for cell in cells}
    assert ("torch", tuple(SMALL), "backward") in keys
    assert ("fresh-vs-out", tuple(BIG), "eval_forward") in keys
    assert ("fresh-vs-out", tuple(SMALL), "eval_forward") not in keys
    assert len(cells) == 2 * (3 + 3 + 1 + 3 + 3) + 3


def test_evaluate_lists_the_big_shape_unmeasured_when_the_run_left_it_out():
    rows = [row for row in synthetic_results()["rows"] if row["shape"] == SMALL]
    out = [cell for cell in targets.evaluate(rows)["cells"] if cell["target"] == "fresh-vs-out"]
    assert len(out) == 3 and all(cell["met"] is None for cell in out)


def test_the_synthetic_run_meets_and_crosses_where_expected():
    cells = {(c["target"], tuple(c["shape"]), c["operation"]): c
             for c in synthetic_results()["targets"]["cells"]}
    torch_train = cells[("torch", tuple(SMALL), "train_forward")]
    assert torch_train["met"] is True  # median of 3.0, 2.4, 3.0
    assert torch_train["spread"] == [pytest.approx(2.4), pytest.approx(3.0)]
    assert torch_train["spread_crosses"] is True
    assert cells[("floor", tuple(SMALL), "backward")]["ratio"] == pytest.approx(1 / 0.95)
    assert cells[("fastest-peer", tuple(SMALL), "backward")]["numerator"] == "jax"
    summary_counts = synthetic_results()["targets"]["summary"]
    assert summary_counts["unmeasured"] == 0
    assert summary_counts["met"] + summary_counts["not_met"] == 2 * 13 + 3


# -- the console report --------------------------------------------------------------------------


def test_the_report_names_the_cells_whose_spread_crosses():
    results = synthetic_results()
    crossing = report.crossing_cells(results["targets"])
    assert any(line.startswith("torch (32,128,4,7,7) training forward") for line in crossing)
    text = report.report(results)
    assert "targets at 2 threads" in text and "2 set aside" not in text
    assert f"{2 * len(OPERATIONS)} set aside" in text


def test_times_are_shown_with_the_processes_min_and_max():
    table = report.times_table(synthetic_results(), 2, report.CONTIGUOUS)
    assert "| (32,128,4,7,7) | backward | 11.000 (10.000-12.000) |" in table


# -- the documentation's extension ---------------------------------------------------------------


@pytest.fixture(scope="module")
def extension():
    pytest.importorskip("sphinx")
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(EXTENSIONS))
    try:
        return importlib.import_module("benchmark_results")
    except ImportError as error:  # spec_tables needs bn3d built
        pytest.skip(f"the extension does not import: {error}")
    finally:
        sys.path.remove(str(EXTENSIONS))


def legacy_results() -> dict:
    """A results file of schema 1, as the committed one: no peers, load rule or targets."""
    rows = [{"shape": shape, "threads": threads, "operation": operation,
             "seconds": {"bn3d": 0.001 * threads, "torch": 0.003},
             "process_medians": {"bn3d": [0.001 * threads] * 2, "torch": [0.003, 0.0036]}}
            for shape in (BIG, SMALL) for threads in (1, 2) for operation in OPERATIONS]
    return {"date": "2025-01-02T03:04:05+00:00", "machine": {"cpu": "Old CPU", "cores": 2},
            "versions": {"bn3d": "0.1.0", "torch": "2.13.0"}, "repeat": 50, "rounds": 5,
            "processes": 5, "rows": rows, "bandwidth": [], "memory": []}


def test_the_plot_of_a_new_run_has_three_kinds_of_bars_with_whiskers_and_targets(extension):
    bars = extension.plot_bars(synthetic_results())
    labels = {bar.series.label for bar in bars}
    assert labels == {"over PyTorch", "over the fastest peer",
                      "channels-last, over the faster of PyTorch and JAX"}
    torch_train = next(bar for bar in bars if bar.series.label == "over PyTorch"
                       and bar.operation == "train_forward" and bar.shape == tuple(SMALL))
    assert (torch_train.value, torch_train.low, torch_train.high) == (
        pytest.approx(3.0), pytest.approx(2.4), pytest.approx(3.0))
    assert torch_train.bound == 2.5
    fwd_bwd = next(bar for bar in bars if bar.operation == "forward_backward")
    assert fwd_bwd.bound is None


def test_the_plot_of_an_old_run_is_over_pytorch_per_thread_count(extension):
    bars = extension.plot_bars(legacy_results())
    assert {bar.series.label for bar in bars} == {"over PyTorch, 1 thread",
                                                  "over PyTorch, 2 threads"}
    two = next(bar for bar in bars if bar.series.threads == 2 and bar.operation == "backward")
    assert (two.value, two.low, two.high, two.bound) == (
        pytest.approx(1.65), pytest.approx(1.5), pytest.approx(1.8), 1.3)


@pytest.mark.parametrize("make", [synthetic_results, legacy_results])
def test_the_plot_is_drawn(extension, tmp_path, make):
    path = tmp_path / "plot.png"
    extension.draw_plot(make(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_targets_table_says_met_and_crossing(extension):
    rows = extension.target_rows(synthetic_results())
    torch_train = next(row for row in rows if row["title"] == "contiguous, against PyTorch"
                       and row["operation"] == "training forward"
                       and row["shape"] == "(32, 128, 4, 7, 7)")
    assert torch_train["met"] is True and torch_train["crosses"] is True
    assert torch_train["ratio"] == "3.00x" and torch_train["bound"] == "\u2265 2.5x"
    assert torch_train["spread"] == "2.40\u20133.00"


def test_an_old_run_says_it_predates_the_targets_and_the_load_rule(extension):
    from docutils import nodes

    data = legacy_results()
    assert extension.predates_peers(data)
    note = extension.targets_table(data)[0]
    assert isinstance(note, nodes.note) and "predates" in note.astext()
    assert "predates the load rule" in extension.load_text(data)
    assert extension.target_rows(data) == []


def test_the_times_tables_show_each_layout_with_the_spread(extension):
    data = synthetic_results()
    contiguous = extension.present(data, extension.LAYOUTS["contiguous"])
    lines = extension.times_rows(data, 2, contiguous)
    backward = next(line for line in lines if line[:2] == ["(32, 128, 4, 7, 7)", "backward"])
    assert backward[2:4] == ["11.000", "10.000\u201312.000"]
    tables = extension.times_tables(data)
    assert len(tables) == 2  # contiguous and channels-last, 2 threads
    assert "JAX NDHWC" in tables[1].astext()


def test_the_load_rule_summary_counts_the_rounds_set_aside(extension):
    text = extension.load_text(synthetic_results())
    assert f"{2 * len(OPERATIONS)} set aside" in text and "0.50 to 0.50 cores" in text


# -- the peers, on tiny arrays (each skipped without its library) --------------------------------


@pytest.fixture(scope="module")
def peers():
    try:
        return import_from(BENCHMARKS, "peers")
    except ImportError as error:
        pytest.skip(f"bn3d does not import: {error}")


@pytest.fixture(scope="module")
def tiny(peers):
    return peers.Case((2, 3, 2, 3, 4))


def test_channels_last_arrays_hold_the_same_values_in_ndhwc_memory(peers, tiny):
    array = tiny.x_channels_last
    np.testing.assert_array_equal(array, tiny.x)
    assert array.transpose(0, 2, 3, 4, 1).flags.c_contiguous


def outputs_agree(peers, operations, main_output, reference):
    for operation, call in operations.items():
        np.testing.assert_allclose(main_output(call()), reference[operation], rtol=1e-4,
                                   atol=1e-5, err_msg=operation)


@pytest.fixture(scope="module")
def reference(peers, tiny):
    return {operation: peers.first_array(call())
            for operation, call in peers.bn3d_operations(tiny).items()}


def test_bn3d_in_every_layout_and_with_out_computes_the_same(peers, tiny, reference):
    outputs_agree(peers, peers.bn3d_operations(tiny, "channels_last"), peers.first_array,
                  reference)
    outputs_agree(peers, peers.bn3d_operations(tiny, out=True), peers.first_array, reference)


def test_numpy_computes_what_bn3d_does(peers, tiny, reference):
    outputs_agree(peers, peers.numpy_operations(tiny), peers.first_array, reference)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_torch_computes_what_bn3d_does(peers, tiny, reference, layout):
    torch = pytest.importorskip("torch")
    outputs_agree(peers, peers.torch_operations(tiny, torch, layout), peers.first_array,
                  reference)


def test_onnxruntime_runs_both_modes_and_computes_what_bn3d_does(peers, tiny, reference):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    found = peers.onnxruntime_training_mode(ort, onnx)
    assert found["supported"] and found["batch_statistics"], found["note"]
    operations = peers.onnxruntime_operations(tiny, ort, onnx, 1, True)
    assert set(operations) == {"train_forward", "eval_forward"}
    outputs_agree(peers, operations, peers.first_array, reference)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_jax_computes_what_bn3d_does(peers, tiny, reference, layout):
    jax = pytest.importorskip("jax")
    main_output = peers.first_array_ndhwc if layout == "channels_last" else peers.first_array
    outputs_agree(peers, peers.jax_operations(tiny, jax, layout), main_output, reference)


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(peers):
    return import_from(BENCHMARKS, "bench")


def test_shapes_are_read_from_the_command_line(bench):
    options = bench.parser().parse_args(["--shapes", "2,3,4,5,6", "32,128,4,7,7"])
    assert options.shapes == [(2, 3, 4, 5, 6), (32, 128, 4, 7, 7)]
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--shapes", "2,3,4"])


def test_a_worker_gets_the_settings_of_the_run(bench):
    options = bench.parser().parse_args(["--repeat", "12", "--rounds", "3", "--shapes",
                                         "2,3,4,5,6", "--skip", "jax", "--layouts",
                                         "contiguous", "--max-retries", "2"])
    worker = bench.parser().parse_args(bench.worker_arguments(options, 4, 2))
    assert worker.worker and worker.process == 4 and worker.threads == [2]
    for name in ("repeat", "rounds", "shapes", "skip", "layouts", "max_retries",
                 "load_limit", "min_round_seconds", "operations"):
        assert getattr(worker, name) == getattr(options, name), name
