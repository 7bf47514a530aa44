"""Outputs keep the input's memory layout as each framework does: channels last stays
channels last in the functional API and the torch facade (PyTorch's preserve_format),
and comes back C-contiguous from the MindSpore facade (its tensors have no memory
format). The numbers do not depend on the layout."""

from __future__ import annotations

import numpy as np
import pytest

from bn3d import batch_norm, batch_norm_backward
from bn3d._core import is_channels_last
from bn3d.mindspore_nn import BatchNorm3d as MindSporeBatchNorm3d
from bn3d.torch_nn import BatchNorm3d as TorchBatchNorm3d

SHAPE = (2, 6, 3, 4, 5)


def data(seed=0):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def channels_last(x):
    return np.moveaxis(np.moveaxis(x, 1, -1).copy(), -1, 1)


@pytest.mark.parametrize("training", [True, False])
def test_functional_outputs_keep_a_channels_last_layout(training):
    x, g = channels_last(data()), channels_last(data(1))
    stats = np.zeros(6, np.float32), np.ones(6, np.float32)
    y = batch_norm(x, *stats, training=training)
    grad_input = batch_norm_backward(g, x, *stats, training=training)[0]
    assert is_channels_last(y) and is_channels_last(grad_input)
    np.testing.assert_array_equal(y, batch_norm(data(), *stats, training=training))


def test_out_of_the_other_layout_receives_the_same_bits():
    x = channels_last(data())
    expected = batch_norm(x, None, None, training=True)
    out = np.empty(SHAPE, np.float32)  # C-contiguous
    assert batch_norm(x, None, None, training=True, out=out) is out
    np.testing.assert_array_equal(out, expected)
    grad_out = np.empty(SHAPE, np.float32)
    returned = batch_norm_backward(x, x, None, None, training=True, out=grad_out)[0]
    assert returned is grad_out
    np.testing.assert_array_equal(grad_out, batch_norm_backward(x, x, None, None,
                                                                training=True)[0])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_torch_facade_keeps_the_layout_as_torch_does(mode):
    bn = getattr(TorchBatchNorm3d(6), mode)()
    x = channels_last(data())
    y = bn(x)
    grad_input = bn.backward(channels_last(data(1)))[0]
    assert is_channels_last(y) and is_channels_last(grad_input)
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn.BatchNorm3d(6), mode)()
    tx = torch.from_numpy(data()).to(memory_format=torch.channels_last_3d).requires_grad_(True)
    ty = theirs(tx)
    ty.backward(torch.from_numpy(data(1)))
    assert ty.is_contiguous(memory_format=torch.channels_last_3d)
    assert tx.grad.is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=2e-6, atol=2e-6)


def test_mindspore_facade_returns_c_contiguous_arrays():
    cell = MindSporeBatchNorm3d(6).set_train()
    y = cell(channels_last(data()))
    grad_x = cell.backward(channels_last(data(1)))[0]
    assert y.flags.c_contiguous and grad_x.flags.c_contiguous
    np.testing.assert_array_equal(y, MindSporeBatchNorm3d(6).set_train()(data()))
