"""The property-based suite (tests/properties) runs in a subprocess, so that a crash of the
process (a segmentation fault, an abort) is a failure of this test rather than the end of
the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

PROPERTIES = Path(__file__).parent / "properties"


@pytest.mark.slow
def test_property_suite_passes_without_crashing(tmp_path):
    environment = dict(os.environ, BN3D_PROPERTY_EXAMPLES=os.environ.get(
        "BN3D_PROPERTY_EXAMPLES", "100"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(PROPERTIES), str(PROPERTIES)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (
        f"the property suite exited with {result.returncode}"
        f"{' (killed by a signal)' if result.returncode < 0 else ''}:\n"
        f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
