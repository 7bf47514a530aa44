"""bn3d's torch facade to its MindSpore facade and back, settings and state.

:func:`to_mindspore` turns a :class:`bn3d.torch_nn.BatchNorm3d` into the
equivalent :class:`bn3d.mindspore_nn.BatchNorm3d`, and :func:`to_torch` the
reverse: the settings through :func:`~bn3d.convert.convert_settings`, the state
through :mod:`bn3d.convert.state`, the mode (training or not) carried over.
:func:`torch_module` and :func:`mindspore_cell` build a facade from settings;
the proof by replay (:mod:`bn3d.convert.check`) builds its layers with them too.
"""

from __future__ import annotations

from .. import mindspore_nn, torch_nn
from .layers import MINDSPORE_NAMES
from .policies import Policies
from .settings import MindSporeSettings, TorchSettings, convert_settings
from .state import mindspore_state_to_torch, torch_state_to_mindspore

__all__ = ["mindspore_cell", "to_mindspore", "to_torch", "torch_module"]


def torch_module(settings: TorchSettings) -> torch_nn.BatchNorm3d:
    """A new torch facade built with ``settings`` (in eval mode if it is to be kept there).

    Examples
    --------
    >>> torch_module(TorchSettings(4, momentum=None, keep_eval=True)).training
    False
    """
    module = torch_nn.BatchNorm3d(**settings.arguments())
    return module.eval() if settings.keep_eval else module


def mindspore_cell(settings: MindSporeSettings) -> mindspore_nn.BatchNorm3d:
    """A new MindSpore facade built with ``settings``, its ``frozen`` parameters frozen.

    The initialisers are not used: the parameters start as MindSpore's defaults,
    for the caller to set.

    Examples
    --------
    >>> [p.name for p in mindspore_cell(MindSporeSettings(4, frozen=("beta",))).trainable_params()]
    ['bn2d.gamma']
    """
    arguments = {name: value for name, value in settings.arguments().items()
                 if not name.endswith("_init")}
    cell = mindspore_nn.BatchNorm3d(**arguments)
    for name in settings.frozen:
        getattr(cell.bn2d, name).requires_grad = False
    return cell


def to_mindspore(module: torch_nn.BatchNorm3d, *,
                 policies: Policies | None = None) -> mindspore_nn.BatchNorm3d:
    """The MindSpore facade equivalent to a torch facade, with its state and mode.

    The momentum becomes ``1 - momentum``, ``track_running_stats`` becomes
    ``use_batch_statistics`` (True -> None, False -> True), and the state is
    copied: weight/bias to gamma/beta (1 and 0 for ``affine=False``), the running
    statistics to the moving ones (0 and 1 without them); the counter is dropped
    (MindSpore has none). A module in training mode gives a cell in training
    mode (``set_train()``).

    Parameters
    ----------
    module : bn3d.torch_nn.BatchNorm3d
    policies : Policies, optional
        For ``momentum=None`` and ``bias=False``, which have no exact MindSpore
        equivalent (refused without a policy).

    Returns
    -------
    bn3d.mindspore_nn.BatchNorm3d

    Raises
    ------
    ConversionError
        For a setting refused (see :func:`~bn3d.convert.convert_settings`).

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.torch_nn import BatchNorm3d
    >>> module = BatchNorm3d(2, momentum=0.3)
    >>> x = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2, 1)
    >>> _ = module(x)
    >>> cell = to_mindspore(module)
    >>> cell.bn2d.moving_mean.asnumpy(), cell.training, 1 - cell.bn2d.momentum
    (array([1.65, 2.85], dtype=float32), True, 0.7)
    >>> bool(np.array_equal(cell(x), module(x)))
    True
    """
    settings = TorchSettings.of(module)
    target = convert_settings(settings, policies)
    assert isinstance(target, MindSporeSettings)
    parameters, _ = torch_state_to_mindspore(module.state_dict(), settings)
    cell = mindspore_cell(target)
    by_name = cell.parameters_dict()
    for role, value in parameters.items():
        by_name[f"bn2d.{MINDSPORE_NAMES[role]}"].set_data(value)
    return cell.set_train(module.training)


def to_torch(cell: mindspore_nn.BatchNorm3d, *, counter: int = 0,
             policies: Policies | None = None) -> torch_nn.BatchNorm3d:
    """The torch facade equivalent to a MindSpore facade, with its state and mode.

    The momentum becomes ``1 - momentum``, ``use_batch_statistics`` becomes
    ``track_running_stats`` (None -> True, True -> False), and the parameters
    are copied: gamma/beta to weight/bias (dropped for an ``affine=False`` cell
    whose gamma/beta are 1 and 0), the moving statistics to the running ones;
    ``num_batches_tracked`` is ``counter``. A cell in training mode gives a
    module in training mode.

    Parameters
    ----------
    cell : bn3d.mindspore_nn.BatchNorm3d
    counter : int, default 0
        The ``num_batches_tracked`` to give the module.
    policies : Policies, optional
        For ``use_batch_statistics=False`` and ``affine=False`` with gamma/beta
        other than 1/0, which have no exact torch equivalent (refused without a
        policy).

    Returns
    -------
    bn3d.torch_nn.BatchNorm3d

    Raises
    ------
    ConversionError
        For a setting refused.

    Examples
    --------
    >>> import numpy as np
    >>> from bn3d.mindspore_nn import BatchNorm3d
    >>> cell = BatchNorm3d(2, momentum=0.99, affine=False, use_batch_statistics=True)
    >>> module = to_torch(cell)
    >>> module
    BatchNorm3d(2, eps=1e-05, momentum=0.01, affine=False, bias=False, track_running_stats=False)
    >>> x = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2, 1)
    >>> bool(np.array_equal(module(x), cell(x)))
    True
    """
    settings = MindSporeSettings.of(cell)
    target = convert_settings(settings, policies)
    assert isinstance(target, TorchSettings)
    parameters = {role: cell.parameters_dict()[f"bn2d.{name}"].asnumpy()
                  for role, name in MINDSPORE_NAMES.items()}
    state, target, _ = mindspore_state_to_torch(parameters, target, policies, counter)
    module = torch_module(target)
    module.load_state_dict(state)
    return module.train(bool(cell.training) and not target.keep_eval)

