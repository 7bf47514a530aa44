"""The libraries ``bench.py`` times, each as the calls a user of it would make.

Every implementation is a set of zero-argument calls, one per operation
(``train_forward``, ``eval_forward``, ``backward``, ``forward_backward``), on the
arrays of one :class:`Case`, each allocating its outputs as the library normally
does (``bn3d_out`` excepted). The peers are optional: a library that does not
import is left out and the results say so.

==================  ===========  ==========================================================
implementation      layout       calls
==================  ===========  ==========================================================
``bn3d``            contiguous   ``bn3d.batch_norm`` / ``bn3d.batch_norm_backward``
``bn3d_out``        contiguous   the same into a preallocated ``out=`` (backward: when
                                 ``batch_norm_backward`` has ``out=``)
``torch``           contiguous   ``torch.nn.functional.batch_norm``;
                                 ``aten.native_batch_norm_backward`` (what autograd calls);
                                 autograd for forward + backward
``onnxruntime``     contiguous   a model of one ``BatchNormalization`` node (opset 15),
                                 ``training_mode=0`` and ``1``; forwards only
``jax``             contiguous   ``jax.jit`` of ``jnp.mean``/``jnp.var`` and the
                                 normalisation; ``jax.vjp`` for the backward
``numpy``           contiguous   the plain numpy formulas
``floor_by_channel``,            ``benchmarks/floor.py``'s two-pass backwards (no numerical
``floor_two_sweeps`` contiguous  care): the floor of the backward target
``bn3d_cl``         channels     bn3d on an array whose memory is NDHWC, seen as NCDHW
``torch_cl``        channels     torch on ``x.to(memory_format=torch.channels_last_3d)``
``jax_cl``          channels     JAX on NDHWC arrays, features on the last axis
==================  ===========  ==========================================================

Threads: bn3d ``set_num_threads``, torch ``set_num_threads``, onnxruntime
``SessionOptions.intra_op_num_threads``, the floors an argument, numpy's
operations here use one thread. JAX has no setting for it: XLA's CPU client sizes
its thread pool once, when it starts, from the ``NPROC`` environment variable
(XLA's ``DefaultThreadPoolSize``, an undocumented variable that Google's CI sets),
else from the CPUs in the process's affinity mask. So ``bench.py`` gives each
worker process one thread count and sets ``NPROC`` in its environment. Measured
with jaxlib 0.10.2 on the 2-core machine, with no other load, a jitted
``jnp.mean``/``jnp.var`` normalisation of (8,32,32,64,64) kept 1.00 core busy with
``NPROC=1`` (98 ms) and 1.85 cores without it or with ``NPROC=2`` (55 ms);
``taskset -c 0`` also gave 1.00 core;
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``
(the advice of JAX issues #743 and #1539) and ``OMP_NUM_THREADS=1`` changed nothing
(1.8 cores). The results' ``cpu_per_wall`` shows the cores each implementation
kept busy in every case.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import Any

import numpy as np

import bn3d

SHAPES = [(8, 32, 32, 64, 64), (2, 64, 16, 56, 56), (1, 3, 64, 128, 128), (32, 128, 4, 7, 7)]
OPERATIONS = ["train_forward", "eval_forward", "backward", "forward_backward"]
LAYOUTS = ["contiguous", "channels_last"]
EPS = 1e-5
MOMENTUM = 0.1
ONNX_OPSET = 15  # BatchNormalization-15: training_mode (since 14) and its running-stat outputs
PEERS = ["torch", "onnxruntime", "jax", "numpy", "floor"]
# The distributions whose versions the results record (None when not installed).
DISTRIBUTIONS = ["bn3d", "numpy", "torch", "onnxruntime", "onnx", "jax", "jaxlib"]

Operations = dict[str, Callable[[], object]]


@dataclass(frozen=True)
class Description:
    """What an implementation's name in the results stands for."""

    library: str
    layout: str
    calls: str


