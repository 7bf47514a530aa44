"""A BatchNorm layer's constructor arguments, in each dialect, and their conversion.

:class:`TorchSettings` holds ``torch.nn.BatchNorm3d``'s arguments,
:class:`MindSporeSettings` ``mindspore.nn.BatchNorm3d``'s; :func:`convert_settings`
turns one into the other, and :meth:`~TorchSettings.code` prints the line to
paste. The correspondence (the migration document's parameter table, checked by
``spec/parameters.yaml``):

======================  =============================  ==================================
torch                   MindSpore                      conversion
======================  =============================  ==================================
num_features            num_features                   the same
eps                     eps                            the same (MindSpore: in (0, 1])
momentum ``m``          momentum ``1 - m``             exact; ``None`` needs a policy
affine                  affine                         the same (MindSpore keeps gamma=1,
                                                       beta=0 and applies them: identity)
bias=False              (none)                         needs a policy (``zero-beta``)
track_running_stats     use_batch_statistics           True <-> None, False <-> True;
                                                       MindSpore's False needs a policy
(weight=1, bias=0,      gamma_init, beta_init,         the defaults correspond; others
running stats 0, 1)     moving_mean_init,              need a policy going to torch
                        moving_var_init
dtype                   dtype                          float16, float32 (MindSpore
                                                       computes in no other)
======================  =============================  ==================================

``1 - m`` is computed in float64 and rounded to 15 significant digits, so that
0.9 gives 0.1 (not 0.09999999999999998, float64's rounding of ``1 - 0.9``) and
a round trip gives the momentum back; the rounding changes the momentum by less
than 1e-15 of itself, below what the statistics' update can resolve.

A setting refused without a policy raises :class:`~bn3d.convert.ConversionError`
saying which :class:`~bn3d.convert.Policies` field resolves it; a policy used is
recorded in the converted settings' ``notes``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .errors import ConversionError
from .policies import Policies

__all__ = [
    "Initialiser",
    "MindSporeSettings",
    "TorchSettings",
    "complement_momentum",
    "convert_settings",
]

_TORCH_DTYPES = ("float16", "float32", "float64")
_MINDSPORE_DTYPES = ("float16", "float32")
# MindSpore's initialiser arguments, by the torch state they initialise.
_INIT_ARGUMENTS = {"weight": "gamma_init", "bias": "beta_init",
                   "running_mean": "moving_mean_init", "running_var": "moving_var_init"}
# MindSpore's initialiser names (lowercased) and what each means.
_NAMED: dict[str, tuple[str, tuple[float, ...]]] = {
    "ones": ("constant", (1.0,)), "one": ("constant", (1.0,)),
    "zeros": ("constant", (0.0,)), "zero": ("constant", (0.0,)),
    "normal": ("normal", (0.01, 0.0)),
    "uniform": ("uniform", (0.07,)),
    "truncatednormal": ("truncated_normal", (0.01, 0.0, -2.0, 2.0)),
}
# MindSpore's initialiser classes: their kind and the attributes holding their parameters.
_CLASSES = {
    "One": ("constant", ()), "Zero": ("constant", ()), "Constant": ("constant", ("value",)),
    "Normal": ("normal", ("sigma", "mean")), "Uniform": ("uniform", ("scale",)),
    "TruncatedNormal": ("truncated_normal", ("sigma", "mean", "a", "b")),
}


def complement_momentum(momentum: float) -> float:
    """``1 - momentum``, rounded to 15 significant digits: the other dialect's momentum.

    Parameters
    ----------
    momentum : float

    Returns
    -------
    float

    Examples
    --------
    >>> 1 - 0.9, complement_momentum(0.9), complement_momentum(complement_momentum(0.7))
    (0.09999999999999998, 0.1, 0.7)
    """
    return float(f"{1.0 - float(momentum):.15g}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Initialiser:
    """A MindSpore initialiser of a 1-D parameter, as data.

    Parameters
    ----------
    kind : {'constant', 'normal', 'uniform', 'truncated_normal', 'values'}
    parameters : tuple of float
        ``(value,)``; ``(sigma, mean)``; ``(scale,)`` for U(-scale, scale);
        ``(sigma, mean, a, b)`` with a, b bounds on the values; the values.

    Examples
    --------
    >>> Initialiser.of("Zeros", "gamma_init")
    Initialiser(kind='constant', parameters=(0.0,))
    >>> print(Initialiser.of("truncatedNormal", "beta_init"))
    TruncatedNormal(sigma=0.01, mean=0.0, a=-2.0, b=2.0)
    >>> Initialiser.of("normal", "gamma_init").torch_code("bn.weight")
    'nn.init.normal_(bn.weight, mean=0.0, std=0.01)'
    """

    kind: str
    parameters: tuple[float, ...]

    @classmethod
    def of(cls, init: Any, argument: str) -> Initialiser:
        """The initialiser that ``init`` stands for, given as MindSpore accepts it.

        Parameters
        ----------
        init : str, number, array or initialiser object
            A name (case-insensitive), a number, a 1-D array (a tensor of
            values), an :class:`Initialiser`, or an initialiser object of
            MindSpore or of :mod:`bn3d.mindspore_nn` (``Normal(...)``, ``One()``...).
        argument : str
            The argument it was given for (``"gamma_init"``), for messages.

        Raises
        ------
        ConversionError
            For an initialiser a 1-D parameter cannot have (``'xavier_uniform'``)
            or that is not one.
        """
        if isinstance(init, Initialiser):
            return init
        if isinstance(init, str):
            if init.lower() not in _NAMED:
                raise ConversionError(
                    f"{argument}={init!r}: not an initialiser of a 1-D parameter; MindSpore's "
                    f"are {', '.join(sorted(_NAMED))} (any case), a number, a tensor or an "
                    "initialiser object")
            kind, parameters = _NAMED[init.lower()]
            return cls(kind, parameters)
        if _is_number(init):
            return cls("constant", (float(init),))
        name = type(init).__name__
        if name in _CLASSES and not isinstance(init, np.ndarray):
            kind, attributes = _CLASSES[name]
            if name in ("One", "Zero"):
                return cls("constant", (1.0 if name == "One" else 0.0,))
            return cls(kind, tuple(float(getattr(init, attribute)) for attribute in attributes))
        data = init.asnumpy() if hasattr(init, "asnumpy") else init
        try:
            values = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            values = None
        if values is None or values.ndim != 1:
            raise ConversionError(f"{argument}={init!r}: not an initialiser of a 1-D parameter "
                                  "(a name, a number, a 1-D tensor or an initialiser object)")
        return cls("values", tuple(float(value) for value in values))

    def is_constant(self, value: float) -> bool:
        """Whether this fills with ``value``."""
        return self.kind == "constant" and self.parameters == (float(value),)

    def __str__(self) -> str:
        """The initialiser as MindSpore code."""
        if self.kind == "constant":
            value = self.parameters[0]
            return {1.0: "'ones'", 0.0: "'zeros'"}.get(value, repr(value))
        if self.kind == "values":
            return f"Tensor(np.array({list(self.parameters)!r}, np.float32))"
        names = {"normal": ("Normal", ("sigma", "mean")), "uniform": ("Uniform", ("scale",)),
                 "truncated_normal": ("TruncatedNormal", ("sigma", "mean", "a", "b"))}
        class_name, attributes = names[self.kind]
        arguments = ", ".join(f"{attribute}={value!r}"
                              for attribute, value in zip(attributes, self.parameters))
        return f"{class_name}({arguments})"

    def torch_code(self, target: str) -> str:
        """The torch statement that initialises ``target`` (``"bn.weight"``) the same way.

        The random ones draw from the same distribution (torch's numbers, not MindSpore's).
        """
        parameters = self.parameters
        if self.kind == "constant":
            if parameters[0] in (0.0, 1.0):
                return f"nn.init.{'ones_' if parameters[0] else 'zeros_'}({target})"
            return f"nn.init.constant_({target}, {parameters[0]!r})"
        if self.kind == "normal":
            return f"nn.init.normal_({target}, mean={parameters[1]!r}, std={parameters[0]!r})"
        if self.kind == "uniform":
            return f"nn.init.uniform_({target}, a={-parameters[0]!r}, b={parameters[0]!r})"
        if self.kind == "truncated_normal":
            sigma, mean, low, high = parameters
            return (f"nn.init.trunc_normal_({target}, mean={mean!r}, std={sigma!r}, a={low!r}, "
                    f"b={high!r})")
        return f"{target}.data.copy_(torch.tensor({list(parameters)!r}))"


ONES = Initialiser("constant", (1.0,))
ZEROS = Initialiser("constant", (0.0,))
_DEFAULT_INITS = {"weight": ONES, "bias": ZEROS, "running_mean": ZEROS, "running_var": ONES}


def _dtype_name(value: Any, allowed: tuple[str, ...], framework: str) -> str:
    """A float dtype's name from a name, a numpy dtype, or a torch or MindSpore dtype."""
    text = str(value).lower()
    text = text.rpartition(".")[2]  # 'torch.float32' -> 'float32'
    if text not in allowed:
        try:
            text = np.dtype(value).name
        except TypeError:
            pass
    if text not in allowed:
        raise ConversionError(f"dtype {value!r}: {framework}'s BatchNorm3d computes in "
                              f"{' or '.join(allowed)} only")
    return text


