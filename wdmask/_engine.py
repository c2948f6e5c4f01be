"""``decide``: inventory + rules -> one ``Decision`` per leaf, reporting rules that match nothing and guesses."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence

from wdmask._depth import largest_depth, with_depth
from wdmask._errors import RuleError, UnclassifiedWarning, UnmatchedRuleWarning, check_bool
from wdmask._report import Explanation, Row, default_reason
from wdmask._rules import CONDITIONS, SETTINGS, Rule, RuleLike, Rules, as_rules
from wdmask._types import Decision, Inventory, ParamInfo, Path
from wdmask._warn import warn

SETTINGS_FIELDS = frozenset(f for fields in SETTINGS.values() for f in fields)


def _reason(rule: Rule) -> str:
    if rule.why:
        return rule.why
    action = f"multiplier {rule.multiplier_value:g}" if rule.multiplier is not None else (
        "decay" if rule.decay else "no decay")
    conditions = ", ".join(f"{k}={v!r}" for k, v in rule.to_dict().items() if k not in SETTINGS_FIELDS)
    return f"{conditions or 'any'} -> {action}"


#: The reason of a leaf no rule matched (``explain`` words it per role: ``report.default_reason``).
DEFAULT_REASON = "default (no rule matched)"


def decide(inventory: Iterable[ParamInfo], rules: Rules | Iterable[RuleLike], *,
           strict: bool = False) -> dict[Path, Decision]:
    """Decide every leaf's weight-decay multiplier: the last matching rule wins.

    Leaves no rule matches get ``rules.default``; integer and bool leaves always get 0.
    A rule that matches no leaf (and is not ``optional``) is reported with an
    ``UnmatchedRuleWarning``, or raises ``RuleError`` when ``strict=True``.

    Examples:
      >>> from wdmask import ParamInfo, presets
      >>> inv = [ParamInfo(("conv", "weight"), (8, 3, 3, 3), layer="conv", role="kernel"),
      ...        ParamInfo(("bn", "bias"), (8,), layer="norm.batch", role="bias")]
      >>> {".".join(p): d.multiplier for p, d in decide(inv, presets.standard).items()}
      {'conv.weight': 1.0, 'bn.bias': 0.0}
    """
    check_bool(strict, "strict", where="decide: ")
    rules = as_rules(rules)
    policy = [s for s in SETTINGS if s != "decay" and any(r.sets(s) for r in rules)]
    if "lr_decay" in policy or any(r.in_block is not None for r in rules):  # depths filled where unknown
        inventory = with_depth(list(inventory), strict=strict)
    key_of, reads_path = _key_function(rules)
    kinds, kind_of, paths = _kinds_of(inventory, whole=reads_path or "lr_decay" in policy)
    ordered = list(enumerate(rules))[::-1]
    decay_rules = [(i, r) for i, r in ordered if r.sets("decay")]
    unseen = {i for i, r in enumerate(rules) if not r.optional}
    default = Decision(rules.default, None, DEFAULT_REASON)
    by_rule: dict[int, Decision] = {}  # each rule's decision, built when it first wins
    # A rule reads only the fields its conditions name, so two leaves with the same key fields get the same
    # winning rule and the same set of matching rules: decide once per distinct key (a handful for a deep
    # stack of identical blocks; one per leaf when a path/regex rule makes the path part of the key).
    memo: dict[tuple[object, ...], tuple[Decision, frozenset[int]]] = {}
    by_kind: list[Decision] = []
    depth_max = 0
    if "lr_decay" in policy:
        depth_max = next((i.depth_max for i in kinds if i.depth_max is not None), None) or largest_depth(kinds)
    for info in kinds:
        if type(info) is not ParamInfo and not isinstance(info, ParamInfo):
            raise TypeError(f"decide() takes ParamInfo items, got {type(info).__name__}: {info!r}")
        key = key_of(info)
        hit = memo.get(key)
        if hit is None:
            decision = default
            for i, rule in decay_rules:
                if rule.matches(info):
                    if i not in by_rule:
                        by_rule[i] = Decision(rule.multiplier_value, i, _reason(rule))
                    decision = by_rule[i]
                    break
            matching = frozenset(i for i in unseen if rules[i].matches(info)) if unseen else frozenset()
            if decision.rule is not None and decision.rule in unseen:
                matching |= {decision.rule}
            if policy:
                decision = _with_policy(decision, info, ordered, policy, rules)
            hit = memo[key] = (decision, matching)
        decision, matching = hit
        if decision.lr_decay_rule is not None:
            decision = _decayed_lr(decision, info, rules[decision.lr_decay_rule].lr_decay, depth_max)
        if unseen and matching:
            unseen -= matching
        if not info.is_float:
            decision = Decision(0.0, None, f"{info.dtype} leaf: never decayed", decision.lr, decision.optimizer,
                                decision.lr_rule, decision.lr_decay_rule, decision.optimizer_rule)
        by_kind.append(decision)
    out = dict(zip(paths, by_kind if kind_of is None else [by_kind[k] for k in kind_of], strict=True))
    if len(out) != len(paths):
        raise RuleError(f"two parameters share the path {'.'.join(_first_repeat(paths))!r}; paths must be unique")
    if unseen and out:
        report_unmatched(rules, sorted(unseen), strict=strict)
    report_guesses(kinds, kind_of, paths, rules, by_kind, strict=strict)
    return out


def _with_policy(decision: Decision, info: ParamInfo, ordered: Sequence[tuple[int, Rule]], policy: Sequence[str],
                 rules: Rules) -> Decision:
    """``decision`` plus the winner of each other setting in ``policy``: the last matching rule that sets it."""
    won: dict[str, int] = {}
    for i, rule in ordered:
        todo = [s for s in policy if s not in won and rule.sets(s)]
        if todo and rule.matches(info):
            won.update(dict.fromkeys(todo, i))
            if len(won) == len(policy):
                break
    lr_rule, optimizer_rule = won.get("lr"), won.get("optimizer")
    lr = 1.0 if lr_rule is None else float(rules[lr_rule].lr)  # type: ignore[arg-type]
    optimizer = None if optimizer_rule is None else rules[optimizer_rule].optimizer
    return Decision(decision.multiplier, decision.rule, decision.reason, lr, optimizer, lr_rule, won.get("lr_decay"),
                    optimizer_rule)


def _decayed_lr(decision: Decision, info: ParamInfo, lr_decay: float | None, depth_max: int) -> Decision:
    """``decision`` with ``lr`` times ``lr_decay ** (depth_max - depth)`` (per slice for a tuple of depths)."""
    assert lr_decay is not None and isinstance(decision.lr, float)
    depth = info.depth
    if depth is None:  # with_depth gives every leaf one: only an inventory built by hand lacks it
        raise RuleError(f"rules[{decision.lr_decay_rule}] sets lr_decay, but {info.dotted!r} has no depth; give "
                        "ParamInfo.depth or describe the model")
    lr: float | tuple[float, ...]
    if isinstance(depth, tuple):
        lr = tuple(decision.lr * lr_decay ** (depth_max - d) for d in depth)
    else:
        lr = decision.lr * lr_decay ** (depth_max - depth)
    return Decision(decision.multiplier, decision.rule, decision.reason, lr, decision.optimizer, decision.lr_rule,
                    decision.lr_decay_rule, decision.optimizer_rule)


def _kinds_of(inventory: Iterable[ParamInfo], *, whole: bool) -> tuple[Sequence[ParamInfo], list[int] | None,
                                                                       list[Path]]:
    """``(kinds, kind_of, paths)``: the distinct descriptions to decide, each leaf's index into them (``None``:
    one kind per leaf) and every leaf's path. An ``Inventory`` is decided per kind unless ``whole``."""
    if isinstance(inventory, Inventory) and not whole:
        return inventory.kinds, inventory.kind_of, inventory.paths
    items = list(inventory)
    return items, None, [i.path for i in items if isinstance(i, ParamInfo)]