IMPLEMENTATIONS = {
    "bn3d": Description("bn3d", "contiguous", "bn3d.batch_norm, bn3d.batch_norm_backward"),
    "bn3d_out": Description("bn3d", "contiguous", "the same into a preallocated out="),
    "torch": Description("torch", "contiguous",
                         "torch.nn.functional.batch_norm, aten.native_batch_norm_backward"),
    "onnxruntime": Description("onnxruntime", "contiguous",
                               f"one BatchNormalization node (opset {ONNX_OPSET})"),
    "jax": Description("jax", "contiguous", "jax.jit of jnp.mean/jnp.var, jax.vjp"),
    "numpy": Description("numpy", "contiguous", "plain numpy formulas"),
    "floor_by_channel": Description("floor", "contiguous",
                                    "floor.c: backward by channel, no numerical care"),
    "floor_two_sweeps": Description("floor", "contiguous",
                                    "floor.c: backward in two sweeps, no numerical care"),
    "bn3d_cl": Description("bn3d", "channels_last", "bn3d on NDHWC memory seen as NCDHW"),
    "torch_cl": Description("torch", "channels_last", "torch on channels_last_3d tensors"),
    "jax_cl": Description("jax", "channels_last", "JAX on NDHWC arrays (features last)"),
}


class Case:
    """The arrays of one shape: input, gradient, parameters and statistics.

    Parameters
    ----------
    shape : tuple of int
        ``(N, C, D, H, W)``.
    """

    def __init__(self, shape: tuple[int, ...]):
        rng = np.random.default_rng(0)
        channels = shape[1]
        self.shape = tuple(shape)
        self.x = rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5
        self.g = rng.standard_normal(shape, dtype=np.float32)
        self.weight = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        self.bias = rng.standard_normal(channels).astype(np.float32)
        # Updated in place by the training forwards of bn3d and numpy.
        self.running_mean = np.zeros(channels, np.float32)
        self.running_var = np.ones(channels, np.float32)
        # Read by every inference forward, never written: the libraries' outputs compare.
        self.eval_mean = rng.uniform(0.3, 0.7, channels).astype(np.float32)
        self.eval_var = rng.uniform(3.5, 4.5, channels).astype(np.float32)
        _, self.save_mean, self.save_invstd = bn3d.batch_norm(
            self.x, None, None, self.weight, self.bias, training=True, return_stats=True)

    @cached_property
    def x_channels_last(self) -> np.ndarray:
        """``x`` with NDHWC memory, seen as NCDHW."""
        return channels_last(self.x)

    @cached_property
    def g_channels_last(self) -> np.ndarray:
        """``g`` with NDHWC memory, seen as NCDHW."""
        return channels_last(self.g)


def channels_last(array: np.ndarray) -> np.ndarray:
    """The same values in an array whose memory is NDHWC, seen as NCDHW.

    Examples
    --------
    >>> a = np.arange(2 * 3 * 1 * 1 * 2.0).reshape(2, 3, 1, 1, 2)
    >>> b = channels_last(a)
    >>> bool((a == b).all()), b.strides[1] == a.itemsize
    (True, True)
    """
    return np.ascontiguousarray(array.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)


# -- the implementations -----------------------------------------------------------------------


@dataclass
class Implementation:
    """One library in one layout: its calls and how to read their main output.

    Attributes
    ----------
    name : str
        The key of the results (a key of ``IMPLEMENTATIONS``).
    operations : dict of str to callable
        The calls it has, by operation.
    main_output : callable or None
        The main output of a call (``y``, or ``grad_input`` for the backwards) as
        an NCDHW numpy array, to check it against bn3d's; None for the floors,
        which compute no batch normalisation.
    """

    name: str
    operations: Operations
    main_output: Callable[[Any], np.ndarray] | None = field(default=None)


def first_array(result: Any) -> np.ndarray:
    """The first array of a call's result (a tuple or list of outputs, or one output)."""
    if isinstance(result, (tuple, list)):
        result = result[0]
    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().numpy()
    return np.asarray(result)


def first_array_ndhwc(result: Any) -> np.ndarray:
    """:func:`first_array` of a result in NDHWC, as NCDHW."""
    return first_array(result).transpose(0, 4, 1, 2, 3)


def backward_has_out() -> bool:
    """Whether the installed ``bn3d.batch_norm_backward`` takes ``out=`` (grad_input)."""
    return "out" in inspect.signature(bn3d.batch_norm_backward).parameters


