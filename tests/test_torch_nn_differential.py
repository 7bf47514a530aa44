"""bn3d.torch_nn.BatchNorm3d against the real torch.nn.BatchNorm3d (PyTorch 2.13).

Tolerances: float32 results within 2e-6 * max(1, |torch|) (bn3d's statistics are
exact; torch's float32 ones differ in the last bits), float32 gradients within
3e-5 * max(1, |torch|) (torch accumulates some of them in float32), float64
within 1e-10.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict

import numpy as np
import pytest
from conftest import max_relative_error

from bn3d.torch_nn import BatchNorm3d

torch = pytest.importorskip("torch")

NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
TOLERANCE = {"float32": 2e-6, "float64": 1e-10}
GRADIENT_TOLERANCE = {"float32": 3e-5, "float64": 1e-10}


def make_pair(seed=0, dtype="float32", **kwargs):
    """(bn3d module, torch module) with the same random parameters and running stats."""
    rng = np.random.default_rng(seed)
    theirs = torch.nn.BatchNorm3d(dtype=TORCH_DTYPES[dtype], **kwargs)
    with torch.no_grad():
        channels = theirs.num_features
        for name in ("weight", "bias", "running_mean"):
            if getattr(theirs, name) is not None:
                getattr(theirs, name).copy_(torch.from_numpy(rng.normal(0, 1.5, channels)))
        if theirs.running_var is not None:
            theirs.running_var.copy_(torch.from_numpy(rng.uniform(0.2, 3, channels)))
    ours = BatchNorm3d(dtype=dtype, **kwargs)
    ours.load_state_dict(theirs.state_dict())  # torch tensors load as they are
    return ours, theirs


def assert_close(ours, theirs, dtype, tolerance=TOLERANCE, what=""):
    expected = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == expected.shape and ours.dtype == expected.dtype, what
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(ours), nan, err_msg=what)
    assert max_relative_error(ours[~nan], expected[~nan]) <= tolerance[dtype], what


def assert_same_state(ours, theirs, dtype):
    assert ours.training == theirs.training
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name in NAMES:
        mine, other = getattr(ours, name), getattr(theirs, name)
        assert (mine is None) == (other is None), name
        if name == "num_batches_tracked" and mine is not None:
            assert mine.dtype == np.int64 and mine.shape == () and int(mine) == int(other)
        elif mine is not None:
            assert_close(mine, other, dtype, what=name)


def run_both(ours, theirs, x):
    """Run both forwards on x; return (ours, theirs, torch input requiring grad)."""
    tx = torch.from_numpy(x).requires_grad_()
    return ours(x), theirs(tx), tx


def error_of(call):
    try:
        call()
    except Exception as error:
        return type(error), str(error)
    return None


def random_config(rng):
    config = {
        "num_features": int(rng.integers(1, 6)),
        "affine": bool(rng.integers(2)),
        "bias": bool(rng.integers(2)),
        "track_running_stats": bool(rng.integers(4)),  # mostly tracked
        "momentum": [0.1, 0.5, 1.0, 0.0, 0.01, None][int(rng.integers(6))],
        "eps": [1e-5, 1e-3, 0.1][int(rng.integers(3))],
    }
    return config, ["float32", "float64"][int(rng.integers(2))]


def random_input(rng, channels, dtype, training):
    """Random data whose channels have a mean of at most 3 standard deviations.

    torch's float32 statistics lose about |mean| / std ulps; bn3d's do not. Standardising
    each channel keeps that loss within the float32 tolerance whatever the batch size.
    """
    while True:
        n, d, h, w = (int(v) for v in rng.integers(1, 6, 4))
        if not training or n * d * h * w > 1:
            break
    x = rng.standard_normal((n, channels, d, h, w))
    if n * d * h * w > 1:
        axes = (0, 2, 3, 4)
        x = (x - x.mean(axis=axes, keepdims=True)) / x.std(axis=axes, keepdims=True)
    scale = rng.uniform(0.1, 10)
    shift = rng.uniform(-3, 3) * scale
    return (x * scale + shift).astype(dtype)


@pytest.mark.parametrize("seed", range(60))
def test_random_sequences_mixing_train_and_eval_match_torch(seed):
    rng = np.random.default_rng(seed)
    config, dtype = random_config(rng)
    ours, theirs = make_pair(seed, dtype, **config)
    for step in range(5):
        training = bool(rng.random() < 0.6)
        ours.train(training)
        theirs.train(training)
        x = random_input(rng, config["num_features"], dtype,
                         training or not config["track_running_stats"])
        y, ty, tx = run_both(ours, theirs, x)
        what = f"config {config} {dtype} step {step} training={training}"
        assert_close(y, ty, dtype, what=what)
        assert_same_state(ours, theirs, dtype)

        g = rng.standard_normal(x.shape).astype(dtype)
        theirs.zero_grad()
        ty.backward(torch.from_numpy(g))
        for mine, other, name in zip(ours.backward(g), (tx, theirs.weight, theirs.bias),
                                     ("input", "weight", "bias")):
            assert (mine is None) == (other is None), name
            if mine is not None:
                assert_close(mine, other.grad, dtype, GRADIENT_TOLERANCE, what=f"{what} {name}")


def test_attributes_changed_after_construction_act_like_torchs():
    """momentum, eps and track_running_stats are read at every forward, as in torch."""
    rng = np.random.default_rng(12)
    ours, theirs = make_pair(12, num_features=3)
    for momentum, eps, tracked, training in [(0.1, 1e-5, True, True), (None, 1e-3, True, True),
                                             (0.5, 1e-5, False, True), (0.5, 1e-5, False, False),
                                             (None, 0.1, True, True), (0.2, 1e-5, True, False)]:
        for module in (ours, theirs):
            module.momentum, module.eps, module.track_running_stats = momentum, eps, tracked
            module.train(training)
        y, ty, _ = run_both(ours, theirs, random_input(rng, 3, "float32", True))
        assert_close(y, ty, "float32")
        assert_same_state(ours, theirs, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_example_matches_torch(dtype):
    x = np.array([[[[[0.1, 0.2], [0.3, 0.4]]], [[[0.9, 1.0], [1.1, 1.2]]]]], dtype)
    ours, theirs = BatchNorm3d(2, dtype=dtype), torch.nn.BatchNorm3d(2, dtype=TORCH_DTYPES[dtype])
    y, ty, _ = run_both(ours, theirs, x)
    assert_close(y, ty, dtype)
    assert_same_state(ours, theirs, dtype)


def test_float16_input_into_float32_module_matches_torch():
    rng = np.random.default_rng(7)
    ours, theirs = make_pair(7, num_features=3)
    x = rng.standard_normal((2, 3, 3, 4, 5)).astype(np.float16)
    y, ty, tx = run_both(ours, theirs, x)
    assert y.dtype == np.float16
    # one float16 rounding of float32 results that may differ in their last bits
    assert max_relative_error(y, ty.detach().numpy()) <= 2.0 ** -10
    assert_same_state(ours, theirs, "float32")
    g = rng.standard_normal(x.shape).astype(np.float16)
    ty.backward(torch.from_numpy(g))
    grad_input, grad_weight, grad_bias = ours.backward(g)
    assert grad_input.dtype == np.float16 and grad_weight.dtype == np.float32
    assert max_relative_error(grad_input, tx.grad.numpy()) <= 2.0 ** -9
    assert_close(grad_bias, theirs.bias.grad, "float32", GRADIENT_TOLERANCE)


@pytest.mark.parametrize("training", [True, False])
def test_nan_spreads_like_torch(training):
    ours, theirs = make_pair(3, num_features=3)
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 3, 4)).astype(np.float32)
    x[1, 1, 0, 2, 3] = np.nan
    ours.train(training)
    theirs.train(training)
    y, ty, _ = run_both(ours, theirs, x)
    assert_close(y, ty, "float32")  # training: channel 1 all NaN; eval: one element
    assert_same_state(ours, theirs, "float32")


@pytest.mark.parametrize("shape, training, tracked", [
    ((0, 3, 2, 2, 2), True, True), ((0, 3, 2, 2, 2), False, True),
    ((0, 3, 2, 2, 2), False, False), ((2, 3, 0, 2, 2), False, False),
    ((1, 3, 1, 1, 1), False, True), ((2, 3, 1, 1, 1), True, True),
])
def test_edge_shapes_match_torch(shape, training, tracked):
    for momentum in (0.1, None):
        ours, theirs = make_pair(4, num_features=3, momentum=momentum,
                                 track_running_stats=tracked)
        ours.train(training)
        theirs.train(training)
        x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
        y, ty, _ = run_both(ours, theirs, x)
        assert_close(y, ty, "float32")
        assert_same_state(ours, theirs, "float32")


def test_module_without_arrays_takes_any_channel_count_like_torch():
    ours, theirs = make_pair(11, num_features=3, affine=False, track_running_stats=False)
    x = np.random.default_rng(11).standard_normal((2, 5, 2, 2, 2)).astype(np.float32)
    y, ty, _ = run_both(ours, theirs, x)
    assert_close(y, ty, "float32")


def test_torch_tensor_input_gives_the_numpy_result():
    ours, theirs = make_pair(5, num_features=3)
    x = np.random.default_rng(5).standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    y = ours(torch.from_numpy(x))
    assert isinstance(y, np.ndarray)
    assert_close(y, theirs(torch.from_numpy(x)), "float32")


def test_signature_and_reprs_are_torchs():
    def describe(cls):
        return [(p.name, p.default, p.kind) for p in inspect.signature(cls).parameters.values()]

    assert describe(BatchNorm3d) == describe(torch.nn.BatchNorm3d)
    for kwargs in ({}, {"momentum": None}, {"affine": False}, {"bias": False},
                   {"track_running_stats": False}, {"eps": 0, "momentum": 1}):
        assert repr(BatchNorm3d(3, **kwargs)) == repr(torch.nn.BatchNorm3d(3, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_torch_dtypes_and_devices_are_accepted(dtype):
    bn = BatchNorm3d(2, dtype=dtype, device=torch.device("cpu"))
    assert bn.weight.dtype == np.dtype(str(dtype).rpartition(".")[2])


@pytest.mark.parametrize("kwargs", [
    {"affine": True}, {"affine": False}, {"bias": False}, {"track_running_stats": False},
    {"momentum": None},
])
def test_state_dicts_round_trip_both_ways(kwargs):
    x = np.random.default_rng(6).standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    ours, theirs = make_pair(6, num_features=3, **kwargs)
    ours(x)
    with torch.no_grad():
        theirs(torch.from_numpy(x))
    fresh_ours = BatchNorm3d(3, **kwargs)
    fresh_ours.load_state_dict(theirs.state_dict())  # torch -> bn3d
    assert_same_state(fresh_ours, theirs, "float32")
    fresh_theirs = torch.nn.BatchNorm3d(3, **kwargs)
    converted = OrderedDict((k, torch.from_numpy(v)) for k, v in ours.state_dict().items())
    converted._metadata = ours.state_dict()._metadata
    assert repr(fresh_theirs.load_state_dict(converted)) == "<All keys matched successfully>"
    assert_same_state(ours, fresh_theirs, "float32")  # bn3d -> torch
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, getattr(fresh_theirs, name).detach().numpy())


def state_variants():
    """(name, module kwargs, state dict edit) cases for load_state_dict."""
    def drop(*keys):
        def edit(state):
            for key in keys:
                del state[key]
        return edit

    def put(**values):
        def edit(state):
            state.update(values)
        return edit

    def plain_without_count(state):
        state._metadata = None
        del state["num_batches_tracked"]

    return {
        "missing": ({}, drop("weight", "num_batches_tracked")),
        "unexpected": ({}, put(foo=torch.zeros(3), zzz=torch.zeros(1))),
        "size-mismatch": ({}, put(bias=torch.zeros(4), running_var=torch.zeros(2, 2))),
        "everything-wrong": ({}, lambda s: (drop("weight")(s), put(foo=torch.zeros(1),
                                                                    bias=torch.zeros(2))(s))),
        "count-as-one-element": ({}, put(num_batches_tracked=torch.tensor([5]))),
        "count-two-elements": ({}, put(num_batches_tracked=torch.tensor([5, 6]))),
        "scalar-weight": ({}, put(weight=torch.tensor(2.0))),
        "float64-into-float32": ({}, put(weight=torch.tensor([2.0, 3.0, 4.0],
                                                             dtype=torch.float64))),
        "plain-dict-without-count": ({}, plain_without_count),
        "affine-into-not-affine": ({"affine": False}, lambda s: None),
        "tracked-into-untracked": ({"track_running_stats": False}, lambda s: None),
    }


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("name", sorted(state_variants()))
def test_load_state_dict_results_and_errors_are_torchs(name, strict):
    kwargs, edit = state_variants()[name]
    source = torch.nn.BatchNorm3d(3)
    with torch.no_grad():
        source(torch.randn(2, 3, 2, 2, 2))
    state = source.state_dict()
    edit(state)
    ours, theirs = BatchNorm3d(3, **kwargs), torch.nn.BatchNorm3d(3, **kwargs)
    our_result = error_of(lambda: ours.load_state_dict(state, strict=strict)) or repr(
        ours.load_state_dict(state, strict=strict))
    their_result = error_of(lambda: theirs.load_state_dict(state, strict=strict)) or repr(
        theirs.load_state_dict(state, strict=strict))
    assert our_result == their_result
    if isinstance(our_result, str):  # loaded: the same state
        assert_same_state(ours, theirs, "float32")


def test_load_state_dict_rejects_non_mappings_like_torch():
    assert error_of(lambda: BatchNorm3d(3).load_state_dict([1])) == error_of(
        lambda: torch.nn.BatchNorm3d(3).load_state_dict([1]))


def forward_error_cases():
    """(module kwargs, training, input) whose forward raises in torch."""
    rng = np.random.default_rng(8)

    def x(shape=(2, 3, 2, 2, 2), dtype=np.float32):
        return rng.standard_normal(shape).astype(dtype)

    return {
        "rank-4": ({}, True, x((2, 3, 2, 2))),
        "rank-6": ({}, False, x((2, 3, 2, 2, 2, 2))),
        "channels": ({}, True, x((2, 4, 2, 2, 2))),
        "channels-eval": ({}, False, x((2, 4, 2, 2, 2))),
        "channels-untracked": ({"track_running_stats": False}, True, x((2, 4, 2, 2, 2))),
        "channels-untracked-fewer": ({"track_running_stats": False}, True, x((2, 2, 2, 2, 2))),
        "one-value": ({}, True, x((1, 3, 1, 1, 1))),
        "one-value-eval-untracked": ({"track_running_stats": False}, False, x((1, 3, 1, 1, 1))),
        "eps-zero-train": ({"eps": 0.0}, True, x()),
        "eps-negative-train": ({"eps": -1e-3}, True, x()),
        "eps-negative-eval": ({"eps": -1.0}, False, x()),
        "float64-into-float32": ({}, True, x(dtype=np.float64)),
        "float64-into-float32-eval": ({}, False, x(dtype=np.float64)),
        "float32-into-float64": ({"dtype": "float64"}, True, x()),
        "float32-into-float16": ({"dtype": "float16"}, True, x()),
        "int32": ({}, True, x().astype(np.int32)),
        "int64": ({}, False, x().astype(np.int64)),
        "int8": ({}, True, x().astype(np.int8)),
        "int16": ({}, True, x().astype(np.int16)),
        "uint8": ({}, True, x().astype(np.uint8)),
        "bool": ({}, True, x() > 0),
        "momentum-string": ({"momentum": "fast"}, True, x()),
    }


def torch_module(kwargs):
    dtype = kwargs.get("dtype")
    if dtype is not None:
        kwargs = {**kwargs, "dtype": TORCH_DTYPES[dtype]}
    return torch.nn.BatchNorm3d(3, **kwargs)


@pytest.mark.parametrize("name", sorted(forward_error_cases()))
def test_forward_errors_are_torchs(name):
    kwargs, training, x = forward_error_cases()[name]
    ours, theirs = BatchNorm3d(3, **kwargs).train(training), torch_module(kwargs).train(training)
    expected = error_of(lambda: theirs(torch.from_numpy(x)))
    assert expected is not None
    assert error_of(lambda: ours(x)) == expected


@pytest.mark.parametrize("name", sorted(forward_error_cases()))
def test_failing_forward_counts_no_batch_where_torch_counts_one(name):
    """The deliberate difference: torch increments num_batches_tracked before it computes
    (after its rank check)."""
    kwargs, training, x = forward_error_cases()[name]
    ours, theirs = BatchNorm3d(3, **kwargs).train(training), torch_module(kwargs).train(training)
    assert error_of(lambda: ours(x)) is not None
    assert error_of(lambda: theirs(torch.from_numpy(x))) is not None
    if ours.num_batches_tracked is not None:
        assert ours.num_batches_tracked == 0
        assert int(theirs.num_batches_tracked) == int(training and x.ndim == 5)


@pytest.mark.parametrize("args, kwargs", [
    ((-1,), {}), ((3.0,), {}), ((True,), {}), ((3,), {"device": "cuda"}),
    ((3,), {"device": "cuda:1"}), ((3,), {"device": "gpu"}), ((3,), {"device": ""}),
    ((3,), {"device": "cpu:x"}), ((3,), {"device": "cpu:01"}), ((3,), {"device": 0}),
    ((3,), {"device": -1}), ((3,), {"device": 1.5}),
])
def test_constructor_errors_are_torchs(args, kwargs):
    expected = error_of(lambda: torch.nn.BatchNorm3d(*args, **kwargs))
    assert expected is not None
    assert error_of(lambda: BatchNorm3d(*args, **kwargs)) == expected


def test_train_mode_error_is_torchs():
    assert error_of(lambda: BatchNorm3d(3).train(1)) == error_of(
        lambda: torch.nn.BatchNorm3d(3).train(1))


def test_backward_shape_error_is_autograds():
    x = np.ones((2, 3, 2, 2, 2), np.float32)
    ours, theirs = make_pair(9, num_features=3)
    _, ty, _ = run_both(ours, theirs, x)
    g = np.ones((2, 3, 2, 2, 1), np.float32)
    expected = error_of(lambda: ty.backward(torch.from_numpy(g)))
    assert expected is not None
    assert error_of(lambda: ours.backward(g)) == expected


def test_backward_casts_the_gradient_dtype_like_autograd():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    g = rng.standard_normal(x.shape)  # float64 gradient for a float32 output
    ours, theirs = make_pair(10, num_features=3)
    _, ty, tx = run_both(ours, theirs, x)
    ty.backward(torch.from_numpy(g))
    grad_input, grad_weight, _ = ours.backward(g)
    assert_close(grad_input, tx.grad, "float32", GRADIENT_TOLERANCE)
    assert_close(grad_weight, theirs.weight.grad, "float32", GRADIENT_TOLERANCE)