def _check_flag(name: str, value: Any, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ConversionError(f"{name}={value!r}: must be a bool{' or None' if optional else ''}")


def _names(value: Any, allowed: tuple[str, ...], argument: str) -> tuple[str, ...]:
    names = tuple(value)
    if not set(names) <= set(allowed):
        raise ConversionError(f"{argument}={value!r}: may name {', '.join(allowed)}")
    return names


def _check_count(value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConversionError(f"num_features={value!r}: must be an int of at least {minimum}")


@dataclass(frozen=True)
class TorchSettings:
    """``torch.nn.BatchNorm3d``'s constructor arguments, and what follows construction.

    Parameters
    ----------
    num_features : int
    eps : float, default 1e-05
    momentum : float or None, default 0.1
    affine : bool, default True
    track_running_stats : bool, default True
    bias : bool, default True
        torch 2.13's keyword-only ``bias``.
    dtype : str, default 'float32'
        'float16', 'float32' or 'float64' (a numpy or torch dtype is accepted).
    init : tuple of (str, Initialiser), default ()
        State to initialise after construction (``'weight'``, ...), with what:
        the ``torch.nn.init`` calls that :meth:`setup_code` prints.
    frozen : tuple of str, default ()
        Parameters to freeze after construction (``'weight'``, ``'bias'``).
    keep_eval : bool, default False
        The layer is to be kept in eval mode.
    notes : tuple of str, default ()
        What a conversion chose (policies), not compared.

    Raises
    ------
    ConversionError
        For arguments torch's constructor does not take.

    Examples
    --------
    >>> settings = TorchSettings(64, momentum=0.01, bias=False)
    >>> settings.code()
    'nn.BatchNorm3d(64, eps=1e-05, momentum=0.01, affine=True, track_running_stats=True, \
bias=False)'
    """

    num_features: int
    eps: float = 1e-05
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    bias: bool = True
    dtype: str = "float32"
    init: tuple[tuple[str, Initialiser], ...] = ()
    frozen: tuple[str, ...] = ()
    keep_eval: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_count(self.num_features, 0)
        if not _is_number(self.eps):
            raise ConversionError(f"eps={self.eps!r}: must be a number")
        if self.momentum is not None and not _is_number(self.momentum):
            raise ConversionError(f"momentum={self.momentum!r}: must be a number or None")
        for name in ("affine", "track_running_stats", "bias", "keep_eval"):
            _check_flag(name, getattr(self, name))
        object.__setattr__(self, "eps", float(self.eps))
        if self.momentum is not None:
            object.__setattr__(self, "momentum", float(self.momentum))
        object.__setattr__(self, "dtype", _dtype_name(self.dtype, _TORCH_DTYPES, "torch"))
        object.__setattr__(self, "init", tuple(
            (target, Initialiser.of(init, target)) for target, init in self.init))
        object.__setattr__(self, "frozen", _names(self.frozen, ("weight", "bias"), "frozen"))
        if not {target for target, _ in self.init} <= set(_INIT_ARGUMENTS):
            raise ConversionError(f"init={self.init!r}: initialises {', '.join(_INIT_ARGUMENTS)}")
        object.__setattr__(self, "notes", tuple(self.notes))

    @classmethod
    def of(cls, module: Any) -> TorchSettings:
        """The settings of a :class:`bn3d.torch_nn.BatchNorm3d` (or ``torch.nn.BatchNorm3d``).

        Examples
        --------
        >>> from bn3d.torch_nn import BatchNorm3d
        >>> TorchSettings.of(BatchNorm3d(8, momentum=None, dtype="float64"))
        TorchSettings(num_features=8, eps=1e-05, momentum=None, affine=True, \
track_running_stats=True, bias=True, dtype='float64', init=(), frozen=(), keep_eval=False, \
notes=())
        """
        arrays = [array for array in (module.weight, module.running_mean) if array is not None]
        return cls(int(module.num_features), module.eps, module.momentum, module.affine,
                   module.track_running_stats, bias=not module.affine or module.bias is not None,
                   dtype=arrays[0].dtype if arrays else "float32")

    def arguments(self) -> dict[str, Any]:
        """The constructor's keyword arguments (bn3d's facade takes them as they are)."""
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats,
                "bias": self.bias, "dtype": self.dtype}

    def code(self, layer: str = "BatchNorm3d") -> str:
        """The constructor call to paste (``torch.nn`` imported as ``nn``)."""
        text = (f"nn.{layer}({self.num_features}, eps={self.eps!r}, momentum={self.momentum!r}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
        if not self.bias:
            text += ", bias=False"
        if self.dtype != "float32":
            text += f", dtype=torch.{self.dtype}"
        return text + ")"

    def setup_code(self, name: str = "bn") -> list[str]:
        """The statements to run after constructing the layer called ``name``.

        Examples
        --------
        >>> TorchSettings(4, init=[("weight", "zeros")], keep_eval=True).setup_code("bn")
        ['nn.init.zeros_(bn.weight)', 'bn.eval()  # keep it in eval mode, also after a \
parent module.train()']
        """
        lines = [init.torch_code(f"{name}.{target}") for target, init in self.init]
        lines += [f"{name}.{parameter}.requires_grad_(False)" for parameter in self.frozen]
        if self.keep_eval:
            lines.append(f"{name}.eval()  # keep it in eval mode, also after a parent "
                         "module.train()")
        return lines


@dataclass(frozen=True)
class MindSporeSettings:
    """``mindspore.nn.BatchNorm3d``'s constructor arguments, and what follows construction.

    Parameters
    ----------
    num_features : int
    eps : float, default 1e-5
    momentum : float, default 0.9
        In [0, 1]: the moving statistics' weight in their update.
    affine : bool, default True
    gamma_init, beta_init, moving_mean_init, moving_var_init : initialiser
        Defaults 'ones', 'zeros', 'zeros', 'ones'; any form MindSpore accepts
        (kept as an :class:`Initialiser`).
    use_batch_statistics : bool or None, default None
    dtype : str, default 'float32'
        'float16' or 'float32' (a numpy or MindSpore dtype is accepted).
    frozen : tuple of str, default ()
        Parameters to freeze after construction (``'beta'``).
    notes : tuple of str, default ()
        What a conversion chose (policies), not compared.

    Raises
    ------
    ConversionError
        For arguments MindSpore's constructor refuses.

    Examples
    --------
    >>> MindSporeSettings(64, gamma_init="zeros").code()
    "nn.BatchNorm3d(64, eps=1e-05, momentum=0.9, affine=True, use_batch_statistics=None, \
gamma_init='zeros')"
    """

    num_features: int
    eps: float = 1e-5
    momentum: float = 0.9
    affine: bool = True
    gamma_init: Any = "ones"
    beta_init: Any = "zeros"
    moving_mean_init: Any = "zeros"
    moving_var_init: Any = "ones"
    use_batch_statistics: bool | None = None
    dtype: str = "float32"
    frozen: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_count(self.num_features, 1)
        if not _is_number(self.eps):
            raise ConversionError(f"eps={self.eps!r}: must be a number")
        if not (_is_number(self.momentum) and 0.0 <= self.momentum <= 1.0):
            raise ConversionError(f"momentum={self.momentum!r}: MindSpore's momentum is a number "
                                  "in [0, 1]")
        _check_flag("affine", self.affine)
        _check_flag("use_batch_statistics", self.use_batch_statistics, optional=True)
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "momentum", float(self.momentum))
        for argument in _INIT_ARGUMENTS.values():
            object.__setattr__(self, argument, Initialiser.of(getattr(self, argument), argument))
        object.__setattr__(self, "dtype",
                           _dtype_name(self.dtype, _MINDSPORE_DTYPES, "MindSpore"))
        object.__setattr__(self, "frozen", _names(self.frozen, ("beta",), "frozen"))
        object.__setattr__(self, "notes", tuple(self.notes))

    @classmethod
    def of(cls, cell: Any) -> MindSporeSettings:
        """The settings of a :class:`bn3d.mindspore_nn.BatchNorm3d`.

        Its initialisers are not known after construction: the defaults are
        given (a conversion carries the parameters' values instead). A trainable
        gamma with a frozen beta gives ``frozen=('beta',)``.

        Examples
        --------
        >>> from bn3d.mindspore_nn import BatchNorm3d
        >>> MindSporeSettings.of(BatchNorm3d(8, momentum=0.99, affine=False)).code()
        'nn.BatchNorm3d(8, eps=1e-05, momentum=0.99, affine=False, use_batch_statistics=None)'
        """
        gamma, beta = cell.bn2d.gamma, cell.bn2d.beta
        affine = gamma.requires_grad or beta.requires_grad
        frozen = tuple(name for name, parameter in (("gamma", gamma), ("beta", beta))
                       if affine and not parameter.requires_grad)
        return cls(cell.bn2d.num_features, cell.bn2d.eps,
                   complement_momentum(cell.bn2d.momentum), affine,
                   use_batch_statistics=cell.bn2d.use_batch_statistics, dtype=gamma.dtype,
                   frozen=frozen)

    def arguments(self) -> dict[str, Any]:
        """The constructor's keyword arguments, the initialisers as :class:`Initialiser`."""
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "gamma_init": self.gamma_init,
                "beta_init": self.beta_init, "moving_mean_init": self.moving_mean_init,
                "moving_var_init": self.moving_var_init,
                "use_batch_statistics": self.use_batch_statistics, "dtype": self.dtype}

    def initialisers(self) -> dict[str, Initialiser]:
        """torch state name -> the initialiser of its MindSpore counterpart."""
        return {target: getattr(self, argument) for target, argument in _INIT_ARGUMENTS.items()}

    def code(self, layer: str = "BatchNorm3d") -> str:
        """The constructor call to paste (``mindspore.nn`` imported as ``nn``)."""
        text = (f"nn.{layer}({self.num_features}, eps={self.eps!r}, momentum={self.momentum!r}, "
                f"affine={self.affine}, use_batch_statistics={self.use_batch_statistics}")
        for target, init in self.initialisers().items():
            if init != _DEFAULT_INITS[target]:
                text += f", {_INIT_ARGUMENTS[target]}={init}"
        if self.dtype != "float32":
            text += f", dtype=mindspore.{self.dtype}"
        return text + ")"

    def setup_code(self, name: str = "bn", bn2d: bool = True) -> list[str]:
        """The statements to run after constructing the cell called ``name``.

        Examples
        --------
        >>> MindSporeSettings(4, frozen=("beta",)).setup_code("bn")
        ['bn.bn2d.beta.requires_grad = False']
        """
        owner = f"{name}.bn2d" if bn2d else name
        return [f"{owner}.{parameter}.requires_grad = False" for parameter in self.frozen]


