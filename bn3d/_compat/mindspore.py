"""MindSpore 2.10's words: its version, type names and error messages, in one place.

bn3d's MindSpore dialect (:mod:`bn3d.mindspore_nn` and the helpers in
:mod:`bn3d._mindspore`) raises exactly what MindSpore raises; every message it
copies from MindSpore is written here, so that following a new MindSpore
release is one reviewable file:

- :data:`VERSION`, the release whose words these are;
- :data:`ERRORS`, MindSpore's errors by name (an exception type and a message
  template each), built by :func:`error`;
- how MindSpore prints things in its messages: :func:`type_name` (``Float32``),
  :func:`cpp_float` (its C++ kernels' floats), :func:`signature_type_name`
  (``List<int, float>``), :func:`parameter_types`.

When to raise which error is the dialect's business; what the error says is this file's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ERRORS",
    "VERSION",
    "cpp_float",
    "error",
    "parameter_types",
    "signature_type_name",
    "type_name",
]

VERSION = "2.10.0"

_PRIMITIVE_FLOATS = "{{Tensor[Float16], Tensor[Float32]}}"  # escaped for str.format

# MindSpore's errors by name: (exception type, message template for str.format).
ERRORS: dict[str, tuple[type[Exception], str]] = {
    # mindspore.nn.BatchNorm2d and BatchNorm3d, when built and called.
    "num_features_type": (
        TypeError,
        "For 'BatchNorm2d', the type of 'num_features' should be 'int', but got type '{type}'."),
    "num_features_value": (
        ValueError, "For 'BatchNorm2d', the 'num_features' must be at least 1, but got {value}."),
    "momentum_range": (
        ValueError,
        "For 'BatchNorm2d', the 'momentum' must be a number in range [0, 1], but got "
        "{momentum}."),
    "use_batch_statistics_type": (
        ValueError,
        "For 'BatchNorm2d', the 'use_batch_statistics' must be a boolean value or None, but got "
        "{value}."),
    "input_rank": (
        ValueError, "For 'BatchNorm3d', the in_shape must have 5 dims, but got {ndim}."),
    "shape_input_type": (
        TypeError, "For primitive[Shape], the input argument must be Tensor, but got {type}."),
    # The BatchNorm primitive, in the order it checks.
    "failed_calling_batch_norm": (
        TypeError,
        'Failed calling BatchNorm with "BatchNorm(is_training=bool, epsilon={epsilon_type}, '
        "momentum=float, data_format=string)(input_x=Tensor, scale=Tensor, bias=Tensor, "
        'mean=Tensor, variance=Tensor)".\n'
        "The valid calling should be: \n"
        '"BatchNorm(is_training=<bool>, epsilon=<float>, momentum=<float>, '
        "data_format=<string>)(input_x=<Tensor>, scale=<Tensor>, bias=<Tensor>, "
        'mean=<Tensor>, variance=<Tensor>)".'),
    "parameter_conversion": (
        TypeError,
        "Data type conversion is not supported for a 'Parameter', nor for the input tensor of an "
        "in-place operator, so data type {source}, which cannot be converted to data type "
        "{target} automatically."),
    "primitive_eps_range": (
        ValueError, "For primitive[BatchNorm], the eps must be in (0,1], but got {eps}."),
    "primitive_momentum_range": (
        ValueError, "For primitive[BatchNorm], the momentum must be in (0,1], but got {momentum}."),
    "parameter_rank": (
        ValueError,
        "For primitive[BatchNorm], the rank of {name} must be equal to 1, but got {ndim}."),
    "scale_bias_sizes": (
        ValueError,
        "For primitive[BatchNorm], the scale and bias: [{scale},] must be equal to [{bias},]"),
    "scale_channels": (
        ValueError,
        "For BatchNorm, scale.shape[0] should be equal to input_x's channel dimension: "
        "{channels}, bug got scale.shape[0]: {scale}."),
    "training_sizes": (
        ValueError,
        "For 'BatchNorm', 'scale', 'bias', 'mean', and 'variance' should have the same size "
        "during training, but got {scale}, {bias}, {mean} and {variance}."),
    "input_dtype": (
        TypeError,
        "For primitive[BatchNorm], the input argument[input_x] must be a type of "
        f"{_PRIMITIVE_FLOATS}, but got Tensor[{{type}}]."),
    "parameter_types_differ": (
        TypeError, "For primitive[BatchNorm], the input type must be same.\n{parameters}"),
    "bias_dtype": (
        TypeError,
        "For primitive[BatchNorm], the input argument[bias] must be a type of "
        f"{_PRIMITIVE_FLOATS}, but got Ref[Tensor[{{type}}]]."),
    # mindspore.Parameter.
    "requires_grad_type": (TypeError, "The argument `requires_grad` must be bool type"),
    "set_data_float_to_int": (
        TypeError,
        "Incoming Parameter dtype can not be converted to current dtype implicitly. Current "
        "dtype is {current}, and incoming is Float. Use .set_dtype(xxx) to change the dtype."),
    "set_data_type": (
        TypeError,
        "Parameter data must be [`Tensor`, `int`, `float`] or a kind of `Tensor` (like "
        "`Tensor`). But with type {type}."),
    # mindspore.set_seed.
    "seed_type": (TypeError, "The argument 'seed' must be type of int, but got {type}."),
    "seed_bool": (
        TypeError,
        "For 'global_seed', the 'seed' must be int and must >= 0, but got '{seed}' with type "
        "'{type}'."),
    "seed_negative": (
        ValueError,
        "For 'global_seed', the 'seed' must be int and must >= 0, but got '{seed}' with type "
        "'{type}'."),
    "seed_too_large": (ValueError, "Seed must be between 0 and 2**32 - 1"),
    # mindspore.common.initializer.
    "initializer_type": (
        TypeError,
        "For 'initializer', the type of the 'init' argument should be 'Tensor', 'number', "
        "'string' or 'initializer', but got {type}."),
    "initializer_not_found": (
        ValueError, "For 'initializer', the class corresponding to '{name}' was not found."),
    "initializer_shape": (
        ValueError,
        "For 'initializer', the shape of the 'init' argument should be same as the argument "
        "'shape', but got the 'init' shape {init_shape} and the 'shape' {shape}."),
    "sigma_negative": (ValueError, "sigma < 0"),
    "sparse_without_sparsity": (
        TypeError, "Sparse.__init__() missing 1 required positional argument: 'sparsity'"),
    # Named initialisers that cannot fill a 1-D parameter.
    "fan_in_and_fan_out": (
        ValueError,
        "'fan_in' and 'fan_out' can not be computed for tensor with fewer than 2 dimensions, "
        "but got dimensions 1."),
    "identity_dimensions": (
        ValueError,
        "For Identity initializer, the dimension of the initialized tensor should be 2, but got "
        "1."),
    "orthogonal_dimensions": (
        ValueError,
        "For Orthogonal initializer, the dimension of the initialized tensor should be no less "
        "than 2, but got 1."),
    "dirac_dimensions": (
        ValueError,
        "For Dirac initializer, only support to initialize tensor with dimension of 3, 4 or 5, "
        "but got 1."),
}


def error(name: str, /, **fields: Any) -> Exception:
    """MindSpore's error ``name`` (a key of :data:`ERRORS`), with ``fields`` filled in, to raise.

    Parameters
    ----------
    name : str
    **fields
        The template's fields.

    Returns
    -------
    Exception
        Of the type MindSpore raises.

    Examples
    --------
    >>> from bn3d._compat.mindspore import error
    >>> error("input_rank", ndim=4)
    ValueError("For 'BatchNorm3d', the in_shape must have 5 dims, but got 4.")
    """
    kind, template = ERRORS[name]
    return kind(template.format(**fields))


# MindSpore's names of the numpy dtypes, as its reprs and messages print them.
_TYPE_NAMES = {
    np.dtype(np.bool_): "Bool",
    np.dtype(np.int8): "Int8",
    np.dtype(np.int16): "Int16",
    np.dtype(np.int32): "Int32",
    np.dtype(np.int64): "Int64",
    np.dtype(np.uint8): "UInt8",
    np.dtype(np.uint16): "UInt16",
    np.dtype(np.uint32): "UInt32",
    np.dtype(np.uint64): "UInt64",
    np.dtype(np.float16): "Float16",
    np.dtype(np.float32): "Float32",
    np.dtype(np.float64): "Float64",
    np.dtype(np.complex64): "Complex64",
    np.dtype(np.complex128): "Complex128",
}

# How MindSpore's 'Failed calling' message names the types of Python arguments.
_SIGNATURE_NAMES = {bool: "bool", int: "int", float: "float", str: "string"}


def type_name(dtype: npt.DTypeLike) -> str:
    """MindSpore's name of a numpy dtype (``'Float32'`` for float32).

    Parameters
    ----------
    dtype : numpy dtype-like

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._compat.mindspore import type_name
    >>> type_name(np.float16), type_name("uint8")
    ('Float16', 'UInt8')
    """
    resolved = np.dtype(dtype)
    return _TYPE_NAMES.get(resolved, str(resolved))


def cpp_float(value: Any) -> str:
    """A number as MindSpore's C++ messages print it (six significant digits).

    Examples
    --------
    >>> from bn3d._compat.mindspore import cpp_float
    >>> cpp_float(1.0), cpp_float(1.0000001), cpp_float(-2e-07)
    ('1', '1', '-2e-07')
    """
    return format(float(value), "g")


def signature_type_name(value: Any) -> str:
    """The type of an argument as MindSpore's 'Failed calling' message names it.

    Examples
    --------
    >>> from bn3d._compat.mindspore import signature_type_name
    >>> signature_type_name(1), signature_type_name([1, 0.5]), signature_type_name(None)
    ('int', 'List<int, float>', 'None')
    """
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        kind = "List" if isinstance(value, list) else "Tuple"
        return f"{kind}<{', '.join(signature_type_name(item) for item in value)}>"
    return _SIGNATURE_NAMES.get(type(value), str(type(value)))


def parameter_types(dtypes: Mapping[str, np.dtype]) -> str:
    """The lines of MindSpore's 'input type must be same' message: each parameter input
    of the BatchNorm primitive with its dtype, by name.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._compat.mindspore import parameter_types
    >>> print(parameter_types({"scale": np.dtype(np.float16), "bias": np.dtype(np.float32)}))
    name:[bias]:Ref[Tensor[Float32]].
    name:[scale]:Ref[Tensor[Float16]].
    """
    return "\n".join(f"name:[{name}]:Ref[Tensor[{type_name(dtypes[name])}]]."
                     for name in sorted(dtypes))
