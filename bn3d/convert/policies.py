"""The policies: what the user chooses where a setting has no exact equivalent.

Without a policy, such a setting is refused with a :class:`~bn3d.convert.ConversionError`
that explains why and names the policy. Each policy used is stated in the report
(a ``policy`` line) and in the converted settings' ``notes``.

- torch ``momentum=None`` (a cumulative average): ``momentum_none=M``
  (``--momentum-none M``) uses the fixed torch momentum ``M`` instead, MindSpore's
  ``1 - M``;
- torch ``bias=False``: ``bias_false="zero-beta"`` (``--bias-false zero-beta``) fixes
  MindSpore's beta at 0, frozen (not trainable);
- MindSpore ``affine=False`` with gamma/beta other than 1/0 (which MindSpore applies):
  ``affine_false_values="keep"`` (``--affine-false-values keep``) gives torch
  ``affine=True`` with those values as weight and bias, to be frozen;
- MindSpore ``use_batch_statistics=False``: ``use_batch_statistics_false="eval"`` gives
  torch ``track_running_stats=True``, kept in eval mode;
- MindSpore initialisers other than ones/zeros/zeros/ones, going to torch:
  ``initialisers="ignore"`` keeps torch's own initial values (1, 0, 0, 1: fine when a
  checkpoint is loaded afterwards); ``initialisers="init-calls"`` adds the
  ``torch.nn.init`` calls with the same distributions or values.

The last two concern settings only (a checkpoint says nothing of them), so the
``bn3d convert`` command has no option for them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from .errors import ConversionError

__all__ = ["POLICY_CHOICES", "Policies"]

#: The choices of each policy that takes a name.
POLICY_CHOICES = {
    "bias_false": ("zero-beta",),
    "affine_false_values": ("keep",),
    "use_batch_statistics_false": ("eval",),
    "initialisers": ("ignore", "init-calls"),
}


@dataclass(frozen=True)
class Policies:
    """The policies chosen for settings with no exact equivalent (None: refuse them).

    Parameters
    ----------
    momentum_none : float, optional
        For torch ``momentum=None``: the fixed torch momentum (in [0, 1]) to use
        instead; MindSpore gets ``1 - momentum_none``.
    bias_false : {'zero-beta'}, optional
        For torch ``bias=False``: MindSpore's beta is 0 and frozen.
    affine_false_values : {'keep'}, optional
        For MindSpore ``affine=False`` with gamma/beta other than ones/zeros
        (which MindSpore applies): torch ``affine=True`` with those values as
        weight and bias, which should be frozen.
    use_batch_statistics_false : {'eval'}, optional
        For MindSpore ``use_batch_statistics=False`` (moving statistics, never
        updated, in every mode): torch ``track_running_stats=True``, kept in
        eval mode.
    initialisers : {'ignore', 'init-calls'}, optional
        For MindSpore initialisers other than the defaults, going to torch:
        ``'ignore'`` keeps torch's own initial values; ``'init-calls'`` adds the
        ``torch.nn.init`` calls that initialise the torch layer the same way.

    Raises
    ------
    ConversionError
        For a value that is not one of the choices.

    Examples
    --------
    >>> Policies(momentum_none=0.1, bias_false="zero-beta")  # doctest: +NORMALIZE_WHITESPACE
    Policies(momentum_none=0.1, bias_false='zero-beta', affine_false_values=None,
             use_batch_statistics_false=None, initialisers=None)
    >>> Policies(bias_false="zero")
    Traceback (most recent call last):
    ...
    bn3d.convert.ConversionError: policy bias_false='zero': the choices are 'zero-beta'
    """

    momentum_none: float | None = None
    bias_false: str | None = None
    affine_false_values: str | None = None
    use_batch_statistics_false: str | None = None
    initialisers: str | None = None

    def __post_init__(self) -> None:
        momentum = self.momentum_none
        if momentum is not None and not (
                isinstance(momentum, numbers.Real) and not isinstance(momentum, bool)
                and 0.0 <= momentum <= 1.0):
            raise ConversionError(f"policy momentum_none={momentum!r}: a fixed momentum is a "
                                  "number in [0, 1] (torch's meaning: the batch's weight)")
        for name, choices in POLICY_CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ConversionError(f"policy {name}={value!r}: the choices are "
                                      f"{', '.join(map(repr, choices))}")
