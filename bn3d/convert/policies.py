"""The policies: what the user chooses where a setting has no exact equivalent.

Without a policy, such a setting is refused with a :class:`~bn3d.convert.ConversionError`
that explains why and names the policy. Each policy used is stated in the report
(a ``policy`` line) and in the converted settings' ``notes``.

============================  ===========================  ================================
setting                       policy (API, CLI)            what it does
============================  ===========================  ================================
torch ``momentum=None``       ``momentum_none=M``,         a fixed torch momentum ``M``
(cumulative average)          ``--momentum-none M``        instead: MindSpore ``1 - M``
torch ``bias=False``          ``bias_false="zero-beta"``,  MindSpore's beta fixed at 0, and
                              ``--bias-false zero-beta``   frozen (not trainable)
MindSpore ``affine=False``    ``affine_false_values=       torch ``affine=True`` with the
with gamma/beta other than    "keep"``,                    values as weight and bias, to be
1/0                           ``--affine-false-values      frozen (MindSpore applies them)
                              keep``
MindSpore                     ``use_batch_statistics_      torch ``track_running_stats=True``
``use_batch_statistics=       false="eval"``               kept in eval mode
False``
MindSpore initialisers other  ``initialisers="ignore"``    torch's own initial values (1, 0,
than ones/zeros/zeros/ones                                 0, 1); fine when a checkpoint is
                                                           loaded afterwards
(the same)                    ``initialisers=              ``torch.nn.init`` calls with the
                              "init-calls"``               same distributions or values
============================  ===========================  ================================

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
    >>> Policies(momentum_none=0.1, bias_false="zero-beta").used()
    {'momentum_none': 0.1, 'bias_false': 'zero-beta'}
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

    def used(self) -> dict[str, object]:
        """The policies chosen, by name."""
        return {name: value for name, value in vars(self).items() if value is not None}
