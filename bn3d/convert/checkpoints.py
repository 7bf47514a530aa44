"""Checkpoint files from one framework to the other: the BatchNorm layers converted, every
other tensor passed through with its name, a report of everything done.

:func:`convert_tensors` converts a :class:`~bn3d.convert.formats.Checkpoint` in
memory; :func:`convert_checkpoint` reads a file, converts it, writes the output
atomically (nothing is written if anything fails) and, if asked, proves the
conversion by replay (:mod:`bn3d.convert.check`) on the file written;
:func:`check_conversion` replays an existing pair of files.

A checkpoint stores neither ``eps`` nor ``momentum``: the source framework's
defaults are assumed, unless ``source_settings`` gives them. They matter for the
build lines of the report and for the replay, not for the tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .check import replay_layer
from .errors import ConversionError
from .formats import FORMATS, Checkpoint, read_checkpoint, write_checkpoint
from .layers import (
    FRAMEWORKS,
    MINDSPORE_ORDER,
    Layer,
    Selection,
    find_layers,
    mindspore_name,
    torch_name,
)
from .policies import Policies
from .report import Line, Report
from .settings import MindSporeSettings, TorchSettings, convert_settings
from .state import mindspore_state_to_torch, torch_state_to_mindspore

__all__ = ["Conversion", "ConvertedLayer", "check_conversion", "convert_checkpoint",
           "convert_tensors", "framework_of", "output_format"]

#: torch's ``_BatchNorm._version``, which its ``state_dict()._metadata`` records per module.
BATCH_NORM_VERSION = 2
_SUFFIXES = {".pt": "torch", ".pth": "torch", ".ckpt": "mindspore", ".safetensors": "safetensors"}
_DEFAULTS = {"torch": {"eps": 1e-05, "momentum": 0.1},
             "mindspore": {"eps": 1e-05, "momentum": 0.9}}


def framework_of(format: str) -> str:
    """The framework whose files have ``format``.

    Examples
    --------
    >>> framework_of("torch-safetensors"), framework_of("mindspore")
    ('torch', 'mindspore')
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    return format.partition("-")[0]


def output_format(path: str | os.PathLike, to: str, format: str | None = None) -> str:
    """The format to write for framework ``to``: ``format``, or from the file's suffix.

    ``.pt``/``.pth``: torch; ``.ckpt``: MindSpore; ``.safetensors``: ``to``'s
    safetensors.

    Raises
    ------
    ConversionError
        For a format of the other framework, or a suffix that says nothing.

    Examples
    --------
    >>> output_format("model.safetensors", "mindspore"), output_format("m.bin", "torch", "torch")
    ('mindspore-safetensors', 'torch')
    """
    if format is not None:
        if format not in FORMATS or framework_of(format) != to:
            choices = ", ".join(name for name in FORMATS if framework_of(name) == to)
            raise ConversionError(f"format {format!r} is not a {to} format ({choices})")
        return format
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    kind = _SUFFIXES.get(suffix)
    if kind == "safetensors":
        return f"{to}-safetensors"
    if kind is None:
        raise ConversionError(f"cannot tell the output format from the suffix {suffix!r} (.pt, "
                              ".pth, .ckpt, .safetensors): give the format (--format)",
                              path=path)
    if kind != to:
        raise ConversionError(f"is a {kind} file name ({suffix}), but the conversion is to {to}",
                              path=path)
    return kind


@dataclass(frozen=True)
class ConvertedLayer:
    """One converted layer, as the replay builds it on each side.

    Attributes
    ----------
    prefix : str
    bn2d : bool
        Whether the MindSpore names have the ``bn2d`` level (a BatchNorm3d).
    torch : TorchSettings
        The torch layer (with a policy's fixed momentum in place of None).
    mindspore : MindSporeSettings
    """

    prefix: str
    bn2d: bool
    torch: TorchSettings
    mindspore: MindSporeSettings


@dataclass(frozen=True)
class Conversion:
    """A converted checkpoint, in memory.

    Attributes
    ----------
    checkpoint : Checkpoint
        The tensors in the target framework's names and format.
    layers : tuple of ConvertedLayer
    lines : tuple of Line
        The report's lines about the layers and tensors.
    """

    checkpoint: Checkpoint
    layers: tuple[ConvertedLayer, ...]
    lines: tuple[Line, ...]


