"""The rule-inference core: the shortest rules reproducing per-parameter decay targets (no framework imported).

Each adapter reads an optimizer's effective weight decay per parameter path (torch param groups,
an Optax transform's probe update, a bool mask) and calls ``infer_inventory``.

Algorithm (decision list; later rules override earlier ones, as in ``decide``):

1. Targets: each parameter's multiplier ``decay / reference``, where ``reference`` is the most
   common non-zero decay; the rule set's default is 1 (decay).
2. Vocabulary phase (greedy): candidates are conditions in the shared vocabulary, in this order
   of preference: ``layer`` (``norm`` before each kind), ``role``, ``ndim``, ``layer`` + ``role``,
   ``module_type``. Each step appends the (condition, multiplier) whose gain is largest: the number
   of parameters it makes right minus the number it makes wrong. Stops when no gain is positive.
3. Path phase: the same with path globs of the still-wrong parameters added as candidates
   (``**.a.b.leaf``, ``**.b.leaf``, ``**.leaf``, indices as ``*``, subtrees ``a.**``, the exact path);
   any parameter still wrong gets an exact-path rule, so the result is always exact.
4. Rules that change nothing are removed and adjacent path rules with the same action merged.
5. When that leaves more than two rules, an exhaustive search over one- and two-rule lists (vocabulary
   and every parameter's globs) looks for a shorter exact answer — greedy gains can be misled, e.g.
   by a scanned stack whose per-layer 1-D leaves a hand-made ``x.ndim > 1`` mask decays.
6. The result is checked with ``decide`` against every target (warnings silenced: the search only
   probes; the caller's own use of the rules reports as usual).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from wdmask._audit import reference_weight_decay
from wdmask._engine import decide
from wdmask._rules import Rule, Rules
from wdmask._types import LAYER_KINDS, ROLES, ParamInfo, Path

__all__ = ["Inferred", "infer_inventory", "search"]

Condition = dict[str, Any]
#: Above this many candidate conditions the exhaustive two-rule search is skipped (cost ~ candidates^2).
EXHAUSTIVE_LIMIT = 3000


@dataclasses.dataclass(frozen=True)
class Inferred:
    """Rules reproducing an optimizer's decay, and the weight decay that multiplier 1 stands for.

    ``weight_decay`` is the reference decay in the unit the source reveals: torch's
    ``weight_decay``; an Optax transform's ``|update / param|`` of a zero-gradient first step
    (``lr * wd`` for ``adamw``/``sgd``); ``None`` when it is unknown (a bool mask) or nothing is
    decayed. Rebuild with ``groups(model, result.rules, weight_decay=result.weight_decay)``.

    Examples:
      >>> Inferred(Rules([{"role": "bias", "decay": False}], name="inferred"), 1e-4)
      Inferred(rules=Rules(inferred: [{role='bias', decay=False}]), weight_decay=0.0001)
    """

    rules: Rules
    weight_decay: float | None


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
    """Path globs that generalize one parameter's path: suffixes, indices as ``*``, subtrees, the exact path."""
    segs = info.path
    if any(c in s for s in segs for c in "*?[]"):
        return [_exact(info)]
    # Most specific suffix first (ties go to the clearer exception); never start at an index (``**.1.weight``).
    out = [{"path": "**." + ".".join(segs[-k:])} for k in (3, 2, 1) if len(segs) > k and not segs[-k].isdigit()]
    if any(s.isdigit() for s in segs):
        out.append({"path": ".".join("*" if s.isdigit() else s for s in segs)})
    # subtrees (a scanned stack ``layers.**``), widest first; never end at an index (``layer1.0.**``)
    out += [{"path": ".".join(segs[:k]) + ".**"} for k in range(1, len(segs) - 1) if not segs[k - 1].isdigit()]
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


def _evaluate(infos: Sequence[ParamInfo], rules: Sequence[Rule], default: float) -> list[float]:
    """Each parameter's multiplier under ``rules`` (last match wins), as ``decide`` gives float leaves."""
    out = []
    for info in infos:
        value = default
        for rule in reversed(rules):
            if rule.matches(info):
                value = rule.multiplier_value
                break
        out.append(value)
    return out


def _prune(infos: Sequence[ParamInfo], targets: Sequence[float], rules: list[Rule], default: float) -> list[Rule]:
    want = list(targets)
    i = len(rules) - 1
    while i >= 0:
        trial = rules[:i] + rules[i + 1:]
        if _evaluate(infos, trial, default) == want:
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


def _bits(indices: Sequence[int]) -> int:
    out = 0
    for i in indices:
        out |= 1 << i
    return out


