"""Checkpoint files of PyTorch and MindSpore, read and written without either framework.

Four formats, one model (:class:`Checkpoint`: tensors by name, the format, metadata):

- ``"torch"``: ``torch.save(state_dict)`` files, ``.pt``/``.pth``
  (:mod:`.torch_file`);
- ``"torch-safetensors"``: ``safetensors.torch.save_file`` files
  (:mod:`.safetensors_file`);
- ``"mindspore"``: ``mindspore.save_checkpoint`` files, ``.ckpt``
  (:mod:`.mindspore_ckpt`);
- ``"mindspore-safetensors"``: ``save_checkpoint(format="safetensors")`` files
  (:mod:`.safetensors_file`).

Reading never executes anything from the file; every error is a
:class:`CheckpointError` naming the file and the entry. Writing is atomic: a
temporary file in the target's directory, fsynced, then renamed; on any error it is
removed and no output file is left half-written. Only numpy is needed to import this
package; protobuf (MindSpore ``.ckpt``) and safetensors are imported when used
(``pip install "bn3d[convert]"``).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Mapping
from typing import Any

from . import mindspore_ckpt, safetensors_file, torch_file
from ._checkpoint import FORMATS, Checkpoint, CheckpointError

__all__ = ["FORMATS", "Checkpoint", "CheckpointError", "detect_format", "read_checkpoint",
           "write_checkpoint"]


def detect_format(path: str | os.PathLike) -> str:
    """The format of a checkpoint file, from its content.

    A zip archive is a torch file; a safetensors header makes a safetensors file,
    MindSpore's if its metadata says ``format: ms``; anything else is taken for a
    MindSpore protobuf (which reading then checks).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    CheckpointError
        For an empty file, or a legacy (non-zip) torch file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> for format, name in [("torch", "a.pth"), ("mindspore", "a.ckpt"),
    ...                      ("torch-safetensors", "a.safetensors")]:
    ...     write_checkpoint(os.path.join(folder, name), {"w": np.ones(1)}, format)
    ...     print(detect_format(os.path.join(folder, name)))
    torch
    mindspore
    torch-safetensors
    """
    with open(path, "rb") as file:
        head = file.read(9)
        size = os.fstat(file.fileno()).st_size
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        flavour = safetensors_file._header(path, _read_header_bytes(path))
        is_mindspore = flavour.get("__metadata__", {}).get("format") == "ms"
        return "mindspore-safetensors" if is_mindspore else "torch-safetensors"
    if head[:3] == b"\x80\x02\x8a":
        raise CheckpointError(path, "is a legacy (before torch 1.6, not zip) torch.save file, "
                              "which bn3d does not read; re-save it with a recent torch")
    if size == 0:
        raise CheckpointError(path, "is empty")
    return "mindspore"


def _read_header_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        return struct.pack("<Q", length) + file.read(length)


def read_checkpoint(path: str | os.PathLike, format: str | None = None) -> Checkpoint:
    """Read a checkpoint file of either framework.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    format : str, optional
        One of :data:`FORMATS`; guessed from the content (:func:`detect_format`)
        when not given.

    Returns
    -------
    Checkpoint
        The tensors in file order, the format, and the file's metadata.

    Raises
    ------
    CheckpointError
        When the file is not a valid checkpoint of that format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "bn.ckpt")
    >>> write_checkpoint(path, {"bn.gamma": np.ones(2, np.float32)}, "mindspore")
    >>> read_checkpoint(path)
    Checkpoint(tensors={'bn.gamma': array([1., 1.], dtype=float32)}, format='mindspore', \
metadata={})
    """
    if format is None:
        format = detect_format(path)
    elif format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if format == "torch":
        checkpoint = torch_file.read(path)
    elif format == "mindspore":
        checkpoint = mindspore_ckpt.read(path)
    else:
        checkpoint = safetensors_file.read(path)
    if checkpoint.format != format:  # a safetensors file read as the other framework's
        checkpoint = dataclasses.replace(checkpoint, format=format)
    return checkpoint


def write_checkpoint(
    path: str | os.PathLike,
    checkpoint_or_tensors: Checkpoint | Mapping[str, Any],
    format: str,
    *,
    crc_check: bool | None = None,
) -> None:
    """Write a checkpoint file of either framework, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; replaced only once complete.
    checkpoint_or_tensors : Checkpoint or mapping of str to array_like
        What to write. A :class:`Checkpoint`'s format-specific metadata (torch's
        ``state_dict_metadata``, the safetensors header metadata) is written only
        into its own format; its ``original_dtypes`` (bfloat16) into any.
    format : str
        One of :data:`FORMATS`.
    crc_check : bool, optional
        MindSpore formats only: write MindSpore's CRC-32 (a ``.ckpt`` trailer, a
        safetensors ``crc_num``). By default, as the checkpoint read had one, if it
        is of the same format; else not.

    Raises
    ------
    CheckpointError
        For tensors the format cannot hold; nothing is written then.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> write_checkpoint(os.path.join(folder, "net.pth"), {"bn.weight": np.ones(2)}, "torch")
    >>> checkpoint = read_checkpoint(os.path.join(folder, "net.pth"))
    >>> write_checkpoint(os.path.join(folder, "net.ckpt"), checkpoint, "mindspore")
    >>> read_checkpoint(os.path.join(folder, "net.ckpt")).tensors
    {'bn.weight': array([1., 1.])}
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if isinstance(checkpoint_or_tensors, Checkpoint):
        tensors = checkpoint_or_tensors.tensors
        metadata = checkpoint_or_tensors.metadata if checkpoint_or_tensors.format == format else {}
        original_dtypes = checkpoint_or_tensors.metadata.get("original_dtypes")
    elif isinstance(checkpoint_or_tensors, Mapping):
        tensors, metadata, original_dtypes = dict(checkpoint_or_tensors), {}, None
    else:
        raise TypeError("write_checkpoint takes a Checkpoint or a mapping of names to arrays, "
                        f"not {type(checkpoint_or_tensors).__name__}")
    if crc_check is None:
        crc_check = "crc32" in metadata
    elif crc_check and not format.startswith("mindspore"):
        raise ValueError(f"crc_check is MindSpore's; {format!r} files have no CRC")
    if format == "torch":
        torch_file.write(path, tensors, module_metadata=metadata.get("state_dict_metadata"),
                         original_dtypes=original_dtypes)
    elif format == "mindspore":
        mindspore_ckpt.write(path, tensors, crc_check=crc_check, original_dtypes=original_dtypes)
    else:
        safetensors_file.write(
            path, tensors, mindspore=format == "mindspore-safetensors", crc_check=crc_check,
            header_metadata=metadata.get("safetensors_metadata"), original_dtypes=original_dtypes)
