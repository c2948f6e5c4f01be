"""``decide``: inventory + rules -> one ``Decision`` per leaf; ``explain`` shows why."""

from __future__ import annotations

import dataclasses
import io
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from wdmask._errors import RuleError, UnclassifiedWarning, UnmatchedRuleWarning
from wdmask._rules import Rule, RuleLike, Rules
from wdmask._types import Decision, ParamInfo, Path


def as_rules(rules: Rules | Iterable[RuleLike]) -> Rules:
    """Accept a ``Rules`` or anything ``Rules(...)`` accepts."""
    return rules if isinstance(rules, Rules) else Rules(rules)


def _reason(rule: Rule) -> str:
    if rule.why:
        return rule.why
    action = f"multiplier {rule.multiplier_value:g}" if rule.multiplier is not None else (
        "decay" if rule.decay else "no decay")
    conditions = ", ".join(f"{k}={v!r}" for k, v in rule.to_dict().items() if k not in ("decay", "multiplier"))
    return f"{conditions or 'any'} -> {action}"


def decide(inventory: Iterable[ParamInfo], rules: Rules | Iterable[RuleLike], *,
           strict: bool = False) -> dict[Path, Decision]:
    """Decide every leaf's weight-decay multiplier: the last matching rule wins.

    Leaves no rule matches get ``rules.default``; integer and bool leaves always get 0.
    A rule that matches no leaf (and is not ``optional``) is reported with an
    ``UnmatchedRuleWarning``, or raises ``RuleError`` when ``strict=True``.

    Example:
      >>> from wdmask import ParamInfo, presets
      >>> inv = [ParamInfo(("conv", "weight"), (8, 3, 3, 3), layer="conv", role="kernel"),
      ...        ParamInfo(("bn", "bias"), (8,), layer="norm.batch", role="bias")]
      >>> {".".join(p): d.multiplier for p, d in decide(inv, presets.standard).items()}
      {'conv.weight': 1.0, 'bn.bias': 0.0}
    """
    rules = as_rules(rules)
    ordered = list(enumerate(rules))[::-1]
    unseen = {i for i, r in enumerate(rules) if not r.optional}
    default = Decision(rules.default, None, "default (no rule matched)")
    by_rule: dict[int, Decision] = {}  # each rule's decision, built when it first wins
    out: dict[Path, Decision] = {}
    for info in inventory:
        if not isinstance(info, ParamInfo):
            raise TypeError(f"decide() takes ParamInfo items, got {type(info).__name__}: {info!r}")
        if info.path in out:
            raise RuleError(f"two parameters share the path {info.dotted!r}; paths must be unique")
        decision = default
        for i, rule in ordered:
            if rule.matches(info):
                if i not in by_rule:
                    by_rule[i] = Decision(rule.multiplier_value, i, _reason(rule))
                decision = by_rule[i]
                unseen.discard(i)
                break
        if unseen:
            unseen -= {i for i in unseen if rules[i].matches(info)}
        if not info.is_float:
            decision = Decision(0.0, None, f"{info.dtype} leaf: never decayed")
        out[info.path] = decision
    if unseen and out:
        report_unmatched(rules, sorted(unseen), strict=strict)
    report_guesses(inventory, rules, out, strict=strict)
    return out


#: How many parameter names a warning lists before "and N more".
LISTED = 10
UNCLASSIFIED_FIX = ("pass example inputs so usage is traced (torch `example_inputs=`, JAX `sample=`), add a rule "
                    "for them (e.g. Rule(path=..., decay=False)), or declare their class (`register_norm`)")


def _listed(names: Sequence[str]) -> str:
    head = ", ".join(names[:LISTED])
    return head + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def report_guesses(inventory: Iterable[ParamInfo], rules: Rules, decisions: dict[Path, Decision], *,
                   strict: bool) -> None:
    """Warn (``UnclassifiedWarning``; ``strict``: raise ``RuleError``) about decisions made on a guess.

    * rules that condition on ``layer``/``role`` left an *unclassified* leaf (layer and role
      unknown) to the default: its decision is a guess;
    * a rule conditions on ``feeds_norm`` while it is unknown (no graph) for a conv/linear leaf:
      the rule cannot match it, whatever the truth.
    """
    infos = [i for i in inventory if i.is_float]
    messages = []
    if any(r.layer is not None or r.role is not None for r in rules):
        guessed = [i.dotted for i in infos if i.unclassified and decisions[i.path].rule is None]
        if guessed:
            verdict = f"multiplier {rules.default:g}" if rules.default not in (0.0, 1.0) else (
                "decayed" if rules.default else "not decayed")
            messages.append(f"{len(guessed)} parameter(s) have no known layer kind or role and were {verdict} by "
                            f"the rules' default: {_listed(guessed)}")
    needs = [i for i, r in enumerate(rules) if r.feeds_norm is not None]
    if needs:
        unknown = [i.dotted for i in infos if i.feeds_norm is None and i.layer in ("conv", "linear")]
        if unknown:
            messages.append(f"rules[{', '.join(map(str, needs))}] condition on feeds_norm, which is unknown for "
                            f"{len(unknown)} conv/linear parameter(s) (no forward pass was traced): "
                            f"{_listed(unknown)}")
    if not messages:
        return
    msg = "; ".join(messages) + f". Fix: {UNCLASSIFIED_FIX}"
    if strict:
        raise RuleError(msg)
    warnings.warn(msg, UnclassifiedWarning, stacklevel=3)


