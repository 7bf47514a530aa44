"""Hypothesis strategies for the property suite: calls of ``bn3d.batch_norm``, good and bad."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

OUTPUT_TOLERANCE = {"float16": 2e-3, "float32": 2e-6, "float64": 1e-12}
DTYPES = ["float16", "float32", "float64"]


@st.composite
def layouts(draw, values: np.ndarray) -> np.ndarray:
    """The same logical array in another memory layout: contiguous, channels last, with
    a step, reversed along an axis, or at an odd offset in a larger buffer."""
    kind = draw(st.sampled_from(["contiguous", "channels-last", "step", "reversed", "offset"]))
    if kind == "contiguous" or values.ndim < 2:
        return np.ascontiguousarray(values)
    if kind == "channels-last":
        order = (0, *range(2, values.ndim), 1)
        return np.ascontiguousarray(values.transpose(order)).transpose(np.argsort(order))
    if kind == "step":
        wide = np.zeros(values.shape[:-1] + (2 * values.shape[-1],), values.dtype)
        wide[..., ::2] = values
        return wide[..., ::2]
    if kind == "reversed":
        axis = draw(st.integers(0, values.ndim - 1))
        return np.flip(np.flip(values, axis).copy(), axis)
    buffer = np.zeros(values.size + 1, values.dtype)
    shifted = buffer[1:].reshape(values.shape)
    shifted[...] = values
    return shifted


def _data(rng: np.random.Generator, shape: tuple[int, ...], dtype: str,
          special: str) -> np.ndarray:
    loc = rng.choice([0.0, 1.0, -50.0, 1e4])
    values = rng.normal(loc, rng.choice([1e-3, 1.0, 10.0]), shape)
    if special == "constant" and values.size:
        values[...] = loc
    elif special != "finite" and values.size:
        values.flat[rng.integers(values.size)] = {"inf": np.inf, "-inf": -np.inf,
                                                  "nan": np.nan}[special]
    return values.astype(dtype)


@st.composite
def call_arguments(draw, valid: bool = False) -> dict:
    """Keyword arguments of ``bn3d.batch_norm``: mostly valid calls, and (unless
    ``valid``) every kind of invalid argument torch refuses."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rank = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    if not valid and draw(st.integers(0, 9)) == 0:
        shape = (0,) + shape[1:]  # an empty batch
    channels = shape[1]
    dtype = draw(st.sampled_from(DTYPES))
    parameter_dtype = "float32" if dtype == "float16" and draw(st.booleans()) else dtype
    special = "finite" if valid else draw(
        st.sampled_from(["finite"] * 6 + ["constant", "inf", "-inf", "nan"]))
    x = draw(layouts(_data(rng, shape, dtype, special)))
    training = draw(st.booleans())
    tracked = draw(st.booleans()) or not training
    call = {
        "input": x,
        "running_mean": rng.normal(0, 1, channels).astype(parameter_dtype) if tracked else None,
        "running_var": rng.uniform(0.5, 2, channels).astype(parameter_dtype) if tracked else None,
        "weight": rng.uniform(0.5, 2, channels).astype(parameter_dtype)
        if draw(st.booleans()) else None,
        "bias": rng.normal(0, 1, channels).astype(parameter_dtype) if draw(st.booleans()) else None,
        "training": training,
        "momentum": draw(st.sampled_from([0.1, 0.0, 1.0, 0.5])),
        "eps": draw(st.sampled_from([1e-5, 1e-3, 1.0])),
    }
    if training and int(np.prod(shape)) // channels == 1:
        call["training"] = False  # one value per channel: keep the call valid
        call["running_mean"] = rng.normal(0, 1, channels).astype(parameter_dtype)
        call["running_var"] = rng.uniform(0.5, 2, channels).astype(parameter_dtype)
    if call["weight"] is not None and draw(st.booleans()):
        call["weight"] = call["weight"].reshape((1, channels))  # forwards take any shape
    if not valid:
        _spoil(draw, call, rng)
    if draw(st.integers(0, 3)) == 0:
        call["out"] = _out(draw, call["input"])
    return call


