"""The common model of a checkpoint file, and its error."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FORMATS", "Checkpoint", "CheckpointError"]

#: The formats bn3d reads and writes.
FORMATS = ("torch", "torch-safetensors", "mindspore", "mindspore-safetensors")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or written as asked.

    The message names the file and, where it applies, the entry: a tensor name, a
    zip member, a protobuf entry.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    problem : str
        What is wrong.
    entry : str, optional
        The entry of the file, with its kind, such as ``"tensor 'bn.weight'"``.

    Examples
    --------
    >>> error = CheckpointError("model.pth", "is truncated", entry="zip member 'm/data.pkl'")
    >>> print(error)
    model.pth, zip member 'm/data.pkl': is truncated
    >>> error.path, error.entry
    ('model.pth', "zip member 'm/data.pkl'")
    """

    __module__ = "bn3d.convert.formats"

    def __init__(self, path: str | os.PathLike, problem: str, *, entry: str | None = None):
        self.path = os.fspath(path)
        self.problem = problem
        self.entry = entry
        where = self.path if entry is None else f"{self.path}, {entry}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        return _rebuild_error, (self.path, self.problem, self.entry)


def _rebuild_error(path, problem, entry):
    return CheckpointError(path, problem, entry=entry)


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of a checkpoint file, in file order, with the file's format and metadata.

    Parameters
    ----------
    tensors : dict of str to numpy.ndarray
        C-contiguous arrays by name, in the order of the file, names as in the file.
    format : str
        One of ``"torch"``, ``"torch-safetensors"``, ``"mindspore"``,
        ``"mindspore-safetensors"``.
    metadata : dict
        What the file says besides its tensors. Keys that bn3d sets or uses:

        ``"original_dtypes"``
            ``{name: "bfloat16"}`` for the tensors stored as bfloat16, which numpy
            lacks: they are read as float32 (exactly: bfloat16 is the upper half of
            a float32) and written back as bfloat16.
        ``"state_dict_metadata"``
            torch's ``state_dict._metadata``: for each module prefix (``""``,
            ``"0"``, ``"layer.bn"``), a dict such as ``{"version": 2}``. Written
            back into torch files so that ``load_state_dict`` sees the versions.
        ``"safetensors_metadata"``
            The ``__metadata__`` of a safetensors header (a dict of str).
        ``"crc32"``
            The CRC-32 a MindSpore file carried (a ``.ckpt`` trailer or a
            safetensors ``crc_num``), verified when read.

        Format-specific keys are used when writing only to the format they came
        from; ``"original_dtypes"`` applies to every format.

    Examples
    --------
    >>> import numpy as np
    >>> checkpoint = Checkpoint({"bn.weight": np.ones(3, np.float32)}, "torch")
    >>> checkpoint.format, list(checkpoint.tensors), checkpoint.metadata
    ('torch', ['bn.weight'], {})
    """

    __module__ = "bn3d.convert.formats"

    tensors: dict[str, np.ndarray]
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {self.format!r}")
