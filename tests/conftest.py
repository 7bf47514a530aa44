"""Shared test helpers: a plain float64 reference of batch normalisation, and fixtures."""

from __future__ import annotations

import sys

import numpy as np
import pytest

# The property suite runs in a subprocess of its own (tests/test_property_suite.py).
collect_ignore = ["properties"]


def reduce_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def reference_batch_norm(x, weight=None, bias=None, eps=1e-5, mean=None, var=None):
    """float64 batch normalisation computed the plain way (two-pass numpy)."""
    xd = np.asarray(x, dtype=np.float64)
    axes = reduce_axes(xd.ndim)
    if mean is None:
        mean = xd.mean(axis=axes)
        var = xd.var(axis=axes)
    channels = xd.shape[1]
    weight = np.ones(channels) if weight is None else weight
    bias = np.zeros(channels) if bias is None else bias
    y = (xd - per_channel(mean, xd.ndim)) / np.sqrt(per_channel(var, xd.ndim) + eps)
    return y * per_channel(weight, xd.ndim) + per_channel(bias, xd.ndim)


def reference_batch_norm_backward(g, x, running_mean, running_var, training, eps=1e-5):
    """float64 gradients (input, weight, bias) computed the plain way, for weight 1."""
    xd, gd = np.asarray(x, np.float64), np.asarray(g, np.float64)
    axes = reduce_axes(xd.ndim)
    if training:
        mean, var = xd.mean(axis=axes), xd.var(axis=axes)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (xd - per_channel(mean, xd.ndim)) * per_channel(invstd, xd.ndim)
    grad_bias, grad_weight = gd.sum(axis=axes), (gd * xhat).sum(axis=axes)
    grad_input = gd * per_channel(invstd, xd.ndim)
    if training:
        n = xd.size / xd.shape[1]
        grad_input = grad_input - per_channel(invstd / n, xd.ndim) * (
            per_channel(grad_bias, xd.ndim) + xhat * per_channel(grad_weight, xd.ndim))
    return grad_input, grad_weight, grad_bias


def max_relative_error(actual, expected) -> float:
    """max |actual - expected| / max(1, |expected|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))))


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
