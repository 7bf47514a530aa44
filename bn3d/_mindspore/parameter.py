"""``mindspore.Parameter`` for :mod:`bn3d.mindspore_nn`: a named numpy array.

Numpy arrays are this world's tensors: wherever MindSpore wants a ``Tensor``,
bn3d takes a numpy array, a MindSpore ``Tensor`` (through ``asnumpy()``) or
anything with ``__array__`` or ``__dlpack__`` (:func:`tensor_data` decides).
MindSpore's messages and dtype names come from :mod:`bn3d._compat.mindspore`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._compat import mindspore as _ms
from .._core import to_array

__all__ = ["Parameter", "tensor_data"]

def tensor_data(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array if it is a tensor of this world, else None.

    Tensors are numpy arrays, objects with ``asnumpy()`` (MindSpore's Tensor
    and Parameter, and :class:`Parameter`) and objects with ``__array__`` or
    ``__dlpack__`` (a torch tensor, say). Numbers (numpy scalars included),
    strings, lists and tuples are not tensors, as in MindSpore.

    Parameters
    ----------
    value : object

    Returns
    -------
    numpy.ndarray or None
        The data, sharing memory with ``value`` where possible.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._mindspore.parameter import tensor_data
    >>> tensor_data(np.ones(2)), tensor_data([1.0, 2.0]), tensor_data(np.float32(1.0))
    (array([1., 1.]), None, None)
    """
    if isinstance(value, (np.generic, str, bytes, list, tuple)) or value is None:
        return None
    if hasattr(value, "asnumpy"):
        return np.asarray(value.asnumpy())
    return to_array(value)


def _check_requires_grad(requires_grad: Any) -> bool:
    if not isinstance(requires_grad, bool):
        raise _ms.error("requires_grad_type")
    return requires_grad


class Parameter:
    """A named array of a cell, as ``mindspore.Parameter``.

    Parameters
    ----------
    default_input : array_like
        The initial data (copied): a numpy array or another tensor (see
        :func:`tensor_data`), or a number.
    name : str
        The parameter's name, e.g. ``'bn2d.gamma'``.
    requires_grad : bool, default True
        Whether the parameter is trainable.

    Raises
    ------
    TypeError
        If ``requires_grad`` is not a bool (MindSpore's message).

    Notes
    -----
    Differences from MindSpore: :attr:`dtype` is a numpy dtype (MindSpore's
    dtype name appears in the repr); :attr:`name` cannot be changed;
    :meth:`set_data` also takes numpy arrays. As in MindSpore,
    :meth:`asnumpy` returns the parameter's own array (not a copy): a cell's
    training call updates the moving statistics in it, and :meth:`set_data`
    replaces it with a new array.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.mindspore_nn import Parameter
    >>> p = Parameter(np.ones(3, np.float32), name="gamma")
    >>> p
    Parameter (name=gamma, shape=(3,), dtype=Float32, requires_grad=True)
    >>> p.set_data(np.array([1.0, 2.0, 3.0])).asnumpy()
    array([1., 2., 3.], dtype=float32)
    """

    def __init__(self, default_input: Any, name: str, requires_grad: bool = True) -> None:
        data = to_array(default_input)
        self._data = np.array(default_input if data is None else data)
        self._name = name
        self._requires_grad = _check_requires_grad(requires_grad)

    @property
    def name(self) -> str:
        """The parameter's name (``'bn2d.gamma'``, ...)."""
        return self._name

    @property
    def requires_grad(self) -> bool:
        """Whether the parameter is trainable; settable to a bool."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self._requires_grad = _check_requires_grad(value)

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape."""
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        """The data's numpy dtype (fixed when the parameter is created)."""
        return self._data.dtype

    def asnumpy(self) -> np.ndarray:
        """The parameter's data: its own array, not a copy (as in MindSpore).

        Returns
        -------
        numpy.ndarray

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.mindspore_nn import Parameter
        >>> Parameter(np.zeros(2, np.float32), name="beta").asnumpy()
        array([0., 0.], dtype=float32)
        """
        return self._data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self._data
        if dtype is not None and np.dtype(dtype) != data.dtype:
            if copy is False:
                raise ValueError(f"converting a {data.dtype} Parameter to {np.dtype(dtype)} "
                                 "needs a copy")
            return data.astype(dtype)
        return data.copy() if copy else data

    def set_data(self, data: Any) -> Parameter:
        """Replace the data with a copy of ``data`` cast to the parameter's dtype.

        As in MindSpore, the shape follows ``data`` (a cell checks the shapes
        when it is called) and the dtype does not change.

        Parameters
        ----------
        data : array_like, int or float
            A tensor (see :func:`tensor_data`) or a Python number.

        Returns
        -------
        Parameter
            The parameter itself.

        Raises
        ------
        TypeError
            If ``data`` is neither a tensor nor an int or float, or is a float
            for a signed-integer parameter (MindSpore's messages).

        Examples
        --------
        >>> import numpy as np
        >>> from bn3d.mindspore_nn import Parameter
        >>> Parameter(np.ones(2, np.float32), name="gamma").set_data(0.5).asnumpy()
        array(0.5, dtype=float32)
        """
        array: np.ndarray | None
        if isinstance(data, (int, float)):
            if self.dtype.kind == "i" and isinstance(data, float):
                raise _ms.error("set_data_float_to_int", current=_ms.type_name(self.dtype))
            array = np.asarray(data)
        else:
            array = tensor_data(data)
            if array is None:
                raise _ms.error("set_data_type", type=type(data))
        self._data = np.array(array, dtype=self.dtype)  # one atomic rebinding
        return self

    def __repr__(self) -> str:
        return (f"Parameter (name={self._name}, shape={self.shape}, "
                f"dtype={_ms.type_name(self.dtype)}, requires_grad={self._requires_grad})")
