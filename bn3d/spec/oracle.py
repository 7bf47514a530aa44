"""The float64 reference of batch normalisation, computed the plain way with numpy.

The spec's expectations (:mod:`bn3d.spec.expectations`) compare what an
implementation did with it, and the tests compare bn3d's kernels with it. It
is deliberately simple: two passes over the data in float64, no blocking, no
threads, so that it is easy to believe.

An array's channels are on axis 1 and every other axis is reduced: ``x`` has
shape ``(N, C, *)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["DEFAULT_EPS", "batch_norm", "batch_norm_backward", "batch_stats", "max_error",
           "reduce_axes"]

#: The ``eps`` both frameworks default to.
DEFAULT_EPS = 1e-5


def reduce_axes(ndim: int) -> tuple[int, ...]:
    """The axes the statistics of an ``ndim``-dimensional array reduce: all but the channels.

    Examples
    --------
    >>> reduce_axes(5)
    (0, 2, 3, 4)
    """
    return (0, *range(2, ndim))


def _per_channel(values: ArrayLike, ndim: int) -> np.ndarray:
    """``values`` (one per channel) shaped to broadcast against an ``ndim`` array, in float64."""
    return np.asarray(values, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def batch_stats(x: ArrayLike, variance: str = "biased") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of ``x``, in float64.

    Parameters
    ----------
    x : array_like, shape (N, C, ...)
    variance : {'biased', 'unbiased'}
        Divide the sum of squares by the count, or by the count minus one.

    Returns
    -------
    mean, var : numpy.ndarray, shape (C,)
        NaN where the count (or the count minus one) is zero.

    Examples
    --------
    >>> mean, var = batch_stats([[[1.0, 3.0]], [[5.0, 7.0]]], variance="unbiased")
    >>> mean.tolist(), var.tolist()
    ([4.0], [6.666666666666667])
    """
    xd = np.asarray(x, dtype=np.float64)
    axes = reduce_axes(xd.ndim)
    count = int(np.prod([xd.shape[axis] for axis in axes]))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xd.sum(axis=axes) / count
        squares = ((xd - _per_channel(mean, xd.ndim)) ** 2).sum(axis=axes)
        var = squares / (count - 1 if variance == "unbiased" else count)
    return mean, var


def batch_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None,
               eps: float = DEFAULT_EPS, mean: ArrayLike | None = None,
               var: ArrayLike | None = None) -> np.ndarray:
    """Batch normalisation of ``x`` in float64.

    Parameters
    ----------
    x : array_like, shape (N, C, ...)
    weight, bias : array_like, shape (C,), optional
        The scale (torch's weight, MindSpore's gamma) and the shift (bias, beta);
        none by default.
    eps : float, default 1e-5
    mean, var : array_like, shape (C,), optional
        The statistics to normalise with (both or neither); by default the
        batch's own (biased variance), as in training.

    Returns
    -------
    numpy.ndarray
        ``(x - mean) / sqrt(var + eps) * weight + bias``, in float64.

    Examples
    --------
    >>> batch_norm([[[1.0, 3.0]]], eps=0.0).tolist()
    [[[-1.0, 1.0]]]
    >>> batch_norm([[[1.0, 3.0]]], [2.0], [0.5], eps=0.0, mean=[1.0], var=[4.0]).tolist()
    [[[0.5, 2.5]]]
    """
    xd = np.asarray(x, dtype=np.float64)
    if (mean is None) != (var is None):
        raise ValueError("give both mean and var, or neither")
    if mean is None or var is None:
        mean, var = batch_stats(xd)
    y = (xd - _per_channel(mean, xd.ndim)) / np.sqrt(_per_channel(var, xd.ndim) + eps)
    if weight is not None:
        y = y * _per_channel(weight, xd.ndim)
    if bias is not None:
        y = y + _per_channel(bias, xd.ndim)
    return y


def batch_norm_backward(grad_output: ArrayLike, x: ArrayLike, running_mean: ArrayLike,
                        running_var: ArrayLike, training: bool, eps: float = DEFAULT_EPS
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of batch normalisation with weight 1, in float64.

    Parameters
    ----------
    grad_output, x : array_like, shape (N, C, ...)
    running_mean, running_var : array_like, shape (C,)
        The statistics that normalise in inference (``training=False``).
    training : bool
        Whether the batch statistics normalised (and so depend on ``x``).
    eps : float, default 1e-5

    Returns
    -------
    grad_input : numpy.ndarray, shape (N, C, ...)
        For weight 1; multiply by the weight (per channel) for another.
    grad_weight, grad_bias : numpy.ndarray, shape (C,)

    Examples
    --------
    >>> grad_input, grad_weight, grad_bias = batch_norm_backward(
    ...     [[[1.0, 1.0]]], [[[1.0, 3.0]]], [0.0], [1.0], training=False, eps=0.0)
    >>> grad_input.tolist(), grad_weight.tolist(), grad_bias.tolist()
    ([[[1.0, 1.0]]], [4.0], [2.0])
    """
    xd, gd = np.asarray(x, np.float64), np.asarray(grad_output, np.float64)
    axes = reduce_axes(xd.ndim)
    if training:
        mean, var = batch_stats(xd)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (xd - _per_channel(mean, xd.ndim)) * _per_channel(invstd, xd.ndim)
    grad_bias, grad_weight = gd.sum(axis=axes), (gd * xhat).sum(axis=axes)
    grad_input = gd * _per_channel(invstd, xd.ndim)
    if training:
        count = xd.size / xd.shape[1]
        grad_input = grad_input - _per_channel(invstd / count, xd.ndim) * (
            _per_channel(grad_bias, xd.ndim) + xhat * _per_channel(grad_weight, xd.ndim))
    return grad_input, grad_weight, grad_bias


def max_error(actual: Any, expected: Any) -> float:
    """The spec's and the tests' error: ``max |actual - expected| / max(1, |expected|)``.

    NaN only matches NaN and an infinity only itself; a shape mismatch is an
    infinite error.

    Parameters
    ----------
    actual, expected : array_like

    Returns
    -------
    float
        0 for empty arrays.

    Examples
    --------
    >>> max_error([1.0, 4.0, float("inf")], [1.0, 2.0, float("inf")])
    1.0
    >>> max_error([float("nan")], [float("nan")]), max_error([1.0], [1.0, 1.0])
    (0.0, inf)
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0
    same = (np.isnan(actual) & np.isnan(expected)) | (actual == expected)
    with np.errstate(invalid="ignore"):
        error = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
    error = np.where(same, 0.0, error)
    return float(np.max(np.where(np.isnan(error), np.inf, error)))
