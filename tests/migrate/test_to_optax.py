"""to_optax: a torch optimizer (+ scheduler) as the Optax transform with the same updates, float64, 10 steps."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as ls

import wdmask_torch
from wdmask import models as flax_models
from wdmask import presets
from wdmask._jax._order import flax_inventory
from wdmask._pair import flax_axes, pair
from wdmask_migrate._migrate import group_chains, to_optax
from wdmask_migrate._port import to_flax
from wdmask_torch import models as torch_models

STEPS = 10
TOL = 1e-12
SHAPES = {"a": (4, 3), "b": (3,), "c": (2, 3, 2, 2), "d": (5,)}
GROUP_OF = {"a": 0, "c": 0, "b": 1, "d": 1}  # group 1: weight_decay=0 (and its own lr)

#: name -> (torch class, optimizer kwargs, group-0 overrides, group-1 overrides).
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "dampening": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "nesterov": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "sgd_maximize": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "maximize": True}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "adam_l2": (torch.optim.Adam, {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-6}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adam_amsgrad": (torch.optim.Adam, {"lr": 1e-2, "amsgrad": True}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adam_maximize": (torch.optim.Adam, {"lr": 1e-2, "maximize": True}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adam_decoupled": (torch.optim.Adam, {"lr": 1e-2, "decoupled_weight_decay": True}, {"weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-2, "betas": (0.85, 0.99)}, {"weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adamw_amsgrad": (torch.optim.AdamW, {"lr": 1e-2, "amsgrad": True}, {"weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adamw_maximize": (torch.optim.AdamW, {"lr": 1e-2, "maximize": True}, {"weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-2}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "rmsprop_centered_momentum": (torch.optim.RMSprop, {"lr": 1e-2, "alpha": 0.9, "centered": True, "momentum": 0.9}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "rmsprop_momentum_maximize": (torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.5, "maximize": True}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.1}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "adagrad_lr_decay": (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6}, {"weight_decay": 1e-2}, {"lr": 0.03, "weight_decay": 0.0}),
    "radam": (torch.optim.RAdam, {"lr": 1e-2, "betas": (0.9, 0.8)}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "radam_decoupled": (torch.optim.RAdam, {"lr": 1e-2, "betas": (0.9, 0.8), "eps": 1e-4, "decoupled_weight_decay": True}, {"weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0}),
    "radam_unrectified": (torch.optim.RAdam, {"lr": 1e-2}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "nadam": (torch.optim.NAdam, {"lr": 1e-2}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
    "nadam_decoupled": (torch.optim.NAdam, {"lr": 1e-2, "momentum_decay": 0.1, "decoupled_weight_decay": True}, {"weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0}),
    "nadam_maximize": (torch.optim.NAdam, {"lr": 1e-2, "maximize": True}, {"weight_decay": 1e-2}, {"lr": 3e-3, "weight_decay": 0.0}),
}

#: schedulers from tests/migrate/test_schedule.py, stepped after every optimizer.step().
SCHEDULERS = {
    "sequential_warmup_cosine": lambda o: ls.SequentialLR(
        o, [ls.LinearLR(o, start_factor=0.01, total_iters=3), ls.CosineAnnealingLR(o, T_max=8)], milestones=[3]),
    "step": lambda o: ls.StepLR(o, step_size=3, gamma=0.5),
}


def _setup(case, seed=0):
    cls, kwargs, g0, g1 = OPTIMIZERS[case]
    rng = np.random.default_rng(seed)
    init = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    tensors = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in init.items()}
    groups = [{"params": [tensors[k] for k in SHAPES if GROUP_OF[k] == g], **over} for g, over in enumerate((g0, g1))]
    opt = cls(groups, **kwargs)
    params = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in init.items()}
    return opt, tensors, params


def _grads(seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(STEPS)]


def _run(opt, tensors, params, tx, sched=None):
    """10 lock-step updates with identical gradients; the max |torch - optax| over all leaves."""
    state = tx.init(params)
    update = jax.jit(tx.update)
    for grads in _grads():
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k], dtype=torch.float64)
        opt.step()
        if sched is not None:
            sched.step()
        updates, state = update({k: jnp.asarray(v) for k, v in grads.items()}, state, params)
        params = optax.apply_updates(params, updates)
    return max(float(np.max(np.abs(np.asarray(params[k]) - tensors[k].detach().numpy()))) for k in tensors)


#: variants whose code path another fast case already runs (kept for `-m slow`, to hold the file under ~40 s).
SLOW_VARIANTS = {"adam_maximize", "adamw_maximize", "nadam_maximize", "radam_unrectified", "adagrad"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_VARIANTS else c
                                  for c in OPTIMIZERS])
def test_matches_torch(case):
    opt, tensors, params = _setup(case)
    tx = to_optax(opt, labels=GROUP_OF)
    assert _run(opt, tensors, params, tx) <= TOL


SCHEDULED = ["momentum", "nesterov", "adam_l2", "adamw", "rmsprop_centered_momentum", "adagrad_lr_decay",
             "radam_decoupled", "nadam_decoupled"]
FAST_SCHEDULED = {("sequential_warmup_cosine", c) for c in ("momentum", "adamw", "rmsprop_centered_momentum",
                                                              "adagrad_lr_decay", "nadam_decoupled")} | {("step", "adamw")}
SCHEDULE_CASES = [pytest.param(c, s, id=f"{s}-{c}", marks=() if (s, c) in FAST_SCHEDULED else pytest.mark.slow)
                  for s in SCHEDULERS for c in SCHEDULED]


@pytest.mark.parametrize(("case", "schedule"), SCHEDULE_CASES)
def test_matches_torch_with_scheduler(case, schedule):
    opt, tensors, params = _setup(case)
    sched = SCHEDULERS[schedule](opt)
    tx = to_optax(opt, labels=GROUP_OF, scheduler=sched)
    assert _run(opt, tensors, params, tx, sched) <= TOL


@contextlib.contextmanager
def _default_dtype(dtype):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


@pytest.mark.parametrize("default", [torch.float32, torch.float64], ids=["default_float32", "default_float64"])
def test_nadam_follows_torch_scalar_dtype(default):
    """torch keeps NAdam's mu_product in float32 unless the default dtype is float64: to_optax does the same."""
    with _default_dtype(default):
        opt, tensors, params = _setup("nadam")
        tx = to_optax(opt, labels=GROUP_OF)
        assert _run(opt, tensors, params, tx) <= TOL


