r"""Cross-framework pairing: ``pair`` two inventories (torch, Flax); ``compare`` their decisions.

Framework-neutral: imports no framework. The Flax call order comes from ``wdmask._jax._order``.

Pairing is positional over layers in **call order** (torch: ``named_parameters()``, i.e. registration
order; Flax: the order modules are called). Within one layer the leaves are matched by role (the
weight/kernel/scale first, then the bias, then the rest), so ``bn.weight, bn.bias`` pairs with
Flax's sorted ``bn.bias, bn.scale``. Each pair must agree on layer kind, role and shape modulo
layout: conv ``OIHW`` vs ``HWIO``, linear ``(out, in)`` vs ``(in, out)``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from wdmask._engine import decide
from wdmask._errors import UnmatchedRuleWarning
from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import Decision, ParamInfo, Path
from wdmask._warn import warn

__all__ = ["Comparison", "Difference", "PairError", "compare_inventories", "flax_axes", "natural_key",
           "pair"]

ORDER_HINT = ("both inventories must list the same layers in the same call order; describe the Flax side with "
              "the model (linen: and `sample=`) so it follows call order, not sorted pytree keys")
_ROLE_RANK = {"kernel": 0, "scale": 0, "embedding": 0, "bias": 1}
# Leaf names when the role is unknown (a params-only Flax inventory: ``bn1.scale`` has role ``other``).
_NAME_RANK = {"kernel": 0, "weight": 0, "scale": 0, "gamma": 0, "embedding": 0, "bias": 1, "beta": 1}


def _rank(info: ParamInfo) -> int:
    rank = _ROLE_RANK.get(info.role)
    return rank if rank is not None else _NAME_RANK.get(info.path[-1] if info.path else "", 2)


class PairError(ValueError):
    """Two inventories cannot be paired: different layer count, order, kinds, roles or shapes."""


def flax_axes(info: ParamInfo) -> tuple[int, ...] | None:
    """Axis permutation taking a torch leaf to the Flax layout (``None``: same layout).

    Conv kernels ``(O, I, *k)`` -> ``(*k, I, O)``; linear kernels ``(out, in)`` -> ``(in, out)``.

    Examples:
      >>> flax_axes(ParamInfo(("conv", "weight"), (8, 3, 3, 3), layer="conv", role="kernel"))
      (2, 3, 1, 0)
      >>> flax_axes(ParamInfo(("fc", "weight"), (10, 64), layer="linear", role="kernel")), flax_axes(
      ...     ParamInfo(("fc", "bias"), (10,), layer="linear", role="bias"))
      ((1, 0), None)
    """
    n = len(info.shape)
    if info.role == "kernel" and info.layer == "conv" and n >= 3:
        return (*range(2, n), 1, 0)
    if info.role == "kernel" and info.layer == "linear" and n == 2:
        return (1, 0)
    return None


def flax_shape(info: ParamInfo) -> tuple[int, ...]:
    """The shape the Flax twin of the torch leaf ``info`` has."""
    axes = flax_axes(info)
    return info.shape if axes is None else tuple(info.shape[a] for a in axes)


def _known(info: ParamInfo) -> bool:
    """Whether the layer kind is known (a params-only Flax inventory leaves explicit names unknown)."""
    return not (info.layer == "other" and info.source == "shape")


def _by_layer(inventory: Sequence[ParamInfo]) -> list[ParamInfo]:
    """Leaves grouped by owner (consecutive runs of ``path[:-1]``), within a layer weight first, then bias."""
    out: list[ParamInfo] = []
    run: list[ParamInfo] = []
    for info in inventory:
        if run and run[-1].path[:-1] != info.path[:-1]:
            out += sorted(run, key=_rank)
            run = []
        run.append(info)
    return out + sorted(run, key=_rank)


def _what(info: ParamInfo) -> str:
    return f"`{info.dotted}` ({info.layer} {info.role}, shape {info.shape})"


def pair(torch_inventory: Sequence[ParamInfo], flax_inventory: Sequence[ParamInfo]) -> list[
        tuple[ParamInfo, ParamInfo]]:
    """Pair torch and Flax leaves in layer (call) order, checking kind, role and shape modulo layout.

    Args:
      torch_inventory: ``wdmask_torch.describe(model)``.
      flax_inventory: the Flax inventory **in call order** (``flax_inventory(model, sample=...)``).

    Returns:
      ``(torch_info, flax_info)`` pairs, in torch order.

    Raises:
      PairError: names the first leaf that cannot be paired and why.

    Examples:
      >>> t = [ParamInfo(("bn", "weight"), (4,), layer="norm.batch", role="scale"),
      ...      ParamInfo(("bn", "bias"), (4,), layer="norm.batch", role="bias"),
      ...      ParamInfo(("fc", "weight"), (2, 4), layer="linear", role="kernel")]
      >>> f = [ParamInfo(("bn", "bias"), (4,), layer="norm.batch", role="bias"),
      ...      ParamInfo(("bn", "scale"), (4,), layer="norm.batch", role="scale"),
      ...      ParamInfo(("fc", "kernel"), (4, 2), layer="linear", role="kernel")]
      >>> [(str(a), str(b)) for a, b in pair(t, f)]
      [('bn.weight', 'bn.scale'), ('bn.bias', 'bn.bias'), ('fc.weight', 'fc.kernel')]
      >>> pair(t, f[:2])
      Traceback (most recent call last):
      ...
      wdmask._pair.PairError: torch leaf #2 `fc.weight` (linear kernel, shape (2, 4)) has no Flax twin: ...
    """
    ts, fs = _by_layer(list(torch_inventory)), _by_layer(list(flax_inventory))
    out = []
    for i, (t, f) in enumerate(zip(ts, fs, strict=False)):
        why = ""
        if _known(f) and _known(t) and t.layer != f.layer:
            why = f"layer kinds differ ({t.layer} vs {f.layer})"
        elif t.role != "other" and ((t.role != f.role and f.role != "other") or _rank(t) != _rank(f)):
            why = f"roles differ ({t.role} vs {f.role} `{f.path[-1]}`)"
        elif f.shape != flax_shape(t):
            layout = "" if flax_axes(t) is None else f" after the {t.layer} layout change"
            why = f"shapes differ: torch {t.shape} is {flax_shape(t)} in Flax{layout}, Flax has {f.shape}"
        if why:
            raise PairError(f"cannot pair torch leaf #{i} {_what(t)} with Flax {_what(f)}: {why}; {ORDER_HINT}")
        out.append((t, f))
    if len(ts) != len(fs):
        n = len(out)
        if len(ts) > n:
            raise PairError(f"torch leaf #{n} {_what(ts[n])} has no Flax twin: the Flax inventory has {len(fs)} "
                            f"leaves, torch {len(ts)}; {ORDER_HINT}")
        raise PairError(f"Flax leaf #{n} {_what(fs[n])} has no torch twin: the torch inventory has {len(ts)} "
                        f"leaves, Flax {len(fs)}; {ORDER_HINT}")
    return out


# --------------------------------------------------------------------------- ordering the Flax side


def natural_key(path: Path) -> tuple[tuple[Any, ...], ...]:
    """Sort key reading digit runs as numbers: ``Block_2`` before ``Block_10``.

    Examples:
      >>> sorted([("Block_10",), ("Block_2",)], key=natural_key)
      [('Block_2',), ('Block_10',)]
    """
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", seg)) for seg in path)


def _module_key(path: Path) -> str:
    """``layer1.0.downsample.0`` (torch, NNX) and ``layer1_0.downsample_0`` (linen) -> ``layer1_0_downsample_0``."""
    return "_".join(path)


def order_like(flax_inventory: Sequence[ParamInfo], torch_inventory: Sequence[ParamInfo]) -> list[ParamInfo] | None:
    """Order Flax leaves as their torch twins by owner name (``layer1.0.conv1`` ~ ``layer1_0.conv1``), or ``None``."""
    rank: dict[str, int] = {}
    for info in torch_inventory:
        rank.setdefault(_module_key(info.path[:-1]), len(rank))
    keys = [_module_key(info.path[:-1]) for info in flax_inventory]
    if not all(k in rank for k in keys):
        return None
    order = sorted(range(len(keys)), key=lambda i: rank[keys[i]])
    return [flax_inventory[i] for i in order]


# --------------------------------------------------------------------------- compare


def _verdict(d: Decision) -> str:
    what = "no decay" if d.multiplier == 0 else ("decay" if d.multiplier == 1 else f"decay x{d.multiplier:g}")
    return f"{what} ({'default' if d.rule is None else f'rule {d.rule}'})"


@dataclasses.dataclass(frozen=True)
class Difference:
    """A paired leaf whose weight-decay multiplier differs between torch and Flax."""

    torch: ParamInfo
    flax: ParamInfo
    torch_decision: Decision
    flax_decision: Decision

    def __str__(self) -> str:
        return (f"torch {self.torch.dotted}: {_verdict(self.torch_decision)} != "
                f"flax {self.flax.dotted}: {_verdict(self.flax_decision)}")


class Comparison(Sequence[Difference]):
    """What ``compare`` found: a sequence of ``Difference`` (empty: both sides decide the same); prints as a table.

    ``len``, indexing and iteration go over the differences; ``bool(report)`` is ``False`` when there are
    none, and a report equals a list of the same differences (``report == []`` when both sides agree).

    Examples:
      >>> t = [ParamInfo(("fc", "bias"), (2,), layer="linear", role="bias")]
      >>> report = compare_inventories(t, t, [{"role": "bias", "decay": False}])
      >>> bool(report), len(report), report == [], list(report)
      (False, 0, True, [])
      >>> print(report)
      1 paired parameter: every decision is the same in torch and Flax (rules 'custom')
    """

    def __init__(self, differences: Sequence[Difference], pairs: int, rules_name: str = "") -> None:
        self.differences = tuple(differences)
        self.pairs = pairs
        self.rules_name = rules_name or "custom"

    def __getitem__(self, i: Any) -> Any:
        return self.differences[i]

    def __len__(self) -> int:
        return len(self.differences)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Comparison):
            return self.differences == other.differences
        if isinstance(other, (list, tuple)):
            return list(self.differences) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def summary(self) -> str:
        """One line: how many pairs, how many decisions differ."""
        pairs = f"{self.pairs} paired parameter{'' if self.pairs == 1 else 's'}"
        if not self.differences:
            return f"{pairs}: every decision is the same in torch and Flax (rules {self.rules_name!r})"
        n = len(self.differences)
        return f"{pairs}: {n} decision{' differs' if n == 1 else 's differ'} (rules {self.rules_name!r})"

    def __repr__(self) -> str:
        return f"Comparison({list(self.differences)!r}, pairs={self.pairs})"

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table
        from rich.text import Text

        from wdmask._report import Wrapped

        if not self.differences:
            yield Text(self.summary())
            return
        table = Table(title=Text("weight decay decisions that differ"), caption=Text(self.summary()))
        for col in ("torch path", "torch decision", "flax path", "flax decision"):
            table.add_column(Text(col), overflow="fold")
        for d in self.differences:
            table.add_row(Wrapped(d.torch.dotted), Text(_verdict(d.torch_decision)), Wrapped(d.flax.dotted),
                          Text(_verdict(d.flax_decision)))
        yield table

    def text(self, width: int | None = None) -> str:
        """The report as plain text, ``width`` columns wide (default: the terminal's, ``COLUMNS``)."""
        from wdmask._report import render_text

        return render_text(self, width).rstrip("\n") if self.differences else self.summary()

    def __str__(self) -> str:
        return self.text()


def _decide_quietly(inventory: Sequence[ParamInfo], rules: Rules) -> tuple[dict[Path, Decision], list[str]]:
    """``decide``, holding back unmatched-rule warnings (a rule may match on one side only); every other
    warning (``UnclassifiedWarning``: a guess on this side) is passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnmatchedRuleWarning)
        decisions = decide(inventory, rules)
    for w in caught:
        if not issubclass(w.category, UnmatchedRuleWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return decisions, [str(w.message) for w in caught if issubclass(w.category, UnmatchedRuleWarning)]


def compare_inventories(torch_inventory: Sequence[ParamInfo], flax_inventory: Sequence[ParamInfo],
                        rules: Rules | Iterable[RuleLike]) -> Comparison:
    """``compare`` on two inventories (the Flax one in call order): pair them, decide both, list differences.

    A rule that matches nothing on *both* sides warns once.

    Examples:
      >>> t = [ParamInfo(("fc", "bias"), (2,), layer="linear", role="bias")]
      >>> f = [ParamInfo(("fc", "bias"), (2,), layer="linear", role="bias")]
      >>> compare_inventories(t, f, [{"role": "bias", "decay": False}]) == []
      True
    """
    rules = as_rules(rules)
    pairs = pair(torch_inventory, flax_inventory)
    t_dec, t_warn = _decide_quietly(torch_inventory, rules)
    f_dec, f_warn = _decide_quietly(flax_inventory, rules)
    if t_warn and f_warn:
        warn(t_warn[0], UnmatchedRuleWarning)
    return Comparison([Difference(t, f, t_dec[t.path], f_dec[f.path]) for t, f in pairs
                       if t_dec[t.path].multiplier != f_dec[f.path].multiplier], len(pairs), rules.name)
