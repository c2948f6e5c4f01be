"""Errors, warnings, shared messages and input checks: one answer to "is this value valid?".

Every adapter raises these types and reuses these messages, so the same mistake reads the same
way in Optax and in PyTorch.
"""

from __future__ import annotations

import math
import sys
from typing import Any

__all__ = [
    "MaskError", "RuleError", "UnclassifiedWarning", "UnmatchedRuleWarning", "check_bool", "check_weight_decay",
]

#: A float, a scalar array (possibly traced, e.g. under ``inject_hyperparams``) or an optax schedule.
ScalarOrSchedule = Any


class RuleError(ValueError):
    """A rule, a rule set or a rules file is invalid, or (``strict=True``) matches nothing.

    ``detail`` is the message without the label of the rule it is about (``" `layer`: unknown kind ..."``),
    so a caller that knows a better label (``rules[3]`` in a file) can put its own in front.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


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
WEIGHT_DECAY_MSG = "`weight_decay` must be a finite real number >= 0{schedule}, got {what}"
WEIGHT_DECAY_STR_FIX = "; write the number itself (1e-4), not a string"
BOOL_MSG = "{where}`{name}` must be True or False, got {what}"


def _what(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:200]


def _is_tracer(value: Any) -> bool:
    """A JAX tracer (checked without importing jax): its value is unknown until the function runs."""
    jax = sys.modules.get("jax")
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    return tracer is not None and isinstance(value, tracer)


def _is_real_dtype(dtype: Any) -> bool:
    """Whether an array dtype (numpy/JAX ``kind``, or torch) holds real numbers: not bool, complex or text."""
    if dtype is None:
        return True
    kind = getattr(dtype, "kind", None)  # numpy and JAX dtypes
    if isinstance(kind, str):
        return kind in "iuf"
    if getattr(dtype, "is_complex", False) or "bool" in str(dtype):  # torch dtypes
        return False
    return True


def check_weight_decay(value: Any, *, schedule: bool = True, where: str = "") -> Any:
    """Validate a weight decay: a finite real number >= 0 (Python or 0-d array) or, when allowed, a schedule.

    The one check every adapter uses (``wdmask.decay``, ``wdmask.lars``/``lamb``,
    ``wdmask_torch.groups``), so the same mistake reads the same way everywhere. A concrete 0-d
    array (NumPy, JAX, torch) is checked like a float; a traced one (``jit``,
    ``inject_hyperparams`` under ``jit``) cannot be and is accepted. ``bool``, ``str``, complex
    numbers and arrays with dimensions are refused.

    Args:
      value: the weight decay.
      schedule: whether a callable (an optax schedule ``step -> value``) is accepted.
      where: prefix naming the caller in messages, e.g. ``"wdmask_torch.groups: "``.
    Returns:
      ``value`` unchanged.
    Raises:
      TypeError: not a real number (a bool, a str, a complex, an array with dimensions, ...), or a
        schedule where none is accepted.
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
    message = f"{where}{WEIGHT_DECAY_MSG.format(schedule=suffix, what=_what(value))}"
    if callable(value) and not hasattr(value, "shape"):
        if schedule:
            return value
        raise TypeError(message + "; a schedule is not accepted here (torch: use a torch.optim.lr_scheduler or set "
                                  "param_group['weight_decay'] each step)")
    if isinstance(value, (str, bytes)):
        raise TypeError(message + WEIGHT_DECAY_STR_FIX)
    if isinstance(value, bool) or value is None:
        raise TypeError(message)
    if isinstance(value, (int, float)):  # also numpy.float64 (a float subclass)
        number = float(value)
    else:
        shape = getattr(value, "shape", None)
        if shape is None or tuple(shape) != () or not _is_real_dtype(getattr(value, "dtype", None)):
            raise TypeError(message + (WEIGHT_DECAY_STR_FIX if getattr(getattr(value, "dtype", None), "kind", "")
                                       in ("U", "S") else ""))
        if _is_tracer(value):
            return value
        try:
            number = float(value)
        except Exception:
            if type(value).__module__.split(".")[0] in ("jax", "jaxlib"):  # another abstract JAX value
                return value
            raise TypeError(message) from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(message)
    return value


def check_bool(value: Any, name: str, *, where: str = "") -> bool:
    """Validate a flag: ``True`` or ``False`` only (a string such as ``"no"`` is truthy, so it is refused).

    Args:
      value: the flag.
      name: the argument's name, for the message.
      where: prefix naming the caller, e.g. ``"wdmask_torch.groups: "``.
    Returns:
      ``value`` unchanged.
    Raises:
      TypeError: anything but a ``bool`` (``0``/``1``, ``None``, ``"no"``, a tensor, ...).
    Examples:
      >>> check_bool(False, "strict")
      False
      >>> check_bool("no", "strict", where="groups: ")
      Traceback (most recent call last):
      ...
      TypeError: groups: `strict` must be True or False, got str 'no'; write True or False, not a string
    """
    if isinstance(value, bool):
        return value
    message = BOOL_MSG.format(where=where, name=name, what=_what(value))
    if isinstance(value, (str, bytes)):
        message += "; write True or False, not a string"
    raise TypeError(message)