Settings = Union[TorchSettings, MindSporeSettings]


def convert_settings(settings: Settings, policies: Policies | None = None) -> Settings:
    """A layer's settings in the other dialect.

    Parameters
    ----------
    settings : TorchSettings or MindSporeSettings
    policies : Policies, optional
        What to do with settings that have no exact equivalent; without one
        they are refused.

    Returns
    -------
    MindSporeSettings or TorchSettings
        The other dialect's; its ``notes`` state each policy used.

    Raises
    ------
    ConversionError
        For a setting with no exact equivalent and no policy for it, or one the
        other framework does not accept; the message says which policy resolves
        it, if one does.

    Examples
    --------
    >>> convert_settings(TorchSettings(64, momentum=0.01)).code()
    'nn.BatchNorm3d(64, eps=1e-05, momentum=0.99, affine=True, use_batch_statistics=None)'
    >>> convert_settings(MindSporeSettings(64, use_batch_statistics=True)).code()
    'nn.BatchNorm3d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=False)'
    >>> convert_settings(TorchSettings(64, momentum=None))
    Traceback (most recent call last):
    ...
    bn3d.convert.ConversionError: torch momentum=None (a cumulative average over every batch \
seen) has no MindSpore equivalent: MindSpore's BatchNorm3d has no batch counter and its momentum \
is a number in [0, 1]. Choose the fixed momentum to use instead: \
Policies(momentum_none=0.1) (bn3d convert --momentum-none 0.1).
    >>> converted = convert_settings(TorchSettings(64, momentum=None), Policies(momentum_none=0.1))
    >>> converted.momentum, converted.notes
    (0.9, ('momentum=None (a cumulative average) replaced by the fixed momentum 0.1 (policy \
momentum_none=0.1)',))
    """
    policies = policies or Policies()
    if isinstance(settings, TorchSettings):
        return _to_mindspore(settings, policies)
    if isinstance(settings, MindSporeSettings):
        return _to_torch(settings, policies)
    raise TypeError(f"convert_settings takes TorchSettings or MindSporeSettings, not "
                    f"{type(settings).__name__}")


