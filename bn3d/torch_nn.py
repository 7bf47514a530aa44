"""``torch.nn.BatchNorm3d`` (PyTorch 2.13) on numpy arrays.

:class:`BatchNorm3d` holds the module's semantics and state. The class layout
follows PyTorch's: :class:`_BatchNorm` holds the state and the logic shared by
the batch-norm modules, :class:`BatchNorm3d` adds only its input-rank check.
The rest lives beside it:

- :mod:`bn3d.functional`: the forward's arithmetic (``torch.nn.functional``),
  which checks its arguments as torch does; every output comes from there;
- :mod:`bn3d._compat.torch`: PyTorch's messages, type names and argument parser;
- :mod:`bn3d._facade`: what both dialects' modules share (the lock, each
  thread's forward record, the backward from a record, which gives the
  gradients through :mod:`bn3d._core`).

Deliberate differences from PyTorch (everything else is meant to be identical,
errors included):

- A forward call that raises changes nothing. PyTorch increments
  ``num_batches_tracked`` before it computes, so a failing training call (wrong
  channels, dtype or eps, one value per channel) still counts a batch.
- :meth:`_BatchNorm.load_state_dict` is all or nothing: when it raises, nothing
  was loaded (PyTorch copies the valid entries, then raises). It accepts numpy
  arrays and array-likes as well as torch tensors.
- :meth:`_BatchNorm.state_dict` returns copies (PyTorch's tensors share memory
  with the module).
- Gradients come from an explicit :meth:`_BatchNorm.backward` instead of
  autograd; it may be called several times for the same forward.
- The module lives on the CPU and in float16, float32 or float64 only.
- Module machinery without a meaning here (hooks, ``parameters()``, ``to()``,
  ``load_state_dict(assign=...)``, ``state_dict(prefix=...)``) is absent.
"""

from __future__ import annotations

import numbers
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from . import _core
from ._compat import numpy_dtype
from ._compat import torch as _torch
from ._core import check_writable
from ._facade import Facade, ForwardRecord
from .functional import batch_norm

__all__ = ["BatchNorm3d"]

_Module = TypeVar("_Module", bound="_BatchNorm")

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_STATE_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_DEVICE_STRING = re.compile(r"([A-Za-z_]+)(?::(0|[1-9][0-9]*))?")


def _check_device(device: Any) -> None:
    """Accept the CPU; refuse anything else with the error a CPU-only torch raises."""
    if device is None:
        return
    if isinstance(device, numbers.Integral) and not isinstance(device, bool):
        if device < 0:
            raise _torch.error("device_index_negative")
        raise _torch.error("no_accelerator")
    if type(device).__module__ == "torch" and type(device).__name__ == "device":
        device = str(device)
    if not isinstance(device, str):
        raise _torch.error("device_argument_type", type=type(device).__name__)
    if not device:
        raise _torch.error("device_string_empty")
    match = _DEVICE_STRING.fullmatch(device)
    if match is None:
        raise _torch.error("device_string_invalid", device=device)
    device_type = match.group(1)
    if device_type not in _torch.DEVICE_TYPES:
        raise _torch.error("device_type_unknown", device=device)
    if device_type == "cuda":
        raise _torch.error("no_cuda")
    if device_type != "cpu":
        raise ValueError(f"bn3d computes on the CPU only, not on device '{device}'")


def _module_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype, a dtype name or a torch dtype, as one of the three float dtypes."""
    if dtype is None:
        return np.dtype(np.float32)
    resolved = numpy_dtype(dtype, "torch")
    if resolved is None or resolved not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}")
    return resolved


def _new_parameter(num_features: Any, dtype: np.dtype) -> np.ndarray:
    """An uninitialised (num_features,) array, with torch.empty's argument checks."""
    if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
        raise _torch.error("size_argument_type", type=type(num_features).__name__)
    if num_features < 0:
        raise _torch.error("negative_dimension", size=num_features)
    return np.empty(int(num_features), dtype=dtype)


