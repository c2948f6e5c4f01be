"""``infer_rules``: the shortest rules that reproduce an existing optimizer's per-parameter decay.

Algorithm (greedy decision list; later rules override earlier ones, as in ``decide``):

1. Targets: each parameter's multiplier ``weight_decay / reference``, where ``reference`` is the
   optimizer's most common non-zero weight decay; the rule set's default is 1 (decay).
2. Vocabulary phase: candidates are conditions in the shared vocabulary, in this order of
   preference: ``layer`` (``norm`` before each kind), ``role``, ``ndim``, ``layer`` + ``role``,
   ``module_type``. Each step appends the (condition, multiplier) whose gain is largest: the number
   of parameters it makes right minus the number it makes wrong. Stops when no gain is positive.
3. Path phase: the same with path globs of the still-wrong parameters added as candidates
   (``**.a.b.leaf``, ``**.b.leaf``, ``**.leaf``, indices as ``*``, the exact path); any parameter still wrong
   gets an exact-path rule, so the result is always exact.
4. Rules that change nothing are removed, adjacent path rules with the same action merged, and
   the result is checked with ``decide`` against every target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from wdmask._engine import decide
from wdmask._rules import Rule, Rules
from wdmask._types import LAYER_KINDS, ROLES, ParamInfo
from wdmask_torch._apply import checked_inventory
from wdmask_torch._audit import effective_weight_decay, param_groups, reference_weight_decay

__all__ = ["infer_rules"]

Condition = dict[str, Any]


def _action(value: float) -> dict[str, Any]:
    if value == 0.0:
        return {"decay": False}
    if value == 1.0:
        return {"decay": True}
    return {"multiplier": value}


def _vocabulary(infos: Sequence[ParamInfo]) -> list[Condition]:
    """Vocabulary conditions that some parameter satisfies, most preferred first."""
    layers = [k for k in LAYER_KINDS if any(i.layer == k for i in infos)]
    roles = [r for r in ROLES if any(i.role == r for i in infos)]
    ndims = sorted({i.ndim for i in infos})
    norm = ["norm"] if any(k.startswith("norm.") for k in layers) else []
    out: list[Condition] = [{"layer": k} for k in norm + layers]
    out += [{"role": r} for r in roles]
    out += [{"ndim": "<=1"}, {"ndim": ">=2"}, *({"ndim": n} for n in ndims)]
    out += [{"layer": k, "role": r} for k in norm + layers for r in roles]
    out += [{"module_type": t} for t in dict.fromkeys(i.module_type for i in infos) if t and "*" not in t]
    return out


def _exact(info: ParamInfo) -> Condition:
    if any(c in info.dotted for c in "*?[]"):
        return {"regex": re.escape(info.dotted)}
    return {"path": info.dotted}


def _globs(info: ParamInfo) -> list[Condition]:
    """Path globs that generalize one parameter's path: suffixes, indices as ``*``, the exact path."""
    segs = info.path
    if any(c in s for s in segs for c in "*?[]"):
        return [_exact(info)]
    # Most specific suffix first (ties go to the clearer exception); never start at an index (``**.1.weight``).
    out = [{"path": "**." + ".".join(segs[-k:])} for k in (3, 2, 1) if len(segs) > k and not segs[-k].isdigit()]
    if any(s.isdigit() for s in segs):
        out.append({"path": ".".join("*" if s.isdigit() else s for s in segs)})
    out.append(_exact(info))
    return out


def _matches(condition: Condition, infos: Sequence[ParamInfo]) -> list[int]:
    rule = Rule(**condition, decay=True)
    return [i for i, info in enumerate(infos) if rule.matches(info)]


def _greedy(infos: Sequence[ParamInfo], targets: Sequence[float], current: list[float],
            candidates: list[Condition], chosen: list[tuple[Condition, float]]) -> None:
    values = sorted(set(targets))
    matched = [(c, _matches(c, infos)) for c in candidates]
    while True:
        best: tuple[int, Condition, list[int], float] | None = None
        for condition, idx in matched:
            for v in values:
                gain = sum(1 for i in idx if current[i] != targets[i] and targets[i] == v) - sum(
                    1 for i in idx if current[i] == targets[i] and targets[i] != v)
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, condition, idx, v)
        if best is None:
            return
        _, condition, idx, v = best
        chosen.append((condition, v))
        for i in idx:
            current[i] = v