def _source_settings(settings: Mapping[str, Any] | None, framework: str) -> dict[str, Any]:
    given = dict(settings or {})
    unknown = set(given) - {"eps", "momentum"}
    if unknown:
        raise ConversionError(f"source_settings gives {', '.join(sorted(unknown))}; a layer's "
                              "settings a checkpoint cannot show are eps and momentum")
    return {**_DEFAULTS[framework], **given}


def _described(array: np.ndarray, marks: Mapping[str, str], name: str) -> str:
    if array.dtype.kind == "U":
        return f"string {str(array)!r}"
    return f"{marks.get(name, array.dtype.name)} {list(array.shape)}"


def convert_tensors(
    checkpoint: Checkpoint,
    to: str,
    *,
    format: str | None = None,
    source_framework: str | None = None,
    selection: Selection | None = None,
    policies: Policies | None = None,
    source_settings: Mapping[str, Any] | None = None,
    counter: int = 0,
    path: str | os.PathLike | None = None,
) -> Conversion:
    """Convert a checkpoint's BatchNorm layers to the other framework, in memory.

    Parameters
    ----------
    checkpoint : Checkpoint
    to : {'mindspore', 'torch'}
        The target framework.
    format : str, optional
        The target format (default: ``to``'s own, ``.ckpt`` or ``.pth``).
    source_framework : {'torch', 'mindspore'}, optional
        Whose names the checkpoint has (default: its format's framework).
    selection : Selection, optional
        Which layers, and marks (see :class:`Selection`).
    policies : Policies, optional
        For settings with no exact equivalent.
    source_settings : Mapping, optional
        ``eps`` and ``momentum`` of the source layers, in the source framework's
        dialect (default: its defaults).
    counter : int, default 0
        MindSpore to torch: the ``num_batches_tracked`` written.
    path : str or os.PathLike, optional
        The source file, for error messages.

    Returns
    -------
    Conversion

    Raises
    ------
    ConversionError
        For a layer that cannot be converted as asked, a tensor name written
        twice, a checkpoint of the target framework already.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.convert.formats import Checkpoint
    >>> checkpoint = Checkpoint({"conv.weight": np.ones((3, 2, 1, 1, 1), np.float32),
    ...                          "bn.weight": np.ones(3, np.float32),
    ...                          "bn.bias": np.zeros(3, np.float32),
    ...                          "bn.running_mean": np.zeros(3, np.float32),
    ...                          "bn.running_var": np.ones(3, np.float32),
    ...                          "bn.num_batches_tracked": np.array(7)}, "torch")
    >>> conversion = convert_tensors(checkpoint, "mindspore")
    >>> list(conversion.checkpoint.tensors)  # doctest: +NORMALIZE_WHITESPACE
    ['conv.weight', 'bn.bn2d.moving_mean', 'bn.bn2d.moving_variance', 'bn.bn2d.gamma',
     'bn.bn2d.beta']
    >>> for line in conversion.lines:
    ...     print(line)  # doctest: +NORMALIZE_WHITESPACE
    assume   every layer: eps=1e-05, momentum=0.1 (torch's defaults: a checkpoint stores
             neither)
    layer    bn: BatchNorm3d, 3 channels, float32: weight, bias, running_mean, running_var,
             num_batches_tracked -> bn2d.moving_mean, bn2d.moving_variance, bn2d.gamma,
             bn2d.beta
    build    bn: nn.BatchNorm3d(3, eps=1e-05, momentum=0.9, affine=True,
             use_batch_statistics=None)
    default  bn: num_batches_tracked (7) dropped: MindSpore's BatchNorm3d has no batch counter
    passed   conv.weight: float32 [3, 2, 1, 1, 1]
    """
    if to not in FRAMEWORKS:
        raise ConversionError(f"to={to!r}: the target framework is 'mindspore' or 'torch'")
    source = source_framework or framework_of(checkpoint.format)
    if source not in FRAMEWORKS:
        raise ConversionError(f"source_framework={source!r}: 'mindspore' or 'torch'")
    if source == to:
        raise ConversionError(f"is a {source} checkpoint already (its format is "
                              f"{checkpoint.format}); convert it to the other framework",
                              path=path)
    target_format = format or to
    if framework_of(target_format) != to:
        raise ConversionError(f"format {target_format!r} is not a {to} format")
    assumed = _source_settings(source_settings, source)
    layout = find_layers(checkpoint.tensors, source, selection, path)
    given = "as given" if source_settings else f"{source}'s defaults"
    settings_text = ", ".join(f"{name}={value!r}" for name, value in assumed.items())
    lines = [Line("assume", "every layer",
                  f"{settings_text} ({given}: a checkpoint stores neither)")]
    converted: dict[str, list[tuple[str, np.ndarray, str | None]]] = {}
    layers = []
    member_of = {}
    for layer in layout.layers:
        try:
            outputs, record, layer_lines = _convert_layer(
                layer, checkpoint.tensors, to, policies or Policies(), assumed, counter)
        except ConversionError as error:
            raise error.within(path=path, entry=f"layer {layer.prefix!r}") from None
        for name in layer.names.values():
            member_of[name] = layer.prefix
        converted[layer.prefix] = outputs
        layers.append(record)
        lines += layer_lines
    lines += [Line("warning", subject, text) for subject, text in layout.warnings]
    tensors: dict[str, np.ndarray] = {}
    origins: dict[str, str] = {}
    marks = checkpoint.metadata.get("original_dtypes", {})
    target_marks = {}

    def put(name: str, array: np.ndarray, origin: str) -> None:
        if name in tensors:
            raise ConversionError(f"would be written twice: {origins[name]}, and {origin}",
                                  path=path, entry=f"tensor {name!r}")
        tensors[name] = array
        origins[name] = origin

    excluded = set(layout.excluded)
    for name, array in checkpoint.tensors.items():
        if name in excluded:
            lines.append(Line("excluded", name, _described(array, marks, name)))
        elif name in member_of:
            for target, value, origin in converted.pop(member_of[name], []):
                put(target, value, f"converted from layer {member_of[name]!r}")
                if origin in marks:
                    target_marks[target] = marks[origin]
        else:
            if array.dtype.kind == "U" and target_format != "mindspore":
                raise ConversionError(
                    f"is a string ({str(array)!r}), which {target_format} files cannot hold: "
                    f"leave it out (Selection(exclude=[{name!r}]), bn3d convert --exclude "
                    f"{name!r})", path=path, entry=f"tensor {name!r}")
            put(name, array, f"passed through from {name!r}")
            lines.append(Line("passed", name, _described(array, marks, name)))
            if name in marks:
                target_marks[name] = marks[name]
    metadata: dict[str, Any] = {}
    if target_marks:
        metadata["original_dtypes"] = target_marks
    if to == "torch" and layers:
        metadata["state_dict_metadata"] = {layer.prefix: {"version": BATCH_NORM_VERSION}
                                           for layer in layers}
    return Conversion(Checkpoint(tensors, target_format, metadata), tuple(layers), tuple(lines))


