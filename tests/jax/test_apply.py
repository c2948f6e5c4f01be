"""mask() and decay(): equal to hand-written optax masks, static under jit and inject_hyperparams, clear errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import wdmask
from tests.jax.models import TOKENS, Auto, fill, init, nnx_model
from wdmask import presets

X = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float64).reshape(4, 3)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm(name="ln")(nn.Dense(8, name="fc1")(x)))
        return nn.Dense(2, name="fc2")(x)


HAND = {"fc1": {"bias": False, "kernel": True}, "fc2": {"bias": False, "kernel": True},
        "ln": {"bias": False, "scale": False}}


def loss(params, x):
    return jnp.mean(MLP().apply({"params": params}, x) ** 2)


@pytest.fixture(scope="module")
def params():
    return init(MLP(), X)["params"]


GRAD = jax.jit(jax.grad(loss))  # compiled once for the module; `jit` below is about the transform


def run(tx, params, steps=3, jit=True):
    grad = GRAD
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    for _ in range(steps):
        updates, state = update(grad(params, X), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def assert_same(a, b, tol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
    assert max(diffs) <= tol, diffs


def test_mask_matches_hand(params):
    assert wdmask.mask(params, presets.standard, model=MLP(), sample=X) == HAND
    assert wdmask.mask(params, presets.all) == jax.tree.map(lambda _: True, HAND)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_decay_equals_hand_mask(params, jit):
    wd = 0.05
    ours = optax.chain(wdmask.decay(wd, presets.standard, model=MLP(), sample=X), optax.sgd(0.1, momentum=0.9))
    hand = optax.chain(optax.masked(optax.add_decayed_weights(wd), HAND), optax.sgd(0.1, momentum=0.9))
    a, _ = run(ours, params, jit=jit)
    b, _ = run(hand, params, jit=jit)
    assert_same(a, b, 0.0)
    grads = GRAD(params, X)
    one, _ = ours.update(grads, ours.init(params), params)
    assert_same(one["ln"], jax.tree.map(lambda g: -0.1 * g, grads["ln"]), 0.0)  # nothing added to the norm
    assert_same(one["fc1"]["kernel"], -0.1 * (grads["fc1"]["kernel"] + wd * params["fc1"]["kernel"]), 1e-7)


def test_decay_with_schedule(params):
    schedule = optax.linear_schedule(0.1, 0.0, 4)
    ours = optax.chain(wdmask.decay(schedule, presets.standard, model=MLP(), sample=X), optax.sgd(0.1))
    hand = optax.chain(optax.masked(optax.add_decayed_weights(schedule), HAND), optax.sgd(0.1))
    a, _ = run(ours, params, steps=5)
    b, _ = run(hand, params, steps=5)
    assert_same(a, b, 0.0)


def test_inject_hyperparams(params):
    rules = presets.standard
    make = optax.inject_hyperparams(
        lambda weight_decay: optax.chain(wdmask.decay(weight_decay, rules, model=MLP(), sample=X), optax.sgd(0.1)))
    tx = make(weight_decay=1e-4)
    state = tx.init(params)
    grads = GRAD(params, X)
    update = jax.jit(tx.update)
    u1, state = update(grads, state, params)

    @jax.jit  # both references in one program (eagerly: a compile per op and leaf shape)
    def by_hand(wd):
        hand = optax.chain(optax.masked(optax.add_decayed_weights(wd), HAND), optax.sgd(0.1))
        return hand.update(grads, hand.init(params), params)[0]

    ref1, ref2 = by_hand(1e-4), by_hand(0.5)
    assert_same(u1, ref1)
    state.hyperparams["weight_decay"] = jnp.asarray(0.5)  # inject a new value: the update must change
    u2, _ = update(grads, state, params)
    assert_same(u2, ref2)
    assert np.max(np.abs(np.asarray(u2["fc1"]["kernel"]) - np.asarray(u1["fc1"]["kernel"]))) > 1e-3
    assert_same(u2["ln"], u1["ln"], 0.0)


def test_distinct_multipliers(params):
    rules = presets.standard + wdmask.Rule(path="fc2.kernel", multiplier=0.5)
    wd = 0.1
    tx = wdmask.decay(wd, rules, model=MLP(), sample=X)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    expected = {"fc1": {"bias": 0.0, "kernel": wd}, "fc2": {"bias": 0.0, "kernel": wd * 0.5},
                "ln": {"bias": 0.0, "scale": 0.0}}
    want = jax.tree.map(lambda m, p: m * p, expected, params)
    assert_same(updates, want, 1e-15)
    # and with a schedule: each multiplier scales the schedule
    sched = optax.constant_schedule(wd)
    tx = wdmask.decay(sched, rules, model=MLP(), sample=X)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    assert_same(updates, want, 1e-15)


def _step(tx):
    @jax.jit
    def step(params, state, x):
        grads = jax.grad(loss)(params, x)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def test_jaxpr_identical_to_literal_mask(params):
    ours = optax.chain(wdmask.decay(1e-3, presets.standard, model=MLP(), sample=X), optax.adam(1e-3))
    hand = optax.chain(optax.masked(optax.add_decayed_weights(1e-3), HAND), optax.adam(1e-3))
    j_ours = jax.make_jaxpr(_step(ours))(params, ours.init(params), X)
    j_hand = jax.make_jaxpr(_step(hand))(params, hand.init(params), X)
    assert str(j_ours) == str(j_hand)


def test_partitioned_boxes():
    variables = init(Auto(), TOKENS)
    params = variables["params"]
    assert isinstance(params["Dense_0"]["kernel"], nn.Partitioned)
    grads = fill(params, seed=1)  # boxed like the params, as jax.grad returns them
    tx = wdmask.decay(0.1, presets.standard)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    assert isinstance(updates["Dense_0"]["kernel"], nn.Partitioned)
    hand = optax.masked(optax.add_decayed_weights(0.1), wdmask.mask(nn.unbox(params), presets.standard))
    ref, _ = jax.jit(hand.update)(nn.unbox(grads), hand.init(nn.unbox(params)), nn.unbox(params))
    assert_same(nn.unbox(updates), ref, 0.0)


class NMLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.lin1 = nnx.Linear(3, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.lin2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.lin2(nnx.relu(self.norm(self.lin1(x))))


NHAND = {"lin1.kernel": True, "lin1.bias": False, "norm.scale": False, "norm.bias": False,
         "lin2.kernel": True, "lin2.bias": False}


def _nnx_train(tx, steps=2):
    model = nnx_model(lambda: NMLP(rngs=nnx.Rngs(0)))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda m: jnp.sum(m(X) ** 2))(model)
        opt.update(model, grads)

    for _ in range(steps):
        step(model, opt)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_nnx_optimizer():
    model = nnx_model(lambda: NMLP(rngs=nnx.Rngs(0)))
    pure = nnx.as_pure(nnx.state(model, nnx.Param))
    hand = jax.tree_util.tree_map_with_path(lambda kp, _: NHAND[".".join(str(k.key) for k in kp)], pure)
    assert isinstance(hand, nnx.State)
    m = wdmask.mask(nnx.state(model, nnx.Param), presets.standard, model=model)
    assert isinstance(m, nnx.State) and nnx.to_pure_dict(m) == nnx.to_pure_dict(hand)
    ours = _nnx_train(optax.chain(wdmask.decay(0.1, presets.standard, model=model), optax.sgd(0.1)))
    ref = _nnx_train(optax.chain(optax.masked(optax.add_decayed_weights(0.1), hand), optax.sgd(0.1)))
    plain = _nnx_train(optax.sgd(0.1))
    assert_same(ours, ref, 0.0)
    assert np.max(np.abs(np.asarray(ours["lin1"]["kernel"]) - np.asarray(plain["lin1"]["kernel"]))) > 1e-4
    # a mask from wdmask.mask (names only) is a valid optax mask for nnx.Optimizer too
    _nnx_train(optax.chain(optax.masked(optax.add_decayed_weights(0.1),
                                        wdmask.mask(nnx.state(model, nnx.Param), presets.standard)),
                           optax.sgd(0.1)), steps=1)


# ----------------------------------------------------------------------------- errors


def test_structure_mismatch_names_first_path(params):
    tx = wdmask.decay(0.1, presets.standard)
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    extra = {**grads, "fc3": {"kernel": jnp.zeros((2, 2))}}
    with pytest.raises(wdmask.MaskError, match=r"`updates`.*unexpected 'fc3.kernel'"):
        tx.update(extra, state, params)
    renamed = {("ln2" if k == "ln" else k): v for k, v in grads.items()}
    with pytest.raises(wdmask.MaskError, match=r"unexpected 'ln2.bias' \(leaf #4; expected 'ln.bias' there\)"):
        jax.jit(tx.update)(renamed, state, params)
    missing = {k: v for k, v in params.items() if k != "fc2"}
    with pytest.raises(wdmask.MaskError, match=r"`params`.*missing 'fc2.bias'"):
        tx.update(grads, state, missing)
    with pytest.raises(wdmask.MaskError, match="must come from this transform's init"):
        tx.update(grads, optax.EmptyState(), params)


def test_bad_inputs():
    with pytest.raises(TypeError, match="`weight_decay` must be"):
        wdmask.decay("0.1")
    with pytest.raises(ValueError, match="finite real number >= 0"):
        wdmask.decay(-1.0)
    with pytest.raises(wdmask.RuleError, match="hand-made bool mask"):
        wdmask.decay(0.1, HAND)
    with pytest.raises(wdmask.RuleError, match="hand-made bool mask"):
        wdmask.decay(0.1, lambda p: HAND)
    with pytest.raises(ValueError, match="needs `sample`"):
        wdmask.decay(0.1, model=MLP())
    with pytest.raises(wdmask.RuleError, match=r"unknown kind 'norm\.batchh'"):
        wdmask.decay(0.1, [{"layer": "norm.batchh", "decay": False}])


def test_traced_values():
    @jax.jit
    def make_rule(m):
        return wdmask.Rule(role="bias", multiplier=m)

    with pytest.raises(wdmask.RuleError, match="`multiplier`: must be a finite number"):
        make_rule(0.5)

    # structure-only masks work on traced params (tx.init under jit), and the mask is static
    params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    tx = wdmask.decay(0.1)
    state = jax.jit(tx.init)(params)
    updates, _ = jax.jit(tx.update)(params, state, params)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], 1.1)
    np.testing.assert_allclose(updates["Dense_0"]["bias"], 1.0)
    # a traced weight decay is fine (it is a value, not structure)
    out = jax.jit(lambda wd: wdmask.decay(wd).update(params, tx.init(params), params)[0])(jnp.asarray(0.5))
    np.testing.assert_allclose(out["Dense_0"]["kernel"], 1.5)


def test_strict_and_zero():
    params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    with pytest.raises(wdmask.RuleError, match="matched no parameter"):
        wdmask.decay(0.1, [wdmask.Rule(layer="conv", decay=False)], strict=True).init(params)
    tx = wdmask.decay(0.1, presets.standard + wdmask.Rule(layer="linear", decay=False))
    updates, _ = tx.update(params, tx.init(params), None)  # nothing decayed: params not needed
    assert updates is params


def test_structure_error_of_a_variables_dict_names_the_new_leaf():
    variables = {"params": {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}}
    tx = wdmask.decay(0.1)
    state = tx.init(variables)
    grown = {"params": {**variables["params"], "Dense_1": {"bias": jnp.ones(2)}}}
    with pytest.raises(wdmask.MaskError, match=r"unexpected 'params\.Dense_1\.bias'"):
        tx.update(grown, state, grown)


BAD_WEIGHT_DECAY = {
    "nan": (float("nan"), ValueError), "inf": (float("inf"), ValueError), "negative": (-0.1, ValueError),
    "bool": (True, TypeError), "str": ("0.01", TypeError), "jnp_negative": (jnp.array(-1.0), ValueError),
    "jnp_nan": (jnp.array(jnp.nan), ValueError), "np_nan": (np.float64("nan"), ValueError),
    "np_str": (np.array("0.01"), TypeError), "vector": (jnp.ones(2), TypeError), "complex": (1j, TypeError),
    "none": (None, TypeError),
}
RECIPES = {"decay": lambda wd: wdmask.decay(wd), "lars": lambda wd: wdmask.lars(0.1, wd),
           "lamb": lambda wd: wdmask.lamb(1e-3, wd)}


@pytest.mark.parametrize("build", RECIPES.values(), ids=list(RECIPES))
@pytest.mark.parametrize("value,error", BAD_WEIGHT_DECAY.values(), ids=list(BAD_WEIGHT_DECAY))
def test_bad_weight_decay_is_refused_everywhere(build, value, error):
    name = next(k for k, v in RECIPES.items() if v is build)
    with pytest.raises(error, match=rf"^wdmask\.{name}: `weight_decay` must be a finite real number >= 0 or a "
                                    rf"schedule, got {type(value).__name__} "):
        build(value)


@pytest.mark.parametrize("build", RECIPES.values(), ids=list(RECIPES))
def test_good_weight_decay_forms_are_accepted(build):
    params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
    for value in (0.0, 1e-4, 2, jnp.array(0.1), np.float32(0.1), optax.constant_schedule(0.1)):
        tx = build(value)
        updates, _ = tx.update(params, tx.init(params), params)
        assert jnp.isfinite(updates["Dense_0"]["kernel"]).all()


def test_decay_traced_weight_decay_is_accepted_under_jit():
    params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}

    @jax.jit
    def step(wd):
        tx = wdmask.decay(wd)
        return tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)[0]

    assert step(0.5)["Dense_0"]["kernel"].tolist() == [[0.5, 0.5], [0.5, 0.5]]  # g + λθ, kernel only
    assert step(0.5)["Dense_0"]["bias"].tolist() == [0.0, 0.0]


def test_torch_module_points_to_wdmask_torch():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"wdmask\.mask: `params` is a torch module \(Sequential\).*wdmask_torch\.groups"):
        wdmask.mask(net, presets.standard)
    with pytest.raises(TypeError, match=r"wdmask\.mask: `params` is a dict of torch tensors.*wdmask_torch\.groups"):
        wdmask.mask(net.state_dict(), presets.standard)
    with pytest.raises(TypeError, match=r"wdmask\.describe: `params_or_model` is a torch module.*wdmask_torch\.describe"):
        wdmask.describe(net)
    with pytest.raises(TypeError, match=r"wdmask\.decay: `model` is a torch module.*wdmask_torch\.groups"):
        wdmask.decay(0.1, model=net)
    tx = wdmask.decay(0.1)
    with pytest.raises(TypeError, match=r"wdmask\.decay: `params` is a torch module.*wdmask_torch\.groups"):
        tx.init(net)
    assert [r.path for r in wdmask.explain(net, presets.standard)] == ["0.weight", "0.bias"]  # explain routes torch


class _ConvBN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.fc = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(jnp.mean(self.bn(self.conv(x)), axis=(1, 2)))


CONV_BN_STANDARD = {"bn": {"bias": False, "scale": False}, "conv": {"bias": False, "kernel": True},
                    "fc": {"bias": False, "kernel": True}}


def test_nnx_module_stands_for_its_param_state():
    model = _ConvBN(nnx.Rngs(0))
    m = wdmask.mask(model, presets.standard)
    assert isinstance(m, nnx.State)
    assert nnx.to_pure_dict(m) == CONV_BN_STANDARD  # no BatchNorm mean/var: they are not nnx.Param
    assert [r.path for r in wdmask.explain(model, presets.standard)] == [
        "bn.bias", "bn.scale", "conv.bias", "conv.kernel", "fc.bias", "fc.kernel"]
    with pytest.raises(TypeError, match="another one"):
        wdmask.mask(model, presets.standard, model=_ConvBN(nnx.Rngs(1)))


def test_nnx_optimizer_with_batchnorm_steps_and_decays_only_what_the_rules_say():
    model = _ConvBN(nnx.Rngs(0))
    before = nnx.to_pure_dict(nnx.state(model))
    tx = optax.chain(wdmask.decay(0.1, presets.standard, model=model), optax.sgd(0.1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimizer.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))  # a zero gradient
    after = nnx.to_pure_dict(nnx.state(model))
    for name, leaves in CONV_BN_STANDARD.items():
        for leaf, decayed in leaves.items():
            want = np.asarray(before[name][leaf]) * (1 - 0.1 * 0.1 if decayed else 1.0)
            np.testing.assert_allclose(after[name][leaf], want, rtol=1e-6, err_msg=f"{name}.{leaf}")
    for stat in ("mean", "var"):
        np.testing.assert_array_equal(after["bn"][stat], before["bn"][stat])