def _prune(infos: Sequence[ParamInfo], targets: Sequence[float], rules: list[Rule], default: float) -> list[Rule]:
    def exact(candidate: list[Rule]) -> bool:
        ds = decide(infos, Rules(candidate, default=default))
        return all(ds[info.path].multiplier == t for info, t in zip(infos, targets, strict=True))

    i = len(rules) - 1
    while i >= 0:
        trial = rules[:i] + rules[i + 1:]
        if exact(trial):
            rules = trial
        i -= 1
    merged: list[Rule] = []
    for r in rules:
        prev = merged[-1] if merged else None
        if prev is not None and _path_only(prev) and _path_only(r) and prev.multiplier_value == r.multiplier_value:
            merged[-1] = Rule(path=[*_tuple(prev.path), *_tuple(r.path)], **_action(r.multiplier_value))
        else:
            merged.append(r)
    return merged


def _path_only(rule: Rule) -> bool:
    return set(rule.to_dict()) - {"decay", "multiplier"} == {"path"}


def _tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def infer_rules(optimizer: Any, model: nn.Module) -> Rules:
    """The shortest rules (vocabulary first, paths only when needed) reproducing ``optimizer``'s decay.

    Targets are multipliers relative to the optimizer's most common non-zero weight decay
    ``reference`` (named in the returned rules' ``name``): rebuild with
    ``groups(model, rules, weight_decay=reference)``. Trainable parameters the optimizer does not
    hold are ignored. See the module docstring for the algorithm.

    Args:
      optimizer: An optimizer built over (some of) ``model``'s parameters: a ``torch.optim.Optimizer``,
        a wrapper holding one (``.optimizer``/``._optimizer``) or any object with ``param_groups``.
      model: The model (wrappers allowed).
    Returns:
      ``Rules`` that give every parameter the optimizer holds the same effective weight decay.
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
      Rules(inferred (weight_decay=0.0001): [{ndim='<=1', decay=False}])
    """
    param_groups(optimizer)  # TypeError for anything without param_groups, before describing the model
    items = checked_inventory(model, None, include_frozen=False, fn="infer_rules")
    actual = effective_weight_decay(optimizer)
    held = [(info, actual[id(p)][0]) for _, p, info in items if id(p) in actual]
    if not held:
        raise ValueError(f"`optimizer` holds none of the {len(items)} trainable parameters of `model` "
                         f"({type(model).__name__}); build it from this model's parameters")
    infos = [info for info, _ in held]
    reference = reference_weight_decay((1.0, wd) for _, wd in held)
    if reference is None:
        return Rules([], default=0.0, name="inferred (no weight decay)")
    targets = [float(f"{wd / reference:.12g}") for _, wd in held]
    current = [1.0] * len(infos)
    chosen: list[tuple[Condition, float]] = []
    vocabulary = _vocabulary(infos)
    _greedy(infos, targets, current, vocabulary, chosen)
    wrong = [i for i in range(len(infos)) if current[i] != targets[i]]
    if wrong:
        globs = list({str(g): g for i in wrong for g in _globs(infos[i])}.values())
        _greedy(infos, targets, current, vocabulary + globs, chosen)
    chosen += [(_exact(infos[i]), targets[i]) for i in range(len(infos)) if current[i] != targets[i]]
    rules = _prune(infos, targets, [Rule(**c, **_action(v)) for c, v in chosen], 1.0)
    result = Rules(rules, name=f"inferred (weight_decay={reference:g})")
    decisions = decide(infos, result)
    bad = [info.dotted for info, t in zip(infos, targets, strict=True) if decisions[info.path].multiplier != t]
    if bad:  # pragma: no cover - the exact-path fallback makes this unreachable
        raise RuntimeError(f"infer_rules: internal error, rules do not reproduce {bad[:5]}")
    return result
