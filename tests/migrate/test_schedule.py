"""torch LR schedulers as optax schedules: equal to torch's lr at every optimizer step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as ls

from wdmask_migrate._schedule import to_optax_schedule

STEPS = 40


def _optimizer():
    p1, p2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return torch.optim.SGD([{"params": [p1], "lr": 0.1}, {"params": [p2], "lr": 0.03}], lr=0.1, momentum=0.0)


SCHEDULERS = {
    "step": lambda o: ls.StepLR(o, step_size=7, gamma=0.5),
    "multistep": lambda o: ls.MultiStepLR(o, milestones=[5, 12, 12, 30], gamma=0.3),
    "exponential": lambda o: ls.ExponentialLR(o, gamma=0.93),
    "constant": lambda o: ls.ConstantLR(o, factor=0.25, total_iters=6),
    "cosine": lambda o: ls.CosineAnnealingLR(o, T_max=25, eta_min=1e-3),
    "linear": lambda o: ls.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=9),
    "onecycle_cos": lambda o: ls.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=STEPS + 1, cycle_momentum=False),
    "onecycle_linear_3phase": lambda o: ls.OneCycleLR(o, max_lr=0.4, total_steps=STEPS + 1, anneal_strategy="linear",
                                                      three_phase=True, cycle_momentum=False),
    "sequential_warmup_cosine": lambda o: ls.SequentialLR(
        o, [ls.LinearLR(o, start_factor=0.01, total_iters=5), ls.CosineAnnealingLR(o, T_max=30)], milestones=[5]),
    "sequential_three": lambda o: ls.SequentialLR(
        o, [ls.ConstantLR(o, factor=0.5, total_iters=3), ls.StepLR(o, 4, 0.5), ls.ExponentialLR(o, 0.9)],
        milestones=[6, 20]),
}


def _torch_lrs(make):
    opt = _optimizer()
    sched = make(opt)
    lrs = []
    for _ in range(STEPS):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(lrs)


@pytest.mark.parametrize("make", SCHEDULERS.values(), ids=list(SCHEDULERS))
@pytest.mark.parametrize("mode", ["closed_form", "tabulated"])
def test_schedule_matches_torch(make, mode):
    want = _torch_lrs(make)  # independent: torch stepping its own scheduler
    sched = make(_optimizer())
    schedules = to_optax_schedule(sched, steps=STEPS if mode == "tabulated" else None)
    assert len(schedules) == 2
    counts = jnp.arange(STEPS)
    got = np.stack([np.asarray(jax.jit(jax.vmap(s))(counts)) for s in schedules], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_cycle_momentum_is_refused_with_reason():
    sched = ls.OneCycleLR(_optimizer(), max_lr=1.0, total_steps=10)
    with pytest.raises(NotImplementedError, match="cycle_momentum=False"):
        to_optax_schedule(sched)


def test_unknown_scheduler_suggests_tabulating():
    sched = ls.LambdaLR(_optimizer(), lambda t: 1 / (t + 1))
    with pytest.raises(NotImplementedError, match=r"no closed form for LambdaLR.*steps=N"):
        to_optax_schedule(sched)
    tab = to_optax_schedule(ls.LambdaLR(_optimizer(), lambda t: 1 / (t + 1)), steps=5)
    assert float(tab[1](3)) == pytest.approx(0.03 / 4)


def test_bad_input():
    with pytest.raises(TypeError, match=r"torch\.optim\.lr_scheduler"):
        to_optax_schedule(_optimizer())
