"""The audit core: what rules expect per parameter vs what an optimizer actually does (no framework imported).

Each adapter reads its optimizer's effective weight decay per parameter path (torch: the
``weight_decay`` of every param group holding the tensor; Optax: a zero-gradient probe update)
and calls ``audit_inventory``; the comparison, the report and its table live here only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wdmask._engine import decide
from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import ParamInfo, Path

__all__ = ["STATUSES", "AuditReport", "AuditRow", "audit_inventory", "reference_weight_decay"]

#: Statuses of an ``AuditRow``; every status but ``ok`` is a problem.
STATUSES = ("ok", "mismatch", "missing", "duplicate")


@dataclasses.dataclass(frozen=True)
class AuditRow:
    """One model parameter: what the rules expect and what the optimizer does.

    ``expected`` is the rules' multiplier; ``actual`` the optimizer's effective weight decay for the
    parameter (``None`` when it is in no group); ``count`` how many times the optimizer holds it.
    """

    path: str
    layer: str
    role: str
    expected: float
    actual: float | None
    count: int
    status: str
    reason: str
    #: The rules' lr multiplier and the optimizer's (``None``: not audited); the same for optimizer labels.
    expected_lr: float | None = None
    actual_lr: float | None = None
    expected_optimizer: str | None = None
    actual_optimizer: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the optimizer agrees with the rules for this parameter."""
        return self.status == "ok"


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """Per-parameter comparison of an optimizer with rules; ``ok`` when nothing disagrees.

    ``reference`` is the optimizer's weight decay for a multiplier of 1 (``None`` when it decays
    nothing, or when only *which* parameters are decayed is known); a parameter with multiplier ``m``
    is expected to get ``reference * m``. ``foreign`` lists optimizer parameters that are not
    parameters of the model. ``ratios`` is ``False`` when the source reveals only which parameters
    are decayed (a bool mask): then any non-zero decay agrees with any non-zero multiplier.
    ``subject`` and ``measure`` name the source and its unit in ``summary()``
    (``optimizer weight_decay``, ``transform |update/param|``, ``mask``).

    Examples:
      >>> from wdmask import ParamInfo
      >>> inv = [ParamInfo(("fc", "kernel"), (4, 4), layer="linear", role="kernel"),
      ...        ParamInfo(("fc", "bias"), (4,), layer="linear", role="bias")]
      >>> report = audit_inventory(inv, {("fc", "kernel"): [1e-4], ("fc", "bias"): [1e-4]}, [{"role": "bias",
      ...                          "decay": False}])
      >>> report.ok, [r.path for r in report.problems], report.reference
      (False, ['fc.bias'], 0.0001)
    """

    rows: tuple[AuditRow, ...]
    reference: float | None
    foreign: tuple[str, ...] = ()
    rules_name: str = ""
    ratios: bool = True
    subject: str = "optimizer"
    measure: str = "weight_decay"

    @property
    def problems(self) -> tuple[AuditRow, ...]:
        """Rows whose status is not ``ok``."""
        return tuple(r for r in self.rows if not r.ok)

    @property
    def mismatches(self) -> tuple[AuditRow, ...]:
        """Parameters whose weight decay differs from the rules'."""
        return tuple(r for r in self.rows if r.status == "mismatch")

    @property
    def missing(self) -> tuple[AuditRow, ...]:
        """Trainable parameters the optimizer does not hold."""
        return tuple(r for r in self.rows if r.status == "missing")

    @property
    def duplicates(self) -> tuple[AuditRow, ...]:
        """Parameters the optimizer holds more than once."""
        return tuple(r for r in self.rows if r.status == "duplicate")

    @property
    def ok(self) -> bool:
        """Whether every parameter agrees and the optimizer holds nothing foreign."""
        return not self.problems and not self.foreign

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` listing every problem unless ``ok``."""
        if not self.ok:
            raise AssertionError(str(self))

    def _source(self) -> str:
        if not self.ratios:
            return f"{self.subject}: which parameters are decayed, not how much"
        if self.reference is None:
            return f"{self.subject} no decay"
        return f"{self.subject} {self.measure}={self.reference:g}"

    def summary(self) -> str:
        """One line: how many parameters, how many problems of each kind."""
        name = f" vs rules {self.rules_name!r}" if self.rules_name else ""
        if self.ok:
            return f"audit ok{name}: {len(self.rows)} parameters agree ({self._source()})"
        counts = [f"{len(rows)} {label}" for label, rows in (
            ("mismatched", self.mismatches), ("missing", self.missing), ("duplicated", self.duplicates),
            ("foreign", self.foreign)) if rows]
        return f"audit FAILED{name}: {', '.join(counts)} of {len(self.rows)} parameters ({self._source()})"

    def table(self) -> Any:
        """A ``rich.table.Table`` of the problems."""
        from rich.table import Table
        from rich.text import Text

        # Text cells, never str: paths and reasons are user text, not markup (as in ``Explanation``).
        table = Table(title=Text(self.summary()))
        for col in ("path", "layer", "role", "expected", self.subject, "problem"):
            table.add_column(Text(col), overflow="fold")
        for r in self.problems:
            got = "-" if r.actual is None else f"{r.actual:g}" + (f" (x{r.count})" if r.count > 1 else "")
            cells = (r.path, r.layer, r.role, _fmt(self.reference if self.ratios else None, r.expected), got, r.reason)
            table.add_row(*map(Text, cells))
        for f in self.foreign:
            table.add_row(*map(Text, (f, "", "", "-", "?", f"in the {self.subject} but not a parameter of the model")))
        return table

    def __rich__(self) -> Any:
        return self.table() if not self.ok else self.summary()

    def __str__(self) -> str:
        if self.ok:
            return self.summary()
        from wdmask._report import render_text

        return render_text(self.table())


def _fmt(reference: float | None, multiplier: float) -> str:
    if multiplier == 0:
        return "0"
    if reference is None:
        return f"decay (x{multiplier:g})"
    return f"{reference * multiplier:g}" + ("" if multiplier == 1 else f" (x{multiplier:g})")


def reference_weight_decay(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The optimizer's weight decay for multiplier 1 from ``(multiplier, actual)`` pairs.

    The most common ``actual / multiplier`` among decayed parameters, preferring those with
    multiplier 1; ``None`` when nothing is decayed.

    Examples:
      >>> reference_weight_decay([(1.0, 1e-4), (1.0, 1e-4), (0.0, 0.0), (1.0, 0.0), (0.5, 5e-5)])
      0.0001
    """
    pairs = list(pairs)
    for candidates in ([a for m, a in pairs if m == 1.0 and a > 0], [a / m for m, a in pairs if m > 0 and a > 0]):
        if candidates:
            counts: dict[float, int] = {}
            for c in candidates:
                key = float(f"{c:.12g}")
                counts[key] = counts.get(key, 0) + 1
            return max(counts, key=lambda k: counts[k])  # first most common: deterministic
    return None


def audit_inventory(inventory: Sequence[ParamInfo], actual: Mapping[Path, Sequence[float]],
                    rules: Rules | Iterable[RuleLike], *, foreign: Iterable[str] = (), ratios: bool = True,
                    subject: str = "optimizer", measure: str = "weight_decay",
                    rel_tol: float = 1e-6, actual_lr: Mapping[Path, float | tuple[float, ...]] | None = None,
                    actual_optimizer: Mapping[Path, str | None] | None = None) -> AuditReport:
    """Compare the effective weight decay of each parameter with what ``rules`` decide.

    A parameter the rules do not decay must have decay 0; decayed parameters must have
    ``reference * multiplier``, where ``reference`` is the most common decay of multiplier-1
    parameters (so the audit checks *which* parameters are decayed and their ratios, whatever the
    optimizer's value). With ``ratios=False`` only *which* parameters are decayed is compared.

    Args:
      inventory: the trainable parameters (frozen ones left out by the adapter).
      actual: per path, the effective weight decay of every optimizer group holding the parameter:
        ``[]`` or absent = missing, two values = held twice.
      rules: the rules the optimizer should follow.
      foreign: labels of optimizer parameters that are not parameters of the model.
      ratios: whether ``actual`` values are comparable magnitudes (``False`` for a bool mask).
      subject: what ``actual`` was read from, for the report (``"optimizer"``, ``"transform"``, ``"mask"``).
      measure: the unit of ``actual``, for the report.
      rel_tol: relative tolerance of ``actual == reference * multiplier``.
      actual_lr: per path, the optimizer's lr multiplier (a tuple, one per slice, for a stacked leaf); audited
        when the rules set ``lr``/``lr_decay``.
      actual_optimizer: per path, the optimizer label; audited when the rules set ``optimizer``.

    Returns:
      An ``AuditReport``.

    Examples:
      >>> from wdmask import ParamInfo, presets
      >>> inv = [ParamInfo(("ln", "scale"), (8,), layer="norm.layer", role="scale")]
      >>> audit_inventory(inv, {("ln", "scale"): [0.0]}, presets.standard).summary()
      "audit ok vs rules 'standard': 1 parameters agree (optimizer no decay)"
    """
    rules = as_rules(rules)
    inventory = list(inventory)
    decisions = decide(inventory, rules)
    seen_of = {info.path: [float(v) for v in actual.get(info.path, ())] for info in inventory}
    reference = None
    if ratios:
        reference = reference_weight_decay((decisions[info.path].multiplier, seen_of[info.path][0])
                                           for info in inventory if len(seen_of[info.path]) == 1)
    check_lr = any(r.sets("lr") or r.sets("lr_decay") for r in rules)
    check_optimizer = any(r.sets("optimizer") for r in rules)
    rows = []
    for info in inventory:
        decision = decisions[info.path]
        seen = seen_of[info.path]
        m = decision.multiplier
        got = seen[0] if seen else None
        why = decision.reason
        if not seen:
            status, reason = "missing", f"not in any {subject} param group: it is never updated"
        elif len(seen) > 1:
            status, reason = "duplicate", f"held {len(seen)} times (weight_decay {', '.join(f'{w:g}' for w in seen)})"
        elif m == 0:
            status, reason = ("ok", why) if got == 0 else ("mismatch", f"decayed; rules: {why}")
        elif got == 0 or (ratios and reference is None):
            status, reason = "mismatch", f"not decayed; rules: {why}"
        elif not ratios or math.isclose(got, reference * m, rel_tol=rel_tol):  # type: ignore[arg-type, operator]
            status, reason = "ok", why
        else:
            status, reason = "mismatch", (f"{measure} {got:g} != {reference * m:g} "  # type: ignore[operator]
                                          f"(x{got / reference:.6g} instead of x{m:g}); rules: {why}")  # type: ignore[operator]
        exp_lr = act_lr = exp_opt = act_opt = None
        if actual_lr is not None and check_lr and info.path in actual_lr:
            exp_lr, act_lr = decision.lr, actual_lr[info.path]
            if status == "ok" and not same_lr(exp_lr, act_lr, rel_tol):
                status, reason = "mismatch", f"lr x{_lr_text(act_lr)}; rules: x{_lr_text(exp_lr)}"
        if actual_optimizer is not None and check_optimizer and info.path in actual_optimizer:
            exp_opt, act_opt = decision.optimizer, actual_optimizer[info.path]
            if status == "ok" and exp_opt != act_opt:
                status, reason = "mismatch", f"optimizer {act_opt!r} != {exp_opt!r}"
        rows.append(AuditRow(info.dotted, info.layer, info.role, m, got, len(seen), status, reason,
                             exp_lr if isinstance(exp_lr, float) or exp_lr is None else None,
                             act_lr if isinstance(act_lr, float) or act_lr is None else None, exp_opt, act_opt))
    return AuditReport(tuple(rows), reference, tuple(foreign), rules.name, ratios, subject, measure)


def same_lr(expected: float | tuple[float, ...], actual: float | tuple[float, ...], rel_tol: float = 1e-6) -> bool:
    """Whether two lr multipliers agree: numbers, or one per slice of a stacked leaf (a number stands for every
    slice).

    Examples:
      >>> same_lr(0.5, (0.5, 0.5)), same_lr((0.25, 0.5), (0.25, 0.5)), same_lr((0.25, 0.5), 0.5)
      (True, True, False)
    """
    e = expected if isinstance(expected, tuple) else (expected,)
    a = actual if isinstance(actual, tuple) else (actual,)
    if len(e) == 1:
        e = e * len(a)
    if len(a) == 1:
        a = a * len(e)
    return len(e) == len(a) and all(math.isclose(x, y, rel_tol=rel_tol) for x, y in zip(e, a, strict=True))


def _lr_text(lr: float | tuple[float, ...]) -> str:
    return f"{lr:.6g}" if not isinstance(lr, tuple) else "(" + ", ".join(f"{v:.6g}" for v in lr) + ")"