def _layer_kind(layer: Layer) -> str:
    return "BatchNorm3d" if layer.bn2d else "BatchNorm2d"


def _convert_layer(layer: Layer, tensors: Mapping[str, np.ndarray], to: str, policies: Policies,
                   assumed: Mapping[str, Any], counter: int
                   ) -> tuple[list[tuple[str, np.ndarray, str | None]], ConvertedLayer, list[Line]]:
    """The layer's converted tensors (name, array, the source tensor's name or None), in the
    target's order, its record and its report lines."""
    state = {role: tensors[name] for role, name in layer.names.items()}
    prefix, kind = layer.prefix, _layer_kind(layer)
    lines = []
    if to == "mindspore":
        if "bias" in state and "weight" not in state:
            raise ConversionError("has a bias but no weight: not a torch BatchNorm's state")
        source = TorchSettings(layer.num_features, assumed["eps"], assumed["momentum"],
                               affine="weight" in state,
                               track_running_stats="running_mean" in state,
                               bias="bias" in state or "weight" not in state,
                               dtype=layer.dtype.name)
        target = convert_settings(source, policies)
        assert isinstance(target, MindSporeSettings)
        parameters, notes = torch_state_to_mindspore(state, source)
        outputs = [(mindspore_name(prefix, role, layer.bn2d), parameters[role],
                    layer.names.get(role)) for role in MINDSPORE_ORDER]
        replayed = source if source.momentum is not None else replace(
            source, momentum=policies.momentum_none)
        record = ConvertedLayer(prefix, layer.bn2d, replayed, target)
        setup = target.setup_code("layer", bn2d=layer.bn2d)
    else:
        source_ms = MindSporeSettings(
            layer.num_features, assumed["eps"], assumed["momentum"],
            affine="affine_false" not in layer.marks,
            use_batch_statistics=True if "no_running_stats" in layer.marks else None,
            dtype=layer.dtype.name)
        converted = convert_settings(source_ms, policies)
        assert isinstance(converted, TorchSettings)
        if "no_bias" in layer.marks and converted.affine:
            converted = replace(converted, bias=False)
        torch_state, converted, notes = mindspore_state_to_torch(
            state, converted, policies, counter, layer.marks)
        outputs = [(torch_name(prefix, role), value, layer.names.get(role))
                   for role, value in torch_state.items()]
        record = ConvertedLayer(prefix, layer.bn2d, converted, source_ms)
        target = converted
        setup = converted.setup_code("layer")
    source_names = [name[len(prefix) + 1:] if prefix else name for name in layer.names.values()]
    target_names = [name[len(prefix) + 1:] if prefix else name for name, _, _ in outputs]
    lines.append(Line("layer", prefix, f"{kind}, {layer.num_features} channels, "
                                       f"{layer.dtype}: {', '.join(source_names)} -> "
                                       f"{', '.join(target_names)}"))
    other = "" if layer.bn2d else "  # or BatchNorm1d: the same arguments"
    lines.append(Line("build", prefix, target.code(kind) + other))
    lines += [Line("build", prefix, statement) for statement in setup]
    lines += [Line("policy", prefix, note) for note in target.notes]
    lines += [Line(note.kind, prefix, note.text) for note in notes]
    return outputs, record, lines


