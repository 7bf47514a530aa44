"""Carry a model's BatchNorm layers between PyTorch and MindSpore: checkpoints, settings,
modules, with a report of every choice and a proof by replay.

- Checkpoints: :func:`convert_checkpoint` converts a file of either framework (any
  of the four formats of :mod:`bn3d.convert.formats`) into the other's, renaming
  the BatchNorm layers' tensors (``P.running_mean`` <-> ``P.bn2d.moving_mean``...)
  and passing every other tensor through with its name; ``bn3d convert`` is its
  command line. :func:`check_conversion` proves a pair of files by replay.
- Settings: :class:`TorchSettings` and :class:`MindSporeSettings` hold a layer's
  constructor arguments; :func:`convert_settings` converts them (momentum ``m``
  <-> ``1 - m``, ``track_running_stats`` <-> ``use_batch_statistics``...) and
  ``code()`` prints the line to paste.
- Modules: :func:`to_mindspore` and :func:`to_torch` turn bn3d's torch facade into
  its MindSpore facade and back, with the state and the mode.

Settings with no exact equivalent (torch ``momentum=None``, torch ``bias=False``,
MindSpore ``use_batch_statistics=False``, MindSpore ``affine=False`` with gamma/beta
other than 1/0, MindSpore initialisers other than the defaults) are refused with
a :class:`ConversionError` that explains why, unless the user chooses a policy
(:class:`Policies`); what a checkpoint cannot say is handled by documented
defaults. Every choice is one line of the :class:`Report`.

The modules, one job each: :mod:`~bn3d.convert.layers` (finding BatchNorm layers,
their names), :mod:`~bn3d.convert.patterns` (glob patterns),
:mod:`~bn3d.convert.settings`, :mod:`~bn3d.convert.policies`,
:mod:`~bn3d.convert.state` (one layer's state), :mod:`~bn3d.convert.modules`,
:mod:`~bn3d.convert.checkpoints`, :mod:`~bn3d.convert.check` (the replay),
:mod:`~bn3d.convert.report`, :mod:`~bn3d.convert.errors`, and
:mod:`~bn3d.convert.formats` (the files).
"""

from .checkpoints import (
    Conversion,
    check_conversion,
    convert_checkpoint,
    convert_tensors,
    output_format,
)
from .errors import ConversionError
from .layers import Selection
from .modules import to_mindspore, to_torch
from .policies import Policies
from .report import Line, Report
from .settings import (
    Initialiser,
    MindSporeSettings,
    TorchSettings,
    complement_momentum,
    convert_settings,
)

__all__ = [
    "Conversion",
    "ConversionError",
    "Initialiser",
    "Line",
    "MindSporeSettings",
    "Policies",
    "Report",
    "Selection",
    "TorchSettings",
    "check_conversion",
    "complement_momentum",
    "convert_checkpoint",
    "convert_settings",
    "convert_tensors",
    "output_format",
    "to_mindspore",
    "to_torch",
]