def test_labels_forms_agree():
    """Int labels, "groupN" strings and a callable give the same transform."""
    results = []
    for labels in (GROUP_OF, {k: f"group{g}" for k, g in GROUP_OF.items()}, lambda p: {k: GROUP_OF[k] for k in p}):
        opt, tensors, params = _setup("sgd")
        results.append(_run(opt, tensors, params, to_optax(opt, labels=labels)))
    assert max(results) <= TOL


def test_group_chains_are_the_building_blocks():
    opt, tensors, params = _setup("nesterov")
    chains = group_chains(opt)
    assert len(chains) == 2
    tx = optax.multi_transform({"g0": chains[0], "g1": chains[1]}, {k: f"g{g}" for k, g in GROUP_OF.items()})
    assert _run(opt, tensors, params, tx) <= TOL


def test_single_group_needs_no_labels():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.1)
    tx = to_optax(opt)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
    assert float(updates["w"][0]) == pytest.approx(-0.01)


def test_frozen_label_gives_no_update():
    opt, _, params = _setup("adamw")
    tx = to_optax(opt, labels={**GROUP_OF, "d": "frozen"})
    updates, _ = jax.jit(tx.update)({k: jnp.ones_like(v) for k, v in params.items()}, tx.init(params), params)
    assert not np.any(np.asarray(updates["d"])) and np.all(np.asarray(updates["b"]) != 0)


# --------------------------------------------------------------------------- refusals and bad input


def test_not_an_optimizer():
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer \(SGD, Adam, AdamW, RMSprop, Adagrad, RAdam, NAdam, Muon\)"):
        to_optax(torch.nn.Linear(2, 2))