def _shortest(infos: Sequence[ParamInfo], targets: Sequence[float], default: float,
              candidates: list[Condition], longest: int) -> list[Rule] | None:
    """The first exact list of at most ``longest`` (<= 2) rules, preferring earlier candidates; ``None`` if none."""
    n = len(infos)
    everything = (1 << n) - 1
    values = sorted(set(targets) | {default})
    want = {v: _bits([i for i, t in enumerate(targets) if t == v]) for v in values}
    masks = [(c, _bits(_matches(c, infos))) for c in candidates]
    masks = [(c, m) for c, m in masks if m]
    other = everything & ~want[default]  # parameters the default gets wrong
    if longest >= 1:
        for c, m in masks:
            for v in values:
                if v != default and m == want[v] and m == other:
                    return [Rule(**c, **_action(v))]
    if longest < 2:
        return None
    # [A -> a, B -> b]: B may only touch parameters whose target is b; A must fix every other wrong one.
    lasts = [(c, m, v) for c, m in masks for v in values if m & ~want[v] == 0]
    for ca, ma, a in ((c, m, v) for c, m in masks for v in values if v != default):
        allowed_a = want[a]
        for cb, mb, b in lasts:
            rest = everything & ~mb
            if (other & rest) & ~ma == 0 and (other & rest) & ~allowed_a == 0 and (ma & rest) & ~allowed_a == 0:
                return [Rule(**ca, **_action(a)), Rule(**cb, **_action(b))]
    return None


def search(infos: Sequence[ParamInfo], targets: Sequence[float], default: float = 1.0) -> list[Rule]:
    """The shortest rules found that give every parameter its target multiplier (see the module docstring).

    Examples:
      >>> inv = [ParamInfo(("fc", "kernel"), (4, 4), layer="linear", role="kernel"),
      ...        ParamInfo(("fc", "bias"), (4,), layer="linear", role="bias")]
      >>> [r.to_dict() for r in search(inv, [1.0, 0.0])]
      [{'role': 'bias', 'decay': False}]
    """
    current = [default] * len(infos)
    chosen: list[tuple[Condition, float]] = []
    vocabulary = _vocabulary(infos)
    _greedy(infos, targets, current, vocabulary, chosen)
    wrong = [i for i in range(len(infos)) if current[i] != targets[i]]
    if wrong:
        globs = list({str(g): g for i in wrong for g in _globs(infos[i])}.values())
        _greedy(infos, targets, current, vocabulary + globs, chosen)
    chosen += [(_exact(infos[i]), targets[i]) for i in range(len(infos)) if current[i] != targets[i]]
    rules = _prune(infos, targets, [Rule(**c, **_action(v)) for c, v in chosen], default)
    if len(rules) > 2:
        candidates = vocabulary + list({str(g): g for info in infos for g in _globs(info)}.values())
        if len(candidates) <= EXHAUSTIVE_LIMIT:
            shorter = _shortest(infos, targets, default, candidates, min(2, len(rules) - 1))
            if shorter is not None:
                rules = shorter
    return rules


def infer_inventory(inventory: Sequence[ParamInfo], actual: Mapping[Path, float], *,
                    ratios: bool = True) -> Inferred:
    """The shortest rules giving every parameter in ``actual`` its decay relative to the reference.

    Args:
      inventory: the model's parameters (those absent from ``actual`` are ignored).
      actual: per path, the parameter's effective weight decay (>= 0).
      ratios: whether the values are comparable magnitudes; ``False`` (a bool mask): only zero vs
        non-zero counts, and ``Inferred.weight_decay`` is ``None``.

    Returns:
      ``Inferred(rules, weight_decay)``; ``rules`` is named ``"inferred"``; when nothing is decayed
      it is empty with default 0.

    Raises:
      ValueError: no parameter of ``inventory`` is in ``actual``, or a value is negative or not finite.

    Examples:
      >>> inv = [ParamInfo(("conv", "weight"), (8, 3, 3, 3), layer="conv", role="kernel"),
      ...        ParamInfo(("bn", "weight"), (8,), layer="norm.batch", role="scale")]
      >>> infer_inventory(inv, {("conv", "weight"): 5e-4, ("bn", "weight"): 0.0})
      Inferred(rules=Rules(inferred: [{layer='norm', decay=False}]), weight_decay=0.0005)
    """
    held = [(info, float(actual[info.path])) for info in inventory if info.path in actual and info.is_float]
    if not held:
        raise ValueError(f"`actual` covers none of the {len(list(inventory))} parameters of the inventory")
    bad = [(info.dotted, v) for info, v in held if not v >= 0 or v == float("inf")]
    if bad:
        raise ValueError(f"effective weight decay must be finite and >= 0, got {bad[:5]}")
    infos = [info for info, _ in held]
    if not ratios:
        held = [(info, 1.0 if v else 0.0) for info, v in held]
    reference = reference_weight_decay((1.0, v) for _, v in held)
    if reference is None:
        return Inferred(Rules([], default=0.0, name="inferred"), None)
    targets = [float(f"{v / reference:.12g}") for _, v in held]
    result = Rules(search(infos, targets), name="inferred")
    with warnings.catch_warnings():  # a check of our own answer: its rules may match guesses, that is the input's
        warnings.simplefilter("ignore")
        decisions = decide(infos, result)
    wrong = [info.dotted for info, t in zip(infos, targets, strict=True) if decisions[info.path].multiplier != t]
    if wrong:  # pragma: no cover - the exact-path fallback makes this unreachable
        raise RuntimeError(f"infer_rules: internal error, rules do not reproduce {wrong[:5]}")
    return Inferred(result, reference if ratios else None)


