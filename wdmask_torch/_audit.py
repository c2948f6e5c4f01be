"""``audit``: where an existing optimizer's weight decay disagrees with the rules."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from wdmask import presets
from wdmask._engine import decide
from wdmask._rules import RuleLike, Rules
from wdmask_torch._apply import checked_inventory

__all__ = ["AuditReport", "AuditRow", "audit", "effective_weight_decay", "reference_weight_decay"]

#: Statuses of an ``AuditRow``; every status but ``ok`` is a problem.
STATUSES = ("ok", "mismatch", "missing", "duplicate")


@dataclasses.dataclass(frozen=True)
class AuditRow:
    """One model parameter: what the rules expect and what the optimizer does.

    ``expected`` is the rules' multiplier; ``actual`` the optimizer's ``weight_decay`` for the
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

    @property
    def ok(self) -> bool:
        """Whether the optimizer agrees with the rules for this parameter."""
        return self.status == "ok"


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """Per-parameter comparison of an optimizer with rules; ``ok`` when nothing disagrees.

    ``reference`` is the optimizer's weight decay for a multiplier of 1 (``None`` when it decays
    nothing); a parameter with multiplier ``m`` is expected to get ``reference * m``.
    ``foreign`` lists optimizer parameters that are not parameters of the model.
    """

    rows: tuple[AuditRow, ...]
    reference: float | None
    foreign: tuple[str, ...] = ()
    rules_name: str = ""

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

    def summary(self) -> str:
        """One line: how many parameters, how many problems of each kind."""
        name = f" vs rules {self.rules_name!r}" if self.rules_name else ""
        ref = "no decay" if self.reference is None else f"weight_decay={self.reference:g}"
        if self.ok:
            return f"audit ok{name}: {len(self.rows)} parameters agree (optimizer {ref})"
        counts = [f"{len(rows)} {label}" for label, rows in (
            ("mismatched", self.mismatches), ("missing", self.missing), ("duplicated", self.duplicates),
            ("foreign", self.foreign)) if rows]
        return f"audit FAILED{name}: {', '.join(counts)} of {len(self.rows)} parameters (optimizer {ref})"

    def table(self) -> Any:
        """A ``rich.table.Table`` of the problems."""
        from rich.table import Table

        table = Table(title=self.summary())
        for col in ("path", "layer", "role", "expected", "optimizer", "problem"):
            table.add_column(col, overflow="fold")
        for r in self.problems:
            table.add_row(r.path, r.layer, r.role, _fmt(self.reference, r.expected),
                          "-" if r.actual is None else f"{r.actual:g}" + (f" (x{r.count})" if r.count > 1 else ""),
                          r.reason)
        for f in self.foreign:
            table.add_row(f, "", "", "-", "?", "in the optimizer but not a parameter of the model")
        return table

    def __rich__(self) -> Any:
        return self.table() if not self.ok else self.summary()

    def __str__(self) -> str:
        if self.ok:
            return self.summary()
        from rich.console import Console

        console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
        console.print(self.table())
        return console.export_text()


def _fmt(reference: float | None, multiplier: float) -> str:
    if multiplier == 0:
        return "0"
    if reference is None:
        return f"decay (x{multiplier:g})"
    return f"{reference * multiplier:g}" + ("" if multiplier == 1 else f" (x{multiplier:g})")


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
    obj, seen = optimizer, set()
    while not isinstance(obj, torch.optim.Optimizer) and id(obj) not in seen:
        seen.add(id(obj))
        inner = _inner(obj)
        if inner is None:
            break
        obj = inner
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


def effective_weight_decay(optimizer: Any) -> dict[int, list[float]]:
    """``{id(param): [weight_decay of each group holding it]}``; a group without the key counts as 0."""
    out: dict[int, list[float]] = {}
    for group in param_groups(optimizer):
        wd = float(group.get("weight_decay", 0.0) or 0.0)
        for p in group["params"]:
            out.setdefault(id(p), []).append(wd)
    return out


def reference_weight_decay(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The optimizer's weight decay for multiplier 1 from ``(multiplier, actual)`` pairs.

    The most common ``actual / multiplier`` among decayed parameters, preferring those with
    multiplier 1; ``None`` when nothing is decayed.

    Example:
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


def audit(optimizer: Any, model: nn.Module,
          rules: Rules | Iterable[RuleLike] = presets.standard) -> AuditReport:
    """Compare an existing optimizer's per-parameter weight decay with what ``rules`` decide.

    A parameter the rules do not decay must have ``weight_decay == 0``; decayed parameters must
    have ``reference * multiplier``, where ``reference`` is the optimizer's most common weight
    decay for multiplier-1 parameters (so ``audit`` checks *which* parameters are decayed and
    their ratios, whatever the optimizer's value). Trainable parameters missing from the
    optimizer, parameters it holds twice, and optimizer parameters foreign to the model are
    problems too; frozen parameters are ignored.

    Args:
      optimizer: A ``torch.optim.Optimizer``, a wrapper holding one (accelerate's
        ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), or any object with
        ``param_groups`` (DeepSpeed ZeRO).
      model: The model it trains (wrappers allowed).
      rules: The rules it should follow.
    Returns:
      An ``AuditReport``: ``report.ok``, ``report.assert_ok()``, ``print(report)``.
    Raises:
      TypeError: ``optimizer`` has no ``param_groups`` or ``model`` is not an ``nn.Module``.
    Examples:
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> report = audit(torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4), net)
      >>> report.ok, [r.path for r in report.mismatches]
      (False, ['0.bias', '1.weight', '1.bias'])
    """
    groups = param_groups(optimizer)
    items = checked_inventory(model, None, include_frozen=True, fn="audit")
    trainable = [(p, info) for _, p, info in items if p.requires_grad]
    known = {id(p) for _, p, _ in items} | {id(p) for p in model.parameters()}
    decisions = decide([info for _, info in trainable], rules)
    actual = effective_weight_decay(optimizer)
    pairs = [(decisions[info.path].multiplier, actual[id(p)][0])
             for p, info in trainable if len(actual.get(id(p), ())) == 1]
    reference = reference_weight_decay(pairs)
    rows = []
    for p, info in trainable:
        decision = decisions[info.path]
        seen = actual.get(id(p), [])
        m = decision.multiplier
        got = seen[0] if seen else None
        if not seen:
            status, reason = "missing", "not in any optimizer param group: it is never updated"
        elif len(seen) > 1:
            status, reason = "duplicate", f"held {len(seen)} times (weight_decay {', '.join(f'{w:g}' for w in seen)})"
        elif m == 0:
            status, reason = ("ok", decision.reason) if got == 0 else ("mismatch", f"decayed; rules: {decision.reason}")
        elif reference is None:
            status, reason = "mismatch", f"not decayed; rules: {decision.reason}"
        elif math.isclose(got, reference * m, rel_tol=1e-6):  # type: ignore[arg-type]
            status, reason = "ok", decision.reason
        elif got == 0:
            status, reason = "mismatch", f"not decayed; rules: {decision.reason}"
        else:
            status, reason = "mismatch", f"weight_decay {got:g} != {reference * m:g}; rules: {decision.reason}"
        rows.append(AuditRow(info.dotted, info.layer, info.role, m, got, len(seen), status, reason))
    foreign = []
    for gi, group in enumerate(groups):
        names = group.get("param_names")
        for pi, p in enumerate(group["params"]):
            if id(p) not in known:
                label = names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"
                foreign.append(f"{label} {tuple(p.shape)}")
    return AuditReport(tuple(rows), reference, tuple(foreign), getattr(rules, "name", ""))