def _to_mindspore(settings: TorchSettings, policies: Policies) -> MindSporeSettings:
    notes = []
    if settings.num_features < 1:
        raise ConversionError(f"num_features={settings.num_features}: MindSpore's BatchNorm3d "
                              "needs at least 1 channel")
    if not 0.0 < settings.eps <= 1.0:
        raise ConversionError(f"eps={settings.eps!r}: MindSpore's BatchNorm accepts eps in "
                              "(0, 1] only (it checks at every call)")
    if settings.dtype not in _MINDSPORE_DTYPES:
        raise ConversionError(f"dtype {settings.dtype}: MindSpore's BatchNorm3d computes in "
                              "float16 or float32 only; convert the model to float32 first "
                              "(model.float())")
    momentum = settings.momentum
    if momentum is None:
        if policies.momentum_none is None:
            raise ConversionError(
                "torch momentum=None (a cumulative average over every batch seen) has no "
                "MindSpore equivalent: MindSpore's BatchNorm3d has no batch counter and its "
                "momentum is a number in [0, 1]. Choose the fixed momentum to use instead: "
                "Policies(momentum_none=0.1) (bn3d convert --momentum-none 0.1).")
        momentum = policies.momentum_none
        notes.append(f"momentum=None (a cumulative average) replaced by the fixed momentum "
                     f"{momentum!r} (policy momentum_none={momentum!r})")
    if not 0.0 <= momentum <= 1.0:
        raise ConversionError(f"momentum={momentum!r}: MindSpore's momentum is in [0, 1] (torch "
                              "uses any value as given)")
    affine = settings.affine
    frozen: tuple[str, ...] = ()
    if affine and set(settings.frozen) == {"weight", "bias"}:
        affine = False  # applied but not trained: what affine=False means in MindSpore
    elif affine and not settings.bias:
        if policies.bias_false is None:
            raise ConversionError(
                "torch bias=False (a scale without a shift) has no MindSpore equivalent: "
                "MindSpore's BatchNorm3d always has beta, and trains it when affine=True. "
                "Policies(bias_false='zero-beta') (bn3d convert --bias-false zero-beta) fixes "
                "beta at 0 and freezes it.")
        frozen = ("beta",)
        notes.append("bias=False: beta fixed at 0 and frozen (policy bias_false='zero-beta')")
    use_batch_statistics = None if settings.track_running_stats else True
    if settings.keep_eval and settings.track_running_stats:
        use_batch_statistics = False  # the running statistics normalise, never updated
    inits = {_INIT_ARGUMENTS[target]: init for target, init in settings.init}
    return MindSporeSettings(
        settings.num_features, settings.eps, complement_momentum(momentum), affine,
        use_batch_statistics=use_batch_statistics, dtype=settings.dtype, frozen=frozen,
        notes=tuple(notes), **inits)


