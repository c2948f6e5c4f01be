"""Errors, warnings, shared messages and input checks: one answer to "is this value valid?".

Every adapter raises these types and reuses these messages, so the same mistake reads the same
way in Optax and in PyTorch.
"""

from __future__ import annotations

import math
import reprlib
import sys
from typing import Any

__all__ = [
    "MaskError", "RuleError", "UnclassifiedWarning", "UnmatchedRuleWarning", "check_bool", "check_number",
    "check_weight_decay", "short_repr",
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
    ``model=`` with ``sample=``) or add a rule for them; torch norm classes can also be registered
    (``wdmask_torch.register_norm``). The warning points at the call in your code that decided."""


NOT_RULES_MSG = (
    "`rules` must be a wdmask Rules (e.g. wdmask.presets.standard), a list of Rule/dict, or a dict with a `rules` "
    "list, got {what}. To apply a hand-made bool mask use optax.add_decayed_weights(weight_decay, mask=...) "
    "directly, or check it with wdmask.audit(mask, params)."
)
WEIGHT_DECAY_MSG = "`weight_decay` must be a finite real number >= 0{schedule}, got {what}"
WEIGHT_DECAY_STR_FIX = "; write the number itself (1e-4), not a string"
BOOL_MSG = "{where}`{name}` must be True or False, got {what}"


_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
for _name, _value in (("maxlevel", 3), ("maxdict", 6), ("maxlist", 6), ("maxtuple", 6), ("maxset", 6),
                      ("maxfrozenset", 6), ("maxdeque", 6), ("maxarray", 6), ("maxstring", 60), ("maxlong", 40),
                      ("maxother", 60)):
    setattr(_REPR, _name, _value)


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` bounded in size (and in the work to make it): what error messages embed of a user value.

    A value from a file can be large (a long string, a deep or wide structure): its message stays short.

    Examples:
      >>> len(short_repr("x" * 10**6))
      60
      >>> short_repr(list(range(100)))
      '[0, 1, 2, 3, 4, 5, ...]'
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # a broken __repr__ must not hide the error being reported
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _what(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value, 180)}"


def _is_tracer(value: Any) -> bool:
    """A JAX tracer (checked without importing jax): its value is unknown until the function runs."""
    jax = sys.modules.get("jax")
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    return tracer is not None and isinstance(value, tracer)


def _is_real_dtype(dtype: Any) -> bool:
    """Whether an array dtype (numpy/JAX, ml_dtypes' ``bfloat16``/``float8_*``, or torch) holds real numbers:
    not bool, complex or text."""
    if dtype is None:
        return True
    kind = getattr(dtype, "kind", None)  # numpy and JAX dtypes
    if isinstance(kind, str):
        if kind in "iuf":
            return True
        if kind == "V":  # ml_dtypes (bfloat16, float8_*, int4): numpy reports them as void
            try:
                import ml_dtypes
            except ImportError:  # pragma: no cover - installed with jax
                return False
            for info in (ml_dtypes.finfo, ml_dtypes.iinfo):
                try:
                    info(dtype)
                    return True
                except Exception:
                    pass
        return False
    if getattr(dtype, "is_complex", False) or "bool" in str(dtype):  # torch dtypes
        return False
    return True


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def check_number(value: Any, name: str, *, low: float = 0.0, high: float | None = None, low_open: bool = False,
                 high_open: bool = False, schedule: bool = False, torch_ok: bool = True, where: str = "") -> Any:
    """Validate a real hyperparameter: a finite number in a range (Python, or a 0-d array of any real dtype,
    ``bfloat16``/``float8`` included), or, when allowed, a schedule ``step -> value``.

    A traced value (``jit``, ``inject_hyperparams`` under ``jit``) cannot be checked and is accepted.

    Args:
      value: the hyperparameter.
      name: its argument name, for messages.
      low, high: the range (``high=None``: no upper bound).
      low_open, high_open: whether the bounds themselves are excluded.
      schedule: whether a callable (an optax schedule) is accepted.
      torch_ok: whether a torch tensor is accepted (not in a JAX transform).
      where: prefix naming the caller in messages, e.g. ``"wdmask.lars: "``.

    Returns:
      ``value`` unchanged.

    Raises:
      TypeError: not a real number (a bool, a str, a complex, an array with dimensions, a torch tensor
        where JAX is expected, ...), or a schedule where none is accepted.
      ValueError: NaN, infinite or out of range.

    Examples:
      >>> check_number(0.9, "b1", high=1.0, high_open=True)
      0.9
      >>> check_number(2, "b1", high=1.0, high_open=True)
      Traceback (most recent call last):
      ...
      ValueError: `b1` must be a finite real number in [0, 1), got int 2
    """
    if high is None:
        span = f"{'>' if low_open else '>='} {low:g}"
    else:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    suffix = " or a schedule" if schedule else ""
    message = f"{where}`{name}` must be a finite real number {span}{suffix}, got {_what(value)}"
    if callable(value) and not hasattr(value, "shape"):
        if schedule:
            return value
        raise TypeError(message + "; a schedule is not accepted here (torch: use a torch.optim.lr_scheduler or set "
                                  f"param_group[{name!r}] each step)")
    string_fix = WEIGHT_DECAY_STR_FIX if name == "weight_decay" else "; write the number itself, not a string"
    if isinstance(value, (str, bytes)):
        raise TypeError(message + string_fix)
    if isinstance(value, bool) or value is None:
        raise TypeError(message)
    if not torch_ok and _is_torch_tensor(value):
        raise TypeError(message + f"; this is a torch tensor, and the transform runs in JAX: pass a Python number "
                                  f"(`{name}.item()`) or a JAX array")
    if isinstance(value, (int, float)):  # also numpy.float64 (a float subclass)
        try:
            number = float(value)
        except OverflowError:  # an int beyond float
            raise ValueError(message) from None
    else:
        shape = getattr(value, "shape", None)
        if shape is None or tuple(shape) != () or not _is_real_dtype(getattr(value, "dtype", None)):
            raise TypeError(message + (string_fix if getattr(getattr(value, "dtype", None), "kind", "")
                                       in ("U", "S") else ""))
        if _is_tracer(value):
            return value
        try:
            number = float(value)
        except Exception:
            if type(value).__module__.split(".")[0] in ("jax", "jaxlib"):  # another abstract JAX value
                return value
            raise TypeError(message) from None
    below = number <= low if low_open else number < low
    above = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or below or above:
        dtype = str(getattr(value, "dtype", ""))
        if dtype in ("bfloat16", "float16") or dtype.startswith("float8"):
            message += (f"; `{name}` is a {dtype} array here (optax.inject_hyperparams casts hyperparameters to the "
                        f"params' dtype, and e.g. 0.999 rounds to 1 in bfloat16): pass "
                        "hyperparam_dtype=jnp.float32 to optax.inject_hyperparams")
        raise ValueError(message)
    return value


def check_weight_decay(value: Any, *, schedule: bool = True, where: str = "", torch_ok: bool = True) -> Any:
    """Validate a weight decay: a finite real number >= 0 (Python or 0-d array) or, when allowed, a schedule.

    The one check every adapter uses (``wdmask.decay``, ``wdmask.lars``/``lamb``,
    ``wdmask_torch.groups``), so the same mistake reads the same way everywhere. A concrete 0-d
    array (NumPy, JAX incl. ``bfloat16``/``float8``, torch) is checked like a float; a traced one
    (``jit``, ``inject_hyperparams`` under ``jit``) cannot be and is accepted. ``bool``, ``str``,
    complex numbers and arrays with dimensions are refused (and torch tensors when ``torch_ok`` is False).

    Args:
      value: the weight decay.
      schedule: whether a callable (an optax schedule ``step -> value``) is accepted.
      where: prefix naming the caller in messages, e.g. ``"wdmask_torch.groups: "``.
      torch_ok: whether a torch tensor is accepted.

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
    return check_number(value, "weight_decay", schedule=schedule, where=where, torch_ok=torch_ok)


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