def bn3d_operations(case: Case, layout: str = "contiguous", out: bool = False) -> Operations:
    """bn3d's calls; ``out=True``: into preallocated outputs (contiguous only)."""
    x, g = (case.x, case.g) if layout == "contiguous" else (case.x_channels_last,
                                                            case.g_channels_last)
    forward_out = np.empty_like(case.x) if out else None
    backward_out = {"out": np.empty_like(case.x)} if out and backward_has_out() else {}

    def train_forward():
        return bn3d.batch_norm(x, case.running_mean, case.running_var, case.weight, case.bias,
                               training=True, momentum=MOMENTUM, eps=EPS, out=forward_out)

    def eval_forward():
        return bn3d.batch_norm(x, case.eval_mean, case.eval_var, case.weight, case.bias,
                               training=False, eps=EPS, out=forward_out)

    def backward():
        return bn3d.batch_norm_backward(g, x, None, None, case.weight, training=True, eps=EPS,
                                        save_mean=case.save_mean, save_invstd=case.save_invstd,
                                        **backward_out)

    def forward_backward():
        _, mean, invstd = bn3d.batch_norm(x, case.running_mean, case.running_var, case.weight,
                                          case.bias, training=True, momentum=MOMENTUM, eps=EPS,
                                          return_stats=True)
        return bn3d.batch_norm_backward(g, x, None, None, case.weight, training=True, eps=EPS,
                                        save_mean=mean, save_invstd=invstd)

    if out:
        operations = {"train_forward": train_forward, "eval_forward": eval_forward}
        if backward_out:
            operations["backward"] = backward
        return operations
    return {"train_forward": train_forward, "eval_forward": eval_forward,
            "backward": backward, "forward_backward": forward_backward}


def torch_operations(case: Case, torch: ModuleType, layout: str = "contiguous") -> Operations:
    """PyTorch's calls, at the level of bn3d's: the functional forward, the aten backward."""
    functional = torch.nn.functional
    x, g = torch.from_numpy(case.x), torch.from_numpy(case.g)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
        g = g.to(memory_format=torch.channels_last_3d)
    weight, bias = torch.from_numpy(case.weight), torch.from_numpy(case.bias)
    running_mean = torch.zeros_like(weight)
    running_var = torch.ones_like(weight)
    eval_mean, eval_var = torch.from_numpy(case.eval_mean), torch.from_numpy(case.eval_var)
    _, save_mean, save_invstd = torch.native_batch_norm(x, weight, bias, None, None, True,
                                                        MOMENTUM, EPS)
    x_leaf = x.clone().requires_grad_(True)  # keeps x's memory format
    weight_leaf = weight.clone().requires_grad_(True)
    bias_leaf = bias.clone().requires_grad_(True)

    def train_forward():
        with torch.no_grad():
            return functional.batch_norm(x, running_mean, running_var, weight, bias,
                                         training=True, momentum=MOMENTUM, eps=EPS)

    def eval_forward():
        with torch.no_grad():
            return functional.batch_norm(x, eval_mean, eval_var, weight, bias,
                                         training=False, eps=EPS)

    def backward():
        return torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, save_mean, save_invstd, True, EPS, [True, True, True])

    def forward_backward():
        for leaf in (x_leaf, weight_leaf, bias_leaf):
            leaf.grad = None
        y = functional.batch_norm(x_leaf, running_mean, running_var, weight_leaf, bias_leaf,
                                  training=True, momentum=MOMENTUM, eps=EPS)
        y.backward(g)
        return x_leaf.grad

    return {"train_forward": train_forward, "eval_forward": eval_forward,
            "backward": backward, "forward_backward": forward_backward}