class _BatchNorm(Facade):
    """State and behaviour shared by the batch-norm modules (torch's ``_BatchNorm``).

    Subclasses implement :meth:`_check_input_dim`. See :class:`BatchNorm3d` for
    the parameters and attributes.
    """

    num_features: Any
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool
    training: bool
    weight: np.ndarray | None
    bias: np.ndarray | None
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    num_batches_tracked: np.ndarray | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-05,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        self._init_facade()
        _check_device(device)
        dtype = _module_dtype(dtype)
        self.training = True
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight = self.bias = None
        if affine:
            self.weight = _new_parameter(num_features, dtype)
            if bias:
                self.bias = _new_parameter(num_features, dtype)
        self.running_mean = self.running_var = self.num_batches_tracked = None
        if track_running_stats:
            self.running_mean = _new_parameter(num_features, dtype)
            self.running_var = _new_parameter(num_features, dtype)
            self.num_batches_tracked = np.zeros((), dtype=np.int64)
        self.reset_parameters()

    # -- representation --

    def extra_repr(self) -> str:
        """The arguments part of the module's repr, as torch prints it.

        Returns
        -------
        str

        Examples
        --------
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> BatchNorm3d(4, momentum=None, bias=False).extra_repr()
        '4, eps=1e-05, momentum=None, affine=True, bias=False, track_running_stats=True'
        """
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- modes and initial values --

    def train(self: _Module, mode: bool = True) -> _Module:
        """Set training mode (``mode=True``) or evaluation mode; return the module.

        Parameters
        ----------
        mode : bool, default True

        Returns
        -------
        The module itself.

        Raises
        ------
        ValueError
            If ``mode`` is not a bool: ``training mode is expected to be boolean``.

        Examples
        --------
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> BatchNorm3d(2).train(False).training
        False
        """
        if not isinstance(mode, bool):
            raise _torch.error("training_mode_type")
        with self._lock:
            self.training = mode
        return self

    def eval(self: _Module) -> _Module:
        """Set evaluation mode (``train(False)``); return the module.

        Returns
        -------
        The module itself.

        Examples
        --------
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> BatchNorm3d(2).eval().training
        False
        """
        return self.train(False)

    def reset_running_stats(self) -> None:
        """Set the running mean to 0, the running variance to 1 and the count to 0, in place.

        Does nothing when the module does not track running statistics.

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> bn = BatchNorm3d(2)
        >>> _ = bn(np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2, 1))
        >>> bn.reset_running_stats()
        >>> bn.running_mean, bn.running_var, bn.num_batches_tracked
        (array([0., 0.], dtype=float32), array([1., 1.], dtype=float32), array(0))
        """
        if self.track_running_stats:
            with self._lock:
                # The buffers exist when running statistics are tracked (as torch says).
                self.running_mean.fill(0)  # type: ignore[union-attr]
                self.running_var.fill(1)  # type: ignore[union-attr]
                self.num_batches_tracked.fill(0)  # type: ignore[union-attr]

    def reset_parameters(self) -> None:
        """Reset the running statistics, the weight to 1 and the bias to 0, in place.

        Examples
        --------
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> bn = BatchNorm3d(2)
        >>> bn.weight[:] = 5.0
        >>> bn.reset_parameters()
        >>> bn.weight
        array([1., 1.], dtype=float32)
        """
        with self._lock:
            self.reset_running_stats()
            if self.affine:
                self.weight.fill(1)  # type: ignore[union-attr]
                if self.bias is not None:
                    self.bias.fill(0)

    # -- computing --

    def _check_input_dim(self, input: np.ndarray) -> None:
        raise NotImplementedError

    def __call__(self, input: Any) -> np.ndarray:
        return self.forward(input)

    def forward(self, input: Any) -> np.ndarray:
        """Normalise ``input`` as ``torch.nn.BatchNorm3d.forward`` does.

        In training mode the batch statistics normalise and, if tracked, update
        the running statistics in place (``momentum=None``: a cumulative
        average, the batch weighted ``1 / num_batches_tracked``) and increment
        ``num_batches_tracked``. In evaluation mode the running statistics
        normalise, or the batch statistics if none are tracked. A call that
        raises changes nothing; calls from several threads are serialised.

        Parameters
        ----------
        input : array_like
            Data of shape ``(N, C, D, H, W)``: a numpy array or anything with
            ``__array__`` or ``__dlpack__`` (a CPU torch tensor, say).

        Returns
        -------
        numpy.ndarray
            A new array with the input's shape and dtype.

        Raises
        ------
        ValueError, RuntimeError, NotImplementedError, TypeError
            PyTorch's errors and messages, e.g. ``expected 5D input (got 4D input)``.

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> bn = BatchNorm3d(1)
        >>> bn(np.array([1.0, 3.0], np.float32).reshape(2, 1, 1, 1, 1)).ravel()
        array([-0.999995,  0.999995], dtype=float32)
        >>> bn.running_mean, bn.running_var, bn.num_batches_tracked
        (array([0.2], dtype=float32), array([1.1], dtype=float32), array(1))
        """
        x = _torch.tensor_argument(input, "batch_norm", "input")
        self._check_input_dim(x)
        return self._forward(self._normalise, x)

    def _normalise(self, x: np.ndarray) -> tuple[np.ndarray, ForwardRecord]:
        """The forward's output and record; the caller holds the lock."""
        momentum = self.momentum
        average_factor = 0.0 if momentum is None else momentum
        count = self.num_batches_tracked if self.training and self.track_running_stats else None
        if count is not None:  # checked now: a call that raises changes nothing
            check_writable(count, "num_batches_tracked")
            if momentum is None:  # cumulative average, counting this batch
                average_factor = 1.0 / float(int(count) + 1)
        used_batch_stats = self.training or (
            self.running_mean is None and self.running_var is None
        )
        pass_buffers = not self.training or self.track_running_stats
        running_mean = self.running_mean if pass_buffers else None
        running_var = self.running_var if pass_buffers else None
        output, save_mean, save_invstd = batch_norm(
            x, running_mean, running_var, self.weight, self.bias, used_batch_stats,
            average_factor, self.eps, return_stats=True,
        )
        if count is not None:
            count[...] += 1  # the module's own array, in place
        return output, ForwardRecord(
            input=x,
            weight=None if self.weight is None else self.weight.copy(),
            used_batch_stats=used_batch_stats,
            save_mean=save_mean,
            save_invstd=save_invstd,
            weight_dtype=None if self.weight is None else self.weight.dtype,
            bias_dtype=None if self.bias is None else self.bias.dtype,
        )

    def backward(
        self, grad_output: Any
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Gradients of the most recent forward with respect to its input and parameters.

        They are what torch's autograd gives for that forward: through the batch
        statistics if it used them, through the fixed running statistics
        otherwise, with the weight as it was at that forward. "Most recent" is
        per thread: a thread's backward pairs with that thread's last forward.
        The module keeps a reference to that forward's input until the thread's
        next forward: do not modify it in place before calling this.

        Parameters
        ----------
        grad_output : array_like
            The gradient of the loss with respect to the forward's output: its
            shape; cast to the output's dtype like torch's autograd does.

        Returns
        -------
        grad_input : numpy.ndarray
            The input's shape and dtype.
        grad_weight, grad_bias : numpy.ndarray or None
            Shape (C,), in the parameters' dtype; None where the module has no
            such parameter.

        Raises
        ------
        RuntimeError
            If this thread has not computed a forward yet, or ``grad_output`` has
            the wrong shape or a complex dtype (torch's messages).

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> bn = BatchNorm3d(1, dtype="float64")
        >>> x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 2, 1, 1)
        >>> y = bn(x)
        >>> grad_input, grad_weight, grad_bias = bn.backward(np.ones_like(y))
        >>> bool(np.abs(grad_input).max() < 1e-12), grad_bias
        (True, array([4.]))
        """
        return self._backward(
            grad_output, _checked_grad_output,
            no_forward="backward() needs a forward() first: this module has not computed any "
                       "output in this thread yet",
        )

    # -- state --

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of the parameters and buffers, with torch's keys in torch's order.

        The keys are ``weight, bias, running_mean, running_var,
        num_batches_tracked``, leaving out those that are None. Like torch's, the
        dictionary carries ``_metadata`` with the format version.

        Returns
        -------
        collections.OrderedDict

        Examples
        --------
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> list(BatchNorm3d(3, affine=False).state_dict())
        ['running_mean', 'running_var', 'num_batches_tracked']
        """
        with self._lock:
            state = OrderedDict(
                (name, getattr(self, name).copy())
                for name in _STATE_NAMES
                if getattr(self, name) is not None
            )
        state._metadata = OrderedDict([("", {"version": _torch.STATE_DICT_VERSION})])  # type: ignore[attr-defined]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        """Copy parameters and buffers from ``state_dict`` into the module's arrays, in place.

        Values may be numpy arrays, array-likes or torch tensors; they are cast
        to the module's dtypes. As in torch, a dictionary without format
        metadata (a plain dict) may omit ``num_batches_tracked``, and a 1-element
        array loads into the 0-d count. Nothing is loaded if it raises.

        Parameters
        ----------
        state_dict : Mapping
            As returned by :meth:`state_dict` (here or in torch).
        strict : bool, default True
            Raise if keys are missing or unexpected.

        Returns
        -------
        NamedTuple
            ``(missing_keys, unexpected_keys)``, printed as torch prints it.

        Raises
        ------
        TypeError
            If ``state_dict`` is not a mapping.
        RuntimeError
            torch's ``Error(s) in loading state_dict for BatchNorm3d:`` followed by
            the missing keys (if ``strict``), the unexpected keys (if ``strict``)
            and the values of the wrong shape or type.

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> bn = BatchNorm3d(2)
        >>> state = bn.state_dict()
        >>> state["running_mean"] = np.array([0.5, -0.5])
        >>> bn.load_state_dict(state)
        <All keys matched successfully>
        >>> bn.running_mean
        array([ 0.5, -0.5], dtype=float32)
        """
        if not isinstance(state_dict, Mapping):
            raise _torch.error("state_dict_type", type=type(state_dict))
        metadata = getattr(state_dict, "_metadata", None)
        version = (metadata or {}).get("", {}).get("version")
        with self._lock:
            state = dict(state_dict)
            key = "num_batches_tracked"
            if (version is None or version < _torch.STATE_DICT_VERSION) and \
                    self.track_running_stats:
                if key not in state:  # written before the count existed: keep ours
                    nbt = self.num_batches_tracked
                    state[key] = np.zeros((), np.int64) if nbt is None else nbt
            local = {name: getattr(self, name) for name in _STATE_NAMES
                     if getattr(self, name) is not None}
            missing = [name for name in local if name not in state]
            unexpected = [name for name in state if name not in local]
            errors: list[str] = []
            loaded = {}
            for name, target in local.items():
                if name in state:
                    value, error = _loadable(name, state[name], target)
                    if error is None:
                        loaded[name] = value
                    else:
                        errors.append(error)
            if strict:
                if unexpected:
                    errors.insert(0, _torch.message(
                        "unexpected_keys", keys=", ".join(f'"{k}"' for k in unexpected)))
                if missing:
                    errors.insert(0, _torch.message(
                        "missing_keys", keys=", ".join(f'"{k}"' for k in missing)))
            if errors:
                raise _torch.error("load_state_dict", module=type(self).__name__,
                                   errors="\n\t".join(errors))
            for name, value in loaded.items():
                local[name][...] = value
        return _torch.IncompatibleKeys(missing, unexpected)


def _checked_grad_output(grad_output: Any, record: ForwardRecord) -> np.ndarray:
    """``grad_output`` as an array, with the errors torch's autograd raises for one that does
    not fit the forward's output."""
    g = _torch.tensor_argument(grad_output, "native_batch_norm_backward", "grad_out")
    x = record.input
    if g.shape != x.shape:
        raise _torch.error("grad_shape", grad_size=_torch.size(g.shape),
                           output_size=_torch.size(x.shape))
    if g.dtype.kind == "c":
        raise _torch.error("grad_complex_dtype", grad_dtype=g.dtype, output_dtype=x.dtype)
    return g


def _loadable(name: str, value: Any, target: np.ndarray) -> tuple[Any, str | None]:
    """``(value converted to target's dtype, None)`` or ``(None, torch's error message)``."""
    array = _core.to_array(value)
    if array is None:  # lists and numbers load too: bn3d's state has no tensors to insist on
        array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        return None, _torch.message("not_a_tensor", name=name, type=type(value))
    if target.ndim == 0 and array.shape == (1,):  # torch loads old 1-element counts
        array = array[0]
    if array.shape != target.shape:
        return None, _torch.message("size_mismatch", name=name,
                                    checkpoint_size=_torch.size(array.shape),
                                    model_size=_torch.size(target.shape))
    return np.array(array, dtype=target.dtype), None


class BatchNorm3d(_BatchNorm):
    """Batch normalisation over 5-D data ``(N, C, D, H, W)``, as ``torch.nn.BatchNorm3d``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel: the batch
    mean and biased variance in training mode (or when no running statistics
    are tracked), the running ones in evaluation mode. Arrays are numpy arrays.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, default 1e-05
        Added to the variance; checked at forward time (positive when
        training, non-negative otherwise), like torch.
    momentum : float or None, default 0.1
        The batch's weight in the running statistics' update
        ``r = (1 - momentum) * r + momentum * batch`` (unbiased batch variance);
        None for a cumulative average.
    affine : bool, default True
        Learnable ``weight`` (ones) and ``bias`` (zeros); None otherwise.
    track_running_stats : bool, default True
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked``; None otherwise.
    device : None or 'cpu'
        Other devices raise torch's errors (``cuda``: ``Torch not compiled
        with CUDA enabled``).
    dtype : numpy dtype, dtype name or torch dtype, optional
        float32 (default), float64 or float16: the parameters' and running
        statistics' dtype.
    bias : bool, default True
        Keyword only: with ``affine``, whether there is a ``bias``.

    Attributes
    ----------
    weight, bias : numpy.ndarray of shape (C,) or None
    running_mean, running_var : numpy.ndarray of shape (C,) or None
        Updated in place by training forwards.
    num_batches_tracked : numpy.ndarray of shape () and dtype int64, or None
        Training forwards counted so far (an empty batch counts too).
    training : bool
        True after construction; see :meth:`train` and :meth:`eval`.
    num_features, eps, momentum, affine, track_running_stats
        As given.

    Notes
    -----
    A forward that raises changes nothing, whereas torch increments
    ``num_batches_tracked`` before computing. The docstring of :mod:`bn3d.torch_nn` lists
    the other (small) differences. The module may be called from several threads
    at once: calls are serialised by a lock.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.torch_nn import BatchNorm3d
    >>> bn = BatchNorm3d(2)
    >>> bn
    BatchNorm3d(2, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    >>> x = np.array([[[[[0.1, 0.2], [0.3, 0.4]]], [[[0.9, 1.0], [1.1, 1.2]]]]], np.float32)
    >>> y = bn(x)
    >>> y[0, 0].ravel()
    array([-1.3411044 , -0.44703484,  0.44703484,  1.3411044 ], dtype=float32)
    >>> bn.running_mean, bn.running_var
    (array([0.025, 0.105], dtype=float32), array([0.90166664, 0.90166664], dtype=float32))
    >>> bn.eval()(x)[0, 1].ravel()
    array([0.837224 , 0.9425352, 1.0478464, 1.1531577], dtype=float32)
    """

    def _check_input_dim(self, input: np.ndarray) -> None:
        if input.ndim != 5:
            raise _torch.error("input_dims", expected=5, ndim=input.ndim)
