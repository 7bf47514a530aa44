"""The example scripts of the documentation run and print what their pages show."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def documented_output(page: Path, command: str) -> list[str]:
    """The lines a ``console`` block of ``page`` shows after ``$ <command>``."""
    text = page.read_text()
    block = re.search(rf"\$ {re.escape(command)}\n((?:   .+\n)+)", text)
    assert block, f"{page.name} shows no output of {command}"
    return [line.strip() for line in block.group(1).splitlines()]


def test_the_larger_than_memory_example_gives_the_in_memory_bits(tmp_path):
    for module in ("dask.array", "distributed", "zarr"):
        pytest.importorskip(module)
    script = DOCS / "examples" / "larger_than_memory.py"
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    expected = documented_output(DOCS / "guide" / "larger-than-memory.rst",
                                 "python docs/examples/larger_than_memory.py")
    assert result.stdout.splitlines() == expected
