"""A Muon/AdamW split written by hand in optax (``optax.partition``): audited label by label, and rules inferred
that rebuild it; the depths behind ``in_block`` come from the traced call order (``ParamInfo.call_index``)."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

import wdmask
from wdmask import presets
from wdmask._errors import MaskError
from wdmask._jax._audit import partition_labels

RULES = presets.standard + presets.muon


class GPTish(nn.Module):
    """Embedding, two blocks (LayerNorm + Dense), final norm, head: Muon belongs to the blocks' kernels only."""

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        x = nn.Embed(50, 16, name="wte")(ids)
        for i in range(2):
            x = x + nn.Dense(16, name=f"fc_{i}")(nn.LayerNorm(name=f"ln_{i}")(x))
        return nn.Dense(50, name="head")(nn.LayerNorm(name="ln_f")(x))


MODEL, IDS = GPTish(), jnp.zeros((2, 8), jnp.int32)
PARAMS = MODEL.init(jax.random.key(0), IDS)["params"]
# Written by hand, as a Muon user would: the blocks' kernels get Muon, everything else AdamW.
HAND = {name: {leaf: ("muon" if name.startswith("fc_") and leaf == "kernel" else "adamw") for leaf in value}
        for name, value in PARAMS.items()}


def _split(labels: dict) -> optax.GradientTransformation:
    return optax.partition({"muon": optax.contrib.muon(1e-3), "adamw": optax.adamw(1e-3)}, labels)


def _flat(labels: dict) -> dict[tuple[str, ...], str]:
    return {(k, n): v for k, d in labels.items() for n, v in d.items()}


def test_labels_are_read_from_the_partition_state():
    assert partition_labels(_split(HAND), PARAMS) == _flat(HAND)


def test_a_stateless_label_takes_the_leaves_no_other_label_claims():
    labels = jax.tree.map(lambda _: "adamw", PARAMS) | {"head": {"bias": "sgd", "kernel": "sgd"}}
    tx = optax.partition({"adamw": optax.adamw(1e-3), "sgd": optax.sgd(1e-3)}, labels)
    got = partition_labels(optax.chain(optax.clip(1.0), tx), PARAMS)  # found inside a chain too
    assert {p for p, v in got.items() if v == "sgd"} == {("head", "bias"), ("head", "kernel")}


def test_two_stateless_labels_cannot_be_told_apart():
    tx = optax.partition({"a": optax.sgd(1e-3), "b": optax.sgd(1e-2)}, jax.tree.map(lambda _: "a", PARAMS) | {
        "head": {"bias": "b", "kernel": "b"}})
    with pytest.raises(ValueError, match="labels=") as e:
        partition_labels(tx, PARAMS)
    assert "['a', 'b']" in str(e.value)


def test_a_transform_without_partition_has_no_labels():
    assert partition_labels(optax.adamw(1e-3), PARAMS) is None


def test_audit_agrees_with_the_split_the_rules_make():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the traced call order places every leaf: no depth is a guess
        report = wdmask.audit(_split(HAND), PARAMS, RULES, model=MODEL, sample=IDS, ratios=False)
    rows = {r.path: (r.expected_optimizer, r.actual_optimizer) for r in report.rows}
    assert rows == {".".join(p): (v, v) for p, v in _flat(HAND).items()}
    assert not [r for r in report.problems if r.expected_optimizer != r.actual_optimizer]


def test_audit_names_muon_given_to_the_embedding():
    wrong = HAND | {"wte": {"embedding": "muon"}}
    report = wdmask.audit(_split(wrong), PARAMS, RULES, model=MODEL, sample=IDS, ratios=False)
    bad = [(r.path, r.expected_optimizer, r.actual_optimizer) for r in report.problems
           if r.expected_optimizer != r.actual_optimizer]
    assert bad == [("wte.embedding", "adamw", "muon")]


def test_explicit_labels_are_audited_and_checked():
    wrong = HAND | {"head": {"bias": "adamw", "kernel": "muon"}}
    report = wdmask.audit(optax.adamw(1e-3), PARAMS, RULES, model=MODEL, sample=IDS, labels=wrong, ratios=False)
    assert [r.path for r in report.problems if r.expected_optimizer != r.actual_optimizer] == ["head.kernel"]
    with pytest.raises(MaskError, match="structure of `params`"):
        wdmask.audit(optax.adamw(1e-3), PARAMS, RULES, labels={"wte": "adamw"})
    with pytest.raises(TypeError, match="str optimizer labels"):
        wdmask.audit(optax.adamw(1e-3), PARAMS, RULES, labels=jax.tree.map(lambda _: 1, PARAMS))


def test_inferred_rules_rebuild_the_partition():
    inferred = wdmask.infer_rules(_split(HAND), PARAMS, model=MODEL, sample=IDS)
    rebuilt = wdmask.labels(PARAMS, inferred.rules, model=MODEL, sample=IDS)
    assert _flat(rebuilt) == _flat(HAND)


def test_depths_come_from_the_call_order_without_a_second_pass():
    inv = {str(i): i for i in wdmask.describe(MODEL, IDS)}
    # call order: wte, ln_0, fc_0, ln_1, fc_1, ln_f, head (the root first)
    assert [inv[p].call_index for p in ("wte.embedding", "ln_0.scale", "fc_0.kernel", "fc_1.kernel",
                                        "ln_f.scale", "head.kernel")] == [1, 2, 3, 5, 6, 7]
