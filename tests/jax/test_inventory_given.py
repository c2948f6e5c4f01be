"""``mask``/``decay``/``audit``/``infer_rules`` take an inventory built once (``wdmask.describe(model, sample=x)``)
and decide as if they had described the model with that sample; an inventory of other params is refused."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdmask
from wdmask import presets


class Head(nn.Module):  # a learned token and a position table: only the graph classifies them
    @nn.compact
    def __call__(self, x):
        cls = self.param("cls", nn.initializers.zeros, (1, 1, 8))
        table = self.param("table", nn.initializers.zeros, (1, 5, 8))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, 8)), x], axis=1) + table
        return nn.Dense(8, name="proj")(x)


X = np.zeros((2, 4, 8), np.float32)
PARAMS = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                      jax.eval_shape(Head().init, jax.random.key(0), X)["params"])
EXPECTED = {"cls": False, "table": False, "proj": {"bias": False, "kernel": True}}


def test_mask_and_decay_from_an_inventory_equal_describing_with_the_sample():
    inv = wdmask.describe(Head(), sample=X)
    assert wdmask.mask(PARAMS, presets.standard, inventory=inv) == EXPECTED
    assert wdmask.mask(PARAMS, presets.standard, model=Head(), sample=X) == EXPECTED
    tx = wdmask.decay(0.1, presets.standard, inventory=inv)
    ones = jax.tree.map(np.ones_like, PARAMS)
    updates, _ = tx.update(jax.tree.map(np.zeros_like, PARAMS), tx.init(ones), ones)
    assert jax.tree.map(lambda u: bool(np.any(np.asarray(u) != 0)), updates) == EXPECTED


def test_audit_and_infer_rules_read_the_same_inventory():
    inv = wdmask.describe(Head(), sample=X)
    tx = optax.chain(wdmask.decay(0.1, presets.standard, inventory=inv), optax.sgd(0.1))
    assert wdmask.audit(tx, PARAMS, presets.standard, inventory=inv).ok
    assert not wdmask.audit(tx, PARAMS, presets.standard).ok  # params alone: cls/table are guesses, decayed
    inferred = wdmask.infer_rules(tx, PARAMS, inventory=inv)
    assert {str(i): d.multiplier for i, d in zip(inv, wdmask.decide(inv, inferred.rules).values(), strict=True)} == {
        "cls": 0.0, "table": 0.0, "proj.bias": 0.0, "proj.kernel": 1.0}


def test_an_inventory_of_other_params_is_refused():
    inv = wdmask.describe(Head(), sample=X)
    other = {**PARAMS, "table": np.zeros((1, 9, 8), np.float32)}
    with pytest.raises(wdmask.MaskError, match=r"table has shape \(1, 5, 8\) in the inventory but \(1, 9, 8\)"):
        wdmask.mask(other, presets.standard, inventory=inv)
    with pytest.raises(TypeError, match="`inventory=` or `model=`/`sample=`, not both"):
        wdmask.mask(PARAMS, presets.standard, inventory=inv, model=Head(), sample=X)


def test_policy_entry_points_take_the_inventory_too():
    """labels / lr_scales / partition / scale_lr / muon_dimension_numbers decide on a given inventory as on the
    model described with its sample (cls and table are tokens and positions only the graph tells)."""
    inv = wdmask.describe(Head(), sample=X)
    rules = [wdmask.Rule(optimizer="adamw"), wdmask.Rule(role="kernel", optimizer="muon"),
             wdmask.Rule(role=["token", "position"], lr=0.5)]
    want_labels = {"cls": "adamw", "table": "adamw", "proj": {"bias": "adamw", "kernel": "muon"}}
    assert wdmask.labels(PARAMS, rules, inventory=inv) == want_labels
    assert wdmask.labels(PARAMS, rules, model=Head(), sample=X) == want_labels
    assert wdmask.lr_scales(PARAMS, rules, inventory=inv) == {"cls": 0.5, "table": 0.5,
                                                              "proj": {"bias": 1.0, "kernel": 1.0}}
    ones = jax.tree.map(np.ones_like, PARAMS)
    tx = wdmask.scale_lr(rules, inventory=inv)
    updates, _ = tx.update(ones, tx.init(PARAMS), PARAMS)
    assert jax.tree.map(lambda u: float(np.asarray(u).ravel()[0]), updates) == {
        "cls": 0.5, "table": 0.5, "proj": {"bias": 1.0, "kernel": 1.0}}
    part = wdmask.partition(rules, {"muon": optax.sgd(1.0), "adamw": optax.set_to_zero()}, inventory=inv)
    updates, _ = part.update(ones, part.init(PARAMS), PARAMS)
    assert jax.tree.map(lambda u: float(np.asarray(u).ravel()[0]), updates) == {
        "cls": 0.0, "table": 0.0, "proj": {"bias": 0.0, "kernel": -1.0}}
    dims = wdmask.muon_dimension_numbers(PARAMS, rules=rules, inventory=inv)
    assert dims["proj"]["kernel"] == optax.contrib.MuonDimensionNumbers((0,), (1,)) and dims["cls"] is None


def test_every_entry_point_takes_a_model_with_the_same_options_or_an_inventory():
    import inspect

    import wdmask_torch

    jax_fns = [wdmask.mask, wdmask.decay, wdmask.audit, wdmask.infer_rules, wdmask.partition, wdmask.scale_lr,
               wdmask.labels, wdmask.lr_scales, wdmask.muon_dimension_numbers]
    missing = {f.__name__: {"sample", "sample_kwargs", "inventory"} - set(inspect.signature(f).parameters)
               for f in jax_fns}
    torch_fns = [wdmask_torch.groups, wdmask_torch.audit, wdmask_torch.infer_rules, wdmask_torch.optimizers]
    missing |= {f"torch.{f.__name__}": {"example_inputs", "inventory"} - set(inspect.signature(f).parameters)
                for f in torch_fns}
    assert {k: v for k, v in missing.items() if v} == {}
