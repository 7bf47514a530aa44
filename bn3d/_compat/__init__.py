"""Each framework's words: its pinned version, type names and error messages, one module each.

- :mod:`bn3d._compat.torch`: PyTorch 2.13, for :mod:`bn3d.functional` and :mod:`bn3d.torch_nn`;
- :mod:`bn3d._compat.mindspore`: MindSpore 2.10, for :mod:`bn3d.mindspore_nn` and
  :mod:`bn3d._mindspore`.

Each holds a table of the framework's errors (an exception type and a message
template per entry) and ``error(name, **fields)``, which builds one: every
message bn3d copies from a framework is written there, so following a new
release of it is one reviewable file. Messages that are bn3d's own stay where
they are raised. This module holds what both dialects share: reading a dtype
given as a numpy dtype or as a framework's dtype object (:func:`numpy_dtype`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["numpy_dtype"]


def numpy_dtype(value: Any, framework: str) -> np.dtype | None:
    """The numpy dtype ``value`` names, or None if it names none.

    ``value`` is a numpy dtype-like (a dtype, a scalar type, a name) or a dtype
    object of ``framework``, which prints its name after its last dot: PyTorch's
    ``torch.float64``, MindSpore's ``Float16``. Each dialect then decides which
    dtypes it accepts, and says so in its own words.

    Parameters
    ----------
    value : object
    framework : {'torch', 'mindspore'}
        The top-level module of the framework whose dtype objects are read.

    Returns
    -------
    numpy.dtype or None

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d._compat import numpy_dtype
    >>> numpy_dtype("float16", "torch"), numpy_dtype(np.float64, "mindspore")
    (dtype('float16'), dtype('float64'))
    >>> numpy_dtype("float99", "torch") is None
    True
    """
    if type(value).__module__.partition(".")[0] == framework:
        value = str(value).rpartition(".")[2].lower()  # torch.float64, Float16 -> float64, float16
    try:
        dtype: np.dtype = np.dtype(value)
    except TypeError:
        return None
    return dtype