def numpy_operations(case: Case) -> Operations:
    """A plain numpy BatchNorm3d, as one would write it without bn3d."""
    axes = (0, 2, 3, 4)
    view = (1, -1, 1, 1, 1)
    x, g = case.x, case.g
    weight, bias = case.weight.reshape(view), case.bias.reshape(view)
    count = x.size // x.shape[1]
    running_mean, running_var = case.running_mean.copy(), case.running_var.copy()

    def forward(training: bool):
        if training:
            mean = x.mean(axis=axes, keepdims=True)
            var = x.var(axis=axes, keepdims=True)
            running_mean[...] = (1 - MOMENTUM) * running_mean + MOMENTUM * mean.ravel()
            running_var[...] = ((1 - MOMENTUM) * running_var
                                + MOMENTUM * var.ravel() * count / (count - 1))
        else:
            mean = case.eval_mean.reshape(view)
            var = case.eval_var.reshape(view)
        invstd = 1 / np.sqrt(var + EPS)
        return (x - mean) * (invstd * weight) + bias, mean, invstd

    def backward_from(mean, invstd):
        xhat = (x - mean) * invstd
        grad_bias = g.sum(axis=axes, keepdims=True)
        grad_weight = (g * xhat).sum(axis=axes, keepdims=True)
        grad_input = (weight * invstd / count) * (count * g - grad_bias - xhat * grad_weight)
        return grad_input, grad_weight.ravel(), grad_bias.ravel()

    save_mean = case.save_mean.astype(np.float32).reshape(view)
    save_invstd = case.save_invstd.astype(np.float32).reshape(view)
    return {
        "train_forward": lambda: forward(True)[0],
        "eval_forward": lambda: forward(False)[0],
        "backward": lambda: backward_from(save_mean, save_invstd),
        "forward_backward": lambda: backward_from(*forward(True)[1:]),
    }