def test_unsupported_optimizer_names_supported_ones():
    opt = torch.optim.Adamax([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(NotImplementedError, match=r"Adamax is not supported.*torch\.optim\.SGD"):
        to_optax(opt)


def test_subclass_overriding_step_is_refused():
    class Clipped(torch.optim.SGD):
        def step(self, closure=None):
            return super().step(closure)

    with pytest.raises(NotImplementedError, match="overrides step"):
        to_optax(Clipped([torch.nn.Parameter(torch.zeros(2))], lr=0.1))

    class Plain(torch.optim.AdamW):
        pass

    assert to_optax(Plain([torch.nn.Parameter(torch.zeros(2))], lr=0.1)) is not None


def test_stepped_optimizer_is_refused():
    opt, tensors, _ = _setup("momentum")
    for t in tensors.values():
        t.grad = torch.ones_like(t)
    opt.step()
    with pytest.raises(ValueError, match="already holds state"):
        to_optax(opt, labels=GROUP_OF)


def test_several_groups_need_labels_or_model():
    opt, _, _ = _setup("adamw")
    with pytest.raises(TypeError, match="2 param groups"):
        to_optax(opt)
    with pytest.raises(TypeError, match="not both"):
        to_optax(opt, torch.nn.Linear(2, 2), {}, labels=GROUP_OF)


def test_bad_label_names_valid_ones():
    opt, _, _ = _setup("adamw")
    with pytest.raises(ValueError, match=r"group2.*valid: group0, group1, frozen"):
        to_optax(opt, labels={**GROUP_OF, "a": "group2"})


@pytest.mark.parametrize("label", ["group01", "group\u00b2"])
def test_label_spelled_unlike_a_group_key_is_rejected_clearly(label):
    opt, _, _ = _setup("adamw")  # "group01" used to reach optax as an unknown key; "group²" crashed in int()
    with pytest.raises(ValueError, match=r"names no torch param group; valid: group0, group1, frozen"):
        to_optax(opt, labels={**GROUP_OF, "a": label})


@pytest.mark.parametrize("labels", [[], {}, {"a": {}}], ids=["list", "dict", "nested"])
def test_labels_without_a_label_are_refused_at_once(labels):
    opt, _, _ = _setup("adamw")  # used to be accepted, then fail inside optax at tx.init
    with pytest.raises(ValueError, match=r"`labels` .* holds no label; give one per Flax params leaf"):
        to_optax(opt, labels=labels)


def test_scheduler_of_another_optimizer():
    opt, _, _ = _setup("adamw")
    other, _, _ = _setup("adamw")
    with pytest.raises(TypeError, match="different optimizer"):
        to_optax(opt, labels=GROUP_OF, scheduler=ls.StepLR(other, 2))


def test_cycle_momentum_is_refused():
    opt, _, _ = _setup("adamw")
    with pytest.raises(NotImplementedError, match="cycle_momentum"):
        to_optax(opt, labels=GROUP_OF, scheduler=ls.OneCycleLR(opt, max_lr=0.1, total_steps=10))


# --------------------------------------------------------------------------- model level: ResNet twins, real training

#: name -> torch optimizer over wdmask_torch.groups(...) (one representative variant per class).
MODEL_OPTIMIZERS = {
    "adamw": lambda g: torch.optim.AdamW(g, lr=1e-2),
    "nesterov": lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, nesterov=True),
    "adam_l2": lambda g: torch.optim.Adam(g, lr=1e-2, amsgrad=True),
    "rmsprop": lambda g: torch.optim.RMSprop(g, lr=1e-3, centered=True, momentum=0.9),
    "adagrad": lambda g: torch.optim.Adagrad(g, lr=1e-2, lr_decay=0.01),
    "radam": lambda g: torch.optim.RAdam(g, lr=1e-2, decoupled_weight_decay=True),
    "nadam": lambda g: torch.optim.NAdam(g, lr=1e-2),
}
BATCH, SIZE, CLASSES = 8, 16, 10


def _train_twins(make_opt, flax_form):
    """ResNet-18-style twins (float64, weights ported), trained 10 steps in lock step on the same batches.

    torch: ``groups(model, presets.standard, weight_decay=5e-2)`` + a warmup/cosine SequentialLR;
    flax: ``to_optax(opt, model, flax_twin, scheduler=sched)``. Returns max |torch - flax| per torch param.
    """
    torch.manual_seed(0)
    kw = {"num_classes": CLASSES, "width": 4, "layers": (1, 1), "small_input": True}
    tmodel = torch_models.resnet18(**kw).double().train()
    fmodel = flax_models.resnet18(**kw, param_dtype=jnp.float64)
    sample = jnp.zeros((2, SIZE, SIZE, 3), jnp.float64)
    variables = to_flax(tmodel, jax.eval_shape(fmodel.init, jax.random.key(0), sample), flax_model=fmodel,
                        sample=sample)
    opt = make_opt(wdmask_torch.groups(tmodel, presets.standard, weight_decay=5e-2))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-2]
    sched = SCHEDULERS["sequential_warmup_cosine"](opt)
    flax = {"module": fmodel, "params": variables["params"], "variables": variables}[flax_form]
    tx = to_optax(opt, tmodel, flax, scheduler=sched, sample=sample if flax_form == "module" else None)

    def loss_fn(params, stats, x, y):
        logits, new = fmodel.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    @jax.jit
    def step(params, stats, opt_state, x, y):
        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    params, stats = variables["params"], variables["batch_stats"]
    opt_state = jax.jit(tx.init)(params)
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        x, y = rng.standard_normal((BATCH, 3, SIZE, SIZE)), rng.integers(0, CLASSES, BATCH)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        sched.step()
        params, stats, opt_state = step(params, stats, opt_state, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(y))
    tensors = dict(tmodel.named_parameters())
    torch_inv = wdmask_torch.describe(tmodel)
    out = {}
    for t, f in pair(torch_inv, flax_inventory(params, reference=torch_inv)):
        want = tensors[t.dotted].detach().numpy()
        want = want if flax_axes(t) is None else want.transpose(flax_axes(t))
        got = params
        for key in f.path:
            got = got[key]
        out[t.dotted] = float(np.max(np.abs(np.asarray(got) - want)))
    return out


def _assert_close(diffs, tol=TOL):
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    assert not bad, f"{len(bad)} params differ by more than {tol:g}: {sorted(bad.items(), key=lambda kv: -kv[1])[:5]}"


MODEL_CASES = [pytest.param(o, f, marks=() if (o, f) == ("adamw", "params") else pytest.mark.slow, id=f"{o}-{f}")
               for o in MODEL_OPTIMIZERS for f in ("module", "params")] + [
    pytest.param("nesterov", "variables", marks=pytest.mark.slow, id="nesterov-variables")]


@pytest.mark.parametrize(("opt", "flax_form"), MODEL_CASES)
def test_resnet_twins_train_alike(opt, flax_form):
    """End to end: groups() on torch, to_optax(opt, model, flax twin) on Flax; every param within 1e-12."""
    diffs = _train_twins(MODEL_OPTIMIZERS[opt], flax_form)
    assert len(diffs) == 20  # every param: stem, two BasicBlocks (one with a downsample), fc
    _assert_close(diffs)
