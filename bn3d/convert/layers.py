"""Which tensors of a checkpoint are BatchNorm layers, and their names in each framework.

A **torch BatchNorm group** is a prefix ``P`` with ``P.running_mean`` and
``P.running_var``, plus ``P.weight``, ``P.bias`` and ``P.num_batches_tracked``
as present (``affine=False`` drops the first two, ``bias=False`` the second). A
group does not say whether its layer is a BatchNorm1d, 2d or 3d: by default
every group is taken for a BatchNorm3d; :class:`Selection` narrows that down
with patterns. A layer built with ``track_running_stats=False`` has no running
statistics, so nothing tells it from any layer with a weight and a bias: its
prefix must be marked (``no_running_stats``).

A **MindSpore BatchNorm3d** is a prefix ``P`` with ``P.bn2d.moving_mean``,
``P.bn2d.moving_variance``, ``P.bn2d.gamma`` and ``P.bn2d.beta`` (MindSpore's
BatchNorm3d wraps a BatchNorm2d called ``bn2d``). MindSpore's BatchNorm1d/2d and
SyncBatchNorm have the same parameters without ``bn2d``: they are converted only
if their prefixes are selected (``without_bn2d``), to torch names without
inserting anything.

The names, for a layer at prefix ``P``:

===========================  ===================================================
torch                        MindSpore (BatchNorm3d; without ``bn2d.``: the others)
===========================  ===================================================
``P.weight``                 ``P.bn2d.gamma``
``P.bias``                   ``P.bn2d.beta``
``P.running_mean``           ``P.bn2d.moving_mean``
``P.running_var``            ``P.bn2d.moving_variance``
``P.num_batches_tracked``    (none: MindSpore has no batch counter)
===========================  ===================================================

torch saves them in the order weight, bias, running_mean, running_var,
num_batches_tracked; MindSpore moving_mean, moving_variance, gamma, beta.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .errors import ConversionError
from .patterns import matches, select

__all__ = [
    "FRAMEWORKS",
    "MINDSPORE_NAMES",
    "MINDSPORE_ORDER",
    "TORCH_ORDER",
    "Layer",
    "Layout",
    "Selection",
    "find_layers",
    "mindspore_name",
    "torch_name",
]

FRAMEWORKS = ("torch", "mindspore")
#: The state of a torch BatchNorm, in torch's order (each layer's *roles*).
TORCH_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
#: MindSpore's name for each role it has.
MINDSPORE_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                   "running_var": "moving_variance"}
#: The roles in MindSpore's order.
MINDSPORE_ORDER = ("running_mean", "running_var", "weight", "bias")
_STATISTICS = ("running_mean", "running_var")
_MARKS = ("affine_false", "no_bias", "no_running_stats")


def torch_name(prefix: str, role: str) -> str:
    """The torch name of a layer's state.

    Examples
    --------
    >>> torch_name("layer1.bn", "running_var"), torch_name("", "weight")
    ('layer1.bn.running_var', 'weight')
    """
    return f"{prefix}.{role}" if prefix else role


def mindspore_name(prefix: str, role: str, bn2d: bool = True) -> str:
    """The MindSpore name of a layer's state (``role`` is torch's name).

    Examples
    --------
    >>> mindspore_name("layer1.bn", "running_var"), mindspore_name("bn", "weight", bn2d=False)
    ('layer1.bn.bn2d.moving_variance', 'bn.gamma')
    """
    local = f"bn2d.{MINDSPORE_NAMES[role]}" if bn2d else MINDSPORE_NAMES[role]
    return f"{prefix}.{local}" if prefix else local


def _split(name: str) -> tuple[str, str]:
    prefix, _, local = name.rpartition(".")
    return prefix, local


def _patterns(value: Sequence[str], name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConversionError(f"Selection.{name} is a sequence of patterns, not a string "
                              f"({value!r}): write ({value!r},)")
    patterns = tuple(value)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConversionError(f"Selection.{name}: {pattern!r} is not a pattern (a string)")
    return patterns


@dataclass(frozen=True)
class Selection:
    """Which layers to convert, and how: glob patterns over layer prefixes (tensor names for
    ``exclude``); see :mod:`bn3d.convert.patterns`.

    Each pattern must match something, or the conversion is refused (a
    misspelt pattern would otherwise convert nothing, silently).

    Parameters
    ----------
    layers : sequence of str, default ()
        The BatchNorm3d layers (default: every torch BatchNorm group; every
        MindSpore ``bn2d`` group). Groups not selected are passed through
        unchanged, with a warning.
    without_bn2d : sequence of str, default ()
        BatchNorm layers that are not BatchNorm3d (MindSpore's BatchNorm1d/2d,
        SyncBatchNorm): converted without the ``bn2d`` level.
    affine_false : sequence of str, default ()
        MindSpore to torch: the torch layers are built with ``affine=False``, so
        gamma and beta are dropped (they must be 1 and 0, unless the policy
        ``affine_false_values='keep'`` keeps them).
    no_bias : sequence of str, default ()
        MindSpore to torch: the torch layers are built with ``bias=False``, so
        beta is dropped (it must be 0).
    no_running_stats : sequence of str, default ()
        Layers built with torch ``track_running_stats=False`` / MindSpore
        ``use_batch_statistics=True``. torch to MindSpore: these prefixes (with
        a weight and a bias but no running statistics) are BatchNorm layers, and
        get moving statistics 0 and 1. MindSpore to torch: the moving statistics
        are dropped.
    exclude : sequence of str, default ()
        Tensors left out of the output (optimizer state, say).

    Examples
    --------
    >>> Selection(layers=["encoder.*.bn"], exclude=["moments.**"]).layers
    ('encoder.*.bn',)
    """

    layers: tuple[str, ...] = ()
    without_bn2d: tuple[str, ...] = ()
    affine_false: tuple[str, ...] = ()
    no_bias: tuple[str, ...] = ()
    no_running_stats: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("layers", "without_bn2d", *_MARKS, "exclude"):
            object.__setattr__(self, name, _patterns(getattr(self, name), name))


@dataclass(frozen=True)
class Layer:
    """One BatchNorm layer found in a checkpoint.

    Attributes
    ----------
    prefix : str
        Its name (``''`` for a checkpoint of the layer alone).
    bn2d : bool
        Whether its MindSpore names have the ``bn2d`` level (a BatchNorm3d).
    names : Mapping[str, str]
        role (torch's local name) -> the tensor's name in the source checkpoint,
        for the roles it has.
    num_features : int
    dtype : numpy.dtype
        Of its floating-point tensors.
    marks : frozenset of str
        The :class:`Selection` marks that match it: ``'affine_false'``,
        ``'no_bias'``, ``'no_running_stats'``.
    """

    prefix: str
    bn2d: bool
    names: Mapping[str, str]
    num_features: int
    dtype: np.dtype
    marks: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Layout:
    """What :func:`find_layers` found.

    Attributes
    ----------
    layers : tuple of Layer
        In the order of their first tensor in the checkpoint.
    excluded : tuple of str
        The tensors :attr:`Selection.exclude` leaves out.
    warnings : tuple of (str, str)
        ``(subject, text)``: groups that look like BatchNorm layers but are not
        converted.
    """

    layers: tuple[Layer, ...]
    excluded: tuple[str, ...]
    warnings: tuple[tuple[str, str], ...]


def find_layers(tensors: Mapping[str, np.ndarray], framework: str,
                selection: Selection | None = None,
                path: str | os.PathLike | None = None) -> Layout:
    """Find the BatchNorm layers of a checkpoint's tensors.

    Parameters
    ----------
    tensors : Mapping[str, numpy.ndarray]
        The checkpoint's tensors, in order.
    framework : {'torch', 'mindspore'}
        Whose names they have.
    selection : Selection, optional
    path : str or os.PathLike, optional
        The file, for error messages.

    Returns
    -------
    Layout

    Raises
    ------
    ConversionError
        For a pattern that matches nothing, a layer selected twice, or a layer
        whose tensors are not one BatchNorm's: of different shapes, not 1-D,
        not of one floating-point dtype, a counter that is not one integer, a
        MindSpore layer lacking one of its four parameters.

    Examples
    --------
    >>> import numpy as np
    >>> tensors = {"conv.weight": np.ones((3, 2, 1, 1, 1), np.float32),
    ...            "bn.weight": np.ones(3, np.float32), "bn.bias": np.zeros(3, np.float32),
    ...            "bn.running_mean": np.zeros(3, np.float32),
    ...            "bn.running_var": np.ones(3, np.float32),
    ...            "bn.num_batches_tracked": np.array(7)}
    >>> (layer,) = find_layers(tensors, "torch").layers
    >>> layer.prefix, layer.bn2d, layer.num_features, list(layer.names)
    ('bn', True, 3, ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'])
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework is one of {', '.join(FRAMEWORKS)}, not {framework!r}")
    selection = selection or Selection()
    excluded = select(selection.exclude, tensors, what="tensors", option="exclude (--exclude)",
                      path=path) if selection.exclude else []
    names = [name for name in tensors if name not in set(excluded)]
    finder = _torch_groups if framework == "torch" else _mindspore_groups
    groups, bn3d_candidates, flat_candidates, warnings = finder(names, selection, path)
    flat = select(selection.without_bn2d, flat_candidates, what="BatchNorm groups",
                  option="without_bn2d (--without-bn2d)", path=path)
    chosen = select(selection.layers, bn3d_candidates, what="BatchNorm groups",
                    option="layers (--layers)", path=path) if selection.layers else [
        prefix for prefix in bn3d_candidates if prefix not in flat]
    both = [prefix for prefix in chosen if prefix in flat]
    if both:
        raise ConversionError("is selected both as a BatchNorm3d (layers) and as a BatchNorm "
                              "without bn2d (without_bn2d)", path=path, entry=f"layer {both[0]!r}")
    for prefix in bn3d_candidates:
        if prefix not in chosen and prefix not in flat:
            warnings.append((prefix, "a BatchNorm group that no layers pattern selects: passed "
                                     "through unchanged"))
    selected = [prefix for prefix in groups if prefix in chosen or prefix in flat]
    marks = _marks(selection, framework, selected, path)
    layers = tuple(_layer(prefix, prefix not in flat, groups[prefix], tensors,
                          marks.get(prefix, frozenset()), path) for prefix in selected)
    return Layout(layers, tuple(excluded), tuple(warnings))


_Path = Union[str, os.PathLike, None]
# What a finder returns: the groups (prefix -> {role: name}), the candidates for BatchNorm3d
# and for BatchNorm without bn2d, and warnings (subject, text).
_Groups = tuple[dict[str, dict[str, str]], list[str], list[str], list[tuple[str, str]]]


def _torch_groups(names: list[str], selection: Selection, path: _Path) -> _Groups:
    """The torch BatchNorm groups (prefix -> {role: name}), the candidates for BatchNorm3d and
    for BatchNorm without bn2d (every group is both), and warnings (none)."""
    present = set(names)
    by_prefix: dict[str, dict[str, str]] = {}
    for name in names:
        prefix, local = _split(name)
        if local in TORCH_ORDER:
            by_prefix.setdefault(prefix, {})[local] = name
    groups = {prefix: members for prefix, members in by_prefix.items()
              if all(torch_name(prefix, role) in present for role in _STATISTICS)}
    if selection.no_running_stats:
        candidates = [prefix for prefix, members in by_prefix.items()
                      if "weight" in members or "bias" in members]
        for prefix in select(selection.no_running_stats, candidates,
                             what="prefixes with a weight or a bias",
                             option="no_running_stats (--no-running-stats)", path=path):
            if prefix in groups:
                raise ConversionError(
                    "is marked no_running_stats (track_running_stats=False) but has running "
                    "statistics", path=path, entry=f"layer {prefix!r}")
            groups[prefix] = {role: name for role, name in by_prefix[prefix].items()
                              if role in ("weight", "bias")}
    groups = {prefix: groups[prefix] for prefix in by_prefix if prefix in groups}  # file order
    for prefix, members in groups.items():
        groups[prefix] = {role: members[role] for role in TORCH_ORDER if role in members}
    return groups, list(groups), list(groups), []


def _mindspore_groups(names: list[str], selection: Selection, path: _Path) -> _Groups:
    """The MindSpore BatchNorm layers (prefix -> {role: name}), the candidates for BatchNorm3d
    (with bn2d) and for BatchNorm without bn2d, and warnings for the latter not selected."""
    present = set(names)
    groups: dict[str, dict[str, str]] = {}
    flat: list[str] = []
    for name in names:
        prefix, local = _split(name)
        if local != "moving_mean":
            continue
        owner, _, level = prefix.rpartition(".")
        bn2d = level == "bn2d"
        layer = owner if bn2d else prefix
        if mindspore_name(layer, "running_var", bn2d) not in present:
            continue
        groups[layer] = {role: mindspore_name(layer, role, bn2d) for role in MINDSPORE_ORDER}
        if not bn2d:
            flat.append(layer)
    warnings = []
    for layer in flat:
        if not any(matches(pattern, layer) for pattern in selection.without_bn2d):
            warnings.append((layer, "looks like a BatchNorm without bn2d (MindSpore's "
                                    "BatchNorm1d/2d, SyncBatchNorm): passed through unchanged; "
                                    "select it with without_bn2d (--without-bn2d) to convert it"))
    for members in groups.values():
        missing = [name for name in members.values() if name not in present]
        if missing:
            raise ConversionError(
                "is missing: a MindSpore BatchNorm saves moving_mean, moving_variance, gamma and "
                "beta", path=path, entry=f"tensor {missing[0]!r}")
    bn3d = [layer for layer in groups if layer not in flat]
    return groups, bn3d, flat, warnings


def _marks(selection: Selection, framework: str, selected: list[str],
           path: _Path) -> dict[str, frozenset[str]]:
    """prefix -> the marks that match it."""
    marks: dict[str, set[str]] = {}
    for mark in _MARKS:
        patterns = getattr(selection, mark)
        if not patterns:
            continue
        if framework == "torch" and mark != "no_running_stats":
            raise ConversionError(
                f"Selection.{mark} (--{mark.replace('_', '-')}) is for MindSpore checkpoints: a "
                "torch checkpoint shows affine=False (no weight) and bias=False (no bias) itself")
        if framework == "torch":  # already used to find the groups
            matched = [prefix for prefix in selected
                       if any(matches(pattern, prefix) for pattern in patterns)]
        else:
            matched = select(patterns, selected, what="BatchNorm layers converted",
                             option=f"{mark} (--{mark.replace('_', '-')})", path=path)
        for prefix in matched:
            marks.setdefault(prefix, set()).add(mark)
    return {prefix: frozenset(found) for prefix, found in marks.items()}


def _layer(prefix: str, bn2d: bool, names: Mapping[str, str], tensors: Mapping[str, np.ndarray],
           marks: frozenset[str], path: _Path) -> Layer:
    """The layer, its tensors checked to be one BatchNorm's."""
    first = None
    for role, name in names.items():
        array = tensors[name]
        entry = f"tensor {name!r}"
        if role == "num_batches_tracked":
            if array.dtype.kind not in "iu" or array.size != 1 or array.ndim > 1:
                raise ConversionError(
                    f"is {array.dtype} of shape {list(array.shape)}; num_batches_tracked is one "
                    "integer (int64, shape [])", path=path, entry=entry)
            continue
        if array.dtype.kind != "f":
            raise ConversionError(
                f"is {array.dtype}; a BatchNorm's {role} holds floating-point numbers",
                path=path, entry=entry)
        if array.ndim != 1 or array.size == 0:
            raise ConversionError(
                f"has shape {list(array.shape)}; a BatchNorm's {role} has one value per channel "
                "(shape [C], C >= 1)", path=path, entry=entry)
        if first is None:
            first = (name, array)
        elif array.shape != first[1].shape or array.dtype != first[1].dtype:
            raise ConversionError(
                f"is {array.dtype} of shape {list(array.shape)} where {first[0]!r} of the same "
                f"layer is {first[1].dtype} of shape {list(first[1].shape)}: a BatchNorm's "
                "tensors have one value per channel, in one dtype", path=path, entry=entry)
    if first is None:
        raise ConversionError("has no weight, bias nor statistics to convert", path=path,
                              entry=f"layer {prefix!r}")
    return Layer(prefix, bn2d, dict(names), first[1].shape[0], first[1].dtype, marks)

