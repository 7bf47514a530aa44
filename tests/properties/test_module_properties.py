"""Properties of both facades over random constructions and sequences of calls.

- bn3d.torch_nn.BatchNorm3d follows torch.nn.BatchNorm3d step by step (where torch is
  installed): the same calls raise, with the same error types; outputs, gradients and
  state agree within the accuracy bound. torch counts a batch before a training call
  fails, bn3d does not (a documented difference): the comparison allows for it.
- Both facades: a call that raises leaves the module's state as it was, and every
  output is within the accuracy bound of a float64 reference.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bn3d.mindspore_nn import BatchNorm3d as MindSporeBatchNorm3d
from bn3d.torch_nn import BatchNorm3d as TorchBatchNorm3d

try:
    import torch
except ImportError:
    torch = None

STEPS = ["train", "eval", "forward", "forward", "forward", "backward", "wrong-channels",
         "wrong-rank", "wrong-dtype"]


def step_input(rng: np.random.Generator, kind: str, channels: int, dtype: str) -> np.ndarray:
    shape = (int(rng.integers(1, 4)), channels, *rng.integers(1, 4, 3))
    if kind == "wrong-channels":
        shape = (shape[0], channels + 1, *shape[2:])
    elif kind == "wrong-rank":
        shape = shape[:4]
    if kind == "wrong-dtype":
        dtype = "float64" if dtype == "float32" else "float32"
    return rng.normal(rng.uniform(-3, 3), rng.uniform(0.2, 3), shape).astype(dtype)


def outcome(function, *args):
    try:
        return function(*args), None
    except Exception as error:  # compared below
        return None, error


def state(module) -> dict[str, np.ndarray]:
    return {name: np.array(value) for name, value in module.state_dict().items()}


def close(ours, theirs, scale: str = "element") -> bool:
    """Within the accuracy bound of ``ours``'s dtype (float32: torch's float32 sums are
    less exact than bn3d's), relative to each element or (gradients, which cancel) to
    the array's largest."""
    tolerance = 3e-5 if np.asarray(ours).dtype == np.float32 else 1e-9
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    same_nan = np.array_equal(np.isnan(ours), np.isnan(theirs))
    finite = np.isfinite(theirs)
    magnitude = np.abs(theirs[finite])
    if scale == "array" and magnitude.size:
        magnitude = np.full_like(magnitude, magnitude.max())
    return same_nan and bool(np.all(np.abs(ours - theirs)[finite]
                                    <= tolerance * np.maximum(1, magnitude)))


@settings(deadline=None)
@given(st.data())
def test_torch_facade_follows_torch_step_by_step(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    channels = data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    kwargs = {"eps": data.draw(st.sampled_from([1e-5, 1e-3])),
              "momentum": data.draw(st.sampled_from([0.1, 0.5, None])),
              "affine": data.draw(st.booleans()),
              "track_running_stats": data.draw(st.booleans())}
    ours = TorchBatchNorm3d(channels, dtype=dtype, **kwargs)
    theirs = None if torch is None else torch.nn.BatchNorm3d(
        channels, dtype=getattr(torch, dtype), **kwargs)
    last_input = their_last = None
    for kind in data.draw(st.lists(st.sampled_from(STEPS), min_size=1, max_size=8)):
        if kind in ("train", "eval"):
            getattr(ours, kind)()
            if theirs is not None:
                getattr(theirs, kind)()
            continue
        if kind == "backward":
            if last_input is None:
                continue
            g = rng.standard_normal(last_input.shape).astype(dtype)
            grads = ours.backward(g)
            if their_last is not None:
                their_input, their_output = their_last
                their_grads = torch.autograd.grad(
                    their_output, [their_input] + [p for p in (theirs.weight, theirs.bias)
                                                   if p is not None], torch.from_numpy(g),
                    retain_graph=True)
                for mine, other in zip([grads[0]] + [q for q in grads[1:] if q is not None],
                                       their_grads):
                    assert close(mine, other.detach().numpy(), "array"), kind
            continue
        x = step_input(rng, kind, channels, dtype)
        before = state(ours)
        output, error = outcome(ours, x)
        if error is not None:
            for name, value in state(ours).items():
                np.testing.assert_array_equal(value, before[name], err_msg=name)
        else:
            last_input = x
        if theirs is not None:
            their_input = torch.from_numpy(x.copy()).requires_grad_(True)
            their_output, their_error = outcome(theirs, their_input)
            assert type(error) is type(their_error), (kind, error, their_error)
            if their_error is not None and theirs.num_batches_tracked is not None:
                theirs.num_batches_tracked.fill_(int(ours.num_batches_tracked))
            if error is None:
                their_last = their_input, their_output
                assert close(output, their_output.detach().numpy()), kind
            for name, value in state(ours).items():
                assert close(value, theirs.state_dict()[name].numpy()), name


@settings(deadline=None)
@given(st.data())
def test_mindspore_facade_is_accurate_and_raising_calls_change_nothing(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    channels = data.draw(st.integers(1, 4))
    momentum = data.draw(st.sampled_from([0.9, 0.5, 0.0, 1.0]))
    use_batch_statistics = data.draw(st.sampled_from([None, True, False]))
    cell = MindSporeBatchNorm3d(channels, momentum=momentum,
                                gamma_init=data.draw(st.sampled_from(["ones", 2.0, "normal"])),
                                beta_init=data.draw(st.sampled_from(["zeros", 0.5])),
                                moving_var_init=data.draw(st.sampled_from(["ones", 2.0])),
                                affine=data.draw(st.booleans()),
                                use_batch_statistics=use_batch_statistics)
    steps = ["set_train", "set_train(False)", "forward", "forward", "backward",
             "wrong-channels", "wrong-rank", "wrong-dtype"]
    recorded = None
    for kind in data.draw(st.lists(st.sampled_from(steps), min_size=1, max_size=8)):
        if kind.startswith("set_train"):
            cell.set_train(kind == "set_train")
            continue
        if kind == "backward":
            if recorded is not None:
                grads = cell.backward(np.ones_like(recorded))
                assert grads[0].shape == recorded.shape
            continue
        x = step_input(rng, kind, channels, "float32")
        before = {p.name: p.asnumpy().copy() for p in cell.get_parameters()}
        output, error = outcome(cell, x)
        parameters = {p.name: p.asnumpy() for p in cell.get_parameters()}
        if error is not None:
            for name, value in parameters.items():
                np.testing.assert_array_equal(value, before[name], err_msg=name)
            continue
        recorded = x
        batch = cell.bn2d.uses_batch_statistics()
        xd = x.astype(np.float64)
        axes, shape = (0, 2, 3, 4), (1, -1, 1, 1, 1)
        mean = xd.mean(axis=axes) if batch else before["bn2d.moving_mean"].astype(np.float64)
        var = xd.var(axis=axes) if batch else before["bn2d.moving_variance"].astype(np.float64)
        expected = ((xd - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
                    * before["bn2d.gamma"].reshape(shape) + before["bn2d.beta"].reshape(shape))
        assert close(output, expected)
        if batch:
            count = x.size // channels
            unbiased = xd.var(axis=axes, ddof=1) if count > 1 else np.full(channels, np.nan)
            for name, value in (("bn2d.moving_mean", mean), ("bn2d.moving_variance", unbiased)):
                update = momentum * before[name] + (1 - momentum) * value
                assert close(parameters[name], update), name
