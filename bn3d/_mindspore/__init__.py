"""The MindSpore dialect's own helpers, behind :mod:`bn3d.mindspore_nn`.

- :mod:`bn3d._mindspore.parameter`: ``mindspore.Parameter`` (a named numpy
  array) and :func:`~bn3d._mindspore.parameter.tensor_data`, which decides what
  counts as a tensor;
- :mod:`bn3d._mindspore.initializers`: ``mindspore.common.initializer`` for 1-D
  parameters, and ``set_seed`` / ``get_seed``;
- :mod:`bn3d._mindspore.primitive`: the BatchNorm primitive
  (``mindspore.ops.BatchNorm``): its checks, in its order, then
  :func:`bn3d._core.batch_norm`. It is to this dialect what
  :mod:`bn3d.functional` is to PyTorch's.

Their public names are importable from :mod:`bn3d.mindspore_nn`; MindSpore's
words (messages, type names) are in :mod:`bn3d._compat.mindspore`.
"""
