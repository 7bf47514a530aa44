"""The exact bits of a fixed set of calls, recorded as SHA-256 digests.

Refactoring the kernels must not change a single output bit: these digests were
recorded before a change and must hold after it. A change that is meant to alter
the arithmetic re-records them (``python tests/test_output_bits.py``) in the same
commit and says why.

The data comes from integer arithmetic (a linear congruential sequence), so it is
the same on every platform and numpy version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bn3d import batch_norm, batch_norm_backward

SHAPES = {
    "long-rows": (2, 3, 4500),          # rows longer than one block
    "short-rows": (6, 5, 7, 9),         # several rows per block
    "rank-5": (2, 4, 3, 5, 7),
    "few-channels": (1, 2, 40, 64, 3),  # many blocks per channel
    "many-channels": (16, 40, 3, 7, 7),
}
LAYOUTS = ("contiguous", "strided")
DTYPES = ("float16", "float32", "float64")


def sequence(shape: tuple[int, ...], seed: int, loc: float, scale: float) -> np.ndarray:
    """float64 values in [loc - scale / 2, loc + scale / 2), from integers only."""
    count = int(np.prod(shape))
    state = (np.arange(count, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(seed)) \
        % np.uint64(2**32)
    state = (state * np.uint64(1103515245) + np.uint64(12345)) % np.uint64(2**32)
    return ((state.astype(np.float64) / 2**32 - 0.5) * scale + loc).reshape(shape)


def laid_out(array: np.ndarray, layout: str) -> np.ndarray:
    """The same logical array, contiguous or as a view with its first two axes swapped
    in memory and every other element of a doubled last axis."""
    if layout == "contiguous":
        return np.ascontiguousarray(array)
    doubled = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
    doubled[..., ::2] = array
    swapped = np.ascontiguousarray(np.swapaxes(doubled, 0, 1))
    return np.swapaxes(swapped, 0, 1)[..., ::2]


def digest(*arrays: np.ndarray) -> str:
    hasher = hashlib.sha256()
    for array in arrays:
        hasher.update(str(array.dtype).encode())
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()[:16]


def run_calls(shape: tuple[int, ...], dtype: str, layout: str) -> dict[str, str]:
    channels = shape[1]
    x = laid_out(sequence(shape, 1, 0.75, 6.0).astype(dtype), layout)
    g = laid_out(sequence(shape, 2, 0.0, 2.0).astype(dtype), layout)
    parameter_dtype = "float32" if dtype == "float16" else dtype
    weight = sequence((channels,), 3, 1.0, 1.0).astype(parameter_dtype)
    bias = sequence((channels,), 4, 0.0, 1.0).astype(parameter_dtype)
    running_mean = sequence((channels,), 5, 0.0, 1.0).astype(parameter_dtype)
    running_var = sequence((channels,), 6, 2.0, 1.0).astype(parameter_dtype)
    digests = {}
    eval_y = batch_norm(x, running_mean, running_var, weight, bias, training=False)
    digests["eval-forward"] = digest(eval_y)
    digests["eval-backward"] = digest(*batch_norm_backward(
        g, x, running_mean, running_var, weight, training=False))
    train_y, save_mean, save_invstd = batch_norm(
        x, running_mean, running_var, weight, bias, training=True, momentum=0.3,
        return_stats=True)
    digests["train-forward"] = digest(train_y, save_mean, save_invstd, running_mean,
                                      running_var)
    digests["train-backward"] = digest(*batch_norm_backward(
        g, x, None, None, weight, training=True, save_mean=save_mean,
        save_invstd=save_invstd))
    return digests


RECORDED_FILE = Path(__file__).parent / "data" / "output_bits.json"


def record() -> None:
    """Write the digests of the current build to ``RECORDED_FILE``."""
    recorded = {f"{name}/{dtype}/{layout}": run_calls(shape, dtype, layout)
                for name, shape in SHAPES.items() for dtype in DTYPES for layout in LAYOUTS}
    RECORDED_FILE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, str]]:
    return json.loads(RECORDED_FILE.read_text())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_outputs_keep_their_recorded_bits(recorded, shape_name, dtype, layout):
    key = f"{shape_name}/{dtype}/{layout}"
    assert run_calls(SHAPES[shape_name], dtype, layout) == recorded[key]


if __name__ == "__main__":  # python tests/test_output_bits.py: record a deliberate change
    record()