def _spoil(draw, call: dict, rng: np.random.Generator) -> None:
    """Make the call invalid in one of the ways torch refuses (sometimes not at all)."""
    channels = call["input"].shape[1]
    kind = draw(st.sampled_from(
        ["none"] * 8 + ["channels", "stats-2d", "dtype", "eps", "momentum-type", "training-type",
                        "one-value", "missing-stat", "integer-input", "momentum-special"]))
    tracked = call["running_mean"] is not None
    if kind == "channels":
        name = draw(st.sampled_from(["running_mean", "running_var", "weight", "bias"]))
        call[name] = np.ones(channels + draw(st.sampled_from([-1, 1])), np.float32)
    elif kind == "stats-2d" and tracked:
        call["running_mean"] = call["running_mean"].reshape(1, channels)
    elif kind == "dtype":
        name = draw(st.sampled_from(["running_mean", "running_var", "weight", "bias"]))
        other = "float64" if call["input"].dtype != np.float64 else "float32"
        call[name] = rng.uniform(0.5, 2, channels).astype(other)
    elif kind == "eps":
        call["eps"] = draw(st.sampled_from([0.0, -1.0, float("nan"), -0.0]))
    elif kind == "momentum-type":
        call["momentum"] = draw(st.sampled_from([None, "0.1", [0.1], np.array([0.1])]))
    elif kind == "momentum-special":
        call["momentum"] = draw(st.sampled_from([True, np.int64(1), np.array(0.5), -1.0,
                                                 float("nan")]))
    elif kind == "training-type":
        call["training"] = draw(st.sampled_from([1, 0, None, "yes", np.bool_(True)]))
    elif kind == "one-value" and call["input"].size >= channels:
        call["input"] = call["input"].reshape(-1)[:channels].reshape((1, channels))
        call["training"] = True
    elif kind == "missing-stat" and tracked:
        call[draw(st.sampled_from(["running_mean", "running_var"]))] = None
    elif kind == "integer-input":
        call["input"] = np.zeros(call["input"].shape, draw(st.sampled_from(["int32", "bool"])))


def _out(draw, x: np.ndarray) -> np.ndarray:
    """A valid ``out``: a fresh array, the input itself, or memory overlapping the input."""
    kind = draw(st.sampled_from(["fresh", "input", "overlapping"]))
    if kind == "input" and x.flags.c_contiguous and x.dtype.kind == "f":
        return x
    if kind == "overlapping" and x.size and x.dtype.kind == "f":
        base = x
        while base.base is not None:
            base = base.base
        flat = base.reshape(-1)
        if flat.size >= x.size:
            return flat[flat.size - x.size:].reshape(x.shape)
    return np.full(x.shape, 7, x.dtype)


def snapshot(call: dict) -> dict:
    """Copies of the call's arguments (arrays copied, logical values kept)."""
    return {name: value.copy() if isinstance(value, np.ndarray) else value
            for name, value in call.items()}


def as_torch(value, torch):
    """An argument for torch: numpy arrays, bn3d's tensors, as torch tensors."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, order="C"))
    return value


def reference_output(call: dict) -> tuple[np.ndarray, np.ndarray]:
    """The float64 result of a call that computed, from the arguments before it, and the
    conditioning of each element: ``|x| * invstd * |weight|``, which multiplies the
    rounding error of any computation of it (the reference's own included)."""
    x = np.asarray(call["input"], np.float64)
    if x.size == 0:
        return x, x
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    use_batch = call["training"] or call["running_mean"] is None
    with np.errstate(all="ignore"):
        if use_batch:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
        else:
            mean = np.asarray(call["running_mean"], np.float64)
            var = np.asarray(call["running_var"], np.float64)
        invstd = 1 / np.sqrt(var.reshape(shape) + float(call["eps"]))
        scale = 1.0 if call["weight"] is None else \
            np.asarray(call["weight"], np.float64).reshape(shape)
        y = (x - mean.reshape(shape)) * invstd * scale
        if call["bias"] is not None:
            y = y + np.asarray(call["bias"], np.float64).reshape(shape)
        conditioning = (np.abs(x) + np.abs(mean.reshape(shape))) * invstd * np.abs(scale)
    return y, conditioning
