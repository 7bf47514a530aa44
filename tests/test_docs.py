"""The documentation builds without a warning, its examples run, its links resolve offline,
and its generated parts are there.

Skipped unless the ``docs`` extra is installed (``pip install ".[docs]"``); ``pytest -m
"not docs"`` leaves these tests out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

for module in ("sphinx", "furo", "numpydoc", "matplotlib", "sphinx-mathjax-offline"):
    pytest.importorskip(module)

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def sphinx_build_command() -> list[str]:
    """``sphinx-build`` of this Python's environment (``python -m sphinx`` if it has none)."""
    beside = Path(sys.executable).with_name("sphinx-build")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("sphinx-build")
    return [found] if found else [sys.executable, "-m", "sphinx"]


def sphinx_build(builder: str, output: Path, results: Path) -> subprocess.CompletedProcess:
    """Run ``sphinx-build -W --keep-going -b BUILDER docs OUTPUT`` as a user would.

    The command is the one the README, the index page and ``.ci/run`` give, run outside
    the source tree (so the installed bn3d is documented) and writing to
    ``output / builder``. ``results`` is the benchmark results file the performance page
    reads.
    """
    environment = dict(os.environ, BN3D_BENCHMARK_RESULTS=str(results))
    return subprocess.run(
        [*sphinx_build_command(), "-W", "--keep-going", "-b", builder, str(DOCS),
         str(output / builder)],
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


def test_the_convert_page_shows_every_conversion_check_with_its_status(html_site):
    from bn3d.spec import conversion_rows

    page = (html_site / "convert.html").read_text(encoding="utf-8")
    table = page[page.index("bn3d-conversions"):]
    table = table[:table.index("</table>")]
    rows = conversion_rows(implementations=())
    assert table.count("<tr") == len(rows) + 1  # and the header
    assert len(re.findall(r'bn3d-status-pass"', table)) == 2 * len(rows)
    for row in rows:
        assert f'href="spec.html#spec-{row.entry_id}"' in table, row.entry_id
    index = (html_site / "index.html").read_text(encoding="utf-8")
    assert 'href="convert.html"' in index


def test_performance_page_shows_the_plot_machine_and_date(html_site):
    page = (html_site / "performance.html").read_text(encoding="utf-8")
    assert "Test CPU 9000" in page
    assert "02 January 2025" in page
    assert re.search(r'<img[^>]+src="_images/benchmark\.png"', page)
    assert (html_site / "_images" / "benchmark.png").stat().st_size > 10_000
    assert "3.00x" in page  # torch / bn3d in the times table


class _Page(HTMLParser):
    """The ids a page defines and the addresses it refers to (``href`` and ``src``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.addresses: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if values.get(name):
                self.ids.add(values[name])
        for name in ("href", "src"):
            if values.get(name):
                self.addresses.append(values[name])
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"])


def parsed_pages(site: Path) -> dict[Path, _Page]:
    """Every HTML page of the site, parsed."""
    pages = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    return pages


def broken_links(site: Path) -> list[str]:
    """Every relative address that names no file of the site or no anchor of its page,
    and every external one that still holds an inventory's ``$`` placeholder."""
    pages = parsed_pages(site)
    broken = []
    for path, page in pages.items():
        where = path.relative_to(site.resolve())
        for address in page.addresses:
            parts = urlsplit(address)
            if parts.scheme in ("http", "https"):
                if "$" in unquote(address):
                    broken.append(f"{where}: unexpanded $ in {address}")
                continue
            if parts.scheme or parts.netloc:  # mailto:, data:, javascript:
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{where}: no file for {address}")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in pages[target].ids:
                    broken.append(f"{where}: no anchor for {address}")
    return broken


def test_every_internal_link_and_anchor_resolves(html_site):
    assert broken_links(html_site) == []


def test_the_site_loads_no_script_from_the_network(html_site):
    for path, page in parsed_pages(html_site).items():
        remote = [src for src in page.scripts if urlsplit(src).scheme or src.startswith("//")]
        assert remote == [], path
    page = (html_site / "differences.html").read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-chtml.js"' in page  # the momentum formula
    assert (html_site / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_the_migration_document_is_linked_and_its_text_shown(html_site):
    address = ("https://www.mindspore.cn/docs/en/r2.4.10/note/api_mapping/pytorch_diff/"
               "BatchNorm3d.html")
    for name in ("index.html", "differences.html", "migration-document.html"):
        assert f'href="{address}"' in (html_site / name).read_text(encoding="utf-8"), name
    page = (html_site / "migration-document.html").read_text(encoding="utf-8")
    assert "does not have two redundant states" in page
    assert "momentum_{pytorch} = 1 - momentum_{mindspore}" in page




def fallback_inventory_lines(project: str) -> list[str]:
    """The entries of the offline fallback inventory of ``project`` ('python' or 'numpy')."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from offline_inventories import fallback_inventory
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    data = Path(fallback_inventory(project)).read_bytes()
    return zlib.decompress(data.split(b"zlib.\n", 1)[1]).decode().splitlines()


@pytest.mark.parametrize("project", ["python", "numpy"])
def test_the_offline_inventories_hold_full_addresses(project):
    entries = [line.split(" ") for line in fallback_inventory_lines(project)]
    addresses = {entry[0]: entry[3] for entry in entries}
    assert addresses
    assert not [address for address in addresses.values() if "$" in address]
    if project == "numpy":
        assert (addresses["numpy.ndarray"]
                == "reference/generated/numpy.ndarray.html#numpy.ndarray")
