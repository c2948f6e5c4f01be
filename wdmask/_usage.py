r"""Roles from usage: how the forward pass consumes a parameter decides what it is.

Each adapter traces one forward pass (torch: a ``TorchFunctionMode``; JAX: a jaxpr walk) and
records, per parameter, the ops that consume it *directly* (through views, reshapes and dtype
casts only) as ``Use`` values in one neutral vocabulary. ``classify`` maps them to a layer kind
and a role with one table, so both frameworks decide alike.

The principle behind ``presets.standard``: decay what the forward pass **contracts with
activations** (kernels of conv / linear / einsum / matmul / bmm, fused QKV, MoE expert stacks,
recurrent weight matrices) and **token-embedding tables**; decay nothing else.

==============  ==========================================================  ===============
usage           the parameter is ...                                        role
==============  ==========================================================  ===============
gather_data     indexed by the inputs (a token table)                       ``embedding``
contract        an operand of dot_general / conv / linear / matmul / bmm    ``kernel``
norm_scale      the scale of a norm (fused norm op, or under a norm class)  ``scale``
norm_shift      the shift of a norm                                         ``bias``
gather_pos      indexed by positions / a constant index, or added whole     ``position``
concat          joined to the activations (a learned token, latent, probe)  ``token``
mul             multiplied elementwise with activations                     ``gain``
add             added to activations                                        ``bias``
elementwise     only passed through elementwise functions (exp, softplus)   ``elementwise``
unused          not consumed on this forward pass                           (no evidence)
==============  ==========================================================  ===============

Several uses: the first row of the table that applies wins, so a tied table used by a gather
and by the output projection is still an ``embedding`` and a weight that is both contracted and
added is a ``kernel``.

Example:
  >>> classify([Use("add"), Use("contract", "conv")], known="other")
  ('conv', 'kernel')
  >>> classify([Use("mul")], known="norm.layer")
  ('norm.layer', 'scale')
  >>> classify([Use("unused")], known="other") is None
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from wdmask._types import ParamInfo

__all__ = ["USAGES", "Use", "classify", "usage_names", "with_usage"]

#: The neutral usage vocabulary, in priority order (the first present decides).
USAGES: tuple[str, ...] = (
    "gather_data", "contract", "norm_scale", "norm_shift", "gather_pos", "concat", "mul", "add", "elementwise",
    "unused",
)

# usage -> (layer kind when nothing better is known, role)
_TABLE: dict[str, tuple[str, str]] = {
    "gather_data": ("embedding", "embedding"),
    "contract": ("linear", "kernel"),
    "norm_scale": ("norm.layer", "scale"),
    "norm_shift": ("norm.layer", "bias"),
    "gather_pos": ("other", "position"),
    "concat": ("other", "token"),
    "mul": ("other", "gain"),
    "add": ("other", "bias"),
    "elementwise": ("other", "elementwise"),
}
# Under a known norm layer, an elementwise product / sum with the activations is its scale / shift.
_UNDER_NORM = {"mul": "scale", "add": "bias", "norm_scale": "scale", "norm_shift": "bias"}


@dataclasses.dataclass(frozen=True, order=True)
class Use:
    """One direct use of a parameter: ``usage`` from ``USAGES`` and the layer kind the op implies
    (``"conv"`` for a convolution, ``"norm.batch"`` for ``F.batch_norm``; ``""`` when the op says none)."""

    usage: str
    layer: str = ""

    def __post_init__(self) -> None:
        if self.usage not in USAGES:
            raise ValueError(f"Use.usage {self.usage!r}; valid: {', '.join(USAGES)}")


def usage_names(uses: Iterable[Use]) -> tuple[str, ...]:
    """Distinct usages in priority order, e.g. ``('contract', 'add')``."""
    present = {u.usage for u in uses}
    return tuple(u for u in USAGES if u in present)


def classify(uses: Iterable[Use], known: str = "other") -> tuple[str, str] | None:
    """``(layer, role)`` from a parameter's uses; ``None`` when the trace gives no evidence.

    Args:
      uses: the parameter's recorded uses.
      known: the layer kind already known from the owner's exact class (``"other"`` if none);
        it is kept, and under a norm layer ``mul``/``add`` are its scale/shift.
    Returns:
      ``(layer, role)``, or ``None`` for a parameter that was never used.
    """
    uses = list(uses)
    for usage in USAGES[:-1]:
        found = [u for u in uses if u.usage == usage]
        if not found:
            continue
        default_layer, role = _TABLE[usage]
        hint = next((u.layer for u in found if u.layer), "")
        if known.startswith("norm.") and usage in _UNDER_NORM:
            return known, _UNDER_NORM[usage]
        return (known if known != "other" else hint or default_layer), role
    return None


def with_usage(info: ParamInfo, uses: tuple[Use, ...] | None) -> ParamInfo:
    """``info`` with the graph's evidence: the class's layer kind is kept when known, the graph decides the
    role (``classify(uses, known=info.layer)``, ``source="graph"``); no evidence leaves ``info`` as it is
    (only ``usage`` is recorded).

    Example:
      >>> info = ParamInfo(("blk", "lambda1"), (8,), source="type")
      >>> new = with_usage(info, (Use("mul"),))
      >>> new.role, new.source, new.usage
      ('gain', 'graph', ('mul',))
    """
    if uses is None:
        return info
    names = usage_names(uses)
    found = classify(uses, known=info.layer)
    if found is None:
        return dataclasses.replace(info, usage=names)
    layer, role = found
    return dataclasses.replace(info, layer=layer, role=role, source="graph", usage=names)
