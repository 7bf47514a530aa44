"""Proof by replay: a converted layer behaves as its source, on both of bn3d's facades.

For each converted layer, :func:`replay_layer` builds a
:class:`bn3d.torch_nn.BatchNorm3d` from the torch checkpoint's tensors and a
:class:`bn3d.mindspore_nn.BatchNorm3d` from the MindSpore checkpoint's, each
through the names its facade itself uses (``state_dict()`` keys,
``parameters_dict()`` keys) and never through the converter's table of names, so
that a tensor converted under the wrong name or with the wrong value shows. It
then feeds both the same random data: one call in inference mode (the loaded
statistics normalise), several training steps (the batch statistics normalise,
and update the running statistics with the converted momentum), one more call
in inference mode. After every call it compares the outputs, and the running
statistics with the moving ones, with the spec's error (``|a - b| / max(1, |b|)``).

The tolerance is the spec's between the two frameworks in float32,
:data:`FLOAT32_TOLERANCE`, scaled by the machine epsilon for the other float
types.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from ..spec.oracle import max_error
from .layers import torch_name
from .modules import mindspore_cell, torch_module
from .report import Line
from .settings import MindSporeSettings, TorchSettings

__all__ = ["FLOAT32_TOLERANCE", "LayerCheck", "replay_layer", "tolerance"]

#: The spec's tolerance between the frameworks' outputs and statistics in float32
#: (``outputs_match`` and ``running_stats_match`` in ``spec/parameters.yaml``).
FLOAT32_TOLERANCE = 2e-6
#: The shape of each batch, channels aside: (N, D, H, W).
_BATCH = (4, 2, 3, 4)


def tolerance(dtype: str | np.dtype) -> float:
    """The largest allowed error for a layer of ``dtype``: 2e-6 in float32, scaled by epsilon.

    Examples
    --------
    >>> tolerance("float32"), tolerance("float16") / tolerance("float32")
    (2e-06, 8192.0)
    """
    return FLOAT32_TOLERANCE * float(np.finfo(dtype).eps / np.finfo(np.float32).eps)


@dataclass(frozen=True)
class LayerCheck:
    """What the replay of one layer found.

    Attributes
    ----------
    layer : str
        The layer's prefix.
    dtype : str
    tolerance : float
    steps : int
        The training steps (between two inference calls).
    output_error : float
        The largest error between the two facades' outputs.
    statistics_error : float or None
        The largest error between torch's running and MindSpore's moving
        statistics, after any call (None when the torch layer has none).
    momenta : tuple of float
        The torch and the MindSpore momentum replayed.
    problem : str or None
        Why the layer could not be replayed (a missing tensor, an error raised).
    """

    layer: str
    dtype: str
    tolerance: float
    steps: int
    output_error: float = 0.0
    statistics_error: float | None = None
    momenta: tuple[float | None, float] = (0.1, 0.9)
    problem: str | None = None

    @property
    def failed(self) -> bool:
        """Whether it could not be replayed, or an error exceeds the tolerance (or is NaN)."""
        errors = [self.output_error] + ([] if self.statistics_error is None
                                        else [self.statistics_error])
        return self.problem is not None or not all(error <= self.tolerance for error in errors)

    def line(self) -> Line:
        """The report's ``check`` line."""
        if self.problem is not None:
            return Line("check", self.layer, f"FAIL: {self.problem}", failed=True)
        largest = f"largest difference {self.output_error:.3g} in outputs"
        if self.statistics_error is not None:
            largest += f", {self.statistics_error:.3g} in running statistics"
        torch_momentum, mindspore_momentum = self.momenta
        text = (f"{largest} (tolerance {self.tolerance:.3g}, {self.dtype}) over 1 inference "
                f"call, {self.steps} training steps and 1 inference call on random data, "
                f"momentum {torch_momentum} (torch) / {mindspore_momentum} (MindSpore)")
        return Line("check", self.layer, f"{'FAIL' if self.failed else 'pass'}: {text}",
                    failed=self.failed)


def _tensor(tensors: Mapping[str, np.ndarray], name: str, framework: str) -> np.ndarray:
    if name not in tensors:
        raise LookupError(f"the {framework} checkpoint has no {name!r}")
    return tensors[name]


