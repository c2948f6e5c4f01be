"""Layer-wise lr decay written by hand in optax (a per-leaf multiplier tree, as a scenic/big_vision-style
``lr_mults`` config gives): audited against ``presets.layer_decay``, and rules inferred that give it back; a
scanned stack has one multiplier per slice."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdmask
from wdmask import presets
from wdmask._errors import MaskError

RULES = presets.standard + presets.layer_decay(0.5)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, _: None = None) -> tuple[jax.Array, None]:
        return x + nn.Dense(8, name="fc")(nn.LayerNorm(name="norm")(x)), None


class Unrolled(nn.Module):
    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        x = nn.Embed(20, 8, name="embed")(ids)
        for i in range(3):
            x, _ = Block(name=f"blocks_{i}")(x)
        return nn.Dense(20, name="head")(x)


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        x = nn.Embed(20, 8, name="embed")(ids)
        x, _ = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)(name="blocks")(
            x, None)
        return nn.Dense(20, name="head")(x)


IDS = jnp.zeros((2, 4), jnp.int32)


def _params(model: nn.Module) -> dict:
    return jax.eval_shape(model.init, jax.random.key(0), IDS)["params"]


def _hand_unrolled(params: dict) -> dict:
    """MAE's rule written out: embedding depth 0, block i depth i + 1, head depth 4; multiplier 0.5 ** (4 - depth)."""
    depth = {"embed": 0, "blocks_0": 1, "blocks_1": 2, "blocks_2": 3, "head": 4}
    return {k: jax.tree.map(lambda _, d=depth[k]: 0.5 ** (4 - d), v) for k, v in params.items()}


def _hand_scanned(params: dict) -> dict:
    per_slice = np.array([0.5 ** 3, 0.5 ** 2, 0.5 ** 1])  # blocks 1, 2, 3 of depth_max 4
    out = {"embed": {"embedding": 0.5 ** 4}, "head": {"kernel": 1.0, "bias": 1.0}}
    out["blocks"] = jax.tree.map(lambda x: per_slice.reshape((3,) + (1,) * (len(x.shape) - 1)), params["blocks"])
    return out


def _lr_rows(report) -> list[tuple[str, str]]:
    return [(r.path, r.reason) for r in report.rows if r.reason.startswith("lr ")]


@pytest.mark.parametrize("model, hand", [(Unrolled(), _hand_unrolled), (Scanned(), _hand_scanned)],
                         ids=["unrolled", "scanned"])
def test_hand_written_layer_decay_is_audited_and_inferred(model, hand):
    params = _params(model)
    tx = optax.adamw(1e-3, weight_decay=0.05, mask=wdmask.mask(params, presets.standard, model=model, sample=IDS))
    lr = hand(params)
    report = wdmask.audit(tx, params, RULES, model=model, sample=IDS, lr_scales=lr)
    assert _lr_rows(report) == [] and report.ok
    wrong = {**lr, "head": jax.tree.map(lambda _: 0.5, lr["head"])}  # the head's lr decayed once too often
    bad = wdmask.audit(tx, params, RULES, model=model, sample=IDS, lr_scales=wrong)
    assert sorted(p for p, _ in _lr_rows(bad)) == ["head.bias", "head.kernel"]
    inferred = wdmask.infer_rules(tx, params, model=model, sample=IDS, lr_scales=lr)
    assert [r.lr_decay for r in inferred.rules if r.sets("lr_decay")] == [0.5]
    rebuilt = wdmask.lr_scales(params, inferred.rules, model=model, sample=IDS)
    assert jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b, rtol=1e-9), rebuilt, lr))


def test_per_slice_multipliers_that_are_no_layer_decay_cannot_be_rules():
    params = _params(Scanned())
    lr = _hand_scanned(params)
    lr["blocks"] = jax.tree.map(lambda a: np.array([1.0, 0.5, 1.0]).reshape(a.shape), lr["blocks"])
    with pytest.raises(ValueError, match="one lr multiplier per slice"):
        wdmask.infer_rules(optax.adamw(1e-3), params, model=Scanned(), sample=IDS, lr_scales=lr)


def test_bad_lr_scales_are_refused_by_name():
    params = _params(Scanned())
    lr = _hand_scanned(params)
    with pytest.raises(MaskError, match=r"lr_scales` at blocks\.fc\.kernel: expected a number, or one per slice"):
        wdmask.audit(optax.adamw(1e-3), params, RULES, model=Scanned(), sample=IDS, lr_scales={**lr, "blocks": jax.tree.map(
            lambda a: np.ones((2, 1, 1)) if a.ndim == 3 else a, lr["blocks"])})
    with pytest.raises(MaskError, match="structure of `params`"):
        wdmask.audit(optax.adamw(1e-3), params, RULES, lr_scales={"embed": 1.0})
    with pytest.raises(TypeError, match="expected a number"):
        wdmask.audit(optax.adamw(1e-3), params, RULES, lr_scales=jax.tree.map(lambda _: "fast", params))


def test_a_traced_inventory_carries_its_depths_as_torch_does():
    unrolled = {str(i): (i.depth, i.depth_max) for i in wdmask.describe(Unrolled(), IDS)}
    assert unrolled == {"embed.embedding": (0, 4), "head.kernel": (4, 4), "head.bias": (4, 4),
                        **{f"blocks_{k}.{leaf}": (k + 1, 4) for k in range(3)
                           for leaf in ("norm.scale", "norm.bias", "fc.kernel", "fc.bias")}}
    scanned = {str(i): i.depth for i in wdmask.describe(Scanned(), IDS)}
    assert scanned["blocks.fc.kernel"] == (1, 2, 3) and scanned["head.kernel"] == 4
    assert all(i.depth is None for i in wdmask.describe(_params(Unrolled())))  # no trace: no order, no depth
