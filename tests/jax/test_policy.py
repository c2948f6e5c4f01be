"""Optax side of per-parameter policy: partition (labels), scale_lr (per-leaf lr), Muon dimension numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers as MDN

import wdmask
from tests.jax.policy_models import Decoder, L, Stack
from wdmask import presets

TOK = jnp.zeros((2, 5), jnp.int32)
MUON = presets.standard + presets.muon


def _params(model):
    return model.init(jax.random.key(0), TOK)["params"]


def _grads(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)])


def _stack_labels() -> dict:
    block = {"fc": {"bias": "adamw", "kernel": "muon"}, "ln1": {"bias": "adamw", "scale": "adamw"},
             "proj": {"bias": "adamw", "kernel": "muon"}}
    return {"embed": {"embedding": "adamw"}, **{f"blocks_{i}": block for i in range(L)},
            "norm": {"bias": "adamw", "scale": "adamw"}, "head": {"bias": "adamw", "kernel": "adamw"}}


def test_labels_of_the_muon_preset():
    params = _params(Stack())
    assert wdmask.labels(params, MUON, model=Stack(), sample=TOK) == _stack_labels()


def test_partition_jaxpr_is_a_literal_label_partition():
    params = _params(Stack())
    grads = _grads(params)
    transforms = {"muon": optax.sgd(0.1, momentum=0.9), "adamw": optax.adamw(1e-3, weight_decay=0.1)}
    ours = wdmask.partition(MUON, transforms, model=Stack(), sample=TOK)
    literal = optax.partition(transforms, _stack_labels())
    s_ours, s_literal = ours.init(params), literal.init(params)
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_literal)
    assert str(jax.make_jaxpr(ours.update)(grads, s_ours, params)) == str(
        jax.make_jaxpr(literal.update)(grads, s_literal, params))
    u_ours, _ = jax.jit(ours.update)(grads, s_ours, params)
    u_literal, _ = jax.jit(literal.update)(grads, s_literal, params)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), u_ours, u_literal))


def test_partition_errors():
    params = _params(Stack())
    with pytest.raises(wdmask.MaskError, match=r"label parameters \['muon'\] but `transforms` has no transform"):
        wdmask.partition(MUON, {"adamw": optax.adamw(1e-3)}, model=Stack(), sample=TOK).init(params)
    with pytest.raises(wdmask.MaskError, match=r"get no optimizer label .*e.g. 'blocks_0.fc.bias'"):
        wdmask.partition([wdmask.Rule(role="kernel", optimizer="muon")], {"muon": optax.sgd(1.0)}).init(params)


def test_lr_scales_of_layer_decay_per_slice():
    params = _params(Stack(scan=True))
    scales = wdmask.lr_scales(params, presets.standard + presets.layer_decay(0.5), model=Stack(scan=True),
                              sample=TOK)
    assert scales["embed"]["embedding"] == 0.5 ** 4 and scales["head"]["kernel"] == 1.0
    assert scales["blocks"]["fc"]["kernel"].shape == (L, 1, 1)
    np.testing.assert_array_equal(scales["blocks"]["fc"]["kernel"].ravel(), [0.125, 0.25, 0.5])


def _chain(model):
    return optax.chain(optax.scale_by_adam(), wdmask.decay(0.1, presets.standard, model=model, sample=TOK),
                       wdmask.scale_lr(presets.standard + presets.layer_decay(0.8), model=model, sample=TOK),
                       optax.scale(-1e-2))


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True], ids=["eager", "jit"])
def test_scanned_and_unscanned_get_identical_updates(jit):
    """Eager: bit for bit. Under jit XLA fuses the stacked and the separate leaves differently (FMA contraction):
    float64, within 1e-15 of the update's scale (float32 measured 1 ulp, 4.7e-10)."""
    flat = jax.tree.map(lambda x: x.astype(jnp.float64), _params(Stack()))
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[flat[f"blocks_{i}"] for i in range(L)])
    scanned = {k: v for k, v in flat.items() if not k.startswith("blocks_")} | {"blocks": stacked}
    assert jax.tree.structure(scanned) == jax.tree.structure(_params(Stack(scan=True)))
    tx_flat, tx_scan = _chain(Stack()), _chain(Stack(scan=True))
    s_flat, s_scan = tx_flat.init(flat), tx_scan.init(scanned)
    for step in range(2):
        g_flat = _grads(flat, seed=step)
        g_scan = {k: v for k, v in g_flat.items() if not k.startswith("blocks_")} | {
            "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *[g_flat[f"blocks_{i}"] for i in range(L)])}
        run = jax.jit if jit else (lambda f: f)
        u_flat, s_flat = run(tx_flat.update)(g_flat, s_flat, flat)
        u_scan, s_scan = run(tx_scan.update)(g_scan, s_scan, scanned)
        flat, scanned = optax.apply_updates(flat, u_flat), optax.apply_updates(scanned, u_scan)
        tol = 1e-17 if jit else 0.0  # updates are ~1e-2
        for i in range(L):
            diff = jax.tree.map(lambda a, b, i=i: float(jnp.max(jnp.abs(a - b[i]))), u_flat[f"blocks_{i}"],
                                u_scan["blocks"])
            assert max(jax.tree.leaves(diff)) <= tol, (step, i, diff)
        assert jnp.array_equal(u_flat["embed"]["embedding"], u_scan["embed"]["embedding"])
    # the layer-decay multipliers really act: block 0's update is 0.8**3 of the head's scale
    assert wdmask.lr_scales(flat, presets.layer_decay(0.8), model=Stack(), sample=TOK)["blocks_0"]["fc"][
        "kernel"] == pytest.approx(0.8 ** 3, rel=1e-15)


def test_scale_lr_adds_no_op_for_multiplier_one():
    params = _params(Stack())
    grads = _grads(params)
    tx = wdmask.scale_lr([wdmask.Rule(role="bias", lr=1.0)])
    assert str(jax.make_jaxpr(tx.update)(grads, tx.init(params), params)).count("mul") == 0


def _hand_written_maxtext() -> dict:
    """MaxText-style dimension numbers for a decoder scanned with ``param_scan_axis=1``, written by hand."""
    q = MDN(reduction_axis=(0,), output_axis=(2, 3))  # (embed, layers, heads, head_dim)
    return {
        "token_embedder": {"embedding": None},
        "layers": {
            "pre_self_attention_layer_norm": {"scale": None}, "post_self_attention_layer_norm": {"scale": None},
            "self_attention": {"query": {"kernel": q, "bias": None}, "key": {"kernel": q, "bias": None},
                               "value": {"kernel": q, "bias": None},
                               # (heads, layers, head_dim, embed)
                               "out": {"kernel": MDN(reduction_axis=(0, 2), output_axis=(3,)), "bias": None}},
            "mlp": {"wi": {"kernel": MDN(reduction_axis=(0,), output_axis=(2,)), "bias": None},  # (embed, layers, mlp)
                    "wo": {"kernel": MDN(reduction_axis=(0,), output_axis=(2,)), "bias": None}},
        },
        "decoder_norm": {"scale": None},
        "logits_dense": {"kernel": None, "bias": None},  # the output head: AdamW
    }


def test_muon_dimension_numbers_of_a_maxtext_style_scanned_decoder():
    dims = wdmask.muon_dimension_numbers(Decoder(), TOK, MUON)
    assert dims == _hand_written_maxtext()


@pytest.mark.slow
def test_muon_dimension_numbers_drive_optax_contrib_muon():
    dims = wdmask.muon_dimension_numbers(Decoder(), TOK, MUON)
    params = _params(Decoder())
    tx = optax.contrib.muon(1e-2, eps=1e-7, muon_weight_dimension_numbers=dims)
    updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
    assert updates["layers"]["mlp"]["wi"]["kernel"].shape == params["layers"]["mlp"]["wi"]["kernel"].shape


def test_muon_dimension_numbers_unknown_layout_raises():
    params = {"blocks_0": {"experts": {"kernel": jnp.zeros((4, 8, 8))}},
              "blocks_1": {"experts": {"kernel": jnp.zeros((4, 8, 8))}}}
    rules = [wdmask.Rule(optimizer="muon")]
    with pytest.raises(wdmask.MaskError, match=r"no known contraction axes: blocks_0.experts.kernel"):
        wdmask.muon_dimension_numbers(params, rules=rules)
