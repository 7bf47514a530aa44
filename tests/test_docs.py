"""The documentation builds without a warning, its examples run, and its generated parts are there.

Skipped unless the ``docs`` extra is installed (``pip install ".[docs]"``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

for module in ("sphinx", "furo", "numpydoc", "matplotlib"):
    pytest.importorskip(module)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def sphinx_build(builder: str, output: Path, results: Path) -> subprocess.CompletedProcess:
    """Run ``sphinx-build -W --keep-going`` as a user would, outside the source tree.

    ``results`` is the benchmark results file the performance page reads.
    """
    environment = dict(os.environ, BN3D_BENCHMARK_RESULTS=str(results))
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", builder,
         "-d", str(output / "doctrees"), str(DOCS), str(output / builder)],
        cwd=output, env=environment, capture_output=True, text=True, timeout=600,
    )


def benchmark_results() -> dict:
    """A small results file in the layout ``benchmarks/bench.py`` writes."""
    rows = [
        {"shape": shape, "threads": threads, "operation": operation,
         "seconds": {"bn3d": 0.001 * factor / threads, "torch": 0.003 * factor / threads,
                     **({"numpy": 0.01 * factor} if threads == 1 else {})}}
        for factor, shape in enumerate(([8, 32, 32, 64, 64], [32, 128, 4, 7, 7]), start=1)
        for threads in (1, 2)
        for operation in ("train_forward", "eval_forward", "backward", "forward_backward")
    ]
    return {
        "date": "2025-01-02T03:04:05+00:00",
        "machine": {"cpu": "Test CPU 9000", "cores": 2, "platform": "Linux-test",
                    "python": "3.11.7", "numpy": "2.0.0"},
        "versions": {"bn3d": "0.1.0", "torch": "2.13.0"},
        "repeat": 10,
        "rows": rows,
        "bandwidth": [{"shape": [8, 32, 32, 64, 64], "threads": 2,
                       "copy_bytes_per_second": 1e10,
                       "train_forward_out_bytes_per_second": 7e9}],
        "memory": [{"shape": [8, 32, 32, 64, 64], "train_forward_extra_bytes": 2048,
                    "backward_extra_bytes": 4096, "input_bytes": 134217728}],
    }


def warnings_in(process: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (process.stdout + process.stderr).splitlines()
            if "WARNING" in line or "ERROR" in line]


@pytest.fixture(scope="module")
def html_site(tmp_path_factory) -> Path:
    """The HTML site, built with benchmark results present."""
    output = tmp_path_factory.mktemp("docs-with-results")
    results = output / "results.json"
    results.write_text(json.dumps(benchmark_results()))
    process = sphinx_build("html", output, results)
    assert process.returncode == 0 and not warnings_in(process), \
        "\n".join(warnings_in(process)) or process.stderr
    return output / "html"


def test_html_build_emits_no_warnings(html_site):
    assert (html_site / "index.html").is_file()


def test_html_build_without_benchmark_results_emits_no_warnings(tmp_path):
    process = sphinx_build("html", tmp_path, tmp_path / "absent.json")
    assert process.returncode == 0, process.stderr
    assert warnings_in(process) == []
    page = (tmp_path / "html" / "performance.html").read_text(encoding="utf-8")
    assert "No benchmark results yet" in page
    assert "<img" not in page


def test_doctests_pass(tmp_path):
    process = sphinx_build("doctest", tmp_path, tmp_path / "absent.json")
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr
    assert re.search(r"^\s+0 failures in tests$", process.stdout, re.MULTILINE), \
        process.stdout[-4000:]


def test_every_row_of_the_document_tables_links_to_its_spec_entry(html_site):
    from bn3d.spec import document_tables

    page = (html_site / "differences.html").read_text(encoding="utf-8")
    spec_page = (html_site / "spec.html").read_text(encoding="utf-8")
    rows = [row for table in document_tables(implementations=()).values() for row in table]
    assert len(rows) >= 17  # 10 parameter rows, 4 PyTorch states, 3 MindSpore states
    for row in rows:
        assert f'href="spec.html#spec-{row.entry_id}"' in page, row.entry_id
        assert f'id="spec-{row.entry_id}"' in spec_page, row.entry_id


def test_every_table_row_shows_its_replay_status(html_site):
    page = (html_site / "differences.html").read_text(encoding="utf-8")
    statuses = re.findall(r'class="bn3d-status bn3d-status-(pass|fail|skipped)"', page)
    # parameter rows show both facades, state rows their own framework's facade
    assert len(statuses) >= 10 * 2 + 4 + 3


def test_performance_page_shows_the_plot_machine_and_date(html_site):
    page = (html_site / "performance.html").read_text(encoding="utf-8")
    assert "Test CPU 9000" in page
    assert "02 January 2025" in page
    assert re.search(r'<img[^>]+src="_images/benchmark\.png"', page)
    assert (html_site / "_images" / "benchmark.png").stat().st_size > 10_000
    assert "3.00x" in page  # torch / bn3d in the times table
