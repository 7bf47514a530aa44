"""PyTorch 2.13's words: its version, type names and error messages, in one place.

bn3d's PyTorch dialect (:mod:`bn3d.functional`, :mod:`bn3d.torch_nn`) raises
exactly what PyTorch raises; every message it copies from PyTorch is built
here, so that following a new PyTorch release is one reviewable file.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import _core
from .._core import BFLOAT16

__all__ = [
    "VERSION",
    "argument_type_error",
    "bool_argument",
    "broadcast_error",
    "float_argument",
    "size",
    "tensor_argument",
    "type_name",
    "value_type_name",
]

VERSION = "2.13.0"

# torch's names of scalar types, as in '"batch_norm" not implemented for ...'.
_TYPE_NAMES = {
    np.dtype(np.bool_): "Bool",
    np.dtype(np.uint8): "Byte",
    np.dtype(np.int8): "Char",
    np.dtype(np.int16): "Short",
    np.dtype(np.int32): "Int",
    np.dtype(np.int64): "Long",
    np.dtype(np.uint16): "UInt16",
    np.dtype(np.uint32): "UInt32",
    np.dtype(np.uint64): "UInt64",
    np.dtype(np.float16): "Half",
    np.dtype(np.float32): "Float",
    np.dtype(np.float64): "Double",
    np.dtype(np.complex64): "ComplexFloat",
    np.dtype(np.complex128): "ComplexDouble",
}
if BFLOAT16 is not None:
    _TYPE_NAMES[BFLOAT16] = "BFloat16"


def type_name(dtype: np.dtype) -> str:
    """torch's name of a numpy dtype (``'Float'`` for float32).

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._compat.torch import type_name
    >>> type_name(np.dtype(np.int64))
    'Long'
    """
    return _TYPE_NAMES.get(dtype.newbyteorder("="), str(dtype))


def size(shape: tuple[int, ...]) -> str:
    """A shape as torch prints it.

    Examples
    --------
    >>> from bn3d._compat.torch import size
    >>> size((2, 3))
    'torch.Size([2, 3])'
    """
    return "torch.Size([{}])".format(", ".join(str(d) for d in shape))


def value_type_name(value: Any) -> str:
    """The type of a Python value as torch's argument parser names it in its messages:
    builtins by name, tensors as ``Tensor``, others with their module."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__name__
    if kind.__module__.startswith("torch") and kind.__name__ in ("Tensor", "Parameter"):
        return "Tensor"
    return f"{kind.__module__}.{kind.__qualname__}"


def argument_type_error(function: str, name: str, position: int, expected: str,
                        value: Any) -> TypeError:
    """torch's error for an argument of the wrong type.

    Examples
    --------
    >>> from bn3d._compat.torch import argument_type_error
    >>> str(argument_type_error("batch_norm", "training", 6, "bool", 1))
    "batch_norm(): argument 'training' (position 6) must be bool, not int"
    """
    return TypeError(f"{function}(): argument '{name}' (position {position}) must be {expected}, "
                     f"not {value_type_name(value)}")


# The positions torch's argument errors name: torch.batch_norm(input, weight, bias,
# running_mean, running_var, training, momentum, eps, ...) and its backward.
_POSITIONS = {
    "batch_norm": {"input": 1, "weight": 2, "bias": 3, "running_mean": 4, "running_var": 5,
                   "training": 6, "momentum": 7, "eps": 8},
    "native_batch_norm_backward": {"grad_out": 1, "input": 2, "weight": 3, "running_mean": 4,
                                   "running_var": 5, "save_mean": 6, "save_invstd": 7,
                                   "train": 8, "eps": 9},
}
_POSITIONS["native_batch_norm"] = _POSITIONS["batch_norm"]


def tensor_argument(value: Any, function: str, name: str) -> np.ndarray | None:
    """A tensor argument of torch's ``function`` (or None) as a numpy array.

    Raises torch's TypeError for what is not a tensor of this world (see
    :func:`bn3d._core.to_array`): lists, tuples, scalars.

    Examples
    --------
    >>> from bn3d._compat.torch import tensor_argument
    >>> tensor_argument([0.0], "batch_norm", "running_mean")
    Traceback (most recent call last):
    TypeError: batch_norm(): argument 'running_mean' (position 4) must be Tensor, not list
    """
    if value is None:
        return None
    array = _core.to_array(value)
    if array is None:
        raise argument_type_error(function, name, _POSITIONS[function][name], "Tensor", value)
    return array


def float_argument(value: Any, function: str, name: str) -> float:
    """A ``float`` argument as torch's parser takes it: a real Python or numpy number,
    or a 0-d array or tensor of one (not one that requires grad).

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._compat.torch import float_argument
    >>> float_argument(np.array(0.5), "batch_norm", "momentum")
    0.5
    """
    if isinstance(value, (numbers.Real, np.bool_)):
        return float(value)
    if not getattr(value, "requires_grad", False):
        array = _core.to_array(value)
        if array is not None and array.ndim == 0 and array.dtype.kind in "biuf":
            return float(array)
    raise argument_type_error(function, name, _POSITIONS[function][name], "float", value)


def bool_argument(value: Any, function: str, name: str) -> bool:
    """A ``bool`` argument: a Python bool only, as torch's parser takes it."""
    if type(value) is not bool:
        raise argument_type_error(function, name, _POSITIONS[function][name], "bool", value)
    return value


def broadcast_error(first: tuple[int, ...], second: tuple[int, ...]) -> RuntimeError | None:
    """torch's error for tensors of shapes ``first`` and ``second`` that do not broadcast,
    or None if they do.

    Examples
    --------
    >>> from bn3d._compat.torch import broadcast_error
    >>> str(broadcast_error((0, 2, 3), (2,)))
    'The size of tensor a (3) must match the size of tensor b (2) at non-singleton dimension 2'
    """
    ndim = max(len(first), len(second))
    for offset in range(1, ndim + 1):
        a = first[-offset] if offset <= len(first) else 1
        b = second[-offset] if offset <= len(second) else 1
        if a != b and a != 1 and b != 1:
            return RuntimeError(f"The size of tensor a ({a}) must match the size of tensor b "
                                f"({b}) at non-singleton dimension {ndim - offset}")
    return None
