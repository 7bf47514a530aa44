"""Properties of bn3d.functional over random shapes, strides, dtypes, modes and arguments.

For every generated call, good or bad:
- a result is within the accuracy bound of a float64 reference, NaN where it is NaN;
- a call that raises leaves every argument as it was;
- where torch is installed, bn3d raises exactly when torch raises, with the same
  error type (bn3d's own refusals, such as overlapping running statistics, are not
  generated here).

Run through tests/test_property_suite.py, in a subprocess, so that a crash is a
failure rather than the end of the test run.
"""

from __future__ import annotations

import numpy as np
from hypothesis import find, given, settings
from hypothesis import strategies as st
from strategies import (
    OUTPUT_TOLERANCE,
    as_torch,
    call_arguments,
    layouts,
    reference_output,
    snapshot,
)

import bn3d

try:
    import torch
except ImportError:
    torch = None


def outcome(function, *args, **kwargs):
    try:
        return function(*args, **kwargs), None
    except Exception as error:  # compared with torch's below
        return None, error


@settings(deadline=None)
@given(call_arguments())
def test_batch_norm_is_accurate_or_raises_without_side_effects(call):
    before = snapshot(call)
    result, error = outcome(bn3d.batch_norm, **call)
    if error is not None:
        after = snapshot(call)
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    if torch is not None:
        theirs, their_error = outcome(torch.nn.functional.batch_norm,
                                      **{name: as_torch(value, torch)
                                         for name, value in before.items() if name != "out"})
        assert (error is None) == (their_error is None), (error, their_error)
        if error is not None:
            assert type(error) is type(their_error), (error, their_error)
    if error is None and result.size:
        expected, conditioning = reference_output(before)
        actual = result.astype(np.float64)
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(actual[~finite], expected[~finite])
        # float64 results are as accurate as their conditioning allows; float32 and
        # float16 ones within a few roundings of their own precision.
        allowed = OUTPUT_TOLERANCE[result.dtype.name] * np.maximum(1.0, np.abs(expected))
        if result.dtype == np.float64:
            allowed = allowed + 64 * np.finfo(np.float64).eps * conditioning
        assert np.all(np.abs(actual - expected)[finite] <= allowed[finite])


@settings(deadline=None)
@given(st.data())
def test_results_do_not_depend_on_the_input_layout(data):
    shape = data.draw(st.tuples(st.integers(2, 3), st.integers(1, 4), st.integers(1, 5),
                                st.integers(1, 6)))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    values = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).normal(
        1.0, 2.0, shape).astype(dtype)
    laid_out = data.draw(layouts(values))
    training = data.draw(st.booleans())
    stats = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    expected = bn3d.batch_norm(values, *stats, training=training)
    np.testing.assert_array_equal(bn3d.batch_norm(laid_out, *stats, training=training),
                                  expected)
    grads = bn3d.batch_norm_backward(laid_out, laid_out, *stats, training=training)
    for ours, theirs in zip(grads, bn3d.batch_norm_backward(values, values, *stats,
                                                            training=training)):
        np.testing.assert_array_equal(ours, theirs)


@settings(deadline=None)
@given(call_arguments(valid=True), st.data())
def test_backward_matches_torch_autograd(call, data):
    x = call["input"]
    if torch is None or x.dtype == np.float16 or x.size == 0:
        return
    training = call["training"] or call["running_mean"] is None
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(
        x.shape).astype(x.dtype)
    weight = call["weight"] if np.ndim(call["weight"]) == 1 else None
    stats = (call["running_mean"], call["running_var"])
    grads = bn3d.batch_norm_backward(g, x, *stats, weight, training=training, eps=call["eps"])
    # Contiguous: torch 2.13's eval backward of a channels-last input given a contiguous
    # grad_output is wrong (it misreads the gradient's layout), bn3d's is not.
    tx = torch.tensor(np.array(x, np.float64, order="C"), requires_grad=True)
    tw = None if weight is None else torch.tensor(weight.astype(np.float64), requires_grad=True)
    y = torch.nn.functional.batch_norm(
        tx, *[None if s is None else torch.tensor(s.astype(np.float64)) for s in stats], tw,
        training=training, eps=call["eps"])
    y.backward(torch.tensor(g.astype(np.float64)))
    tolerance = 1e-4 if x.dtype == np.float32 else 1e-9
    # float64 gradients are as accurate as the centring of x allows (the reference's too).
    _, conditioning = reference_output({**call, "training": training, "bias": None})
    slack = 0.0 if x.dtype == np.float32 else \
        64 * np.finfo(np.float64).eps * conditioning.max() * np.abs(g).sum()
    for ours, theirs in zip(grads, [tx.grad] + ([] if tw is None else [tw.grad])):
        theirs = theirs.numpy()
        scale = max(1.0, float(np.abs(theirs).max()))
        assert ours.shape == theirs.shape and ours.dtype == x.dtype
        assert np.abs(ours - theirs).max() <= tolerance * scale + slack


def test_generated_calls_both_compute_and_raise():
    """The generator reaches both outcomes, so the properties above test both."""
    def raises(call):
        return outcome(bn3d.batch_norm, **call)[1] is not None

    assert raises(find(call_arguments(), raises))
    assert not raises(find(call_arguments(), lambda call: not raises(call)))
