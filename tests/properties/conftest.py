"""Hypothesis settings of the property suite: ``BN3D_PROPERTY_EXAMPLES`` examples a property
(default 100), derandomised so that CI runs the same examples every time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "bn3d", max_examples=int(os.environ.get("BN3D_PROPERTY_EXAMPLES", "100")),
    derandomize=os.environ.get("BN3D_PROPERTY_RANDOM", "") == "",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None)
settings.load_profile("bn3d")
