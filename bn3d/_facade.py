"""What the two modules share: the lock, each thread's forward record, and the backward.

:class:`bn3d.torch_nn.BatchNorm3d` and :class:`bn3d.mindspore_nn.BatchNorm3d`
both derive from :class:`Facade`. Each checks its arguments in its framework's
order and with its words; this module holds the rest of a forward and
backward pair, the same for both:

- **One locking rule.** A module's forward and its backward run under the
  module's lock (:meth:`Facade._forward`, :meth:`Facade._backward`), as do
  the methods that change or read its state as a whole: calls from several
  threads are serialised, each seeing the module as one consistent state.
- **One forward record.** A forward leaves a :class:`ForwardRecord` (its
  input, a copy of the weight that normalised, the statistics that did) for
  the calling thread only, so a backward pairs with its own thread's forward,
  whatever other threads do meanwhile.
- **One backward.** :func:`gradients_from_record` computes the gradients of a
  record through :func:`bn3d._core.batch_norm_backward`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple, Union

import numpy as np

from . import _core

__all__ = ["Facade", "ForwardRecord", "Gradients", "gradients_from_record"]

Array = np.ndarray
# The gradients of a forward: the input's, and the weight's and the bias's (or None).
Gradients = tuple[Array, Union[Array, None], Union[Array, None]]


class ForwardRecord(NamedTuple):
    """What a backward needs from a forward.

    Attributes
    ----------
    input : numpy.ndarray
        The forward's input, shape ``(N, C, *)`` (a reference, not a copy).
    weight : numpy.ndarray or None
        A copy of the weight (gamma) that normalised, so that later changes to
        the module do not leak into the gradients; None for ones.
    used_batch_stats : bool
        Whether batch statistics normalised (rather than running ones).
    save_mean, save_invstd : numpy.ndarray
        The float64 mean and ``1 / sqrt(var + eps)`` that normalised, shape (C,).
    weight_dtype, bias_dtype : numpy.dtype or None
        The dtypes of the weight's and the bias's gradients; None where the
        module has no such parameter, and so no gradient for it.
    """

    input: Array
    weight: Array | None
    used_batch_stats: bool
    save_mean: Array
    save_invstd: Array
    weight_dtype: np.dtype | None
    bias_dtype: np.dtype | None


def gradients_from_record(record: ForwardRecord, grad_output: Array) -> Gradients:
    """The gradients of the loss through the forward ``record`` describes.

    Parameters
    ----------
    record : ForwardRecord
    grad_output : numpy.ndarray
        The gradient with respect to the forward's output: the input's shape,
        already checked by the dialect; cast to the input's dtype here.

    Returns
    -------
    grad_input : numpy.ndarray
        In the input's dtype.
    grad_weight, grad_bias : numpy.ndarray or None
        Shape (C,), in ``record.weight_dtype`` and ``record.bias_dtype``; None
        where those are None.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d import _core
    >>> from bn3d._facade import ForwardRecord, gradients_from_record
    >>> x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 2)
    >>> output, mean, invstd = _core.batch_norm(x, None, None, 0.0, use_batch_stats=True)
    >>> record = ForwardRecord(x, None, True, mean, invstd, np.dtype(np.float32), None)
    >>> gradients_from_record(record, np.ones_like(x))
    (array([[[0., 0.]],
    <BLANKLINE>
           [[0., 0.]]]), array([0.], dtype=float32), None)
    """
    grad_input, grad_weight, grad_bias = _core.batch_norm_backward(
        grad_output.astype(record.input.dtype, copy=False), record.input, record.weight,
        record.save_mean, record.save_invstd, use_batch_stats=record.used_batch_stats)
    return (
        grad_input,
        None if record.weight_dtype is None else grad_weight.astype(record.weight_dtype),
        None if record.bias_dtype is None else grad_bias.astype(record.bias_dtype),
    )


class Facade:
    """The base of both modules: a lock serialising their calls, and each thread's record
    of its latest forward.

    Neither is part of the module's state: a copy or an unpickled module gets
    its own lock and no records. Subclasses call :meth:`_init_facade` first in
    ``__init__``, compute forwards through :meth:`_forward` and backwards
    through :meth:`_backward`, and hold ``self._lock`` in any other method that
    reads or writes their state.
    """

    _lock: threading.RLock
    _records: threading.local

    def _init_facade(self) -> None:
        self._lock = threading.RLock()
        self._records = threading.local()

    def _forward(self, normalise: Callable[[Array], tuple[Array, ForwardRecord]],
                 x: Array) -> Array:
        """``normalise(x)``'s output, computed under the module's lock; its record becomes
        this thread's latest forward."""
        with self._lock:
            output, record = normalise(x)
            self._records.latest = record
        return output

    def _backward(self, grad_output: Any, check: Callable[[Any, ForwardRecord], Array],
                  no_forward: str) -> Gradients:
        """The gradients of this thread's latest forward, under the module's lock.

        ``check(grad_output, record)`` is the dialect's: it raises its
        framework's errors for a ``grad_output`` that does not fit the record and
        returns it as an array. Raises ``RuntimeError(no_forward)`` if this
        thread has not computed a forward yet.
        """
        with self._lock:
            record: ForwardRecord | None = getattr(self._records, "latest", None)
            if record is None:
                raise RuntimeError(no_forward)
            return gradients_from_record(record, check(grad_output, record))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_records"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_facade()
