"""Equinox models: exact eqx.nn kinds, masks shaped like eqx.filter(model, is_inexact_array), jitted steps."""

from __future__ import annotations

import functools
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdmask
from wdmask._jax._equinox import describe_equinox
from wdmask._usage import Use


class CNN(eqx.Module):
    conv: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    fc: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(3, 4, 3, padding=1, key=k1)
        self.bn = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")  # a str leaf: `axis_name`
        self.fc = eqx.nn.Linear(4, 2, key=k2)

    def __call__(self, x, state):
        y, state = self.bn(jax.nn.relu(self.conv(x)), state)
        return self.fc(y.mean(axis=(1, 2))), state


class MyRMSNorm(eqx.nn.RMSNorm):  # a user subclass of an exact class
    pass


class ScaleNorm(eqx.Module):  # a user class whose name says norm
    weight: jax.Array

    def __init__(self, d):
        self.weight = jnp.ones(d)


class Block(eqx.Module):
    emb: eqx.nn.Embedding
    ln: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    rms: MyRMSNorm
    mlp: eqx.nn.MLP  # holds activation functions (non-array leaves)
    out_norm: ScaleNorm

    def __init__(self, key):
        k = jax.random.split(key, 3)
        self.emb = eqx.nn.Embedding(11, 8, key=k[0])
        self.ln = eqx.nn.LayerNorm(8)
        self.attn = eqx.nn.MultiheadAttention(2, 8, key=k[1])
        self.rms = MyRMSNorm(8)
        self.mlp = eqx.nn.MLP(8, 8, 16, 1, key=k[2])
        self.out_norm = ScaleNorm(8)


# Decisions from the principle: decay what is contracted with activations (conv/linear kernels, the
# attention projections, the MLP's linears) and the token table; nothing else (biases, norm gains/shifts).
CNN_DECAY = {"conv.weight": True, "conv.bias": False, "bn.weight": False, "bn.bias": False,
             "fc.weight": True, "fc.bias": False}
BLOCK_DECAY = {"emb.weight": True, "ln.weight": False, "ln.bias": False,
               **{f"attn.{p}_proj.weight": True for p in ("query", "key", "value", "output")},
               "rms.weight": False, "rms.bias": False,
               "mlp.layers.0.weight": True, "mlp.layers.0.bias": False,
               "mlp.layers.1.weight": True, "mlp.layers.1.bias": False, "out_norm.weight": False}


def _build(make, *args, seed=0):
    """``make(*args)`` with its arrays drawn by numpy: shapes from ``eqx.filter_eval_shape``, nothing compiled.

    A jax.random initialisation compiles every sampler, eagerly or jitted: 3-5 s per model here, more than
    all the rest of this file. The tests need real arrays of the right shapes, not Equinox's init values.
    """
    rng = np.random.default_rng(seed)

    def draw(s):
        if not isinstance(s, jax.ShapeDtypeStruct):
            return s
        if not jnp.issubdtype(s.dtype, jnp.inexact):
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(rng.uniform(-0.5, 0.5, s.shape).astype(s.dtype))

    return jax.tree_util.tree_map(draw, eqx.filter_eval_shape(make, *args))


@functools.cache  # Equinox models are immutable: one per session
def _cnn():
    return _build(eqx.nn.make_with_state(CNN), jax.random.key(0))


@functools.cache
def _block():
    return _build(Block, jax.random.key(1), seed=1)


@pytest.mark.parametrize("build, expected", [(lambda: _cnn()[0], CNN_DECAY), (_block, BLOCK_DECAY)])
def test_standard_decisions_and_mask_structure(build, expected):
    model = build()
    inventory = wdmask.describe(model)
    assert [i.dotted for i in inventory] == list(expected)
    decisions = wdmask.decide(inventory, wdmask.presets.standard)
    assert {".".join(p): d.decay for p, d in decisions.items()} == expected
    params = eqx.filter(model, eqx.is_inexact_array)
    for m in (wdmask.mask(params, wdmask.presets.standard, model=model), wdmask.mask(model, wdmask.presets.standard),
              wdmask.mask(params, wdmask.presets.standard)):
        assert jax.tree_util.tree_structure(m) == jax.tree_util.tree_structure(params)
        flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(m)[0]}
        assert flat == {"." + p.replace(".0.", "[0].").replace(".1.", "[1]."): d for p, d in expected.items()}


def test_kinds_and_stateindex_state_is_not_trainable():
    inv = {i.dotted: i for i in wdmask.describe(_block())}
    assert (inv["rms.weight"].layer, inv["rms.weight"].module_type) == ("norm.rms", f"{__name__}.MyRMSNorm")
    assert inv["out_norm.weight"].layer.startswith("norm.") and inv["out_norm.weight"].role == "scale"
    assert inv["attn.query_proj.weight"].module_type == "equinox.nn.Linear"
    # BatchNorm built without make_with_state keeps its initial state in a StateIndex: state, never decayed
    bn = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")
    params = eqx.filter(bn, eqx.is_inexact_array)
    assert [i.dotted for i in wdmask.describe(bn)] == ["weight", "bias"]
    m = jax.tree_util.tree_leaves(wdmask.mask(params, wdmask.presets.all))
    assert m == [True, True, False, False]  # weight, bias; the two state arrays under StateIndex