def _to_torch(settings: MindSporeSettings, policies: Policies) -> TorchSettings:
    notes = []
    keep_eval = False
    if settings.use_batch_statistics is False:
        if policies.use_batch_statistics_false is None:
            raise ConversionError(
                "MindSpore use_batch_statistics=False (the moving statistics normalise in "
                "every mode and are never updated) has no torch constructor equivalent: torch "
                "decides by the module's mode. Policies(use_batch_statistics_false='eval') gives "
                "track_running_stats=True with the layer kept in eval mode.")
        keep_eval = True
        notes.append("use_batch_statistics=False: track_running_stats=True, kept in eval mode "
                     "(policy use_batch_statistics_false='eval')")
    track = settings.use_batch_statistics is not True
    initialisers = settings.initialisers()
    affine, bias = settings.affine, True
    frozen: tuple[str, ...] = ()
    if not affine:
        if not (initialisers["weight"] == ONES and initialisers["bias"] == ZEROS):
            given = (f"gamma_init={initialisers['weight']}, beta_init={initialisers['bias']}")
            if policies.affine_false_values is None:
                raise ConversionError(
                    f"MindSpore affine=False with {given}: MindSpore applies gamma and beta "
                    "although it does not train them, while torch's affine=False has neither. "
                    "Policies(affine_false_values='keep') (bn3d convert --affine-false-values "
                    "keep) gives torch affine=True with these values, frozen.")
            affine, frozen = True, ("weight", "bias")
            notes.append(f"affine=False with {given}: affine=True with these values, frozen "
                         "(policy affine_false_values='keep')")
    elif "beta" in settings.frozen and initialisers["bias"] == ZEROS:
        bias = False  # a beta fixed at 0 is what torch's bias=False means
    used = (["weight"] if affine else []) + (["bias"] if affine and bias else [])
    used += ["running_mean", "running_var"] if track else []
    differing = [(target, initialisers[target]) for target in used
                 if initialisers[target] != _DEFAULT_INITS[target]]
    init: tuple[tuple[str, Initialiser], ...] = ()
    if differing:
        given = ", ".join(f"{_INIT_ARGUMENTS[target]}={value}" for target, value in differing)
        if policies.initialisers is None:
            raise ConversionError(
                f"MindSpore {given}: torch's constructor has no initialisers (it starts from "
                "weight=1, bias=0, running_mean=0, running_var=1). "
                "Policies(initialisers='init-calls') adds the torch.nn.init calls that "
                "initialise the same way; Policies(initialisers='ignore') keeps torch's values "
                "(fine when a checkpoint is loaded afterwards).")
        if policies.initialisers == "init-calls":
            init = tuple(differing)
            notes.append(f"{given}: initialised by torch.nn.init calls after construction "
                         "(policy initialisers='init-calls')")
        else:
            notes.append(f"{given}: torch's own initial values instead (policy "
                         "initialisers='ignore')")
    return TorchSettings(
        settings.num_features, settings.eps, complement_momentum(settings.momentum), affine,
        track, bias=bias, dtype=settings.dtype, init=init, frozen=frozen, keep_eval=keep_eval,
        notes=tuple(notes))

