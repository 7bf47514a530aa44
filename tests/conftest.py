"""Shared test helpers: the float64 reference of batch normalisation, and fixtures.

The reference is the spec's own oracle, :mod:`bn3d.spec.oracle`, under the names the tests use.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bn3d.spec.oracle import batch_norm as reference_batch_norm
from bn3d.spec.oracle import batch_norm_backward as reference_batch_norm_backward
from bn3d.spec.oracle import max_error as max_relative_error
from bn3d.spec.oracle import reduce_axes

__all__ = ["max_relative_error", "reduce_axes", "reference_batch_norm",
           "reference_batch_norm_backward"]

# The property suite runs in a subprocess of its own (tests/test_property_suite.py).
collect_ignore = ["properties"]


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


@pytest.fixture
def frequent_thread_switches():
    """Make the interpreter switch threads often, so that races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


# The differential suites compare bn3d with the real frameworks, and are skipped where
# these are not installed (CI installs both, see .ci/run).
DIFFERENTIAL = {
    "torch": ("PyTorch 2.13", 'pip install "torch==2.13.0"',
              ["tests/test_torch_nn_differential.py", "tests/convert/test_torch_differential.py",
               "tests/convert/test_convert_into_torch.py",
               "the torch comparisons of tests/test_functional.py, test_argument_parity.py, "
               "test_nonfinite.py and the spec replays"]),
    "mindspore": ("MindSpore 2.10", 'pip install "numpy<2" "mindspore==2.10.0" '
                  "(in an environment of its own)",
                  ["tests/test_mindspore_nn_differential.py",
                   "tests/convert/test_mindspore_differential.py",
                   "tests/convert/test_convert_into_mindspore.py", "the spec replays"]),
}


def pytest_terminal_summary(terminalreporter):
    """One line naming the differential suites that were skipped and how to run them."""
    import importlib.util

    missing = [name for name in DIFFERENTIAL if importlib.util.find_spec(name) is None]
    for name in missing:
        framework, install, suites = DIFFERENTIAL[name]
        terminalreporter.write_line(
            f"differential tests against {framework} skipped ({name} is not installed): "
            f"{'; '.join(suites)}. To run them: {install}, then pytest.", yellow=True)
