"""The idealised backwards of benchmarks/floor.py compute what they claim to."""

import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
COMPILER = shlex.split(sysconfig.get_config_var("CC") or "cc")[0]

pytestmark = pytest.mark.skipif(shutil.which(COMPILER) is None,
                                reason=f"no C compiler ({COMPILER})")


@pytest.fixture(scope="module")
def floors(tmp_path_factory):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import floor
    finally:
        sys.path.remove(str(BENCHMARKS))
    return floor.build(tmp_path_factory.mktemp("floor"))


@pytest.mark.parametrize("stream", [0, 1])
@pytest.mark.parametrize("threads", [1, 2])
def test_floors_read_every_element_and_write_the_map(floors, rng, stream, threads):
    n, c, length = 3, 5, 37  # rows off every vector boundary
    x = rng.standard_normal((n, c, length)).astype(np.float32)
    g = rng.standard_normal((n, c, length)).astype(np.float32)
    one_sweep = np.empty_like(x)
    floors.floor_one_sweep(x, g, one_sweep, n, c, length, threads, stream)
    np.testing.assert_allclose(one_sweep, (g - 0.5) - x * 0.25, rtol=1e-6, atol=1e-6)

    mean_g = g.mean(axis=(0, 2), dtype=np.float64)[:, None]
    mean_gx = (g.astype(np.float64) * x).mean(axis=(0, 2))[:, None]
    expected = (g - mean_g) - x * mean_gx
    by_channel = np.empty_like(x)
    floors.floor_by_channel(x, g, by_channel, n, c, length, threads, stream)
    two_sweeps = np.empty_like(x)
    scratch = np.empty(2 * n * c + 2 * c, np.float32)
    floors.floor_two_sweeps(x, g, two_sweeps, n, c, length, threads, stream, scratch)
    np.testing.assert_allclose(by_channel, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two_sweeps, expected, rtol=1e-5, atol=1e-5)
