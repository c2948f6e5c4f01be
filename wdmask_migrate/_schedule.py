"""``to_optax_schedule``: a ``torch.optim.lr_scheduler`` as optax schedules, one per param group.

A torch scheduler stepped once per ``optimizer.step()`` gives, at optimizer step ``t`` (0-based),
the learning rate it reached after ``t`` scheduler steps; an optax schedule is called with the
update count ``t``. The schedules returned here satisfy ``schedule(t) == lr_t`` for every group.
jax is imported inside the functions only.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch

from wdmask._optional import JAX, require

Schedule = Callable[[Any], Any]

SUPPORTED = ("StepLR", "MultiStepLR", "ExponentialLR", "ConstantLR", "CosineAnnealingLR", "LinearLR",
             "OneCycleLR", "SequentialLR")


def _closed_form(sched: Any, g: int) -> Callable[[Any], Any]:
    """``lr(t)`` for param group ``g``, in jax.numpy (jit-safe)."""
    import jax.numpy as jnp

    base = sched.optimizer.param_groups[g]["initial_lr"]
    name = type(sched).__name__
    if name == "StepLR":
        return lambda t: base * sched.gamma ** (t // sched.step_size)
    if name == "MultiStepLR":
        milestones = sorted(sched.milestones.elements())  # Counter of milestones, repeats allowed
        ms = jnp.asarray(milestones)
        return lambda t: base * sched.gamma ** jnp.searchsorted(ms, t, side="right")
    if name == "ExponentialLR":
        return lambda t: base * sched.gamma**t
    if name == "ConstantLR":
        return lambda t: base * jnp.where(t < sched.total_iters, sched.factor, 1.0)
    if name == "CosineAnnealingLR":
        eta_min, t_max = sched.eta_min, sched.T_max
        return lambda t: eta_min + (base - eta_min) * (1 + jnp.cos(math.pi * t / t_max)) / 2
    if name == "LinearLR":
        s, e, n = sched.start_factor, sched.end_factor, sched.total_iters
        return lambda t: base * (s + (e - s) * jnp.minimum(t, n) / n)
    if name == "OneCycleLR":
        return _one_cycle(sched, sched.optimizer.param_groups[g])
    if name == "SequentialLR":
        parts = [_closed_form(s, g) for s in sched._schedulers]
        starts = [0, *sched._milestones]

        def sequential(t: Any) -> Any:
            idx = jnp.searchsorted(jnp.asarray(sched._milestones), t, side="right")
            branches = [lambda t, f=f, s=s: f(t - s) for f, s in zip(parts, starts, strict=True)]
            return jnp.select([idx == i for i in range(len(parts))], [b(t) for b in branches])

        return sequential
    raise NotImplementedError(
        f"no closed form for {name}; supported: {', '.join(SUPPORTED)}. Pass steps=N to tabulate any "
        "scheduler by stepping a copy of it N times."
    )


def _one_cycle(sched: Any, group: dict[str, Any]) -> Callable[[Any], Any]:
    import jax.numpy as jnp

    if sched.cycle_momentum:
        raise NotImplementedError(
            "OneCycleLR(cycle_momentum=True) also changes momentum/beta1 every step, which a fixed optax chain "
            "cannot follow; build the scheduler with cycle_momentum=False"
        )
    cos = sched._anneal_func_type == "cos"
    phases = sched._schedule_phases

    def anneal(start: Any, end: Any, pct: Any) -> Any:
        if cos:
            return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lr(t: Any) -> Any:
        out = 0.0
        start_step = 0.0
        taken = jnp.asarray(False)
        for i, phase in enumerate(phases):
            end_step = phase["end_step"]
            pct = (t - start_step) / (end_step - start_step)
            value = anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
            here = ~taken & ((t <= end_step) | (i == len(phases) - 1))
            out = jnp.where(here, value, out)
            taken = taken | here
            start_step = end_step
        return out

    return lr


def to_optax_schedule(scheduler: Any, *, steps: int | None = None) -> list[Schedule]:
    """Optax schedules equal to ``scheduler``'s learning rate per optimizer step, one per param group.

    $$\\eta^{\\text{optax}}_g(t) = \\eta^{\\text{torch}}_g \\text{ after } t \\text{ scheduler steps}$$

    Args:
      scheduler: a freshly built ``torch.optim.lr_scheduler`` object (StepLR, MultiStepLR,
        ExponentialLR, ConstantLR, CosineAnnealingLR, LinearLR, OneCycleLR with
        ``cycle_momentum=False``, SequentialLR of these), stepped once per optimizer step.
      steps: if given, tabulate instead: step a deep copy of the optimizer and scheduler
        ``steps`` times and return the recorded values (exact for any scheduler whose ``step()``
        takes no arguments; the last value is held after ``steps``).

    Returns:
      One schedule ``count -> lr`` per param group, in group order.

    Raises:
      TypeError: ``scheduler`` is not a torch scheduler; ``steps`` is not an int.
      ValueError: ``steps < 1``; a scheduler already stepped (without ``steps``).
      NotImplementedError: a scheduler class with no closed form here (use ``steps=``).

    Examples:
      >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
      >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
      >>> lr = to_optax_schedule(sched)[0]  # the first (only) param group's schedule
      >>> [round(float(lr(t)), 4) for t in range(5)]
      [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    require(*JAX, by="wdmask_torch.to_optax_schedule")
    if not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        raise TypeError(f"`scheduler` must be a torch.optim.lr_scheduler object, got {type(scheduler).__name__}")
    groups = scheduler.optimizer.param_groups
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"`steps` must be an int >= 1 (how many scheduler steps to tabulate) or None, got "
                            f"{type(steps).__name__} {steps!r:.100}")
        return _tabulate(scheduler, int(steps))
    if scheduler.last_epoch != 0 and type(scheduler).__name__ != "SequentialLR":
        raise ValueError(f"{type(scheduler).__name__} was already stepped {scheduler.last_epoch} time(s); convert "
                         "a freshly built scheduler (or pass steps=N to tabulate from here)")
    return [_closed_form(scheduler, g) for g in range(len(groups))]


def _tabulate(scheduler: Any, steps: int) -> list[Schedule]:
    import jax.numpy as jnp

    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")
    copied = copy.deepcopy({"optimizer": scheduler.optimizer, "scheduler": scheduler})
    sched, opt = copied["scheduler"], copied["optimizer"]
    table = []
    with warnings.catch_warnings():  # the copy's optimizer never steps: torch's order check does not apply
        warnings.filterwarnings("ignore", message=r"Seems like `optimizer.step\(\)`")
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        for _ in range(steps):
            table.append([g["lr"] for g in opt.param_groups])
            sched.step()
    values = jnp.asarray(table)
    return [lambda t, col=values[:, g]: col[jnp.minimum(t, steps - 1)] for g in range(len(opt.param_groups))]

