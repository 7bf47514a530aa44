"""inf and NaN in data, statistics, parameters and gradients propagate as in PyTorch.

In training an inf or NaN in a channel's batch poisons that channel only: its output
and input gradient are NaN, its running mean becomes the batch mean (``+inf`` for
``+inf`` data, NaN for NaN or for both infinities) and its running variance NaN; its
bias gradient stays finite. In evaluation a non-finite statistic or parameter follows
``y = (x - mean) * (weight * invstd) + bias``: the form of PyTorch's generic kernel and
of MindSpore (PyTorch's contiguous kernel folds the mean into the shift and gives NaN
instead of an infinity where it forms ``0 * inf``).
"""

from __future__ import annotations

import numpy as np
import pytest

from bn3d import batch_norm, batch_norm_backward

SHAPE = (2, 3, 4, 4, 4)
POSITION = (0, 1, 1, 2, 3)
OTHERS = [0, 2]


def data(dtype=np.float32):
    return np.random.default_rng(0).standard_normal(SHAPE).astype(dtype)


def parameters(dtype=np.float32):
    rng = np.random.default_rng(1)
    return rng.uniform(0.5, 1.5, 3).astype(dtype), rng.standard_normal(3).astype(dtype)


def gradient(dtype=np.float32):
    return np.random.default_rng(2).standard_normal(SHAPE).astype(dtype)


def train_step(x, weight, bias):
    running_mean, running_var = np.zeros(3, x.dtype), np.ones(3, x.dtype)
    y, mean, invstd = batch_norm(x, running_mean, running_var, weight, bias, training=True,
                                 return_stats=True)
    grads = batch_norm_backward(gradient(x.dtype), x, None, None, weight, training=True,
                                save_mean=mean, save_invstd=invstd)
    return y, running_mean, running_var, grads


BAD_VALUES = {"+inf": [np.inf], "-inf": [-np.inf], "nan": [np.nan], "both-infinities":
              [np.inf, -np.inf]}
EXPECTED_MEAN = {"+inf": np.inf, "-inf": -np.inf, "nan": np.nan, "both-infinities": np.nan}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_a_nonfinite_value_poisons_only_its_channel_in_training(bad, dtype):
    clean = train_step(data(dtype), *parameters(dtype))
    x = data(dtype)
    x[POSITION] = BAD_VALUES[bad][0]
    if len(BAD_VALUES[bad]) > 1:
        x[1, 1, 0, 0, 0] = BAD_VALUES[bad][1]
    y, running_mean, running_var, (grad_x, grad_w, grad_b) = train_step(x, *parameters(dtype))
    assert np.isnan(y[:, 1]).all() and np.isnan(grad_x[:, 1]).all()
    np.testing.assert_array_equal(running_mean[1], EXPECTED_MEAN[bad])
    assert np.isnan(running_var[1]) and np.isnan(grad_w[1])
    assert grad_b[1] == clean[3][2][1]
    for ours, theirs in zip((y, grad_x), (clean[0], clean[3][0])):
        np.testing.assert_array_equal(ours[:, OTHERS], theirs[:, OTHERS])
    for ours, theirs in zip((running_mean, running_var, grad_w, grad_b),
                            (clean[1], clean[2], clean[3][1], clean[3][2])):
        np.testing.assert_array_equal(ours[OTHERS], theirs[OTHERS])


def eval_case(case, dtype=np.float32):
    """(x, running_mean, running_var, weight, bias) with channel 1 made non-finite."""
    x = data(dtype)
    running_mean, running_var = np.zeros(3, dtype), np.ones(3, dtype)
    weight, bias = parameters(dtype)
    target, value = {"mean+inf": ("mean", np.inf), "mean-inf": ("mean", -np.inf),
                     "var+inf": ("var", np.inf), "mean-nan": ("mean", np.nan),
                     "var-nan": ("var", np.nan), "bias-nan": ("bias", np.nan),
                     "input+inf": ("x", np.inf), "input-nan": ("x", np.nan)}[case]
    arrays = {"x": x, "mean": running_mean, "var": running_var, "weight": weight, "bias": bias}
    if target == "x":
        x[POSITION] = value
    else:
        arrays[target][1] = value
    return x, running_mean, running_var, weight, bias


EVAL_CASES = ["mean+inf", "mean-inf", "var+inf", "mean-nan", "var-nan", "bias-nan", "input+inf",
              "input-nan"]


@pytest.mark.parametrize("case", EVAL_CASES)
def test_nonfinite_statistics_and_data_in_eval_match_torch(case):
    torch = pytest.importorskip("torch")
    x, running_mean, running_var, weight, bias = eval_case(case)
    g = gradient()
    y = batch_norm(x, running_mean, running_var, weight, bias, training=False)
    grads = batch_norm_backward(g, x, running_mean, running_var, weight, training=False)
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, torch.tensor(running_mean),
                                        torch.tensor(running_var), tw, tb, training=False)
    ty.backward(torch.tensor(g))
    for ours, theirs in zip((y, *grads), (ty, tx.grad, tw.grad, tb.grad)):
        theirs = theirs.detach().numpy()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
        np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(ours[finite], theirs[finite], rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_nonfinite_training_matches_torch(bad):
    torch = pytest.importorskip("torch")
    x = data()
    x[POSITION] = BAD_VALUES[bad][0]
    if len(BAD_VALUES[bad]) > 1:
        x[1, 1, 0, 0, 0] = BAD_VALUES[bad][1]
    weight, bias = parameters()
    y, running_mean, running_var, grads = train_step(x, weight, bias)
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
    t_mean, t_var = torch.zeros(3), torch.ones(3)
    ty = torch.nn.functional.batch_norm(tx, t_mean, t_var, tw, tb, training=True)
    ty.backward(torch.tensor(gradient()))
    for ours, theirs in zip((y, running_mean, running_var, *grads),
                            (ty, t_mean, t_var, tx.grad, tw.grad, tb.grad)):
        theirs = theirs.detach().numpy()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(ours[finite], theirs[finite], rtol=3e-5, atol=1e-5)