def infer_policy(inventory: Sequence[ParamInfo], lr: Mapping[Path, float | tuple[float, ...]] | None = None,
                 labels: Mapping[Path, str | None] | None = None, *, rel_tol: float = 1e-9) -> list[Rule]:
    """Rules reproducing per-parameter lr multipliers and optimizer labels (added to the decay rules).

    Learning rates: nothing when every multiplier is 1; one ``Rule(lr_decay=d)`` when the multipliers are
    ``d ** (depth_max - depth)`` for the inventory's depths (layer-wise decay, timm/MAE); else one
    ``Rule(path=[...], lr=s)`` per distinct multiplier other than 1. Labels: the most common label as a base
    rule, then one ``Rule(path=[...], optimizer=...)`` per other label.

    Examples:
      >>> from wdmask import ParamInfo
      >>> inv = [ParamInfo(tuple(p.split(".")), (4, 4)) for p in ("embed.w", "blocks.0.w", "blocks.1.w", "head.w")]
      >>> infer_policy(inv, {i.path: 0.5 ** (3 - d) for i, d in zip(inv, (0, 1, 2, 3))})
      [Rule(lr_decay=0.5, why='inferred: layer-wise lr decay')]
    """
    from wdmask._depth import largest_depth, with_depth

    out: list[Rule] = []
    inventory = [i for i in inventory if lr is None or i.path in lr or labels is None or i.path in labels]
    if lr:
        scales = {p: tuple(map(float, s)) if isinstance(s, tuple) else (float(s),) for p, s in lr.items()}
        if any(not math.isclose(v, 1.0, rel_tol=rel_tol) for s in scales.values() for v in s):
            rule = _layer_decay(with_depth([i for i in inventory if i.path in scales]), scales, rel_tol,
                                largest_depth)
            if rule is not None:
                out.append(rule)
            else:
                by_scale: dict[float, list[str]] = {}
                for info in inventory:
                    s = scales.get(info.path)
                    if s is None:
                        continue
                    if len(set(s)) != 1:
                        raise ValueError(f"{info.dotted}: one lr multiplier per slice {s} that is not a layer-wise "
                                         "decay: rules set one lr per leaf (Rule(path=..., lr=...)); split the stack "
                                         "or give its slices one multiplier")
                    if not math.isclose(s[0], 1.0, rel_tol=rel_tol):
                        by_scale.setdefault(float(f"{s[0]:.12g}"), []).append(info.dotted)
                out += [Rule(path=paths, lr=s, why="inferred: lr multiplier") for s, paths in by_scale.items()]
    if labels:
        counts: dict[str, int] = {}
        for v in labels.values():
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        if counts:
            base = max(counts, key=lambda k: counts[k])
            out.append(Rule(optimizer=base, why="inferred: most parameters' optimizer"))
            others: dict[str, list[str]] = {}
            for info in inventory:
                v = labels.get(info.path)
                if v is not None and v != base:
                    others.setdefault(v, []).append(info.dotted)
            out += [Rule(path=paths, optimizer=v, why="inferred: optimizer label") for v, paths in others.items()]
    return out


def _layer_decay(infos: Sequence[ParamInfo], scales: Mapping[Path, tuple[float, ...]], rel_tol: float,
                 largest: Any) -> Rule | None:
    """``Rule(lr_decay=d)`` when every multiplier is ``d ** (depth_max - depth)`` (per slice for a stacked leaf,
    ``scales`` one entry per slice or one for all), else ``None``."""
    top = largest(infos)
    pairs = []  # (depth, multiplier) of every leaf and slice
    for info in infos:
        depths = info.depth if isinstance(info.depth, tuple) else (info.depth,)
        mults = scales[info.path] * (len(depths) if len(scales[info.path]) == 1 else 1)
        if None in depths or len(mults) != len(depths):
            return None
        pairs += zip(depths, mults, strict=True)
    d = next((m ** (1.0 / (top - depth)) for depth, m in pairs if depth < top and m > 0), None)
    if d is None or not 0 < d <= 1:
        return None
    d = float(f"{d:.12g}")
    if not all(math.isclose(m, d ** (top - depth), rel_tol=1e-6) for depth, m in pairs):
        return None
    return Rule(lr_decay=d, why="inferred: layer-wise lr decay")
