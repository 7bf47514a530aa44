"""Checkpoint conversion between PyTorch and MindSpore.

- :mod:`bn3d.convert.formats`: read and write the checkpoint files of both
  frameworks (torch ``.pt``/``.pth``, MindSpore ``.ckpt``, safetensors), without
  either framework.
"""