def _first_repeat(paths: Iterable[Path]) -> Path:
    seen: set[Path] = set()
    for path in paths:
        if path in seen:
            return path
        seen.add(path)
    raise AssertionError("no repeated path")  # pragma: no cover - called only when there is one


#: The ``ParamInfo`` attributes each rule condition reads (``Rule.matches`` in ``_rules``).
_READS: dict[str, tuple[str, ...]] = {
    "path": ("dotted",), "regex": ("dotted",), "layer": ("layer",), "role": ("role",), "ndim": ("ndim",),
    "feeds_norm": ("feeds_norm",), "module_type": ("module_type",), "declared": ("declared",),
    "in_block": ("in_block",),
}
assert set(_READS) == set(CONDITIONS), "a new rule condition needs its entry in _READS (decide's memo key)"


def _key_function(rules: Rules) -> tuple[Callable[[ParamInfo], tuple[object, ...]], bool]:
    """The tuple of the ``ParamInfo`` fields ``rules`` read (leaves with equal keys match the same rules), and
    whether it holds the path."""
    fields: list[str] = []
    for rule in rules:
        for condition, reads in _READS.items():
            if getattr(rule, condition) is not None:
                fields += [f for f in reads if f not in fields]
    reads_path = "dotted" in fields
    if not fields:
        return (lambda info: ()), reads_path
    getter = operator.attrgetter(*fields)
    if len(fields) == 1:
        return (lambda info: (getter(info),)), reads_path
    return getter, reads_path


