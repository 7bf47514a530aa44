"""bn3d's torch facade to its MindSpore facade and back: settings, state and mode carried, and
the two then compute the same, step after step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bn3d.convert import ConversionError, Policies, to_mindspore, to_torch
from bn3d.mindspore_nn import BatchNorm3d as Cell
from bn3d.torch_nn import BatchNorm3d as Module

POLICIES = Policies(momentum_none=0.1, bias_false="zero-beta")


def batches(count: int, channels: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(1.0, 2.0, (3, channels, 2, 3, 2)).astype(np.float32)
            for _ in range(count)]


def trained_module(**kwargs) -> Module:
    module = Module(4, **kwargs)
    if module.weight is not None:
        module.weight[:] = [0.5, 1.5, 2.0, -1.0]
    if module.bias is not None:
        module.bias[:] = [0.25, -0.5, 1.0, 0.0]
    for x in batches(2, seed=9):
        module(x)
    return module


def assert_same_steps(module: Module, cell: Cell, training: bool) -> None:
    module.train(training)
    cell.set_train(training)
    for x in batches(3):
        assert np.array_equal(module(x), cell(x))
        if module.running_mean is not None:
            assert np.array_equal(module.running_mean, cell.moving_mean.asnumpy())
            assert np.array_equal(module.running_var, cell.moving_variance.asnumpy())


@pytest.mark.parametrize(("affine", "track", "bias"),
                         list(itertools.product((True, False), repeat=3)))
def test_a_torch_module_converts_to_a_cell_that_computes_the_same(affine, track, bias):
    module = trained_module(affine=affine, track_running_stats=track, bias=bias, momentum=0.3)
    cell = to_mindspore(module, policies=POLICIES)
    assert cell.training is True and cell.bn2d.use_batch_statistics is (None if track else True)
    assert [p.name for p in cell.trainable_params()] == (
        ["bn2d.gamma"] + (["bn2d.beta"] if bias else []) if affine else [])
    assert_same_steps(module, cell, training=False)
    assert_same_steps(module, cell, training=True)


@pytest.mark.parametrize(("affine", "use_batch_statistics"),
                         list(itertools.product((True, False), (None, True))))
def test_a_cell_converts_to_a_torch_module_that_computes_the_same(affine, use_batch_statistics):
    cell = Cell(4, momentum=0.7, affine=affine, use_batch_statistics=use_batch_statistics)
    for x in batches(2, seed=3):
        cell.set_train()(x)
    module = to_torch(cell, counter=2)
    assert module.training is True and module.affine is affine
    assert module.track_running_stats is (use_batch_statistics is None)
    if module.num_batches_tracked is not None:
        assert module.num_batches_tracked == 2
    assert_same_steps(module, cell, training=False)
    assert_same_steps(module, cell, training=True)


def test_torch_momentum_none_needs_a_fixed_momentum():
    module = trained_module(momentum=None)
    with pytest.raises(ConversionError, match="Policies\\(momentum_none=0.1\\)"):
        to_mindspore(module)
    cell = to_mindspore(module, policies=Policies(momentum_none=0.2))
    assert 1.0 - cell.bn2d.momentum == pytest.approx(0.8)


def test_a_cell_using_moving_statistics_in_every_mode_becomes_a_module_kept_in_eval():
    cell = Cell(4, moving_mean_init=1.0, moving_var_init=4.0, use_batch_statistics=False)
    cell.set_train()
    with pytest.raises(ConversionError, match="use_batch_statistics=False"):
        to_torch(cell)
    module = to_torch(cell, policies=Policies(use_batch_statistics_false="eval"))
    assert module.training is False
    for x in batches(2):
        assert np.array_equal(module(x), cell(x))


def test_an_affine_false_cell_with_other_gamma_needs_its_policy_and_then_keeps_it():
    cell = Cell(4, affine=False, gamma_init=2.0)
    with pytest.raises(ConversionError, match="affine_false_values='keep'"):
        to_torch(cell)
    module = to_torch(cell, policies=Policies(affine_false_values="keep"))
    assert module.affine and module.weight.tolist() == [2.0] * 4
    assert_same_steps(module, cell, training=True)


def test_a_round_trip_gives_the_same_module_back():
    module = trained_module(momentum=0.01, eps=1e-3)
    back = to_torch(to_mindspore(module), counter=int(module.num_batches_tracked))
    assert repr(back) == repr(module)
    for name, value in module.state_dict().items():
        assert np.array_equal(back.state_dict()[name], value), name


def test_a_frozen_zero_beta_comes_back_as_bias_false_and_a_frozen_nonzero_one_is_refused():
    module = trained_module(bias=False)
    cell = to_mindspore(module, policies=POLICIES)
    assert to_torch(cell, counter=2).bias is None
    cell.beta.set_data(np.full(4, 0.5, np.float32))
    with pytest.raises(ConversionError, match="bias=False, but beta is not all 0"):
        to_torch(cell)
