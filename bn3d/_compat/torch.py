"""PyTorch 2.13's words: its version, type names, error messages and argument parser.

bn3d's PyTorch dialect (:mod:`bn3d.functional`, :mod:`bn3d.torch_nn`) raises
exactly what PyTorch raises; every message it copies from PyTorch is written
here, so that following a new PyTorch release is one reviewable file:

- :data:`VERSION`, the release whose words these are;
- :data:`ERRORS`, PyTorch's errors by name (an exception type and a message
  template each), built by :func:`error` (or :func:`message`, for the parts of
  a message that lists several);
- how PyTorch prints things in its messages: :func:`type_name` (``Float``),
  :func:`size` (``torch.Size([2, 3])``), :data:`DEVICE_TYPES`,
  :class:`IncompatibleKeys`;
- PyTorch's argument parser (:func:`tensor_argument`, :func:`optional_tensor_argument`,
  :func:`float_argument`, :func:`bool_argument`) and broadcasting rule
  (:func:`broadcast_error`).

When to raise which error is the dialect's business; what the error says is this file's.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np

from .. import _core
from .._core import BFLOAT16

__all__ = [
    "DEVICE_TYPES",
    "ERRORS",
    "STATE_DICT_VERSION",
    "VERSION",
    "IncompatibleKeys",
    "argument_type_error",
    "bool_argument",
    "broadcast_error",
    "error",
    "float_argument",
    "message",
    "optional_tensor_argument",
    "size",
    "tensor_argument",
    "type_name",
    "value_type_name",
]

VERSION = "2.13.0"

# The device types torch's device-string parser knows, in the order its message lists them.
DEVICE_TYPES = (
    "cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga",
    "maia", "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone",
)

# The format version torch's _NormBase writes into state_dict metadata (2 added
# num_batches_tracked); a state_dict of an older version may omit the count.
STATE_DICT_VERSION = 2

# PyTorch's errors by name: (exception type, message template for str.format).
ERRORS: dict[str, tuple[type[Exception], str]] = {
    # The argument parser (torch.batch_norm, torch.native_batch_norm_backward, torch.empty).
    "argument_type": (
        TypeError,
        "{function}(): argument '{name}' (position {position}) must be {expected}, not {type}"),
    "size_argument_type": (
        TypeError, "empty(): argument 'size' (position 1) must be tuple of ints, not {type}"),
    "device_argument_type": (
        TypeError, "empty(): argument 'device' must be torch.device, not {type}"),
    # The dispatcher, for None where a tensor is required (torch.ops.aten.*).
    "undefined_tensor": (
        RuntimeError,
        "Expected a proper Tensor but got None (or an undefined Tensor in C++) for argument "
        "#{index} '{name}'"),
    # Devices (torch.device and allocation on a CPU-only build).
    "device_index_negative": (RuntimeError, "Device index must not be negative"),
    "no_accelerator": (RuntimeError, "Cannot access accelerator device when none is available."),
    "device_string_empty": (RuntimeError, "Device string must not be empty"),
    "device_string_invalid": (RuntimeError, "Invalid device string: '{device}'"),
    "device_type_unknown": (
        RuntimeError,
        f"Expected one of {', '.join(DEVICE_TYPES)} device type at start of device string: "
        "{device}"),
    "no_cuda": (AssertionError, "Torch not compiled with CUDA enabled"),
    "negative_dimension": (
        RuntimeError, "Trying to create tensor with negative dimension {size}: [{size}]"),
    # torch.nn.functional.batch_norm's own checks.
    "one_value_per_channel": (
        ValueError,
        "Expected more than 1 value per channel when training, got input size {size}"),
    "eps_not_positive": (
        ValueError, "batch_norm eps must be positive during training, but got {eps}"),
    "eps_negative": (ValueError, "batch_norm eps must be non-negative, but got {eps}"),
    # ATen's batch_norm.
    "undefined_in_evaluation": (RuntimeError, "{name} must be defined in evaluation mode"),
    "element_count": (RuntimeError, "{name} should contain {channels} elements not {size}"),
    "accessor_dims": (RuntimeError, "TensorAccessor expected 1 dims but tensor has {ndim}"),
    "dimension_out_of_range": (
        IndexError, "Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
    "no_dimensions": (IndexError, "Dimension specified as 1 but tensor has no dimensions"),
    "running_stats_half_defined": (
        ValueError,
        "running_mean and running_var must either both be None or neither be None"),
    "not_implemented_for_dtype": (
        NotImplementedError, "\"batch_norm\" not implemented for '{type}'"),
    "mixed_dtype_not_float": (
        RuntimeError, "mixed dtype (CPU): expect parameter to have scalar type of Float"),
    "mixed_dtype_not_low_precision": (
        RuntimeError, "mixed dtype (CPU): all inputs must share same datatype."),
    "scalar_type": (RuntimeError, "expected scalar type {expected} but found {found}"),
    "empty_input": (
        RuntimeError,
        "input tensor must have at least one element, but got input_sizes = [{sizes}]"),
    # torch.batch_norm on an empty input: input * weight[0] + bias[0].
    "index_of_0_dim": (
        IndexError,
        "invalid index of a 0-dim tensor. Use `tensor.item()` in Python or `tensor.item<T>()` "
        "in C++ to convert a 0-dim tensor to a number"),
    "select_out_of_range": (
        IndexError, "select(): index 0 out of range for tensor of size [{sizes}] at dimension 0"),
    "broadcast": (
        RuntimeError,
        "The size of tensor a ({a}) must match the size of tensor b ({b}) at non-singleton "
        "dimension {dim}"),
    # torch.nn.BatchNorm3d.
    "input_dims": (ValueError, "expected {expected}D input (got {ndim}D input)"),
    "training_mode_type": (ValueError, "training mode is expected to be boolean"),
    # Autograd, checking the gradient handed to backward.
    "grad_shape": (
        RuntimeError,
        "Mismatch in shape: grad_output[0] has a shape of {grad_size} and output[0] has a "
        "shape of {output_size}."),
    "grad_complex_dtype": (
        RuntimeError,
        "For complex Tensors, both grad_output and output are required to have the same dtype. "
        "Mismatch in dtype: grad_output[0] has a dtype of torch.{grad_dtype} and output[0] has "
        "a dtype of torch.{output_dtype}."),
    # Module.load_state_dict: the error, then the lines it lists.
    "state_dict_type": (TypeError, "Expected state_dict to be dict-like, got {type}."),
    "load_state_dict": (
        RuntimeError, "Error(s) in loading state_dict for {module}:\n\t{errors}"),
    "missing_keys": (RuntimeError, "Missing key(s) in state_dict: {keys}. "),
    "unexpected_keys": (RuntimeError, "Unexpected key(s) in state_dict: {keys}. "),
    "not_a_tensor": (
        RuntimeError,
        "While copying the parameter named \"{name}\", expected torch.Tensor or Tensor-like "
        "object from checkpoint but received {type}"),
    "size_mismatch": (
        RuntimeError,
        "size mismatch for {name}: copying a param with shape {checkpoint_size} from "
        "checkpoint, the shape in current model is {model_size}."),
}


def message(name: str, /, **fields: Any) -> str:
    """The text of PyTorch's error ``name`` (a key of :data:`ERRORS`) with ``fields`` filled in.

    Parameters
    ----------
    name : str
    **fields
        The template's fields.

    Returns
    -------
    str

    Examples
    --------
    >>> from bn3d._compat.torch import message
    >>> message("missing_keys", keys='"weight"')
    'Missing key(s) in state_dict: "weight". '
    """
    return ERRORS[name][1].format(**fields)


def error(name: str, /, **fields: Any) -> Exception:
    """PyTorch's error ``name`` (a key of :data:`ERRORS`), with ``fields`` filled in, to raise.

    Parameters
    ----------
    name : str
    **fields
        The template's fields.

    Returns
    -------
    Exception
        Of the type PyTorch raises.

    Examples
    --------
    >>> from bn3d._compat.torch import error
    >>> error("input_dims", expected=5, ndim=4)
    ValueError('expected 5D input (got 4D input)')
    """
    kind, template = ERRORS[name]
    return kind(template.format(**fields))


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
                        value: Any) -> Exception:
    """torch's error for an argument of the wrong type.

    Examples
    --------
    >>> from bn3d._compat.torch import argument_type_error
    >>> str(argument_type_error("batch_norm", "training", 6, "bool", 1))
    "batch_norm(): argument 'training' (position 6) must be bool, not int"
    """
    return error("argument_type", function=function, name=name, position=position,
                 expected=expected, type=value_type_name(value))


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


def tensor_argument(value: Any, function: str, name: str) -> np.ndarray:
    """A tensor argument of torch's ``function`` as a numpy array.

    Raises torch's error for what is not a tensor of this world (see
    :func:`bn3d._core.to_array`): a TypeError for lists, tuples, scalars and
    None, except that ``native_batch_norm_backward``, called through the
    dispatcher, takes None and then refuses it with a RuntimeError.

    Examples
    --------
    >>> from bn3d._compat.torch import tensor_argument
    >>> tensor_argument([0.0], "batch_norm", "running_mean")
    Traceback (most recent call last):
    TypeError: batch_norm(): argument 'running_mean' (position 4) must be Tensor, not list
    >>> tensor_argument(None, "batch_norm", "input")
    Traceback (most recent call last):
    TypeError: batch_norm(): argument 'input' (position 1) must be Tensor, not NoneType
    """
    if value is None and function == "native_batch_norm_backward":
        raise error("undefined_tensor", index=_POSITIONS[function][name] - 1, name=name)
    array = None if value is None else _core.to_array(value)
    if array is None:
        raise argument_type_error(function, name, _POSITIONS[function][name], "Tensor", value)
    return array


def optional_tensor_argument(value: Any, function: str, name: str) -> np.ndarray | None:
    """An optional tensor argument of torch's ``function`` (``Tensor?``): None, or as
    :func:`tensor_argument`.

    Examples
    --------
    >>> from bn3d._compat.torch import optional_tensor_argument
    >>> optional_tensor_argument(None, "batch_norm", "weight") is None
    True
    """
    return None if value is None else tensor_argument(value, function, name)


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


def broadcast_error(first: tuple[int, ...], second: tuple[int, ...]) -> Exception | None:
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
            return error("broadcast", a=a, b=b, dim=ndim - offset)
    return None


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: ``(missing_keys, unexpected_keys)``, printed as torch
    prints it.

    Examples
    --------
    >>> from bn3d._compat.torch import IncompatibleKeys
    >>> IncompatibleKeys([], [])
    <All keys matched successfully>
    >>> IncompatibleKeys(["weight"], [])
    _IncompatibleKeys(missing_keys=['weight'], unexpected_keys=[])
    """

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"_IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")

    def __str__(self) -> str:
        return self.__repr__()
