"""``audit``: where an existing optimizer's weight decay disagrees with the rules.

This module only reads the optimizer (``param_groups``, ``effective_weight_decay``); the comparison
and the report are the neutral core's (``wdmask._audit``), shared with ``wdmask.audit`` for Optax.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wdmask import presets
from wdmask._audit import AuditReport, AuditRow, audit_inventory, reference_weight_decay
from wdmask._rules import RuleLike, Rules
from wdmask._types import ParamInfo
from wdmask_torch._apply import checked_inventory

__all__ = ["AuditReport", "AuditRow", "audit", "effective_weight_decay", "param_groups", "reference_weight_decay"]

NOT_OPTIMIZER_MSG = ("`optimizer` must be a torch.optim.Optimizer or an object with `param_groups` (a list of "
                     "dicts holding 'params', as DeepSpeed's and accelerate's optimizers have), got {what}")
#: Attributes where optimizer wrappers keep the real optimizer (accelerate, Lightning, ...).
_INNER = ("optimizer", "_optimizer")


def _inner(obj: Any, depth: int = 0) -> Any:
    """The wrapped optimizer (one level down) if it, or something it wraps, has ``param_groups``."""
    for attr in _INNER:
        try:
            inner = getattr(obj, attr, None)
        except Exception:  # a wrapper's __getattr__ may raise anything
            inner = None
        if inner is not None and inner is not obj and (
                _has_groups(inner) or (depth < 8 and _inner(inner, depth + 1) is not None)):
            return inner
    return None


def _has_groups(obj: Any) -> bool:
    try:
        return isinstance(getattr(obj, "param_groups", None), (list, tuple))
    except Exception:
        return False


def param_groups(optimizer: Any) -> list[dict[str, Any]]:
    """``optimizer``'s param groups with ``params`` as a list of tensors, wrappers unwrapped.

    Takes a ``torch.optim.Optimizer``, a wrapper holding one in ``.optimizer``/``._optimizer``
    (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), or any object with
    ``param_groups`` (DeepSpeed ZeRO). ``(name, tensor)`` pairs of named groups count as tensors.

    Raises:
      TypeError: nothing with ``param_groups`` (a list of dicts holding ``params``).
    """
    obj = _innermost(optimizer)
    what = type(optimizer).__name__
    if isinstance(optimizer, (list, tuple)):
        what += "; pass the optimizer itself (torch.optim.SGD(...)), not its parameters or groups"
    if not _has_groups(obj):
        raise TypeError(NOT_OPTIMIZER_MSG.format(what=what))
    out = []
    for i, group in enumerate(obj.param_groups):
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(NOT_OPTIMIZER_MSG.format(what=f"{what} whose param_groups[{i}] is "
                                                          f"{type(group).__name__}, not a dict with 'params'"))
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        params = [p[1] if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], torch.Tensor) else p
                  for p in params]
        out.append({**group, "params": params})
    return out


def _innermost(optimizer: Any) -> Any:
    """The optimizer a wrapper holds (``.optimizer``/``._optimizer``, any depth), else ``optimizer`` itself."""
    obj, seen = optimizer, set()
    while not isinstance(obj, torch.optim.Optimizer) and id(obj) not in seen:
        seen.add(id(obj))
        inner = _inner(obj)
        if inner is None:
            break
        obj = inner
    return obj


def _labelled(optimizer: Any) -> list[tuple[str | None, Any]]:
    """``[(label, optimizer)]``: a ``{label: optimizer}`` mapping (a hand-made Muon + AdamW split), a
    ``wdmask_torch.Optimizers``, a list/tuple of optimizers (each labelled by its class name lower-cased:
    ``Muon`` -> ``"muon"``), or one optimizer (label ``None``)."""
    from wdmask_torch._optimizers import Optimizers

    if isinstance(optimizer, Mapping):
        return list(optimizer.items())
    if isinstance(optimizer, Optimizers):
        return list(optimizer.optimizers.items())
    if isinstance(optimizer, (list, tuple)):
        return _by_class(optimizer)
    return [(None, optimizer)]


def _by_class(optimizers: list[Any] | tuple[Any, ...]) -> list[tuple[str | None, Any]]:
    """A list/tuple of optimizers labelled by class name lower-cased, or a clear error: not optimizers (its
    parameters or groups), empty, or two of one class (their labels would clash: a dict names them)."""
    kind = type(optimizers).__name__
    if not optimizers:
        raise TypeError(NOT_OPTIMIZER_MSG.format(
            what=f"{kind}; pass the optimizer itself (torch.optim.SGD(...)) or a list of the optimizers that train "
                 f"the model ([torch.optim.Muon(hidden, ...), torch.optim.AdamW(rest, ...)]), not an empty {kind}"))
    inner = [_innermost(o) for o in optimizers]
    for k, o in enumerate(inner):
        if not _has_groups(o):
            raise TypeError(NOT_OPTIMIZER_MSG.format(
                what=f"a {kind} whose item [{k}] is {type(optimizers[k]).__name__}; a {kind} must hold optimizers "
                     "(e.g. [torch.optim.Muon(hidden, ...), torch.optim.AdamW(rest, ...)], each labelled by its "
                     "class name lower-cased), not parameters or param groups: pass the optimizer itself "
                     "(torch.optim.SGD(...))"))
    labels = [type(o).__name__.lower() for o in inner]
    for k, label in enumerate(labels):
        if label in labels[:k]:
            j = labels.index(label)
            raise ValueError(f"`optimizer` holds two {type(inner[k]).__name__} optimizers (items [{j}] and [{k}]): "
                             f"a {kind} labels each optimizer by its class name lower-cased, so both would be "
                             f"{label!r}; pass a {{label: optimizer}} dict naming them instead, e.g. "
                             f"{{'{label}_a': opts[{j}], '{label}_b': opts[{k}]}}, with rules whose labels match")
    return list(zip(labels, optimizers, strict=True))


def policy_of(optimizer: Any) -> tuple[dict[int, float], dict[int, str | None]]:
    """``({id(param): lr multiplier}, {id(param): optimizer label})`` of an optimizer (or ``{label: optimizer}``).

    The multiplier is a group's ``lr_scale`` when any group has one (timm, MAE, wdmask), else its ``lr``
    over the largest ``lr`` of its optimizer. The label is a group's ``optimizer`` key, else the mapping's key.
    """
    scales: dict[int, float] = {}
    labels: dict[int, str | None] = {}
    for label, opt in _labelled(optimizer):
        groups = param_groups(opt)
        has_scale = any("lr_scale" in g for g in groups)
        top = max((float(g.get("lr", 0.0)) for g in groups), default=0.0) or 1.0
        for g in groups:
            scale = float(g.get("lr_scale", 1.0)) if has_scale else float(g.get("lr", top)) / top
            for p in g["params"]:
                scales.setdefault(id(p), scale)
                labels.setdefault(id(p), g.get("optimizer", label))
    return scales, labels


def effective_weight_decay(optimizer: Any) -> dict[int, list[float]]:
    """``{id(param): [weight_decay of each group holding it]}``; a group without the key counts as 0."""
    out: dict[int, list[float]] = {}
    for _, opt in _labelled(optimizer):
        for group in param_groups(opt):
            wd = float(group.get("weight_decay", 0.0) or 0.0)
            for p in group["params"]:
                out.setdefault(id(p), []).append(wd)
    return out


def audit(optimizer: Any, model: nn.Module, rules: Rules | Iterable[RuleLike] | None = None, *,
          example_inputs: Any = None,
          inventory: Sequence[ParamInfo] | None = None) -> AuditReport:
    """Compare an existing optimizer's per-parameter weight decay with what ``rules`` decide.

    A parameter the rules do not decay must have ``weight_decay == 0``; decayed parameters must
    have ``reference * multiplier``, where ``reference`` is the optimizer's most common weight
    decay for multiplier-1 parameters (so ``audit`` checks *which* parameters are decayed and
    their ratios, whatever the optimizer's value). Trainable parameters missing from the
    optimizer, parameters it holds twice, and optimizer parameters foreign to the model are
    problems too; frozen parameters are ignored.

    When the rules set learning rates (``lr``, ``lr_decay``) each parameter's lr multiplier is audited too
    (a group's ``lr_scale``, else its ``lr`` relative to the largest), and when they set optimizer labels,
    each parameter's label (a group's ``optimizer`` key, or the key of a ``{label: optimizer}`` mapping).

    Args:
      optimizer: A ``torch.optim.Optimizer``, a wrapper holding one (accelerate's
        ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), any object with
        ``param_groups`` (DeepSpeed ZeRO), a ``wdmask_torch.Optimizers``, a ``{label: optimizer}`` dict, or a
        list/tuple of optimizers of distinct classes, each labelled by its class name lower-cased
        (``[torch.optim.Muon(hidden, ...), torch.optim.AdamW(rest, ...)]``: ``"muon"``, ``"adamw"``, the
        labels of ``presets.muon``).
      model: The model it trains (wrappers allowed).
      rules: The rules it should follow (default ``None``: ``wdmask.presets.standard``).
      example_inputs: The inputs the optimizer's groups were built with (``groups(model, rules,
        example_inputs=x)``): one traced forward pass classifies parameters by their usage (position
        tables, learned tokens) and detects ``feeds_norm`` exactly as ``groups`` did. Nothing about the
        model changes (modes, parameters, buffers and RNG states are restored).
      inventory: An inventory built already (``wdmask_torch.describe(model, example_inputs=x)``), used
        instead of describing ``model`` again (checked against its parameters: paths and shapes); not
        together with ``example_inputs``.

    Returns:
      An ``AuditReport``: ``report.ok``, ``report.assert_ok()``, ``print(report)``.

    Raises:
      TypeError: ``optimizer`` has no ``param_groups`` (or is an empty list, or a list holding something that is
        not an optimizer), or ``model`` is not an ``nn.Module``.
      ValueError: a list/tuple of optimizers holds two of one class (pass a ``{label: optimizer}`` dict).

    Examples:
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> report = audit(torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4), net)
      >>> report.ok, [r.path for r in report.mismatches]
      (False, ['0.bias', '1.weight', '1.bias'])
      >>> import wdmask_torch
      >>> x = torch.zeros(2, 4)
      >>> audit(torch.optim.SGD(wdmask_torch.groups(net, example_inputs=x), lr=0.1, weight_decay=1e-4), net,
      ...       example_inputs=x).ok
      True
    """
    rules = presets.standard if rules is None else rules
    groups = [g for _, opt in _labelled(optimizer) for g in param_groups(opt)]
    items = checked_inventory(model, example_inputs, include_frozen=True, fn="audit",
                              given=inventory)
    trainable = [(p, info) for _, p, info in items if p.requires_grad]
    known = {id(p) for _, p, _ in items} | {id(p) for p in model.parameters()}
    by_id = effective_weight_decay(optimizer)
    actual = {info.path: by_id.get(id(p), []) for p, info in trainable}
    foreign = []
    for gi, group in enumerate(groups):
        names = group.get("param_names")
        for pi, p in enumerate(group["params"]):
            if id(p) not in known:
                label = names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"
                foreign.append(f"{label} {tuple(p.shape)}")
    scales, labels = policy_of(optimizer)
    return audit_inventory([info for _, info in trainable], actual, rules, foreign=foreign,
                           actual_lr={info.path: scales[id(p)] for p, info in trainable if id(p) in scales},
                           actual_optimizer={info.path: labels[id(p)] for p, info in trainable if id(p) in labels})