def _batches(layer: str, mean: np.ndarray | None, var: np.ndarray | None, channels: int,
             count: int, seed: int, dtype: str) -> list[np.ndarray]:
    """Random batches, per channel around the running statistics where there are some."""
    rng = np.random.default_rng([seed, zlib.crc32(layer.encode("utf-8"))])
    center = np.zeros(channels) if mean is None else np.nan_to_num(
        np.asarray(mean, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    spread = np.ones(channels) if var is None else np.sqrt(np.nan_to_num(
        np.abs(np.asarray(var, np.float64)), nan=1.0, posinf=1.0))
    spread[spread == 0] = 1.0
    shape = (_BATCH[0], channels, *_BATCH[1:])
    per_channel = (1, channels, 1, 1, 1)
    return [(center.reshape(per_channel) + spread.reshape(per_channel)
             * rng.standard_normal(shape)).astype(dtype) for _ in range(count)]


def replay_layer(
    layer: str,
    torch_tensors: Mapping[str, np.ndarray],
    torch_settings: TorchSettings,
    mindspore_tensors: Mapping[str, np.ndarray],
    mindspore_settings: MindSporeSettings,
    *,
    bn2d: bool = True,
    steps: int = 3,
    seed: int = 0,
) -> LayerCheck:
    """Replay one converted layer on both facades, loaded from the two checkpoints' tensors.

    Parameters
    ----------
    layer : str
        The layer's prefix.
    torch_tensors, mindspore_tensors : Mapping[str, numpy.ndarray]
        The torch and the MindSpore checkpoint's tensors (one is the source, the
        other the conversion).
    torch_settings, mindspore_settings : TorchSettings, MindSporeSettings
        How each framework's layer is built.
    bn2d : bool, default True
        Whether the MindSpore names have the ``bn2d`` level (a BatchNorm3d).
    steps : int, default 3
        Training steps between the two inference calls.
    seed : int, default 0
        Of the random data (with the layer's name).

    Returns
    -------
    LayerCheck

    Examples
    --------
    >>> import numpy as np
    >>> torch_tensors = {"bn.weight": np.array([2.0, 0.5], np.float32),
    ...                  "bn.bias": np.array([0.1, -1.0], np.float32),
    ...                  "bn.running_mean": np.array([3.0, -2.0], np.float32),
    ...                  "bn.running_var": np.array([4.0, 0.25], np.float32),
    ...                  "bn.num_batches_tracked": np.array(10)}
    >>> mindspore_tensors = {"bn.bn2d.moving_mean": np.array([3.0, -2.0], np.float32),
    ...                      "bn.bn2d.moving_variance": np.array([4.0, 0.25], np.float32),
    ...                      "bn.bn2d.gamma": np.array([2.0, 0.5], np.float32),
    ...                      "bn.bn2d.beta": np.array([0.1, -1.0], np.float32)}
    >>> check = replay_layer("bn", torch_tensors, TorchSettings(2), mindspore_tensors,
    ...                      MindSporeSettings(2))
    >>> check.failed, check.output_error <= 2e-6
    (False, True)
    >>> swapped = dict(mindspore_tensors, **{"bn.bn2d.gamma": np.array([0.5, 2.0], np.float32)})
    >>> replay_layer("bn", torch_tensors, TorchSettings(2), swapped, MindSporeSettings(2)).failed
    True
    """
    check = LayerCheck(layer, torch_settings.dtype, tolerance(torch_settings.dtype), steps,
                       momenta=(torch_settings.momentum, mindspore_settings.momentum))
    try:
        module = torch_module(torch_settings)
        module.load_state_dict({key: _tensor(torch_tensors, torch_name(layer, key), "torch")
                                for key in module.state_dict()})
        cell = mindspore_cell(mindspore_settings)
        for key, parameter in cell.parameters_dict().items():
            local = key if bn2d else key.partition(".")[2]
            name = f"{layer}.{local}" if layer else local
            parameter.set_data(_tensor(mindspore_tensors, name, "MindSpore"))
    except (LookupError, ValueError, TypeError, RuntimeError) as error:
        return replace(check, problem=f"cannot load the layer: {error}")
    modes = [False] + [True] * steps + [False]
    batches = _batches(layer, module.running_mean, module.running_var,
                       torch_settings.num_features, len(modes), seed, torch_settings.dtype)
    output_error, statistics_error = 0.0, None
    for call, (training, x) in enumerate(zip(modes, batches)):
        module.train(training and not torch_settings.keep_eval)
        cell.set_train(training)
        try:
            torch_output, mindspore_output = module(x), cell(x)
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as error:
            return replace(check, problem=f"call {call} raised {type(error).__name__}: {error}")
        output_error = max(output_error, max_error(torch_output, mindspore_output))
        if module.running_mean is not None and module.running_var is not None:
            difference = max(max_error(module.running_mean, cell.moving_mean.asnumpy()),
                             max_error(module.running_var, cell.moving_variance.asnumpy()))
            statistics_error = difference if statistics_error is None else max(
                statistics_error, difference)
    return replace(check, output_error=output_error, statistics_error=statistics_error)