def report_unmatched(rules: Rules, indices: Sequence[int], *, strict: bool) -> None:
    """Warn (or raise with ``strict``) about rules that matched no parameter."""
    listed = "; ".join(f"rules[{i}] {{{rules[i].text}}}" for i in indices)
    hint = ""
    if any(rules[i].feeds_norm is not None for i in indices):
        hint = " (feeds_norm is only known when the model is described with example inputs / a sample)"
    msg = f"{len(indices)} rule(s) matched no parameter: {listed}{hint}"
    if strict:
        raise RuleError(msg)
    warnings.warn(msg, UnmatchedRuleWarning, stacklevel=3)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of an explanation."""

    path: str
    layer: str
    role: str
    shape: tuple[int, ...]
    multiplier: float
    rule: int | None
    reason: str
    feeds_norm: bool | None
    source: str
    aliases: tuple[str, ...] = ()  # other owners of a tied tensor


class Explanation(Sequence[Row]):
    """Rows of (path, layer, role, shape, multiplier, winning rule, reason); prints as a table."""

    def __init__(self, rows: Sequence[Row], title: str = "") -> None:
        self.rows = tuple(rows)
        self.title = title

    def __getitem__(self, i: Any) -> Any:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        """One line: how many parameters each multiplier gets."""
        counts: dict[float, int] = {}
        for r in self.rows:
            counts[r.multiplier] = counts.get(r.multiplier, 0) + 1
        parts = [f"{n} x multiplier {m:g}" if m else f"{n} no decay" for m, n in sorted(counts.items())]
        return f"{len(self.rows)} parameters: " + ", ".join(parts)

    def table(self) -> Any:
        """A ``rich.table.Table`` of the rows."""
        from rich.table import Table

        table = Table(title=self.title or None, caption=self.summary())
        table.add_column("path", overflow="fold", min_width=12)
        for col in ("layer", "role", "shape", "decay", "rule"):
            table.add_column(col, no_wrap=True)
        table.add_column("reason", overflow="fold", min_width=18)
        for r in self.rows:
            mult = "no" if r.multiplier == 0 else ("yes" if r.multiplier == 1 else f"x{r.multiplier:g}")
            path = r.path + "".join(f" (= {a})" for a in r.aliases)
            table.add_row(path, r.layer, r.role, "x".join(map(str, r.shape)) or "()", mult,
                          "-" if r.rule is None else str(r.rule), r.reason)
        return table

    def __rich__(self) -> Any:
        return self.table()

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
        console.print(self.table())
        return console.export_text()


def explain(model_or_inventory: Any, rules: Rules | Iterable[RuleLike], *, strict: bool = False,
            **describe_options: Any) -> Explanation:
    """Explain the decision for every parameter, as rows that print as a table.

    Takes an inventory (a list of ``ParamInfo``), a torch ``nn.Module`` (described by
    ``wdmask_torch``), or a Flax model / params pytree (described by ``wdmask``'s JAX adapter).

    Example:
      >>> from wdmask import ParamInfo, presets
      >>> inv = [ParamInfo(("bn", "weight"), (8,), layer="norm.batch", role="scale")]
      >>> explain(inv, presets.standard)[0].multiplier
      0.0
    """
    inventory = describe_any(model_or_inventory, **describe_options)
    decisions = decide(inventory, rules, strict=strict)
    rows = [Row(i.dotted, i.layer, i.role, i.shape, d.multiplier, d.rule, d.reason, i.feeds_norm, i.source,
                i.aliases)
            for i, d in ((i, decisions[i.path]) for i in inventory)]
    name = getattr(rules, "name", "")
    return Explanation(rows, title=f"weight decay: {name}" if name else "weight decay")


def describe_any(obj: Any, **options: Any) -> list[ParamInfo]:
    """Route to the adapter that can describe ``obj`` without importing a framework needlessly."""
    if isinstance(obj, (list, tuple)) and all(isinstance(i, ParamInfo) for i in obj):
        return list(obj)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        import wdmask_torch

        return wdmask_torch.describe(obj, **options)
    from wdmask._jax._describe import describe

    return describe(obj, **options)
