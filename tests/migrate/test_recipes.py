"""wdmask.lars / wdmask.lamb: rule-derived masks; excluded leaves get neither decay nor trust-ratio scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from wdmask import Rule, presets
from wdmask._recipes import lamb, lars

LR, WD = 0.1, 1e-2
PARAMS = {
    "Conv_0": {"kernel": (3, 3, 2, 4), "bias": (4,)},
    "BatchNorm_0": {"scale": (4,), "bias": (4,)},
    "Dense_0": {"kernel": (4, 3), "bias": (3,)},
}
#: presets.standard by hand: kernels decay; biases and norm params do not.
HAND_MASK = {"Conv_0": {"kernel": True, "bias": False}, "BatchNorm_0": {"scale": False, "bias": False},
             "Dense_0": {"kernel": True, "bias": False}}
EXCLUDED = [("Conv_0", "bias"), ("BatchNorm_0", "scale"), ("BatchNorm_0", "bias"), ("Dense_0", "bias")]
INCLUDED = [("Conv_0", "kernel"), ("Dense_0", "kernel")]


def _tree(seed):
    rng = np.random.default_rng(seed)
    return {m: {k: jnp.asarray(rng.standard_normal(s)) for k, s in leaves.items()} for m, leaves in PARAMS.items()}


def _run(tx, steps=5):
    """Parameters after ``steps`` updates, and the last update: init and the steps in one compiled program.

    (Jitted init + jitted update + eager ``apply_updates`` compiled ~8 programs per optimizer.)
    """
    grads = jax.tree.map(lambda *g: jnp.asarray(np.stack(g)), *[_tree(t + 1) for t in range(steps)])

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            return (optax.apply_updates(params, updates), state), updates

        (params, _), updates = jax.lax.scan(step, (params, tx.init(params)), grads)
        return params, jax.tree.map(lambda u: u[-1], updates)

    return run(_tree(0), grads)


def _max_diff(a, b):  # numpy: an eager jnp op compiles once per shape
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))


def test_lars_equals_optax_lars_with_hand_mask_and_excludes():
    """Same as optax.lars with the hand mask; excluded leaves: momentum SGD on the raw gradient (no decay, no
    trust ratio; equal up to rounding: optax.sgd scales by lr after the trace, lars before); kernels differ."""
    want, _ = _run(optax.lars(LR, WD, weight_decay_mask=HAND_MASK, trust_ratio_mask=HAND_MASK, momentum=0.9))
    got, _ = _run(lars(LR, WD, presets.standard))
    assert _max_diff(got, want) == 0.0
    plain, _ = _run(optax.sgd(LR, momentum=0.9))
    for m, k in EXCLUDED:
        assert np.max(np.abs(np.asarray(got[m][k]) - np.asarray(plain[m][k]))) <= 1e-14, f"{m}.{k}"
    for m, k in INCLUDED:
        assert np.max(np.abs(np.asarray(got[m][k]) - np.asarray(plain[m][k]))) > 1e-3, f"{m}.{k}"


def test_lars_nesterov_and_schedule():
    sched = optax.cosine_decay_schedule(LR, 10)
    want, _ = _run(optax.lars(sched, WD, weight_decay_mask=HAND_MASK, trust_ratio_mask=HAND_MASK, momentum=0.8,
                              nesterov=True, trust_coefficient=0.01, eps=1e-9))
    got, _ = _run(lars(sched, WD, presets.standard, momentum=0.8, nesterov=True, trust_coefficient=0.01, eps=1e-9))
    assert _max_diff(got, want) == 0.0


def _lamb_by_hand(mask, trust_mask):
    return optax.chain(optax.scale_by_adam(eps=1e-6), optax.add_decayed_weights(WD, mask),
                       optax.masked(optax.scale_by_trust_ratio(), trust_mask), optax.scale_by_learning_rate(LR))


def test_lamb_excludes_from_decay_and_trust_ratio():
    got, last = _run(lamb(LR, WD, presets.standard))
    want, _ = _run(_lamb_by_hand(HAND_MASK, HAND_MASK))
    assert _max_diff(got, want) == 0.0
    adam, adam_last = _run(optax.adam(LR, eps=1e-6))
    for m, k in EXCLUDED:  # excluded: plain Adam
        assert np.max(np.abs(np.asarray(got[m][k]) - np.asarray(adam[m][k]))) <= 1e-14, f"{m}.{k}"
    for m, k in INCLUDED:
        assert np.max(np.abs(np.asarray(last[m][k]) - np.asarray(adam_last[m][k]))) > 1e-6, f"{m}.{k}"


def test_lamb_trust_ratio_everywhere_is_optax_lamb():
    got, _ = _run(lamb(LR, WD, presets.standard, exclude_from_trust_ratio=False))
    want, _ = _run(optax.lamb(LR, weight_decay=WD, mask=HAND_MASK))
    assert _max_diff(got, want) == 0.0


class _Net(nn.Module):
    """Explicit names (``bn``, ``head``): only the module tells their kinds."""

    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=False, name="bn")(nn.Conv(4, (3, 3), name="stem")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def test_model_gives_exact_kinds():
    net, x = _Net(), jnp.zeros((1, 8, 8, 2))
    rng = np.random.default_rng(0)  # values drawn by numpy: a jitted flax init compiles for seconds
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape)),
                          jax.eval_shape(net.init, jax.random.key(0), x)["params"])
    mask = {"stem": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False},
            "head": {"kernel": True, "bias": False}}
    grads = jax.tree.map(jnp.ones_like, params)
    pairs = [(lars(LR, WD, model=net, sample=x), optax.lars(LR, WD, weight_decay_mask=mask, trust_ratio_mask=mask)),
             (lamb(LR, WD, model=net, sample=x), _lamb_by_hand(mask, mask))]

    @jax.jit  # the four updates in one program
    def updates(params, grads):
        return [[tx.update(grads, tx.init(params), params)[0] for tx in pair] for pair in pairs]

    for got, want in updates(params, grads):
        assert _max_diff(got, want) == 0.0


def test_fractional_multiplier_is_refused():
    with pytest.raises(ValueError, match=r"multiplier\(s\) 0.5.*LARS takes a bool mask"):
        lars(LR, WD, [Rule(role="bias", multiplier=0.5)])
    with pytest.raises(ValueError, match="LAMB takes a bool mask"):
        lamb(LR, WD, [*presets.standard, Rule(layer="embedding", multiplier=0.1)])