def test_prelu_gru_conv_bias_and_stacked_linear():
    def build(k):
        stacked = eqx.filter_vmap(lambda kk: eqx.nn.Linear(3, 4, key=kk))(jax.random.split(k, 5))
        return eqx.nn.PReLU(), eqx.nn.GRUCell(3, 4, key=k), eqx.nn.Conv2d(3, 4, 3, key=k), stacked

    prelu, gru, conv, stacked = _build(build, jax.random.key(2))
    assert [(i.dotted, i.role) for i in wdmask.describe(prelu)] == [("negative_slope", "gain")]
    assert [(i.dotted, i.layer, i.role) for i in wdmask.describe(gru)] == [
        ("weight_ih", "linear", "kernel"), ("weight_hh", "linear", "kernel"), ("bias", "linear", "bias"),
        ("bias_n", "linear", "bias")]
    conv = {i.dotted: i for i in wdmask.describe(conv)}
    assert conv["bias"].shape == (4, 1, 1) and conv["bias"].stacked == 0  # equinox conv biases are 3-D
    assert [(i.dotted, i.shape, i.stacked_axes) for i in wdmask.describe(stacked)] == [
        ("weight", (5, 4, 3), (0,)), ("bias", (5, 4), (0,))]


def test_usage_merge_with_a_hand_made_trace():
    class Scaled(eqx.Module):
        mix: jax.Array
        lin: eqx.nn.Linear

    model = _build(lambda k: Scaled(jnp.ones(4), eqx.nn.Linear(4, 4, key=k)), jax.random.key(3))
    uses = {("mix",): (Use("mul"),), ("lin", "weight"): (Use("contract"),), ("lin", "bias"): (Use("add"),)}
    inv = {i.dotted: i for i in describe_equinox(model, uses=uses)}
    assert (inv["mix"].role, inv["mix"].source, inv["mix"].usage) == ("gain", "graph", ("mul",))
    assert (inv["lin.weight"].layer, inv["lin.weight"].role) == ("linear", "kernel")
    assert inv["lin.bias"].role == "bias"
    assert describe_equinox(model)[0].unclassified  # without the trace `mix` is unknown


def test_three_jitted_sgd_steps_match_a_hand_written_update():
    model, state = _cnn()
    lr, wd = 0.1, 0.05
    rng = np.random.default_rng(4)  # numpy: a jax.random draw compiles for ~0.5 s
    x, y = jnp.asarray(rng.standard_normal((6, 3, 5, 5))), jnp.asarray(rng.standard_normal((6, 2)))

    def loss(model, state):
        out, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
        return jnp.mean((out - y) ** 2), state

    grad = eqx.filter_jit(eqx.filter_grad(loss, has_aux=True))
    tx = optax.chain(wdmask.decay(wd, wdmask.presets.standard, model=model), optax.sgd(lr))
    opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, opt_state):
        g, state = grad(model, state)
        updates, opt_state = tx.update(g, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, opt_state

    hand_mask = eqx.filter(model, eqx.is_inexact_array)
    flags = iter(CNN_DECAY.values())  # a hand-made mask: bools from the principle, in leaf order
    hand_mask = jax.tree_util.tree_map(lambda _: next(flags), hand_mask)

    @eqx.filter_jit
    def hand_step(h_model, h_state):
        g, h_state = grad(h_model, h_state)
        p = eqx.filter(h_model, eqx.is_inexact_array)
        new = jax.tree_util.tree_map(lambda t, gi, mi: t - lr * (gi + wd * float(mi) * t), p, g, hand_mask)
        return eqx.combine(new, eqx.filter(h_model, eqx.is_inexact_array, inverse=True)), h_state

    m_model, m_state, h_model, h_state = model, state, model, state
    for _ in range(3):
        m_model, m_state, opt_state = step(m_model, m_state, opt_state)
        h_model, h_state = hand_step(h_model, h_state)
    got = jax.tree_util.tree_leaves(eqx.filter(m_model, eqx.is_inexact_array))
    want = jax.tree_util.tree_leaves(eqx.filter(h_model, eqx.is_inexact_array))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(got[0]), np.asarray(jax.tree_util.tree_leaves(model)[0]))  # it moved


def test_adamw_mask_and_full_model_error():
    model = _block()
    params = eqx.filter(model, eqx.is_inexact_array)
    tx = optax.adamw(1e-3, weight_decay=0.1, mask=wdmask.mask(params, wdmask.presets.standard, model=model))
    # shapes suffice: optax.masked fails on a mask of another structure while tracing (eagerly: ~50 compiles)
    state = jax.eval_shape(tx.init, params)
    updates, _ = jax.eval_shape(tx.update, params, state, params)
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(params)
    with pytest.raises(wdmask.MaskError, match=r"eqx\.filter"):  # the unfiltered model given to init
        wdmask.decay(0.1).init(model)


def test_import_wdmask_does_not_import_equinox():
    code = "import sys, wdmask; assert 'equinox' not in sys.modules, 'equinox imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