def onnx_batch_norm_model(case: Case, onnx: ModuleType, training: bool) -> bytes:
    """A serialized ONNX model of one ``BatchNormalization`` node for ``case``'s shape.

    The parameters and statistics are initializers (as in an exported model); the
    training model (``training_mode=1``) also outputs the updated running statistics.
    ONNX's momentum is the weight of the old statistic: ``1 - MOMENTUM``.
    """
    helper, tensor = onnx.helper, onnx.TensorProto.FLOAT
    channels = case.shape[1]
    outputs = ["y", "running_mean", "running_var"] if training else ["y"]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"],
                            outputs, epsilon=EPS, momentum=1 - MOMENTUM,
                            training_mode=int(training))
    initializers = [onnx.numpy_helper.from_array(array, name) for name, array in (
        ("scale", case.weight), ("bias", case.bias),
        ("mean", case.running_mean if training else case.eval_mean),
        ("var", case.running_var if training else case.eval_var))]
    graph = helper.make_graph(
        [node], "batch_norm", [helper.make_tensor_value_info("x", tensor, case.shape)],
        [helper.make_tensor_value_info("y", tensor, case.shape)]
        + [helper.make_tensor_value_info(name, tensor, [channels]) for name in outputs[1:]],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8  # opset 15 needs no more; older onnxruntime releases read it
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnxruntime_session(model: bytes, ort: ModuleType, threads: int) -> Any:
    """An inference session on the CPU with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnxruntime_training_mode(ort: ModuleType, onnx: ModuleType) -> dict[str, object]:
    """Whether onnxruntime's CPU kernel runs ``training_mode=1`` and normalises with the batch.

    Returns
    -------
    dict
        ``supported`` (bool), ``batch_statistics`` (bool: the output is normalised
        with the batch's mean and biased variance), ``note``.
    """
    case = Case((2, 3, 2, 3, 4))
    try:
        session = onnxruntime_session(onnx_batch_norm_model(case, onnx, True), ort, 1)
        y, mean, var = session.run(None, {"x": case.x})
    except Exception as error:  # noqa: BLE001 - any failure means "not supported"
        return {"supported": False, "batch_statistics": False,
                "note": f"training_mode=1 fails on the CPU: {type(error).__name__}: {error}"}
    expected = bn3d.batch_norm(case.x, None, None, case.weight, case.bias, training=True,
                               eps=EPS)
    difference = float(np.max(np.abs(y - expected)))
    batch = difference < 1e-4
    return {"supported": True, "batch_statistics": batch,
            "note": ("training_mode=1 runs on the CPU and normalises with the batch's "
                     f"statistics (max |difference| from bn3d {difference:.1e}), returning "
                     "the updated running statistics" if batch else
                     f"training_mode=1 runs on the CPU but its output differs from bn3d's "
                     f"batch normalisation by up to {difference:.1e}")}


def onnxruntime_operations(case: Case, ort: ModuleType, onnx: ModuleType, threads: int,
                           training_mode: bool) -> Operations:
    """onnxruntime's forwards (it has no backward); training only where it is supported."""
    feeds = {"x": case.x}
    evaluate = onnxruntime_session(onnx_batch_norm_model(case, onnx, False), ort, threads)
    operations: Operations = {"eval_forward": lambda: evaluate.run(None, feeds)}
    if training_mode:
        train = onnxruntime_session(onnx_batch_norm_model(case, onnx, True), ort, threads)
        operations["train_forward"] = lambda: train.run(None, feeds)
    return operations


def jax_operations(case: Case, jax: ModuleType, layout: str = "contiguous") -> Operations:
    """JAX's calls as a JAX user writes them: jitted formulas, ``jax.vjp`` for the backward.

    Contiguous: NCDHW arrays. Channels-last: NDHWC arrays, the features on the last
    axis, which is how JAX users hold their data. Every call ends in
    ``block_until_ready``.
    """
    jnp, lax = jax.numpy, jax.lax
    channels = case.shape[1]
    if layout == "channels_last":
        x = jax.device_put(np.ascontiguousarray(case.x.transpose(0, 2, 3, 4, 1)))
        g = jax.device_put(np.ascontiguousarray(case.g.transpose(0, 2, 3, 4, 1)))
        axes, view = (0, 1, 2, 3), (channels,)
    else:
        x, g = jax.device_put(case.x), jax.device_put(case.g)
        axes, view = (0, 2, 3, 4), (1, channels, 1, 1, 1)
    weight, bias = jax.device_put(case.weight), jax.device_put(case.bias)
    running_mean, running_var = jnp.zeros(channels), jnp.ones(channels)
    eval_mean, eval_var = jax.device_put(case.eval_mean), jax.device_put(case.eval_var)
    count = case.x.size // channels

    def normalise(x, mean, var, weight, bias):
        scale = lax.rsqrt(var.reshape(view) + EPS) * weight.reshape(view)
        return (x - mean.reshape(view)) * scale + bias.reshape(view)

    def train(x, weight, bias, running_mean, running_var):
        mean, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
        return (normalise(x, mean, var, weight, bias),
                (1 - MOMENTUM) * running_mean + MOMENTUM * mean,
                (1 - MOMENTUM) * running_var + MOMENTUM * var * (count / (count - 1)))

    def output(x, weight, bias):
        return train(x, weight, bias, running_mean, running_var)[0]

    train_jit = jax.jit(train)
    eval_jit = jax.jit(normalise)
    forward_for_vjp = jax.jit(lambda x, weight, bias: jax.vjp(output, x, weight, bias))
    _, pullback = forward_for_vjp(x, weight, bias)  # its residuals are the saved tensors
    backward_jit = jax.jit(lambda pullback, g: pullback(g))

    def forward_backward(x, weight, bias, g):
        y, pull = jax.vjp(output, x, weight, bias)
        return (*pull(g), y)  # grad_input, grad_weight, grad_bias, output

    forward_backward_jit = jax.jit(forward_backward)
    ready = jax.block_until_ready
    return {
        "train_forward": lambda: ready(train_jit(x, weight, bias, running_mean, running_var)),
        "eval_forward": lambda: ready(eval_jit(x, eval_mean, eval_var, weight, bias)),
        "backward": lambda: ready(backward_jit(pullback, g)),
        "forward_backward": lambda: ready(forward_backward_jit(x, weight, bias, g)),
    }


def floor_operations(case: Case, floors: Any, threads: int) -> dict[str, Operations]:
    """The two-pass floors of ``benchmarks/floor.py`` (backward only), by implementation name."""
    import floor  # beside this file; it imports bench, so only once bench is loaded

    calls = floor.floor_operations(case, floors, threads)
    return {"floor_by_channel": {"backward": calls["by_channel"]},
            "floor_two_sweeps": {"backward": calls["two_sweeps"]}}


# -- which libraries, and their versions -------------------------------------------------------


def import_optional(name: str) -> ModuleType | None:
    """The module, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install is as good as none here
        return None


def versions() -> dict[str, str | None]:
    """The installed version of every distribution the benchmark may use, without importing."""
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["bn3d"] = bn3d.__version__
    return found


def set_threads(threads: int, torch: ModuleType | None) -> None:
    """Threads of bn3d and torch (onnxruntime's are set per session, JAX's per process)."""
    bn3d.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
