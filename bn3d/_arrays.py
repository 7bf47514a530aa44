"""Conversion of array-likes (numpy, ``__array__``, ``__dlpack__``) to numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_array"]


def as_array(obj: Any) -> np.ndarray:
    """Return ``obj`` as a numpy array, sharing its memory where possible.

    Parameters
    ----------
    obj : array_like
        A numpy array (returned as it is), an object with ``__array__`` (a CPU
        torch tensor, say; one that requires grad is detached), an object with
        ``__dlpack__``, or anything :func:`numpy.asarray` accepts (lists, scalars).

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> from bn3d.functional import as_array
    >>> as_array([[1.0, 2.0]]).shape
    (1, 2)
    """
    if isinstance(obj, np.ndarray):
        return obj
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        obj = obj.detach()  # a torch tensor in an autograd graph: its values
    if hasattr(obj, "__array__"):
        return np.asarray(obj)
    if hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    return np.asarray(obj)
