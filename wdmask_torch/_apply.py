"""``groups``: rules -> torch optimizer param groups, one per distinct weight-decay multiplier."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from wdmask import presets
from wdmask._engine import decide
from wdmask._rules import RuleLike, Rules
from wdmask_torch._describe import inventory

__all__ = ["groups"]

NO_PARAMS_MSG = "`model` ({name}) has no parameters; there is nothing to put in an optimizer."
ALL_FROZEN_MSG = ("all {n} parameters of `model` ({name}) are frozen (requires_grad=False), e.g. {example!r}; "
                  "unfreeze the ones to train (`p.requires_grad_(True)`) or pass include_frozen=True.")
_RESERVED = ("params", "param_names", "weight_decay")


def checked_inventory(model: Any, example_inputs: Any, *, include_frozen: bool, fn: str) -> list[Any]:
    """``inventory`` with clear errors for a model without (trainable) parameters."""
    items = inventory(model, example_inputs, include_frozen=include_frozen, fn=fn)
    if not items:
        everything = list(model.named_parameters())
        name = type(model).__name__
        if not everything:
            raise ValueError(NO_PARAMS_MSG.format(name=name))
        raise ValueError(ALL_FROZEN_MSG.format(n=len(everything), name=name, example=everything[0][0]))
    return items


def groups(model: nn.Module, rules: Rules | Iterable[RuleLike] = presets.standard, *,
           weight_decay: float | None = None, include_frozen: bool = False, example_inputs: Any = None,
           strict: bool = False, options_by_multiplier: Mapping[float, Mapping[str, Any]] | None = None,
           **group_options: Any) -> list[dict[str, Any]]:
    r"""Optimizer param groups that apply ``rules``: one group per distinct weight-decay multiplier.

    .. math:: \lambda_i = \lambda \, m_i

    Groups come in a fixed order: the no-decay group first, then ascending multiplier; empty
    groups are dropped and parameters keep ``named_parameters()`` order, so an optimizer
    ``state_dict`` loads into another construction. ``params`` holds ``(name, tensor)`` pairs,
    so torch fills and validates each group's ``param_names``; names are the canonical paths
    (wrapper prefixes such as ``module.`` of DDP or ``_orig_mod.`` removed).

    Args:
      model: An ``nn.Module`` (possibly wrapped by ``torch.compile``/DDP/DataParallel/FSDP).
      rules: Ordered rules; the last match wins; unmatched parameters are decayed.
      weight_decay: :math:`\lambda`. ``None``: the no-decay group sets ``weight_decay=0.0`` and the
        multiplier-1 group inherits the optimizer's ``weight_decay``. A value: every group sets
        ``weight_decay * multiplier``.
      include_frozen: Also group parameters with ``requires_grad=False``.
      example_inputs: Inputs for one forward pass that detects ``feeds_norm`` (needed by
        ``presets.standard_scale_invariant``).
      strict: Raise ``RuleError`` (instead of warning) when a rule matches no parameter.
      options_by_multiplier: Extra keys for the group of one multiplier, e.g.
        ``{0.0: {"trust_ratio": False}}`` so a LARS/LAMB implementation that reads per-group flags
        skips trust-ratio scaling where there is no decay; applied after ``group_options``.
      **group_options: Extra keys for every group (``lr=``, ``betas=``, ...).
    Returns:
      A list of param-group dicts for ``torch.optim.*``.
    Raises:
      TypeError: ``model`` is not an ``nn.Module``.
      ValueError: no parameters, all frozen, or a multiplier other than 0/1 without ``weight_decay``.
      RuleError: invalid rules, or (``strict``) a rule matching nothing.
    Examples:
      >>> import torch
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> opt = torch.optim.AdamW(groups(net), lr=1e-3, weight_decay=0.05)
      >>> [(g["weight_decay"], g["param_names"]) for g in opt.param_groups]
      [(0.0, ['0.bias', '1.weight', '1.bias']), (0.05, ['0.weight'])]
    """
    per_multiplier = {float(m): dict(o) for m, o in (options_by_multiplier or {}).items()}
    bad = [k for k in [*group_options, *(k for o in per_multiplier.values() for k in o)] if k in _RESERVED]
    if bad:
        raise ValueError(f"groups(): `{bad[0]}` cannot be a group option; wdmask_torch fills "
                         f"{', '.join(_RESERVED)} itself")
    items = checked_inventory(model, example_inputs, include_frozen=include_frozen, fn="groups")
    decisions = decide([info for _, _, info in items], rules, strict=strict)
    buckets: dict[float, list[tuple[str, nn.Parameter]]] = {}
    for _, p, info in items:
        buckets.setdefault(decisions[info.path].multiplier, []).append((info.dotted, p))
    out: list[dict[str, Any]] = []
    for multiplier in sorted(buckets):
        group: dict[str, Any] = {"params": buckets[multiplier]}
        if weight_decay is not None:
            group["weight_decay"] = weight_decay * multiplier
        elif multiplier == 0.0:
            group["weight_decay"] = 0.0
        elif multiplier != 1.0:
            example = buckets[multiplier][0][0]
            raise ValueError(
                f"rules give weight-decay multiplier {multiplier:g} to {len(buckets[multiplier])} parameter(s) "
                f"(e.g. {example!r}); pass `weight_decay=` to groups() so that group gets "
                f"weight_decay * {multiplier:g}, e.g. groups(model, rules, weight_decay=1e-4)")
        group.update(group_options)
        group.update(per_multiplier.get(multiplier, {}))
        out.append(group)
    unused = sorted(set(per_multiplier) - set(buckets))
    if unused:
        raise ValueError(f"groups(): options_by_multiplier names multiplier(s) {unused} that no parameter gets; "
                         f"the rules give {sorted(buckets)}")
    return out
