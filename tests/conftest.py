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
