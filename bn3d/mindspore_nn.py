"""``mindspore.nn.BatchNorm3d`` (MindSpore 2.10) on numpy arrays.

:class:`BatchNorm3d` holds the cell's semantics: its modes, which statistics a
call uses, its parameters. As in MindSpore, the cell wraps a ``BatchNorm2d``
sub-cell, ``bn2d``, which owns the hyper-parameters and the parameters
``bn2d.moving_mean``, ``bn2d.moving_variance``, ``bn2d.gamma`` and ``bn2d.beta``.
The rest lives beside it:

- :mod:`bn3d._mindspore`: :class:`Parameter` (``parameter.py``), the
  initialisers and :func:`set_seed` (``initializers.py``), and MindSpore's
  BatchNorm primitive (``primitive.py``), which checks a call and normalises
  through :mod:`bn3d._core`; every number the cell produces comes from there;
- :mod:`bn3d._compat.mindspore`: MindSpore's messages and type names;
- :mod:`bn3d._facade`: what both dialects' modules share (the lock, each
  thread's forward record, the backward from a record).

Deliberate differences from MindSpore (everything else, errors included, is
meant to be the same):

- Numpy arrays are the tensors. Inputs, initial values and
  :meth:`Parameter.set_data` take numpy arrays (and MindSpore or torch
  tensors), where MindSpore wants its ``Tensor``; outputs are numpy arrays;
  :attr:`Parameter.dtype` is a numpy dtype; ``dtype=`` takes numpy dtypes as
  well as MindSpore's.
- The random initialisers (``'normal'``, ``'uniform'``, ``'truncatedNormal'``)
  draw MindSpore's distributions from a numpy generator that :func:`set_seed`
  seeds: reproducible, but not MindSpore's numbers.
- Gradients come from an explicit :meth:`BatchNorm3d.backward` instead of
  ``mindspore.grad``.
- An empty batch (N = 0) leaves the moving statistics unchanged; MindSpore
  updates them from leftover memory.
- Moving statistics resized (with ``set_data``) to differ from gamma raise, in
  training too, the ValueError MindSpore raises in inference; MindSpore's
  training kernel then reads and writes out of bounds.
- A call that raises changes nothing, and calls from several threads are
  serialised by a lock.
- The cell also exposes ``gamma``, ``beta``, ``moving_mean`` and
  ``moving_variance``; the parameters cannot be replaced by assignment (use
  :meth:`Parameter.set_data`) nor renamed.
- Cell machinery without a meaning here (sub-cell listings, hooks,
  checkpoints, graph mode, ``bn2d`` as a callable cell) is absent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._compat import mindspore as _ms
from ._facade import Facade, ForwardRecord
from ._mindspore import primitive
from ._mindspore.initializers import (
    Constant,
    Initializer,
    Normal,
    One,
    TruncatedNormal,
    Uniform,
    Zero,
    get_seed,
    initializer,
    set_seed,
)
from ._mindspore.parameter import Parameter, tensor_data

__all__ = [
    "BatchNorm3d",
    "Constant",
    "Initializer",
    "Normal",
    "One",
    "Parameter",
    "TruncatedNormal",
    "Uniform",
    "Zero",
    "get_seed",
    "set_seed",
    "torch_momentum",
]

def torch_momentum(momentum: Any) -> Any:
    """The core's momentum for MindSpore's ``momentum``: the document's Difference 3.

    MindSpore updates ``moving = momentum * moving + (1 - momentum) * batch``;
    :func:`bn3d._core.batch_norm`, like torch, updates
    ``running = (1 - m) * running + m * batch``. So ``m = 1 - momentum``:
    MindSpore computes the same value and keeps it as ``bn2d.momentum``, and
    its repr prints ``1.0 - bn2d.momentum``.

    Parameters
    ----------
    momentum : float
        MindSpore's momentum, in [0, 1].

    Returns
    -------
    float

    Examples
    --------
    >>> from bn3d.mindspore_nn import torch_momentum
    >>> torch_momentum(0.9)
    0.09999999999999998
    """
    return 1.0 - momentum


def _input_array(x: Any) -> np.ndarray:
    array = tensor_data(x)
    if array is None:
        raise _ms.error("shape_input_type", type=type(x))
    return array


class _BatchNorm2d:
    """The ``bn2d`` sub-cell of :class:`BatchNorm3d` (MindSpore's ``BatchNorm2d``).

    It owns the hyper-parameters and the parameters, and normalises through
    its BatchNorm primitive (:func:`bn3d._mindspore.primitive.batch_norm`),
    which checks the call as MindSpore's does. Its attributes are MindSpore's:
    ``num_features``, ``eps``, ``momentum`` (which holds ``1 - momentum``, see
    :func:`torch_momentum`), ``use_batch_statistics`` and ``training``. As in
    MindSpore, ``eps`` and ``momentum`` are captured by the cell's primitives
    when it is built: assigning them later changes the repr only, while
    ``use_batch_statistics`` and ``training`` are read at every call.
    """

    def __init__(
        self,
        num_features: Any,
        eps: Any,
        momentum: Any,
        affine: Any,
        gamma_init: Any,
        beta_init: Any,
        moving_mean_init: Any,
        moving_var_init: Any,
        use_batch_statistics: Any,
        dtype: Any,
    ) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, int):
            raise _ms.error("num_features_type", type=type(num_features).__name__)
        if num_features < 1:
            raise _ms.error("num_features_value", value=num_features)
        if momentum < 0 or momentum > 1:
            raise _ms.error("momentum_range", momentum=momentum)
        if use_batch_statistics is not None and not isinstance(use_batch_statistics, bool):
            raise _ms.error("use_batch_statistics_type", value=use_batch_statistics)
        self.num_features = num_features
        self.eps = eps
        self.use_batch_statistics = use_batch_statistics
        self.training = False
        # Created in MindSpore's order, which is also the order its errors come in.
        self._moving_mean = Parameter(initializer(moving_mean_init, num_features, dtype),
                                      "bn2d.moving_mean", False)
        self._moving_variance = Parameter(initializer(moving_var_init, num_features, dtype),
                                          "bn2d.moving_variance", False)
        self._gamma = Parameter(initializer(gamma_init, num_features, dtype), "bn2d.gamma",
                                affine)
        self._beta = Parameter(initializer(beta_init, num_features, dtype), "bn2d.beta", affine)
        self.momentum = torch_momentum(momentum)
        self._primitive_epsilon = eps
        self._primitive_momentum = self.momentum

    @property
    def gamma(self) -> Parameter:
        """The scale, ``bn2d.gamma``; trainable if ``affine``."""
        return self._gamma

    @property
    def beta(self) -> Parameter:
        """The shift, ``bn2d.beta``; trainable if ``affine``."""
        return self._beta

    @property
    def moving_mean(self) -> Parameter:
        """The moving mean, ``bn2d.moving_mean``; never trainable."""
        return self._moving_mean

    @property
    def moving_variance(self) -> Parameter:
        """The moving variance, ``bn2d.moving_variance``; never trainable."""
        return self._moving_variance

    def parameters(self) -> tuple[Parameter, Parameter, Parameter, Parameter]:
        """The parameters in MindSpore's order: moving mean, moving variance, gamma, beta."""
        return self._moving_mean, self._moving_variance, self._gamma, self._beta

    def __repr__(self) -> str:
        return (f"BatchNorm2d(num_features={self.num_features}, eps={self.eps}, "
                f"momentum={1.0 - self.momentum}, gamma={self._gamma}, beta={self._beta}, "
                f"moving_mean={self._moving_mean}, moving_variance={self._moving_variance})")

    def uses_batch_statistics(self) -> bool:
        """Whether a call now normalises with (and tracks) batch statistics."""
        if self.use_batch_statistics is None:
            return bool(self.training)
        return bool(self.use_batch_statistics)

    def normalise(self, x: np.ndarray) -> tuple[np.ndarray, ForwardRecord]:
        """Normalise ``x`` (N, C, ...) through the cell's BatchNorm primitive, which updates
        the moving statistics if batch statistics normalise. The caller holds the cell's lock."""
        uses_batch = self.uses_batch_statistics()
        # The parameters' arrays, read once: a concurrent set_data (which replaces
        # a parameter's array) then simply comes after this call.
        gamma, beta, mean, variance = (parameter.asnumpy() for parameter in
                                       (self._gamma, self._beta, self._moving_mean,
                                        self._moving_variance))
        output, save_mean, save_invstd = primitive.batch_norm(
            x, gamma, beta, mean, variance, is_training=uses_batch,
            epsilon=self._primitive_epsilon, momentum=self._primitive_momentum,
            moving_names=(self._moving_mean.name, self._moving_variance.name))
        # Gradients for gamma and beta, in their dtypes, whether they are trainable or not.
        # MindSpore's tensors have no memory format: the output is C-contiguous whatever
        # the input's layout (a copy only for a channels-last input).
        return np.ascontiguousarray(output), ForwardRecord(
            input=x, weight=gamma.copy(), used_batch_stats=uses_batch,
            save_mean=save_mean, save_invstd=save_invstd,
            weight_dtype=self._gamma.dtype, bias_dtype=self._beta.dtype,
        )


class BatchNorm3d(Facade):
    """Batch normalisation over 5-D data ``(N, C, D, H, W)``, as ``mindspore.nn.BatchNorm3d``.

    ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` per channel, with the
    batch mean and biased variance, or the moving ones (see
    ``use_batch_statistics``). Batch statistics update the moving ones:
    ``moving = momentum * moving + (1 - momentum) * batch``, with the unbiased
    batch variance. A new cell is in inference mode: call :meth:`set_train`
    to train.

    Parameters
    ----------
    num_features : int
        C, the number of channels (at least 1).
    eps : float, default 1e-5
        Added to the variance. Like MindSpore, the cell checks it at every
        call, not when built: a float in (0, 1] (as float32).
    momentum : float, default 0.9
        The weight of the moving statistics in their update, in [0, 1] (torch's
        momentum is ``1 - momentum``: :func:`torch_momentum`).
    affine : bool, default True
        Whether gamma and beta are trainable. With False they are kept and
        still applied (unlike torch), only not trainable.
    gamma_init, beta_init, moving_mean_init, moving_var_init : initialiser
        Defaults ``'ones'``, ``'zeros'``, ``'zeros'``, ``'ones'``. A name
        (case-insensitive: ``'ones'``/``'One'``, ``'zeros'``/``'Zero'``,
        ``'normal'``, ``'uniform'``, ``'truncatedNormal'``), a number, an array
        of shape (C,) (copied; its dtype overrides ``dtype``) or an
        :class:`Initializer` (:class:`Normal`, :class:`Uniform`,
        :class:`TruncatedNormal`, :class:`Constant`, :class:`One`,
        :class:`Zero`). Random ones follow :func:`set_seed`.
    use_batch_statistics : bool or None, default None
        None: batch statistics in training mode, moving ones in inference
        mode. True: batch statistics (updating the moving ones) in both modes.
        False: moving statistics, never updated.
    dtype : numpy or MindSpore dtype, default numpy.float32
        The parameters' dtype. MindSpore computes with float16 or float32
        parameters only: others raise when the cell is called. As in
        MindSpore 2.10 on CPU, float16 moving statistics are never updated.

    Attributes
    ----------
    bn2d
        The sub-cell holding the parameters and the hyper-parameters
        (``bn2d.eps``, ``bn2d.momentum`` = ``1 - momentum``,
        ``bn2d.use_batch_statistics``, ``bn2d.training``).
    gamma, beta, moving_mean, moving_variance : Parameter
        ``bn2d``'s parameters, named ``bn2d.gamma``, ...
    training : bool
        False for a new cell; see :meth:`set_train`.

    Raises
    ------
    TypeError, ValueError
        MindSpore's errors and messages, for ``num_features``, ``momentum``,
        ``use_batch_statistics``, ``affine`` and the initialisers.

    Notes
    -----
    The module docstring of :mod:`bn3d.mindspore_nn` lists the deliberate
    differences from MindSpore.

    Examples
    --------
    The document's example (the repr is one long line, wrapped here):

    >>> import numpy as np
    >>> from bn3d.mindspore_nn import BatchNorm3d
    >>> m = BatchNorm3d(num_features=2, momentum=0.9)
    >>> m.set_train()
    BatchNorm3d(
      (bn2d): BatchNorm2d(num_features=2, eps=1e-05, momentum=0.9,
        gamma=Parameter (name=bn2d.gamma, shape=(2,), dtype=Float32, requires_grad=True),
        beta=Parameter (name=bn2d.beta, shape=(2,), dtype=Float32, requires_grad=True),
        moving_mean=Parameter (name=bn2d.moving_mean, shape=(2,), dtype=Float32,
        requires_grad=False), moving_variance=Parameter (name=bn2d.moving_variance,
        shape=(2,), dtype=Float32, requires_grad=False))
    )
    >>> input_x = np.array([[[[[0.1, 0.2], [0.3, 0.4]]],
    ...                      [[[0.9, 1], [1.1, 1.2]]]]]).astype(np.float32)
    >>> output = m(input_x)
    >>> output[0, 1].ravel()
    array([-1.3411044, -0.4470348,  0.4470348,  1.3411044], dtype=float32)
    >>> m.moving_mean.asnumpy(), m.moving_variance.asnumpy()
    (array([0.025, 0.105], dtype=float32), array([0.90166664, 0.90166664], dtype=float32))
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.9,
        affine: bool = True,
        gamma_init: Any = "ones",
        beta_init: Any = "zeros",
        moving_mean_init: Any = "zeros",
        moving_var_init: Any = "ones",
        use_batch_statistics: bool | None = None,
        dtype: Any = np.float32,
    ) -> None:
        self._init_facade()
        self.training = False
        self.bn2d = _BatchNorm2d(num_features, eps, momentum, affine, gamma_init, beta_init,
                                 moving_mean_init, moving_var_init, use_batch_statistics, dtype)

    def __repr__(self) -> str:
        return f"BatchNorm3d(\n  (bn2d): {self.bn2d!r}\n)"

    @property
    def gamma(self) -> Parameter:
        """``bn2d.gamma``, the scale."""
        return self.bn2d.gamma

    @property
    def beta(self) -> Parameter:
        """``bn2d.beta``, the shift."""
        return self.bn2d.beta

    @property
    def moving_mean(self) -> Parameter:
        """``bn2d.moving_mean``."""
        return self.bn2d.moving_mean

    @property
    def moving_variance(self) -> Parameter:
        """``bn2d.moving_variance``."""
        return self.bn2d.moving_variance

    def get_parameters(self) -> Iterator[Parameter]:
        """The parameters in MindSpore's order: moving mean, moving variance, gamma, beta.

        Returns
        -------
        iterator of Parameter

        Examples
        --------
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> [p.name for p in BatchNorm3d(2).get_parameters()]
        ['bn2d.moving_mean', 'bn2d.moving_variance', 'bn2d.gamma', 'bn2d.beta']
        """
        yield from self.bn2d.parameters()

    def parameters_dict(self) -> OrderedDict[str, Parameter]:
        """The parameters by name, in the order of :meth:`get_parameters`.

        Returns
        -------
        collections.OrderedDict

        Examples
        --------
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> BatchNorm3d(2).parameters_dict()["bn2d.gamma"]
        Parameter (name=bn2d.gamma, shape=(2,), dtype=Float32, requires_grad=True)
        """
        return OrderedDict((parameter.name, parameter) for parameter in self.get_parameters())

    def trainable_params(self) -> list[Parameter]:
        """The parameters that require gradients, in the order of :meth:`get_parameters`.

        Returns
        -------
        list of Parameter

        Examples
        --------
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> [p.name for p in BatchNorm3d(2).trainable_params()]
        ['bn2d.gamma', 'bn2d.beta']
        >>> BatchNorm3d(2, affine=False).trainable_params()
        []
        """
        return [parameter for parameter in self.get_parameters() if parameter.requires_grad]

    def set_train(self, mode: bool = True) -> BatchNorm3d:
        """Set training mode (``mode`` true) or inference mode, here and in ``bn2d``.

        As in MindSpore, ``mode`` is stored as given and used for its truth value.

        Parameters
        ----------
        mode : bool, default True

        Returns
        -------
        BatchNorm3d
            The cell itself.

        Examples
        --------
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> cell = BatchNorm3d(2)
        >>> cell.training, cell.set_train().training, cell.set_train(False).bn2d.training
        (False, True, False)
        """
        with self._lock:
            self.training = mode
            self.bn2d.training = mode
        return self

    def __call__(self, x: Any) -> np.ndarray:
        return self.construct(x)

    def construct(self, x: Any) -> np.ndarray:
        """Normalise ``x`` as ``mindspore.nn.BatchNorm3d`` does.

        Batch statistics normalise, and update the moving statistics in place,
        in training mode (``use_batch_statistics=None``) or always
        (``use_batch_statistics=True``); otherwise the moving statistics
        normalise. A call that raises changes nothing; calls from several
        threads are serialised.

        Parameters
        ----------
        x : array_like
            Data of shape ``(N, C, D, H, W)``, float16 or float32: a numpy array,
            a MindSpore Tensor, or anything with ``__array__`` or ``__dlpack__``.

        Returns
        -------
        numpy.ndarray
            A new array with the input's shape and dtype, C-contiguous whatever the
            input's memory layout: MindSpore's tensors have no memory format (a
            channels-last input is computed by the channels-last kernels, then copied).

        Raises
        ------
        TypeError, ValueError
            MindSpore's errors and messages, e.g. ``For 'BatchNorm3d', the
            in_shape must have 5 dims, but got 4.``

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> cell = BatchNorm3d(1, moving_mean_init=1.0, moving_var_init=4.0)
        >>> cell(np.array([1.0, 3.0], np.float32).reshape(2, 1, 1, 1, 1)).ravel()
        array([0.        , 0.99999875], dtype=float32)
        """
        array = _input_array(x)
        if array.ndim != 5:
            raise _ms.error("input_rank", ndim=array.ndim)
        return self._forward(self.bn2d.normalise, array)

    def backward(self, grad_output: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients of this thread's most recent call with respect to x, gamma and beta.

        They are what ``mindspore.grad`` gives for that call: through the batch
        statistics if it used them, through the fixed moving statistics
        otherwise, with gamma as it was at that call. The cell keeps a
        reference to that call's input until this thread's next call: do not
        modify it in place before calling this.

        Parameters
        ----------
        grad_output : array_like
            The gradient of the loss with respect to the call's output: its
            shape; cast to the output's dtype.

        Returns
        -------
        grad_x : numpy.ndarray
            The input's shape and dtype, C-contiguous (as the call's output).
        grad_gamma, grad_beta : numpy.ndarray
            Shape (C,), in gamma's and beta's dtypes; computed even when they
            are not trainable.

        Raises
        ------
        RuntimeError
            If this thread has not called the cell yet.
        ValueError, TypeError
            If ``grad_output`` has another shape, or is not real numbers.

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> cell = BatchNorm3d(1).set_train()
        >>> y = cell(np.array([1.0, 3.0, 5.0, 7.0], np.float32).reshape(2, 1, 2, 1, 1))
        >>> grad_x, grad_gamma, grad_beta = cell.backward(np.ones_like(y))
        >>> bool(np.abs(grad_x).max() < 1e-6), grad_beta
        (True, array([4.], dtype=float32))
        """
        grad_x, grad_gamma, grad_beta = self._backward(
            grad_output, _checked_grad_output,
            no_forward="backward() needs a call first: this cell has not normalised any input "
                       "in this thread yet",
        )
        assert grad_gamma is not None and grad_beta is not None  # a cell records both dtypes
        return np.ascontiguousarray(grad_x), grad_gamma, grad_beta


def _checked_grad_output(grad_output: Any, record: ForwardRecord) -> np.ndarray:
    """``grad_output`` as an array, or an error for one that does not fit the call's output
    (bn3d's own words: MindSpore has no backward call of this form to copy them from)."""
    g = tensor_data(grad_output)
    if g is None:
        raise TypeError(f"grad_output must be a tensor, not {type(grad_output).__name__}")
    if g.shape != record.input.shape:
        raise ValueError(f"grad_output has shape {g.shape}, but the most recent call's "
                         f"output has shape {record.input.shape}")
    if g.dtype.kind not in "biuf":
        raise TypeError(f"grad_output must hold real numbers, not {g.dtype}")
    return g
