"""Errors, warnings, shared messages and input checks: one answer to "is this value valid?".

Every adapter raises these types and reuses these messages, so the same mistake reads the same
way in Optax and in PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MaskError", "RuleError", "UnclassifiedWarning", "UnmatchedRuleWarning", "check_weight_decay",
]

#: A float, a scalar array (possibly traced, e.g. under ``inject_hyperparams``) or an optax schedule.
ScalarOrSchedule = Any


class RuleError(ValueError):
    """A rule, a rule set or a rules file is invalid, or (``strict=True``) matches nothing."""


class MaskError(ValueError):
    """A mask or a decay transform was applied to a tree it was not built for."""


class UnmatchedRuleWarning(UserWarning):
    """A rule matched no parameter of the model it was applied to."""


class UnclassifiedWarning(UserWarning):
    """Parameters were decided on a guess: their layer kind and role are unknown, or a fact a rule
    needs (``feeds_norm``) was not determined. Pass example inputs (torch ``example_inputs=``, JAX
    ``sample=``), add a rule for them, or declare the class (``register_norm``)."""


NOT_RULES_MSG = (
    "`rules` must be a wdmask Rules (e.g. wdmask.presets.standard), a list of Rule/dict, or a dict with a `rules` "
    "list, got {what}. To apply a hand-made bool mask use optax.add_decayed_weights(weight_decay, mask=...) "
    "directly, or check it with wdmask.audit(mask, params)."
)
WEIGHT_DECAY_MSG = ("`weight_decay` must be a finite real number >= 0{schedule}, got {what}")


def _what(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:200]


def check_weight_decay(value: Any, *, schedule: bool = True, where: str = "") -> Any:
    """Validate a weight decay: a finite real number >= 0 (Python or 0-d array) or, when allowed, a schedule.

    A traced 0-d array (``inject_hyperparams`` passes one) cannot be checked and is accepted; a
    concrete one is checked like a float. ``bool`` and ``str`` are refused.

    Args:
      value: the weight decay.
      schedule: whether a callable (an optax schedule ``step -> value``) is accepted.
      where: prefix naming the caller in messages, e.g. ``"wdmask_torch.groups: "``.
    Returns:
      ``value`` unchanged.
    Raises:
      TypeError: not a number (a bool, a str, an array with dimensions, ...).
      ValueError: negative, NaN or infinite.
    Examples:
      >>> check_weight_decay(1e-4)
      0.0001
      >>> check_weight_decay(float("nan"))
      Traceback (most recent call last):
      ...
      ValueError: `weight_decay` must be a finite real number >= 0 or a schedule, got float nan
    """
    suffix = " or a schedule" if schedule else ""
    if callable(value) and not hasattr(value, "shape"):
        if schedule:
            return value
        raise TypeError(f"{where}{WEIGHT_DECAY_MSG.format(schedule=suffix, what=_what(value))}")
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{where}{WEIGHT_DECAY_MSG.format(schedule=suffix, what=_what(value))}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", None)
        kind = getattr(dtype, "kind", None) or getattr(getattr(dtype, "type", None), "kind", None)
        if shape is None or tuple(shape) != () or (dtype is not None and "bool" in str(dtype)):
            raise TypeError(f"{where}{WEIGHT_DECAY_MSG.format(schedule=suffix, what=_what(value))}")
        del kind
        try:
            number = float(value)
        except Exception:  # a tracer: its value is not known here
            return value
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{where}{WEIGHT_DECAY_MSG.format(schedule=suffix, what=_what(value))}")
    return value
