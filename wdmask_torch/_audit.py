"""``audit``: where an existing optimizer's weight decay disagrees with the rules.

This module only reads the optimizer (``effective_weight_decay``); the comparison and the report
are the neutral core's (``wdmask._audit``), shared with ``wdmask.audit`` for Optax.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from wdmask import presets
from wdmask._audit import AuditReport, AuditRow, audit_inventory, reference_weight_decay
from wdmask._rules import RuleLike, Rules
from wdmask_torch._apply import checked_inventory

__all__ = ["AuditReport", "AuditRow", "audit", "effective_weight_decay", "reference_weight_decay"]


def effective_weight_decay(optimizer: torch.optim.Optimizer) -> dict[int, list[float]]:
    """``{id(param): [weight_decay of each group holding it]}``; a group without the key counts as 0."""
    out: dict[int, list[float]] = {}
    for group in optimizer.param_groups:
        wd = float(group.get("weight_decay", 0.0) or 0.0)
        for p in group["params"]:
            out.setdefault(id(p), []).append(wd)
    return out


def audit(optimizer: torch.optim.Optimizer, model: nn.Module,
          rules: Rules | Iterable[RuleLike] = presets.standard) -> AuditReport:
    """Compare an existing optimizer's per-parameter weight decay with what ``rules`` decide.

    A parameter the rules do not decay must have ``weight_decay == 0``; decayed parameters must
    have ``reference * multiplier``, where ``reference`` is the optimizer's most common weight
    decay for multiplier-1 parameters (so ``audit`` checks *which* parameters are decayed and
    their ratios, whatever the optimizer's value). Trainable parameters missing from the
    optimizer, parameters it holds twice, and optimizer parameters foreign to the model are
    problems too; frozen parameters are ignored.

    Args:
      optimizer: A ``torch.optim.Optimizer``.
      model: The model it trains (wrappers allowed).
      rules: The rules it should follow.
    Returns:
      An ``AuditReport``: ``report.ok``, ``report.assert_ok()``, ``print(report)``.
    Raises:
      TypeError: ``optimizer`` is not an optimizer or ``model`` not an ``nn.Module``.
    Examples:
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> report = audit(torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4), net)
      >>> report.ok, [r.path for r in report.mismatches]
      (False, ['0.bias', '1.weight', '1.bias'])
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    items = checked_inventory(model, None, include_frozen=True, fn="audit")
    trainable = [(p, info) for _, p, info in items if p.requires_grad]
    known = {id(p) for _, p, _ in items} | {id(p) for p in model.parameters()}
    by_id = effective_weight_decay(optimizer)
    actual = {info.path: by_id.get(id(p), []) for p, info in trainable}
    foreign = []
    for gi, group in enumerate(optimizer.param_groups):
        names = group.get("param_names")
        for pi, p in enumerate(group["params"]):
            if id(p) not in known:
                label = names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"
                foreign.append(f"{label} {tuple(p.shape)}")
    return audit_inventory([info for _, info in trainable], actual, rules, foreign=foreign)
