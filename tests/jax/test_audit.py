"""wdmask.audit / wdmask.infer_rules on Optax transforms and masks: a scanned linen model, leaf by leaf."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

import wdmask
from tests.jax.models import init

L, D = 3, 4


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return x + nn.Dense(D)(nn.LayerNorm()(x)), None


class Net(nn.Module):
    """Dense -> nn.scan(LayerNorm + Dense) over L layers -> LayerNorm -> Dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(D)(x)
        scanned = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=L)
        x, _ = scanned(name="layers")(x, None)
        return nn.Dense(2)(nn.LayerNorm()(x))


MODEL, SAMPLE = Net(), jnp.ones((1, 5), jnp.float32)
PARAMS = init(MODEL, SAMPLE)["params"]  # shapes from eval_shape, values from numpy: an eager init compiled ~45 ops
KW = {"model": MODEL, "sample": SAMPLE}
# Listed by hand: the scanned LayerNorm scale/bias and Dense bias, per-layer 1-D but (L, D) arrays.
SCANNED_1D = ["layers.Dense_0.bias", "layers.LayerNorm_0.bias", "layers.LayerNorm_0.scale"]
LR, WD = 1e-3, 1e-2


def ndim_mask(params):
    """The common hand-written mask: decay every array with more than one dimension."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


GOOD = wdmask.mask(PARAMS, wdmask.presets.standard, **KW)


def test_the_model_is_what_the_test_assumes() -> None:
    shapes = {".".join(k.key for k in kp): x.shape for kp, x in jax.tree_util.tree_leaves_with_path(PARAMS)}
    assert all(shapes[p] == (L, D) for p in SCANNED_1D)
    assert GOOD["Dense_0"] == {"bias": False, "kernel": True} and GOOD["layers"]["Dense_0"]["kernel"]
    assert not any(GOOD["layers"]["LayerNorm_0"].values()) and not GOOD["layers"]["Dense_0"]["bias"]


@pytest.mark.parametrize("source", [ndim_mask, ndim_mask(PARAMS), optax.adamw(LR, weight_decay=WD, mask=ndim_mask)],
                         ids=["callable", "bool_tree", "adamw"])
def test_ndim_mask_is_flagged_leaf_by_leaf(source) -> None:
    report = wdmask.audit(source, PARAMS, **KW)
    assert not report.ok and len(report.rows) == 10
    assert sorted(r.path for r in report.problems) == sorted(SCANNED_1D)  # rows follow call order
    assert all(r.status == "mismatch" and r.expected == 0 and r.reason.startswith("decayed") for r in report.problems)
    assert "3 mismatched of 10 parameters" in str(report) and "layers.LayerNorm_0.scale" in str(report)
    with pytest.raises(AssertionError, match="3 mismatched"):
        report.assert_ok()
    if isinstance(source, optax.GradientTransformation):  # zero-gradient adamw step: exactly lr * wd * param
        assert report.reference == pytest.approx(LR * WD, rel=1e-12)
        assert all(r.actual == pytest.approx(LR * WD, rel=1e-12) for r in report.problems)
    else:
        assert not report.ratios and report.summary().endswith("(mask: which parameters are decayed, not how much)")


@pytest.mark.parametrize("tx,reference", [
    (optax.adamw(LR, weight_decay=WD, mask=GOOD), LR * WD),
    (optax.chain(optax.add_decayed_weights(1e-4, GOOD), optax.adam(LR)), LR * 1e-4 / (1e-4 + 1e-8)),  # Adam: g/(|g|+eps)
    (optax.inject_hyperparams(optax.adamw)(learning_rate=LR, weight_decay=WD, mask=GOOD), LR * WD),
    (optax.chain(wdmask.decay(1e-4, **KW), optax.sgd(0.1)), 0.1 * 1e-4),
    (optax.multi_transform({"decay": optax.adamw(LR, weight_decay=WD), "plain": optax.adam(LR)},
                           jax.tree.map(lambda d: "decay" if d else "plain", GOOD)), LR * WD),
    (GOOD, None),
], ids=["adamw", "coupled_adam", "inject_hyperparams", "wdmask_decay_sgd", "multi_transform", "mask"])
def test_standard_built_optimizers_audit_ok(tx, reference) -> None:
    report = wdmask.audit(tx, PARAMS, **KW)
    report.assert_ok()
    assert str(report).startswith("audit ok vs rules 'standard': 10 parameters agree")
    if reference is None:
        assert report.reference is None
    else:
        assert report.reference == pytest.approx(reference, rel=1e-5)  # optax schedules compute in float32


def test_multi_transform_with_the_wrong_labels() -> None:
    labels = jax.tree.map(lambda d: "decay" if d else "plain", ndim_mask(PARAMS))
    tx = optax.multi_transform({"decay": optax.adamw(LR, weight_decay=WD), "plain": optax.adam(LR)}, labels)
    assert sorted(r.path for r in wdmask.audit(tx, PARAMS, **KW).problems) == sorted(SCANNED_1D)


HALF = wdmask.Rules([*wdmask.presets.standard, {"path": "Dense_1.kernel", "multiplier": 0.5}])


def test_ratios_are_read_from_decoupled_decay_not_from_coupled_adam() -> None:
    sgd = optax.chain(wdmask.decay(1e-4, HALF, **KW), optax.sgd(0.1))
    assert wdmask.audit(sgd, PARAMS, HALF, **KW).ok
    wrong = wdmask.audit(sgd, PARAMS, **KW)  # standard says x1 for Dense_1.kernel
    assert [(r.path, r.actual) for r in wrong.problems] == [("Dense_1.kernel", pytest.approx(0.5e-5, rel=1e-12))]
    assert "x0.5 instead of x1" in wrong.problems[0].reason
    inferred = wdmask.infer_rules(sgd, PARAMS, **KW)
    assert inferred.weight_decay == pytest.approx(1e-5, rel=1e-12)
    infos = wdmask.describe(MODEL, SAMPLE)
    got = wdmask.decide(infos, inferred.rules)
    want = {i.path: (0.5 if i.dotted == "Dense_1.kernel" else 1.0 if i.role == "kernel" else 0.0) for i in infos}
    assert {p: d.multiplier for p, d in got.items()} == want
    # Adam normalizes the coupled decay: which leaves is visible, the 0.5 is not (documented; ratios=False).
    adam = optax.chain(wdmask.decay(1e-4, HALF, **KW), optax.adam(LR))
    assert [r.path for r in wdmask.audit(adam, PARAMS, HALF, **KW).problems] == ["Dense_1.kernel"]
    assert wdmask.audit(adam, PARAMS, HALF, ratios=False, **KW).ok


def test_prefix_mask_as_optax_masked_takes() -> None:
    prefix = {"Dense_0": True, "Dense_1": True, "LayerNorm_0": False, "layers": False}
    report = wdmask.audit(prefix, PARAMS, **KW)
    assert sorted((r.path, r.reason.split(";")[0]) for r in report.problems) == [
        ("Dense_0.bias", "decayed"), ("Dense_1.bias", "decayed"), ("layers.Dense_0.kernel", "not decayed")]


def test_infer_rules_rebuilds_the_ndim_mask_exactly() -> None:
    mask = ndim_mask(PARAMS)
    # The per-layer ndim of the scanned leaves is 1, so `ndim <= 1` alone would undecay them: the
    # shortest exact rules need the scanned stack as an exception.
    shortest = [{"ndim": "<=1", "decay": False}, {"path": "layers.**", "decay": True}]
    for source in (ndim_mask, mask, optax.adamw(LR, weight_decay=WD, mask=mask)):
        result = wdmask.infer_rules(source, PARAMS, **KW)
        assert wdmask.mask(PARAMS, result.rules, **KW) == mask
        assert result.rules.to_dict() == {"rules": shortest}
    assert wdmask.infer_rules(mask, PARAMS, **KW).weight_decay is None
    assert result.weight_decay == pytest.approx(LR * WD, rel=1e-12)
    standard = wdmask.infer_rules(GOOD, PARAMS, **KW)
    assert standard.rules.to_dict() == {"rules": [{"ndim": "<=1", "decay": False}]}
    assert wdmask.mask(PARAMS, standard.rules, **KW) == GOOD


def test_bad_inputs_name_the_argument() -> None:
    for bad in ("adamw", 3, None, optax.adamw):
        with pytest.raises(TypeError, match=r"`tx_or_mask` must be an optax\.GradientTransformation"):
            wdmask.audit(bad, PARAMS)
    missing = {k: v for k, v in ndim_mask(PARAMS).items() if k != "Dense_1"}
    with pytest.raises(wdmask.MaskError, match=r"`tx_or_mask` \(a mask\) does not have the structure of `params`.*"
                                               r"Dense_1"):
        wdmask.audit(missing, PARAMS)
    floats = jax.tree.map(lambda x: 1.0, PARAMS)
    with pytest.raises(TypeError, match=r"`tx_or_mask` \(a mask\) leaf 'Dense_0\.bias' must be a bool, got float"):
        wdmask.audit(floats, PARAMS)
    with pytest.raises(ValueError, match=r"calling the mask function `tx_or_mask` on `params` raised KeyError"):
        wdmask.audit(lambda p: p["nope"], PARAMS)
    with pytest.raises(ValueError, match=r"probing `tx_or_mask` failed"):
        wdmask.audit(optax.adamw(LR, mask=missing), PARAMS)
    with pytest.raises(wdmask.MaskError, match=r"`params` is None"):
        wdmask.infer_rules(GOOD, None)


# --- schedules that start at 0 (issue 21): the decay is read where the schedule is not 0, or refused ---

SIMPLE = {"Dense_0": {"bias": jnp.ones(3), "kernel": jnp.ones((2, 3))},
          "LayerNorm_0": {"bias": jnp.ones(3), "scale": jnp.ones(3)}}
WARMUP = optax.warmup_cosine_decay_schedule(0.0, 1e-3, warmup_steps=10, decay_steps=100)


@pytest.mark.parametrize("build,reference", [
    # the docs' forms: decay chained before the optimizer, AdamW with a mask, a decay schedule
    (lambda: optax.chain(wdmask.decay(1e-2, wdmask.presets.standard), optax.sgd(WARMUP, momentum=0.9)),
     1e-3 / 10 * 1e-2),  # warmup at step 1: lr = 1e-4
    (lambda: optax.adamw(WARMUP, weight_decay=1e-2, mask=wdmask.mask(SIMPLE, wdmask.presets.standard)),
     1e-3 / 10 * 1e-2),
    (lambda: optax.chain(wdmask.decay(1e-2, wdmask.presets.standard),
                         optax.sgd(optax.linear_schedule(0.0, 0.1, transition_steps=100))),
     0.1 / 100 * 1e-2),
    (lambda: optax.chain(wdmask.decay(optax.linear_schedule(0.0, 1e-2, transition_steps=100),
                                      wdmask.presets.standard), optax.sgd(0.1)),
     0.1 * 1e-2 / 100),  # a weight-decay schedule starting at 0
], ids=["decay_sgd_warmup_cosine", "adamw_warmup_cosine", "sgd_linear", "decay_schedule"])
def test_warmup_from_zero_is_read_at_the_first_step_where_it_is_not(build, reference) -> None:
    report = wdmask.audit(build(), SIMPLE, wdmask.presets.standard)
    assert report.ok, str(report)
    assert report.reference == pytest.approx(reference, rel=1e-5)  # optax schedules compute in float32
    assert "at step 1" in report.summary()


def test_a_transform_that_never_moves_cannot_be_read() -> None:
    for tx in (optax.sgd(optax.constant_schedule(0.0)), optax.sgd(0.0)):
        with pytest.raises(ValueError, match=r"the decay of `tx_or_mask` cannot be read: it moves no parameter at "
                                             r"step 0 nor at steps 1, 2, .*Audit its mask instead"):
            wdmask.audit(tx, SIMPLE, wdmask.presets.standard)


def test_a_transform_without_decay_still_reads_as_no_decay() -> None:
    report = wdmask.audit(optax.adam(1e-3), SIMPLE, wdmask.presets.all)
    assert not report.ok and report.reference is None
    assert [r.actual for r in report.rows] == [0.0] * 4
