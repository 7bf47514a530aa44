"""The implementations a check runs on: bn3d's two facades and the real frameworks.

An *implementation* is one ``BatchNorm3d`` of one *framework*:

======================  ===========  ==========================================
implementation          framework    module
======================  ===========  ==========================================
``torch-facade``        torch        :class:`bn3d.torch_nn.BatchNorm3d`
``mindspore-facade``    mindspore    :class:`bn3d.mindspore_nn.BatchNorm3d`
``torch``               torch        ``torch.nn.BatchNorm3d`` (where it imports)
``mindspore``           mindspore    ``mindspore.nn.BatchNorm3d`` (where it imports)
======================  ===========  ==========================================

:func:`open_implementation` returns an :class:`Implementation`, the small
interface the runner drives: build the module, switch its mode, call it on a
numpy array, and read its state back as numpy arrays. The adapters of the real
frameworks only convert arrays to and from the framework's tensors.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "FACADES",
    "FRAMEWORKS",
    "FRAMEWORK_OF",
    "IMPLEMENTATIONS",
    "MODES",
    "Implementation",
    "ImplementationUnavailable",
    "open_implementation",
    "plain",
]

FRAMEWORKS = ("torch", "mindspore")
IMPLEMENTATIONS = ("torch-facade", "mindspore-facade", "torch", "mindspore")
FRAMEWORK_OF = {
    "torch-facade": "torch",
    "torch": "torch",
    "mindspore-facade": "mindspore",
    "mindspore": "mindspore",
}
#: framework -> bn3d's facade of it (which runs the other framework's side of a check).
FACADES = {"torch": "torch-facade", "mindspore": "mindspore-facade"}
#: framework -> the modes a side can set (``'default'``: as constructed).
MODES = {
    "torch": ("default", "train", "eval"),
    "mindspore": ("default", "set_train", "set_train(False)"),
}
# MindSpore appends this (and a C++ call stack) to the messages of its primitives' errors.
_MINDSPORE_STACK_MARKER = "\n\n----------------------------------------------------\n"


class ImplementationUnavailable(Exception):
    """The implementation's module does not import here; the message says why."""


def plain(value: Any) -> Any:
    """``value`` with tensors and Parameters turned into numpy arrays (copies).

    Parameters
    ----------
    value : object
        A torch tensor, a MindSpore Tensor or Parameter (real or bn3d's), a
        numpy array, or anything else (returned as it is).

    Returns
    -------
    object

    Examples
    --------
    >>> import numpy as np
    >>> plain(np.float32(2.0)), plain(None), plain(np.ones(2)).tolist()
    (2.0, None, [1.0, 1.0])
    """
    if hasattr(value, "asnumpy"):  # MindSpore Tensor / Parameter, bn3d's Parameter
        return np.array(value.asnumpy())
    if hasattr(value, "detach"):  # torch.Tensor
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Implementation(abc.ABC):
    """One implementation's ``BatchNorm3d``, driven by the runner.

    Parameters
    ----------
    name : str
        One of :data:`IMPLEMENTATIONS`.
    module_class : type
        The ``BatchNorm3d`` class to build.
    """

    framework: ClassVar[str]
    input_keyword: ClassVar[str]
    stats_paths: ClassVar[tuple[str, str]]
    scale_shift_paths: ClassVar[tuple[str, str]]

    def __init__(self, name: str, module_class: type) -> None:
        self.name = name
        self._module_class = module_class
        self.module: Any = None

    def __str__(self) -> str:
        return self.name

    def build(self, arguments: Mapping[str, Any]) -> None:
        """Construct the module; numpy array arguments become the framework's arrays."""
        self.module = self._module_class(
            **{name: self._argument(value) for name, value in arguments.items()}
        )

    @abc.abstractmethod
    def set_mode(self, mode: str) -> None:
        """Switch the module's mode, one of :data:`MODES` (``'default'`` leaves it as it is)."""

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        """Load state ``values`` after construction (only torch's modules can)."""
        raise NotImplementedError(f"{self.name} does not load state")

    def forward(self, x: np.ndarray, keyword: bool = False) -> np.ndarray:
        """Call the module on ``x`` (by its documented keyword if ``keyword``)."""
        data = self._tensor(x)
        output = self.module(**{self.input_keyword: data}) if keyword else self.module(data)
        return plain(output)  # type: ignore[no-any-return]

    def value(self, path: str) -> Any:
        """The module's attribute at dotted ``path``, as :func:`plain` returns it."""
        value = self.module
        for name in path.split("."):
            value = getattr(value, name)
        return plain(value)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Copies of the running (moving) mean and variance, or None if there are none."""
        mean, var = (self.value(path) for path in self.stats_paths)
        if mean is None or var is None:
            return None
        return np.asarray(mean), np.asarray(var)

    def scale_shift(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Copies of the scale (weight / gamma) and shift (bias / beta), None where absent."""
        scale, shift = (self.value(path) for path in self.scale_shift_paths)
        return scale, shift

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """The module's saved state by name, in the framework's order, as :func:`plain` gives
        it: torch's ``state_dict()``, MindSpore's ``parameters_dict()``."""

    def state_keys(self) -> list[str]:
        """The names of the module's saved state, in the framework's order."""
        return list(self.state())

    def trainable(self) -> list[str]:
        """The names of the trainable parameters (only MindSpore's modules list them)."""
        raise NotImplementedError(f"{self.name} does not list trainable parameters")

    def error_message(self, error: BaseException) -> str:
        """The message the user reads first."""
        return str(error)

    def _argument(self, value: Any) -> Any:
        return value

    def _tensor(self, array: np.ndarray) -> Any:
        return array


