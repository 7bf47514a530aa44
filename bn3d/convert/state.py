"""One BatchNorm layer's state from one dialect to the other, and what the other needs said.

The state is given and returned by *role*, torch's local name (``weight``,
``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``); the
callers give the tensors their names (:mod:`bn3d.convert.layers`).

What one side's state cannot say, the documented defaults supply, each stated by
a :class:`~bn3d.convert.report.Note`:

- torch to MindSpore: ``num_batches_tracked`` is dropped (MindSpore has no batch
  counter); an ``affine=False`` layer gets gamma=1 and beta=0 (MindSpore keeps
  them and applies them: the identity); a ``track_running_stats=False`` layer
  gets moving statistics 0 and 1 (MindSpore always has them; with
  ``use_batch_statistics=True`` it never normalises with them).
- MindSpore to torch: ``num_batches_tracked`` is written as 0 (or the counter
  given); gamma/beta and the moving statistics are dropped where the torch layer
  has none, gamma/beta only if they are 1 and 0 (else MindSpore's output needs
  them: refused, unless the policy ``affine_false_values='keep'`` keeps them).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from .errors import ConversionError
from .layers import MINDSPORE_ORDER, TORCH_ORDER
from .policies import Policies
from .report import Note
from .settings import TorchSettings

__all__ = ["mindspore_state_to_torch", "torch_state_to_mindspore"]


def _filled(value: float, settings: TorchSettings) -> np.ndarray:
    return np.full(settings.num_features, value, dtype=settings.dtype)


def torch_state_to_mindspore(state: Mapping[str, np.ndarray],
                             settings: TorchSettings) -> tuple[dict[str, np.ndarray], list[Note]]:
    """A torch layer's state as MindSpore's four parameters, by role, in MindSpore's order.

    Parameters
    ----------
    state : Mapping[str, numpy.ndarray]
        role -> array: the roles the torch layer has (its ``state_dict()``).
    settings : TorchSettings
        The torch layer's settings (which roles it has; the number of channels
        and dtype of what is filled in). A ``bias=False`` layer gets beta=0, as
        the policy that allows converting it says.

    Returns
    -------
    parameters : dict
        ``running_mean, running_var, weight, bias`` -> arrays (MindSpore's
        ``moving_mean, moving_variance, gamma, beta``).
    notes : list of Note
        The defaults applied.

    Examples
    --------
    >>> import numpy as np
    >>> parameters, notes = torch_state_to_mindspore(
    ...     {"running_mean": np.zeros(2, np.float32), "running_var": np.ones(2, np.float32),
    ...      "num_batches_tracked": np.array(7)}, TorchSettings(2, affine=False))
    >>> parameters["weight"], [note.text for note in notes]  # doctest: +NORMALIZE_WHITESPACE
    (array([1., 1.], dtype=float32),
     ["affine=False: gamma=1 and beta=0 written (MindSpore keeps gamma and beta and applies
       them; 1 and 0 leave the output as torch's)",
      "num_batches_tracked (7) dropped: MindSpore's BatchNorm3d has no batch counter"])
    """
    notes = []
    parameters = {role: np.asarray(state[role]) for role in TORCH_ORDER[:4] if role in state}
    if not settings.track_running_stats:
        parameters["running_mean"] = _filled(0.0, settings)
        parameters["running_var"] = _filled(1.0, settings)
        notes.append(Note("default", "track_running_stats=False: moving_mean=0 and "
                                     "moving_variance=1 written (MindSpore always has them; "
                                     "with use_batch_statistics=True it updates them but never "
                                     "normalises with them)"))
    if not settings.affine:
        parameters["weight"] = _filled(1.0, settings)
        parameters["bias"] = _filled(0.0, settings)
        notes.append(Note("default", "affine=False: gamma=1 and beta=0 written (MindSpore keeps "
                                     "gamma and beta and applies them; 1 and 0 leave the output "
                                     "as torch's)"))
    elif not settings.bias:
        parameters["bias"] = _filled(0.0, settings)
    if "num_batches_tracked" in state:
        count = int(np.asarray(state["num_batches_tracked"]).reshape(-1)[0])
        notes.append(Note("default", f"num_batches_tracked ({count}) dropped: MindSpore's "
                                     "BatchNorm3d has no batch counter"))
    return {role: parameters[role] for role in MINDSPORE_ORDER}, notes


def mindspore_state_to_torch(
    parameters: Mapping[str, np.ndarray],
    settings: TorchSettings,
    policies: Policies | None = None,
    counter: int = 0,
    marks: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], TorchSettings, list[Note]]:
    """A MindSpore layer's four parameters as the torch layer's state, in torch's order.

    Parameters
    ----------
    parameters : Mapping[str, numpy.ndarray]
        role -> array, for ``running_mean, running_var, weight, bias``
        (MindSpore's ``moving_mean, moving_variance, gamma, beta``).
    settings : TorchSettings
        The torch layer to load them into (converted from the MindSpore layer's
        settings): which roles it has.
    policies : Policies, optional
        ``affine_false_values='keep'``: for an ``affine=False`` torch layer whose
        gamma/beta are not 1/0, make it ``affine=True`` with them as weight and
        bias (to be frozen) instead of refusing.
    counter : int, default 0
        The ``num_batches_tracked`` to write (MindSpore has no counter).
    marks : frozenset of str
        The user's marks that made the torch layer what it is
        (``'affine_false'``, ``'no_bias'``, ``'no_running_stats'``): the notes
        of what they dropped say so.

    Returns
    -------
    state : dict
        role -> array, in torch's order.
    settings : TorchSettings
        The torch layer's settings, changed if a policy changed them.
    notes : list of Note

    Raises
    ------
    ConversionError
        If gamma/beta (or beta alone) would be dropped but are not 1/0 (or 0):
        MindSpore applies them, so the torch layer would compute another output.

    Examples
    --------
    >>> import numpy as np
    >>> parameters = {"running_mean": np.zeros(2, np.float32),
    ...               "running_var": np.ones(2, np.float32),
    ...               "weight": np.ones(2, np.float32), "bias": np.zeros(2, np.float32)}
    >>> state, settings, notes = mindspore_state_to_torch(parameters, TorchSettings(2))
    >>> list(state), state["num_batches_tracked"], [note.text for note in notes]
    (['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'], array(0), \
['num_batches_tracked=0 written: MindSpore has no batch counter (give another with counter=N, \
bn3d convert --counter N)'])
    """
    policies = policies or Policies()
    if isinstance(counter, bool) or not isinstance(counter, numbers.Integral) or counter < 0:
        raise ConversionError(f"counter={counter!r}: num_batches_tracked is an int >= 0")
    notes = []
    state = {role: np.asarray(parameters[role]) for role in MINDSPORE_ORDER}
    gamma, beta = state["weight"], state["bias"]
    if not settings.affine:
        if np.all(gamma == 1) and np.all(beta == 0):
            del state["weight"], state["bias"]
            notes.append(Note("marked" if "affine_false" in marks else "default",
                              "gamma (all 1) and beta (all 0) dropped: the torch layer has "
                              "affine=False"))
        elif policies.affine_false_values == "keep":
            settings = replace(settings, affine=True, bias=True, frozen=("weight", "bias"))
            notes.append(Note("policy", "affine=False with gamma/beta other than 1/0: kept as "
                                        "weight/bias of an affine=True torch layer, to be frozen "
                                        "(policy affine_false_values='keep')"))
        else:
            raise ConversionError(
                "the torch layer has affine=False, but gamma/beta are not all 1/0 and MindSpore "
                "applies them (even with affine=False): dropping them would change the output. "
                "Policies(affine_false_values='keep') (bn3d convert --affine-false-values keep) "
                "keeps them as the weight and bias of an affine=True torch layer, to be frozen.")
    elif not settings.bias:
        if np.any(beta != 0):
            raise ConversionError("the torch layer has bias=False, but beta is not all 0: "
                                  "dropping it would change the output")
        del state["bias"]
        notes.append(Note("marked" if "no_bias" in marks else "default",
                          "beta (all 0) dropped: the torch layer has bias=False"))
    if settings.track_running_stats:
        state["num_batches_tracked"] = np.array(counter, dtype=np.int64)
        given = "given" if counter else "written"
        notes.append(Note("default", f"num_batches_tracked={counter} {given}: MindSpore has no "
                                     "batch counter (give another with counter=N, bn3d convert "
                                     "--counter N)"))
    else:
        del state["running_mean"], state["running_var"]
        notes.append(Note("marked" if "no_running_stats" in marks else "default",
                          "moving_mean and moving_variance dropped: the torch layer has "
                          "track_running_stats=False (MindSpore's use_batch_statistics=True "
                          "never normalises with them)"))
    return {role: state[role] for role in TORCH_ORDER if role in state}, settings, notes