#: How many parameter names a warning lists before "and N more".
LISTED = 10
#: The fix an ``UnclassifiedWarning`` suggests, per framework of the inventory (see ``unclassified_fix``).
UNCLASSIFIED_FIX = {
    "torch": "pass example inputs so usage is traced (`example_inputs=`), add a rule for them (e.g. "
             "Rule(path=..., decay=False)), or register a custom norm class (`wdmask_torch.register_norm`)",
    "jax": "pass example inputs so usage is traced (`model=` with `sample=`), or add a rule for them (e.g. "
           "Rule(path=..., decay=False)); a custom norm class is recognised when its name ends in `Norm`",
    "": "pass example inputs so usage is traced (torch `example_inputs=`, JAX `model=` with `sample=`), or add a "
        "rule for them (e.g. Rule(path=..., decay=False))",
}


def unclassified_fix(inventory: Sequence[ParamInfo]) -> str:
    """The fix to suggest for unclassified leaves: torch's ``register_norm`` only for a torch model.

    Examples:
      >>> unclassified_fix([ParamInfo(("fc", "weight"), (2, 2), module_type="torch.nn.Linear")]).count("register_norm")
      1
      >>> "register_norm" in unclassified_fix([ParamInfo(("Dense_0", "kernel"), (2, 2))])
      False
    """
    types = [i.module_type for i in inventory]
    if any(t.startswith("torch.") for t in types):
        return UNCLASSIFIED_FIX["torch"]
    if all(t == "" or t.startswith(("flax.", "equinox.")) for t in types):
        return UNCLASSIFIED_FIX["jax"]
    return UNCLASSIFIED_FIX[""]