class TorchImplementation(Implementation):
    """``torch.nn.BatchNorm3d`` or bn3d's facade of it."""

    framework = "torch"
    input_keyword = "input"
    stats_paths = ("running_mean", "running_var")
    scale_shift_paths = ("weight", "bias")

    def set_mode(self, mode: str) -> None:
        if mode == "train":
            self.module.train()
        elif mode == "eval":
            self.module.eval()

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        """Load ``values`` with ``load_state_dict(strict=False)``."""
        self.module.load_state_dict(
            {name: self._tensor(value) for name, value in values.items()}, strict=False
        )

    def state(self) -> dict[str, Any]:
        return {name: plain(value) for name, value in self.module.state_dict().items()}


class RealTorch(TorchImplementation):
    """``torch.nn.BatchNorm3d`` with numpy arrays converted to and from tensors."""

    def __init__(self, name: str, module_class: type, torch: Any) -> None:
        super().__init__(name, module_class)
        self._torch = torch

    def forward(self, x: np.ndarray, keyword: bool = False) -> np.ndarray:
        with self._torch.no_grad():
            return super().forward(x, keyword)

    def _argument(self, value: Any) -> Any:
        if isinstance(value, str) and isinstance(getattr(self._torch, value, None),
                                                 self._torch.dtype):
            return getattr(self._torch, value)  # dtype="float64" -> torch.float64
        return value

    def _tensor(self, array: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array))


class MindSporeImplementation(Implementation):
    """``mindspore.nn.BatchNorm3d`` or bn3d's facade of it."""

    framework = "mindspore"
    input_keyword = "x"
    stats_paths = ("bn2d.moving_mean", "bn2d.moving_variance")
    scale_shift_paths = ("bn2d.gamma", "bn2d.beta")

    def set_mode(self, mode: str) -> None:
        if mode == "set_train":
            self.module.set_train()
        elif mode == "set_train(False)":
            self.module.set_train(False)

    def state(self) -> dict[str, Any]:
        return {name: plain(value) for name, value in self.module.parameters_dict().items()}

    def trainable(self) -> list[str]:
        """The names of the trainable parameters, in MindSpore's order."""
        return [parameter.name for parameter in self.module.trainable_params()]


class RealMindSpore(MindSporeImplementation):
    """``mindspore.nn.BatchNorm3d`` with numpy arrays converted to and from Tensors."""

    def __init__(self, name: str, module_class: type, mindspore: Any) -> None:
        super().__init__(name, module_class)
        self._mindspore = mindspore

    def error_message(self, error: BaseException) -> str:
        return str(error).split(_MINDSPORE_STACK_MARKER)[0]

    def _argument(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return self._tensor(value)  # MindSpore wants a Tensor initialiser
        if isinstance(value, str) and isinstance(getattr(self._mindspore, value, None),
                                                 self._mindspore.dtype.Type):
            return getattr(self._mindspore, value)  # dtype="float16" -> mindspore.float16
        return value

    def _tensor(self, array: np.ndarray) -> Any:
        return self._mindspore.Tensor(np.ascontiguousarray(array))


def _facade_class(module_name: str) -> type:
    """``BatchNorm3d`` of a bn3d facade module, looked up now (so tests can patch it)."""
    return importlib.import_module(module_name).BatchNorm3d  # type: ignore[no-any-return]


def _framework(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as error:  # a broken install raises OSError, RuntimeError, ...
        raise ImplementationUnavailable(f"{name} is not importable ({error})") from error


def open_implementation(name: str) -> Implementation:
    """A fresh :class:`Implementation` called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`IMPLEMENTATIONS`.

    Returns
    -------
    Implementation

    Raises
    ------
    ImplementationUnavailable
        If the implementation's module does not import here.
    ValueError
        If ``name`` is not one of :data:`IMPLEMENTATIONS`.

    Examples
    --------
    >>> implementation = open_implementation("torch-facade")
    >>> implementation.framework, str(implementation)
    ('torch', 'torch-facade')
    """
    if name == "torch-facade":
        return TorchImplementation(name, _facade_class("bn3d.torch_nn"))
    if name == "mindspore-facade":
        return MindSporeImplementation(name, _facade_class("bn3d.mindspore_nn"))
    if name == "torch":
        torch = _framework("torch")
        return RealTorch(name, torch.nn.BatchNorm3d, torch)
    if name == "mindspore":
        mindspore = _framework("mindspore")
        return RealMindSpore(name, mindspore.nn.BatchNorm3d, mindspore)
    raise ValueError(f"unknown implementation {name!r}; expected one of "
                     f"{', '.join(IMPLEMENTATIONS)}")