def _replay(conversion: Conversion, torch_tensors: Mapping[str, np.ndarray],
            mindspore_tensors: Mapping[str, np.ndarray], steps: int, seed: int) -> list[Line]:
    return [replay_layer(layer.prefix, torch_tensors, layer.torch, mindspore_tensors,
                         layer.mindspore, bn2d=layer.bn2d, steps=steps, seed=seed).line()
            for layer in conversion.layers]


def _pair(source: Checkpoint, converted: Checkpoint, to: str
          ) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]:
    """(torch tensors, MindSpore tensors) of a source and its conversion."""
    if to == "mindspore":
        return source.tensors, converted.tensors
    return converted.tensors, source.tensors


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    to: str,
    *,
    format: str | None = None,
    source_framework: str | None = None,
    selection: Selection | None = None,
    policies: Policies | None = None,
    source_settings: Mapping[str, Any] | None = None,
    counter: int = 0,
    check: bool = False,
    steps: int = 3,
    seed: int = 0,
) -> Report:
    """Convert a checkpoint file's BatchNorm layers to the other framework, into a new file.

    Any of the four formats is read (:func:`~bn3d.convert.formats.read_checkpoint`);
    the output is written atomically: if anything fails, nothing is written.

    Parameters
    ----------
    source : str or os.PathLike
        The checkpoint to convert.
    destination : str or os.PathLike
        The file to write (replaced if it exists).
    to : {'mindspore', 'torch'}
    format : str, optional
        The output format; by default from ``destination``'s suffix
        (:func:`output_format`).
    source_framework, selection, policies, source_settings, counter
        As for :func:`convert_tensors`.
    check : bool, default False
        Prove the conversion by replay: each converted layer is loaded into both
        of bn3d's facades, one from the source file and one from the file written,
        and run on random data (:mod:`bn3d.convert.check`).
    steps, seed : int
        The replay's training steps, and the seed of its data.

    Returns
    -------
    Report
        Its :attr:`~Report.failed` says whether a layer failed the check.

    Raises
    ------
    ConversionError, bn3d.convert.formats.CheckpointError
        Nothing is written then.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bn3d.convert.formats import read_checkpoint, write_checkpoint
    >>> folder = tempfile.mkdtemp()
    >>> write_checkpoint(os.path.join(folder, "model.pth"), {
    ...     "bn.weight": np.array([2.0, 0.5], np.float32),
    ...     "bn.bias": np.array([0.1, -1.0], np.float32),
    ...     "bn.running_mean": np.array([3.0, -2.0], np.float32),
    ...     "bn.running_var": np.array([4.0, 0.25], np.float32),
    ...     "bn.num_batches_tracked": np.array(10)}, "torch")
    >>> report = convert_checkpoint(os.path.join(folder, "model.pth"),
    ...                             os.path.join(folder, "model.ckpt"), "mindspore", check=True)
    >>> report.failed, [line.text[:4] for line in report.of("check")]
    (False, ['pass'])
    >>> list(read_checkpoint(os.path.join(folder, "model.ckpt")).tensors)
    ['bn.bn2d.moving_mean', 'bn.bn2d.moving_variance', 'bn.bn2d.gamma', 'bn.bn2d.beta']
    """
    if to not in FRAMEWORKS:
        raise ConversionError(f"to={to!r}: the target framework is 'mindspore' or 'torch'")
    target_format = output_format(destination, to, format)
    checkpoint = read_checkpoint(source)
    conversion = convert_tensors(
        checkpoint, to, format=target_format, source_framework=source_framework,
        selection=selection, policies=policies, source_settings=source_settings,
        counter=counter, path=source)
    write_checkpoint(destination, conversion.checkpoint, target_format)
    tensors = conversion.checkpoint.tensors
    framework = source_framework or framework_of(checkpoint.format)
    lines = [Line("convert", os.fspath(source),
                  f"{framework} checkpoint ({checkpoint.format}, {len(checkpoint.tensors)} "
                  "tensors) -> "
                  f"{os.fspath(destination)} ({target_format})"),
             *conversion.lines,
             Line("wrote", os.fspath(destination),
                  f"{len(tensors)} tensors; BatchNorm layers converted: "
                  f"{len(conversion.layers)}, tensors passed through: "
                  f"{sum(line.kind == 'passed' for line in conversion.lines)}")]
    if check:
        written = read_checkpoint(destination, target_format)
        lines += _replay(conversion, *_pair(checkpoint, written, to), steps, seed)
    return Report(tuple(lines))