def _listed(names: Sequence[str]) -> str:
    head = ", ".join(names[:LISTED])
    return head + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def report_guesses(kinds: Sequence[ParamInfo], kind_of: Sequence[int] | None, paths: Sequence[Path], rules: Rules,
                   decisions: Sequence[Decision], *, strict: bool) -> None:
    """Warn (``UnclassifiedWarning``; ``strict``: raise ``RuleError``) about decisions made on a guess.

    ``kinds``, ``kind_of`` and ``paths`` are ``decide``'s view of the inventory, ``decisions`` one per kind.

    * rules that condition on ``layer``/``role`` left an *unclassified* leaf (layer and role
      unknown) to the default: its decision is a guess;
    * ... or a leaf whose layer kind is known but whose role is not (an extra parameter of a conv
      class, a second embedding table described from names): the kind alone did not decide it;
    * a rule conditions on ``feeds_norm`` while it is unknown (no graph) for a conv/linear leaf:
      the rule cannot match it, whatever the truth.
    """
    on_kind = any(r.layer is not None or r.role is not None for r in rules)
    needs = [i for i, r in enumerate(rules) if r.feeds_norm is not None]
    if not (on_kind or needs):
        return

    def names(flagged: set[int]) -> list[str]:  # the dotted paths of the leaves of the flagged kinds, in order
        if not flagged:
            return []
        at = range(len(paths)) if kind_of is None else kind_of
        return [".".join(paths[n]) for n, k in enumerate(at) if k in flagged]

    messages = []
    if on_kind:
        verdict = f"multiplier {rules.default:g}" if rules.default not in (0.0, 1.0) else (
            "decayed" if rules.default else "not decayed")
        by_default = [k for k, i in enumerate(kinds) if i.role == "other" and i.is_float and decisions[k].rule is None]
        guessed = names({k for k in by_default if kinds[k].layer == "other"})
        if guessed:
            messages.append(f"{len(guessed)} parameter(s) have no known layer kind or role and were {verdict} by "
                            f"the rules' default: {_listed(guessed)}")
        roleless = names({k for k in by_default if kinds[k].layer != "other" and not kinds[k].layer.startswith("norm")})
        if roleless:
            messages.append(f"{len(roleless)} parameter(s) of a known layer kind have no known role (kernel, bias, "
                            f"embedding, ...) and were {verdict} by the rules' default: {_listed(roleless)}")
    if needs:
        unknown = names({k for k, i in enumerate(kinds)
                         if i.feeds_norm is None and i.layer in ("conv", "linear") and i.is_float})
        if unknown:
            messages.append(f"rules[{', '.join(map(str, needs))}] condition on feeds_norm, which is unknown for "
                            f"{len(unknown)} conv/linear parameter(s) (no forward pass was traced): "
                            f"{_listed(unknown)}")
    if not messages:
        return
    msg = "; ".join(messages) + f". Fix: {unclassified_fix(kinds)}"
    if strict:
        raise RuleError(msg)
    warn(msg, UnclassifiedWarning)


def report_unmatched(rules: Rules, indices: Sequence[int], *, strict: bool) -> None:
    """Warn (or raise with ``strict``) about rules that matched no parameter."""
    listed = "; ".join(f"rules[{i}] {{{rules[i].text}}}" for i in indices)
    hint = ""
    if any(rules[i].feeds_norm is not None for i in indices):
        hint = " (feeds_norm is only known when the model is described with example inputs / a sample)"
    msg = f"{len(indices)} rule(s) matched no parameter: {listed}{hint}"
    if strict:
        raise RuleError(msg)
    warn(msg, UnmatchedRuleWarning)


def explain_inventory(inventory: Sequence[ParamInfo], rules: Rules | Iterable[RuleLike], *,
                      strict: bool = False) -> Explanation:
    """The ``Explanation`` of ``rules`` on an inventory (``wdmask.explain`` describes a model first).

    Examples:
      >>> from wdmask import ParamInfo, presets
      >>> inv = [ParamInfo(("bn", "weight"), (8,), layer="norm.batch", role="scale")]
      >>> explain_inventory(inv, presets.standard)[0].multiplier
      0.0
    """
    rules = as_rules(rules)
    decisions = decide(inventory, rules, strict=strict)
    rows = [Row(i.dotted, i.layer, i.role, i.shape, d.multiplier, d.rule,
                default_reason(i.role, d.multiplier) if d.reason == DEFAULT_REASON else d.reason, i.feeds_norm,
                i.source, i.aliases, d.lr, d.optimizer)
            for i, d in ((i, decisions[i.path]) for i in inventory)]
    return Explanation(rows, title=f"weight decay: {rules.name}" if rules.name else "weight decay")
