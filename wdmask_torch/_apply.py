"""``groups``: rules -> torch optimizer param groups, one per distinct (weight decay, lr, optimizer label)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wdmask import presets
from wdmask._depth import with_depth
from wdmask._engine import decide
from wdmask._errors import _what, check_bool, check_weight_decay
from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import ParamInfo, given_inventory
from wdmask_torch._describe import inventory

__all__ = ["groups"]

NO_PARAMS_MSG = "`model` ({name}) has no parameters; there is nothing to put in an optimizer."
ALL_FROZEN_MSG = ("all {n} parameters of `model` ({name}) are frozen (requires_grad=False), e.g. {example!r}; "
                  "unfreeze the ones to train (`p.requires_grad_(True)`) or pass include_frozen=True.")
_RESERVED = ("params", "param_names", "weight_decay", "lr_scale", "optimizer")
#: The first torch whose optimizers accept ``(name, tensor)`` pairs and fill ``param_names``.
NAMED_GROUPS_TORCH = "2.6"


def check_named_groups_supported() -> None:
    """Raise ``RuntimeError`` unless this torch accepts named param groups (``(name, tensor)`` pairs)."""
    version = torch.torch_version.TorchVersion(torch.__version__)
    if version < NAMED_GROUPS_TORCH:
        raise RuntimeError(f"wdmask_torch.groups(named=True) needs torch >= {NAMED_GROUPS_TORCH} (named param groups, "
                           f"`param_names`); this is torch {torch.__version__}. Use the default named=False (plain "
                           "tensors) and wdmask.explain(model, rules) for the names.")


def _per_multiplier(options: Any) -> dict[float, dict[str, Any]]:
    """``options_by_multiplier`` as ``{float multiplier: dict of options}``, or a ``TypeError`` naming the bad part."""
    if options is None:
        return {}
    where = "wdmask_torch.groups: `options_by_multiplier`"
    if not isinstance(options, Mapping):
        raise TypeError(f"{where} must be a dict {{multiplier: {{option: value}}}}, e.g. "
                        f"{{0.0: {{'trust_ratio': False}}}}, got {_what(options)}")
    out: dict[float, dict[str, Any]] = {}
    for key, value in options.items():
        if isinstance(key, bool) or not isinstance(key, (int, float)) or not math.isfinite(key):
            raise TypeError(f"{where} keys must be the weight-decay multipliers the rules give (finite numbers such "
                            f"as 0.0 or 1.0), got key {_what(key)}")
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}[{key!r}] must be a dict of group options (e.g. {{'lr': 0.01}}), got "
                            f"{_what(value)}")
        if any(not isinstance(k, str) for k in value):
            bad = next(k for k in value if not isinstance(k, str))
            raise TypeError(f"{where}[{key!r}] keys must be option names (str), got {_what(bad)}")
        out[float(key)] = dict(value)
    return out


def checked_inventory(model: Any, example_inputs: Any, *, include_frozen: bool, fn: str,
                      given: Sequence[ParamInfo] | None = None) -> list[Any]:
    """``inventory`` with clear errors for a model without (trainable) parameters; ``given`` is an inventory
    the caller built already (``describe(model, example_inputs=...)``): it is checked against the model's
    parameters and used instead of describing again."""
    if given is not None and example_inputs is not None:
        raise TypeError(f"wdmask_torch.{fn}: pass `inventory=` or `example_inputs=`, not both (the inventory was "
                        "described with its own example inputs)")
    items = inventory(model, example_inputs, include_frozen=include_frozen, fn=fn)
    if given is not None:
        by_path = given_inventory(given, [(info.path, info.shape) for _, p, info in items if p.requires_grad],
                                  f"wdmask_torch.{fn}")
        items = [(name, p, by_path.get(info.path, info)) for name, p, info in items]
    if not items:
        everything = list(model.named_parameters())
        name = type(model).__name__
        if not everything:
            raise ValueError(NO_PARAMS_MSG.format(name=name))
        raise ValueError(ALL_FROZEN_MSG.format(n=len(everything), name=name, example=everything[0][0]))
    return items


def groups(model: nn.Module, rules: Rules | Iterable[RuleLike] | None = None, *,
           weight_decay: float | None = None, lr: float | None = None, include_frozen: bool = False,
           example_inputs: Any = None, inventory: Sequence[ParamInfo] | None = None,
           strict: bool = False, named: bool = False,
           options_by_multiplier: Mapping[float, Mapping[str, Any]] | None = None,
           **group_options: Any) -> list[dict[str, Any]]:
    r"""Optimizer param groups that apply ``rules``: one group per distinct (weight decay, lr, optimizer label).

    $$\lambda_i = \lambda \, m_i, \qquad \eta_i = \eta \, s_i$$

    When the rules set learning rates (``lr``, ``lr_decay``: ``presets.layer_decay``) each group gets its
    absolute ``lr`` ($\eta s_i$) and records the multiplier $s_i$ as ``lr_scale`` (timm-style schedulers
    that rescale read it; torch's ``LRScheduler`` scales each group's own ``lr`` and keeps the ratios).
    When they set optimizer labels (``presets.muon``) each group records its label as ``optimizer``
    (``wdmask_torch.optimizers`` builds one optimizer per label).

    Groups come in a fixed order: the no-decay group first, then ascending multiplier; empty
    groups are dropped and parameters keep ``named_parameters()`` order, so an optimizer
    ``state_dict`` loads into another construction. By default ``params`` holds the tensors
    themselves, as in ``model.parameters()``, so the groups go to any optimizer (also
    ``ZeroRedundancyOptimizer``, optimizers that sort their params, and a later plain
    ``add_param_group``). Names for humans come from ``wdmask.explain(model, rules)`` and
    ``wdmask_torch.audit``. ``named=True`` (torch >= 2.6) puts ``(name, tensor)`` pairs in
    ``params`` instead, so torch fills and validates each group's ``param_names`` and records them
    in the optimizer's ``state_dict``; names are the canonical paths (wrapper prefixes such as
    ``module.`` of DDP or ``_orig_mod.`` removed). Every group of one optimizer must then be named.

    Args:
      model: An ``nn.Module`` (possibly wrapped by ``torch.compile``/DDP/DataParallel/FSDP).
      rules: Ordered rules; the last match wins; unmatched parameters are decayed. Default (``None``):
        ``wdmask.presets.standard``.
      weight_decay: $\lambda$, a finite real number >= 0. ``None``: the no-decay group sets
        ``weight_decay=0.0`` and the multiplier-1 group inherits the optimizer's ``weight_decay``.
        A value: every group sets ``weight_decay * multiplier``.
      lr: $\eta$, the base learning rate: every group gets ``lr * lr_scale``. Needed when the rules set
        learning-rate multipliers other than 1; ``None``: groups leave ``lr`` to the optimizer.
      named: Put ``(name, tensor)`` pairs in ``params`` (torch's named param groups, torch >= 2.6)
        for optimizers and checkpoints that record ``param_names``.
      include_frozen: Also group parameters with ``requires_grad=False``.
      example_inputs: Inputs for one traced forward pass (meta tensors work): roles come from how each
        parameter is used (``source="graph"``) and ``feeds_norm`` is known (needed by
        ``presets.standard_scale_invariant``). Without them, parameters that class and name cannot
        classify are reported in an ``UnclassifiedWarning``.
      inventory: An inventory built already (``wdmask_torch.describe(model, example_inputs=x)``), used
        instead of describing ``model`` again (checked against its parameters: paths and shapes); not
        together with ``example_inputs``.
      strict: Raise ``RuleError`` (instead of warning) when a rule matches no parameter or a
        parameter is decided on a guess.
      options_by_multiplier: Extra keys for the group of one multiplier, e.g.
        ``{0.0: {"trust_ratio": False}}`` so a LARS/LAMB implementation that reads per-group flags
        skips trust-ratio scaling where there is no decay; applied after ``group_options``.
      **group_options: Extra keys for every group (``lr=``, ``betas=``, ...).

    Returns:
      A list of param-group dicts for ``torch.optim.*``.

    Raises:
      TypeError: ``model`` is not an ``nn.Module``; ``weight_decay`` is not a real number (a bool, a str);
        ``named``/``strict``/``include_frozen`` is not a bool; ``options_by_multiplier`` is not a
        ``{multiplier: {option: value}}`` dict.
      ValueError: no parameters, all frozen, a negative/NaN/infinite ``weight_decay``, a
        multiplier other than 0/1 without ``weight_decay``, or ``weight_decay * multiplier`` overflowing.
      RuntimeError: ``named=True`` on torch older than 2.6.
      RuleError: invalid rules, or (``strict``) a rule matching nothing.

    Examples:
      >>> import torch
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> opt = torch.optim.AdamW(groups(net), lr=1e-3, weight_decay=0.05)
      >>> [(g["weight_decay"], len(g["params"])) for g in opt.param_groups]
      [(0.0, 3), (0.05, 1)]
      >>> opt.param_groups[1]["params"][0] is net[0].weight
      True
      >>> [[name for name, _ in g["params"]] for g in groups(net, named=True)]
      [['0.bias', '1.weight', '1.bias'], ['0.weight']]
    """
    rules = presets.standard if rules is None else rules
    if weight_decay is not None:
        check_weight_decay(weight_decay, schedule=False, where="wdmask_torch.groups: ")
        weight_decay = float(weight_decay)  # a 0-d tensor/array becomes the float torch optimizers expect
    for flag, value in (("named", named), ("strict", strict), ("include_frozen", include_frozen)):
        check_bool(value, flag, where="wdmask_torch.groups: ")
    if named:
        check_named_groups_supported()
    per_multiplier = _per_multiplier(options_by_multiplier)
    bad = [k for k in [*group_options, *(k for o in per_multiplier.values() for k in o)] if k in _RESERVED]
    if bad:
        raise ValueError(f"groups(): `{bad[0]}` cannot be a group option; wdmask_torch fills "
                         f"{', '.join(_RESERVED)} itself")
    if lr is not None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise (ValueError if isinstance(lr, (int, float)) and not isinstance(lr, bool) else TypeError)(
                f"wdmask_torch.groups: `lr` must be a finite real number >= 0, got {type(lr).__name__} {lr!r}")
        lr = float(lr)
    items = checked_inventory(model, example_inputs, include_frozen=include_frozen, fn="groups", given=inventory)
    rules = as_rules(rules)
    infos = [info for _, _, info in items]
    if needs_depth(rules) and any(info.depth is None for info in infos):  # traced inventories have depths
        infos = with_depth(infos, None, registration=True, strict=strict)
    decisions = decide(infos, rules, strict=strict)
    scaled = any(r.sets("lr") or r.sets("lr_decay") for r in rules)
    by_key: dict[tuple[float, float, str], list[tuple[str, nn.Parameter]]] = {}
    for (_, p, _), info in zip(items, infos, strict=True):
        d = decisions[info.path]
        by_key.setdefault((d.multiplier, _lr_scale(d.lr, info), d.optimizer or ""), []).append((info.dotted, p))
    buckets: dict[float, list[tuple[str, nn.Parameter]]] = {}
    for (multiplier, _, _), pairs in by_key.items():
        buckets.setdefault(multiplier, []).extend(pairs)
    out: list[dict[str, Any]] = []
    for key in sorted(by_key, key=lambda k: (k[2], k[0], -k[1])):
        multiplier, lr_scale, label = key
        pairs = by_key[key]
        group: dict[str, Any] = {"params": pairs if named else [p for _, p in pairs]}
        if scaled:
            if lr is None and lr_scale != 1.0:
                raise ValueError(
                    f"rules give learning-rate multiplier {lr_scale:g} to {len(pairs)} parameter(s) (e.g. "
                    f"{pairs[0][0]!r}); pass `lr=` to groups() so that group gets lr * {lr_scale:g}, e.g. "
                    "groups(model, rules, lr=1e-3)")
            if lr is not None:
                group["lr"] = lr * lr_scale
            group["lr_scale"] = lr_scale
        elif lr is not None:
            group["lr"] = lr
        if label:
            group["optimizer"] = label
        if weight_decay is not None:
            group["weight_decay"] = weight_decay * multiplier
            if not math.isfinite(group["weight_decay"]):
                raise ValueError(_overflow_message(weight_decay, multiplier, pairs, items, decisions))
        elif multiplier == 0.0:
            group["weight_decay"] = 0.0
        elif multiplier != 1.0:
            example = pairs[0][0]
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


def _overflow_message(weight_decay: float, multiplier: float, pairs: list[tuple[str, nn.Parameter]],
                      items: list[Any], decisions: Any) -> str:
    """Why a group's ``weight_decay * multiplier`` is not finite, naming the rule that set the multiplier."""
    first = pairs[0][0]
    rule = next((decisions[info.path].rule for _, _, info in items if info.dotted == first), None)
    source = f"rules[{rule}]" if rule is not None else "the rules"
    return (f"wdmask_torch.groups: weight_decay * multiplier = {weight_decay:g} * {multiplier:g} overflows to "
            f"{weight_decay * multiplier:g} for {len(pairs)} parameter(s) (e.g. {first!r}, multiplier set by "
            f"{source}); a group's weight decay must be finite: lower that rule's multiplier or `weight_decay`")


def needs_depth(rules: Rules) -> bool:
    """Whether ``rules`` read depths (``lr_decay`` actions or ``in_block`` conditions)."""
    return any(r.sets("lr_decay") or r.in_block is not None for r in rules)


def _lr_scale(lr: float | tuple[float, ...], info: Any) -> float:
    """A torch parameter's one lr multiplier (torch stacks nothing: a tuple has one entry per slice)."""
    if isinstance(lr, tuple):  # pragma: no cover - torch parameters are never stacked
        if len(set(lr)) != 1:
            raise ValueError(f"{info.dotted!r}: one learning-rate multiplier per slice {lr}: torch param groups take "
                             "one lr per tensor")
        return lr[0]
    return lr


def call_order(model: nn.Module, example_inputs: Any) -> list[tuple[str, ...]]:
    """Module paths (canonical, ``()`` for the root) in the order their ``forward`` first runs on ``example_inputs``.

    Read from the usage trace ``describe(model, example_inputs=...)`` runs (one forward pass, driven like
    every traced pass: eval modes by assignment, parameters, buffers, modes and RNG states restored, hooks
    removed even on error); the depths of a traced inventory come from this order, so ``groups`` with
    ``presets.layer_decay`` and ``example_inputs`` runs the model once.

    Examples:
      >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
      >>> call_order(net, torch.zeros(1, 2))
      [(), ('0',), ('1',), ('2',)]
    """
    from wdmask_torch._describe import canonical_path, check_model
    from wdmask_torch._usage import trace

    inner = check_model(model, "call_order")
    graph = trace(inner, example_inputs, params=list(inner.parameters()))
    return [canonical_path(name) if name else () for name in graph.order]
