"""``optimizers``: one torch optimizer per optimizer label the rules decide, stepped/saved/scheduled as one."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import ParamInfo
from wdmask_torch._apply import groups

__all__ = ["Optimizers", "Rerouted", "optimizers"]

#: Labels whose torch optimizer takes 2-D parameters only (``torch.optim.Muon``).
MATRIX_ONLY: tuple[str, ...] = ("muon",)


@dataclasses.dataclass(frozen=True)
class Rerouted:
    """A parameter the rules gave to a 2-D-only optimizer that cannot take it, and where it went instead."""

    path: str
    shape: tuple[int, ...]
    label: str
    to: str


class Optimizers(torch.optim.Optimizer):
    """Several optimizers (one per label) that step, zero, save, load and are scheduled as one.

    ``param_groups`` is every inner optimizer's groups, in label order (the same dicts: a scheduler that
    sets ``group["lr"]`` sets the inner optimizer's), so ``torch.optim.lr_scheduler`` schedulers take this
    object directly and schedule every group, each from its own initial ``lr`` (ratios kept).
    ``state_dict()`` is ``{"labels": [...], "optimizers": {label: inner.state_dict()}}``.
    ``rerouted`` lists the parameters moved off a 2-D-only optimizer (``torch.optim.Muon``).
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer], rerouted: Iterable[Rerouted] = ()) -> None:
        # No Optimizer.__init__: the groups live in the inner optimizers; set what the base class and the
        # schedulers read.
        self.optimizers = dict(optimizers)
        self.rerouted = tuple(rerouted)
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks: dict[int, Callable[..., Any]] = {}
        self._optimizer_step_post_hooks: dict[int, Callable[..., Any]] = {}
        self._optimizer_state_dict_pre_hooks: dict[int, Callable[..., Any]] = {}
        self._optimizer_state_dict_post_hooks: dict[int, Callable[..., Any]] = {}
        self._optimizer_load_state_dict_pre_hooks: dict[int, Callable[..., Any]] = {}
        self._optimizer_load_state_dict_post_hooks: dict[int, Callable[..., Any]] = {}

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property  # type: ignore[override]
    def state(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for opt in self.optimizers.values():
            out.update(opt.state)
        return out

    def __getitem__(self, label: str) -> torch.optim.Optimizer:
        return self.optimizers[label]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Step every optimizer (``closure``, if any, is evaluated once, before the steps)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"labels": list(self.optimizers), "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        labels = list(state_dict.get("labels", ())) if isinstance(state_dict, Mapping) else None
        if labels != list(self.optimizers):
            raise ValueError(f"Optimizers.load_state_dict: the state holds optimizers {labels}, this object "
                             f"{list(self.optimizers)}; build it with the same rules and labels")
        for label, opt in self.optimizers.items():
            opt.load_state_dict(state_dict["optimizers"][label])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        raise TypeError("Optimizers.add_param_group: add the group to one optimizer, e.g. "
                        "opts['adamw'].add_param_group(group)")

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {type(o).__name__} ({len(o.param_groups)} groups)" for k, o in self.optimizers.items())
        return f"Optimizers({inner})"

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def optimizers(model: nn.Module, rules: Rules | Iterable[RuleLike],
               factories: Mapping[str, Callable[[list[dict[str, Any]]], torch.optim.Optimizer]], *,
               weight_decay: float | None = None, lr: float | None = None, example_inputs: Any = None,
               matrix_only: Iterable[str] = MATRIX_ONLY, fallback: str | None = "adamw", strict: bool = False,
               inventory: Sequence[ParamInfo] | None = None, **group_options: Any) -> Optimizers:
    r"""One optimizer per optimizer label the rules decide, combined into one ``Optimizers``.

    ``groups(model, rules, weight_decay=, lr=)`` are split by their ``optimizer`` label and each label's
    groups go to ``factories[label]``. A label in ``matrix_only`` (``"muon"``: ``torch.optim.Muon`` takes
    2-D parameters only) gets only 2-D parameters: the others (a 4-D conv kernel) keep their weight decay
    and learning rate and go to ``fallback``, with an ``UnclassifiedWarning`` and an entry in
    ``result.rerouted``, so construction never fails on a shape.

    Args:
      model: the ``nn.Module``.
      rules: rules that give every parameter an optimizer label (e.g. ``presets.standard + presets.muon``).
      factories: label -> callable taking a list of param groups and returning an optimizer.
      weight_decay: base weight decay (each group gets ``weight_decay * multiplier``).
      lr: base learning rate (each group gets ``lr * lr_scale``).
      example_inputs: inputs for one forward pass (usage, call order for depths).
      inventory: an inventory built already (``wdmask_torch.describe(model, example_inputs=x)``), used instead of
        describing again; not together with ``example_inputs``.
      matrix_only: labels whose optimizer takes 2-D parameters only.
      fallback: label for parameters a ``matrix_only`` optimizer cannot take (``None``: raise instead).
      strict: raise ``RuleError`` instead of warning on rules matching nothing and guesses.
      **group_options: extra keys for every group.

    Returns:
      An ``Optimizers`` (a ``torch.optim.Optimizer``): ``step``, ``zero_grad``, ``state_dict``,
      ``load_state_dict`` act on every inner optimizer; lr schedulers take it directly.

    Raises:
      ValueError: a parameter without a label, or a label without a factory.

    Examples:
      >>> import collections, torch, wdmask
      >>> net = nn.Sequential(collections.OrderedDict(embed=nn.Embedding(10, 8), blocks=nn.Sequential(
      ...     nn.Linear(8, 8), nn.Linear(8, 8)), head=nn.Linear(8, 10)))
      >>> opt = optimizers(net, wdmask.presets.standard + wdmask.presets.muon,
      ...                  {"muon": lambda g: torch.optim.Muon(g), "adamw": lambda g: torch.optim.AdamW(g)},
      ...                  weight_decay=0.1, lr=0.01)
      >>> {k: [[n for n, p in net.named_parameters() if any(p is q for q in g["params"])] for g in o.param_groups]
      ...  for k, o in opt.optimizers.items()}
      {'adamw': [['blocks.0.bias', 'blocks.1.bias', 'head.bias'], ['embed.weight', 'head.weight']], 'muon': [['blocks.0.weight', 'blocks.1.weight']]}
    """  # noqa: E501
    from wdmask._errors import UnclassifiedWarning

    rules = as_rules(rules)
    if not isinstance(factories, Mapping) or not all(callable(f) for f in factories.values()):
        raise TypeError("`factories` must map each optimizer label to a callable taking param groups, e.g. "
                        "{'muon': lambda groups: torch.optim.Muon(groups), 'adamw': lambda groups: "
                        "torch.optim.AdamW(groups)}")
    named = groups(model, rules, weight_decay=weight_decay, lr=lr, example_inputs=example_inputs, strict=strict,
                   inventory=inventory,
                   named=True, **group_options)
    unlabelled = [n for g in named if "optimizer" not in g for n, _ in g["params"]]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} parameter(s) get no optimizer label from the rules, e.g. "
                         f"{unlabelled[0]!r}; add a base rule such as Rule(optimizer='adamw') first (presets.muon has "
                         "one)")
    matrix_only = tuple(matrix_only)
    by_label: dict[str, list[dict[str, Any]]] = {}
    rerouted: list[Rerouted] = []
    for g in named:
        label = g["optimizer"]
        keep = g["params"]
        if label in matrix_only:
            bad = [(n, p) for n, p in keep if p.ndim != 2]
            if bad:
                if fallback is None:
                    raise ValueError(f"{len(bad)} parameter(s) labelled {label!r} are not 2-D (e.g. {bad[0][0]!r} "
                                     f"{tuple(bad[0][1].shape)}); give them another label with a rule")
                rerouted += [Rerouted(n, tuple(p.shape), label, fallback) for n, p in bad]
                by_label.setdefault(fallback, []).append({**g, "params": bad, "optimizer": fallback})
                keep = [(n, p) for n, p in keep if p.ndim == 2]
        if keep:
            by_label.setdefault(label, []).append({**g, "params": keep})
    missing = sorted(set(by_label) - set(factories))
    if missing:
        raise ValueError(f"the rules label parameters {missing} but `factories` has no optimizer for "
                         f"{', '.join(map(repr, missing))}; valid labels here: {sorted(factories)}")
    if rerouted:
        listed = ", ".join(f"{r.path} {r.shape}" for r in rerouted[:10])
        warnings.warn(f"{len(rerouted)} parameter(s) labelled for a 2-D-only optimizer are not 2-D and go to "
                      f"{fallback!r} instead: {listed}{' ...' if len(rerouted) > 10 else ''}. Fix: label them with a "
                      "rule (e.g. Rule(layer='conv', optimizer='adamw')) to silence this", UnclassifiedWarning,
                      stacklevel=2)
    built = {}
    for label in sorted(by_label):
        plain = [{**g, "params": [p for _, p in g["params"]]} for g in by_label[label]]
        built[label] = factories[label](plain)
    return Optimizers(built, rerouted)

