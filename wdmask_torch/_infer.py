"""``infer_rules``: the shortest rules that reproduce an existing optimizer's per-parameter decay.

This module only reads the optimizer (``effective_weight_decay``); the search is the neutral
core's (``wdmask._infer``, algorithm in its docstring), shared with ``wdmask.infer_rules`` for Optax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from wdmask._infer import Inferred, infer_inventory, infer_policy
from wdmask._rules import Rules
from wdmask._types import ParamInfo
from wdmask_torch._apply import checked_inventory
from wdmask_torch._audit import _labelled, effective_weight_decay, param_groups, policy_of

__all__ = ["infer_rules"]


def infer_rules(optimizer: Any, model: nn.Module, *, example_inputs: Any = None,
                inventory: Sequence[ParamInfo] | None = None) -> Inferred:
    """The shortest rules (vocabulary first, paths only when needed) reproducing ``optimizer``'s decay.

    Then its learning-rate multipliers (``lr_decay`` when they are layer-wise decay, else per-path ``lr``)
    and its optimizer labels (a ``{label: optimizer}`` dict, ``wdmask_torch.Optimizers``, groups' ``optimizer``, or
    a list/tuple of optimizers labelled by class name lower-cased: ``[Muon(...), AdamW(...)]`` -> ``"muon"``,
    ``"adamw"``; rebuild such a split with ``wdmask_torch.optimizers(model, result.rules, {"muon": ..., "adamw":
    ...}, weight_decay=result.weight_decay)``).

    Targets are multipliers relative to the optimizer's most common non-zero weight decay,
    returned as ``result.weight_decay``: rebuild with
    ``groups(model, result.rules, weight_decay=result.weight_decay)``. Trainable parameters the
    optimizer does not hold are ignored.

    Args:
      optimizer: An optimizer built over (some of) ``model``'s parameters: a ``torch.optim.Optimizer``,
        a wrapper holding one (``.optimizer``/``._optimizer``) or any object with ``param_groups``; or several
        as a ``{label: optimizer}`` dict, a ``wdmask_torch.Optimizers`` or a list/tuple (labels: class names
        lower-cased, as in ``audit``).
      model: The model (wrappers allowed).
      example_inputs: Inputs for one traced forward pass, as for ``groups``: the inferred rules may then
        use what only the graph knows (``feeds_norm``, roles from usage). Nothing about the model changes.
      inventory: An inventory built already (``wdmask_torch.describe(model, example_inputs=x)``), used
        instead of describing ``model`` again (checked against its parameters: paths and shapes); not
        together with ``example_inputs``.

    Returns:
      ``Inferred(rules, weight_decay)``: ``rules`` give every parameter the optimizer holds the
      same effective weight decay; ``weight_decay`` is ``None`` when nothing is decayed.

    Raises:
      TypeError: ``optimizer`` has no ``param_groups`` or ``model`` is not an ``nn.Module``.
      ValueError: the optimizer holds none of the model's trainable parameters.

    Examples:
      >>> import torch
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
      >>> named = list(net.named_parameters())
      >>> opt = torch.optim.SGD([{"params": [p for n, p in named if p.ndim > 1]},
      ...                        {"params": [p for n, p in named if p.ndim <= 1], "weight_decay": 0.0}],
      ...                       lr=0.1, weight_decay=1e-4)
      >>> infer_rules(opt, net)
      Inferred(rules=Rules(inferred: [{ndim='<=1', decay=False}]), weight_decay=0.0001)
    """
    for _, opt in _labelled(optimizer):
        param_groups(opt)  # TypeError for anything without param_groups, before describing the model
    items = checked_inventory(model, example_inputs, include_frozen=False, fn="infer_rules",
                              given=inventory)
    by_id = effective_weight_decay(optimizer)
    actual = {info.path: by_id[id(p)][0] for _, p, info in items if id(p) in by_id}
    if not actual:
        raise ValueError(f"`optimizer` holds none of the {len(items)} trainable parameters of `model` "
                         f"({type(model).__name__}); build it from this model's parameters")
    inferred = infer_inventory([info for _, _, info in items], actual)
    scales, labels = policy_of(optimizer)
    held = [(p, info) for _, p, info in items if id(p) in by_id]
    has_labels = any(labels.get(id(p)) is not None for p, _ in held)
    extra = infer_policy([info for _, info in held], {info.path: scales[id(p)] for p, info in held},
                         {info.path: labels[id(p)] for p, info in held} if has_labels else None)
    if not extra:
        return inferred
    rules = Rules([*inferred.rules, *extra], default=inferred.rules.default, name="inferred")
    return Inferred(rules, inferred.weight_decay)
