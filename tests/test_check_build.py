"""Importing bn3d from a source tree whose kernels are not built says so, and what to run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# The source tree's package (an installed bn3d has no .pyx).
SOURCE = Path(__file__).resolve().parent.parent / "bn3d"


def test_an_unbuilt_source_tree_raises_an_import_error_that_says_what_to_run(tmp_path):
    tree = tmp_path / "bn3d"
    tree.mkdir()
    for source in (*SOURCE.glob("*.py"), SOURCE / "_kernels.pyx"):
        shutil.copy(source, tree)
    # -S: no site-packages, so nothing but the source tree can be imported as bn3d.
    result = subprocess.run([sys.executable, "-S", "-c", "import bn3d"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()
    assert "ImportError: bn3d's compiled kernels (bn3d._kernels) are not built in" in \
        result.stderr, result.stderr
    assert "pip install -e . --no-build-isolation" in last_line[-1]
    assert "circular import" not in result.stderr