def check_conversion(
    source: str | os.PathLike,
    converted: str | os.PathLike,
    *,
    source_framework: str | None = None,
    selection: Selection | None = None,
    policies: Policies | None = None,
    source_settings: Mapping[str, Any] | None = None,
    counter: int = 0,
    steps: int = 3,
    seed: int = 0,
) -> Report:
    """Prove by replay that ``converted`` holds ``source``'s BatchNorm layers.

    The layers are found in ``source`` as :func:`convert_checkpoint` finds them
    (give the same options); each is loaded into both facades, one from each
    file, and replayed (:mod:`bn3d.convert.check`).

    Returns
    -------
    Report
        One ``check`` line per layer; :attr:`~Report.failed` if one failed.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bn3d.convert.formats import read_checkpoint, write_checkpoint
    >>> folder = tempfile.mkdtemp()
    >>> source, converted = os.path.join(folder, "bn.ckpt"), os.path.join(folder, "bn.pth")
    >>> write_checkpoint(source, {"bn.bn2d.moving_mean": np.array([3.0, -2.0], np.float32),
    ...                           "bn.bn2d.moving_variance": np.array([4.0, 0.25], np.float32),
    ...                           "bn.bn2d.gamma": np.array([2.0, 0.5], np.float32),
    ...                           "bn.bn2d.beta": np.array([0.1, -1.0], np.float32)}, "mindspore")
    >>> _ = convert_checkpoint(source, converted, "torch")
    >>> check_conversion(source, converted).failed
    False
    >>> tampered = read_checkpoint(converted).tensors
    >>> tampered["bn.running_var"] = tampered["bn.running_var"][::-1].copy()
    >>> write_checkpoint(converted, tampered, "torch")
    >>> print(check_conversion(source, converted))  # doctest: +ELLIPSIS
    check    bn: FAIL: largest difference 3.29 in outputs, 3.75 in running statistics ...
    """
    source_checkpoint, written = read_checkpoint(source), read_checkpoint(converted)
    to = framework_of(written.format)
    conversion = convert_tensors(
        source_checkpoint, to, format=written.format, source_framework=source_framework,
        selection=selection, policies=policies, source_settings=source_settings,
        counter=counter, path=source)
    return Report(tuple(_replay(conversion, *_pair(source_checkpoint, written, to), steps,
                                seed)))
