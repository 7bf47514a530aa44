"""bn3d: a fast, exact CPU reference implementation of batch normalisation.

- :mod:`bn3d.functional`: batch normalisation on numpy arrays of shape
  ``(N, C, *)``, with ``torch.nn.functional.batch_norm`` semantics.
- :mod:`bn3d.torch_nn`: ``BatchNorm3d`` as PyTorch has it.
- :mod:`bn3d.mindspore_nn`: ``BatchNorm3d`` as MindSpore has it.
"""

try:
    from . import _kernels  # noqa: F401  (the compiled kernels, built by setup.py)
except ImportError as error:
    from ._check_build import raise_if_not_built

    raise_if_not_built(error)

from . import mindspore_nn, torch_nn  # noqa: E402
from ._memory import output_pool_stats, set_output_pool_limit
from ._threads import get_num_threads, openmp_enabled, set_num_threads
from .functional import (
    batch_norm,
    batch_norm_backward,
    batch_norm_stats,
    native_batch_norm,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_stats",
    "get_num_threads",
    "mindspore_nn",
    "native_batch_norm",
    "openmp_enabled",
    "output_pool_stats",
    "set_num_threads",
    "set_output_pool_limit",
    "torch_nn",
]
