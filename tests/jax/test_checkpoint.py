"""A ``wdmask.decay`` state remembers the decisions it was built with: restored under other rules it is
refused (pickle) or takes the transform's decisions (a restore onto a target, or without one); it pickles
across processes and serializes with ``flax.serialization``; shapes are compared at update."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization

import wdmask
from wdmask import presets

PARAMS = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.full((2, 2), 2.0)},
          "LayerNorm_0": {"bias": jnp.ones(2), "scale": jnp.ones(2)}}
GRADS = jax.tree.map(jnp.zeros_like, PARAMS)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _decayed(updates: dict, lr: float = 1.0) -> dict:
    """Which leaves a zero-gradient step of chain(decay(0.5, rules), sgd(lr)) moved (independent of wdmask)."""
    return {f"{k}.{n}": bool(np.any(np.asarray(v) != 0.0)) for k, d in updates.items() for n, v in d.items()}


STANDARD = {"Dense_0.bias": False, "Dense_0.kernel": True, "LayerNorm_0.bias": False, "LayerNorm_0.scale": False}
ALL = dict.fromkeys(STANDARD, True)


def test_pickled_state_restored_under_other_rules_is_refused_naming_the_changes():
    state = wdmask.decay(0.5, presets.all).init(PARAMS)
    restored = pickle.loads(pickle.dumps(state))
    tx = wdmask.decay(0.5, presets.standard)
    with pytest.raises(wdmask.MaskError) as e:
        tx.update(GRADS, restored, PARAMS)
    message = str(e.value)
    assert "3 leaves changed decision: Dense_0.bias 1.0 -> 0.0, LayerNorm_0.bias 1.0 -> 0.0, " \
           "LayerNorm_0.scale 1.0 -> 0.0" in message
    assert "tx.init(params)" in message
    with pytest.raises(wdmask.MaskError, match="changed decision"):  # under jit too
        jax.jit(tx.update)(GRADS, restored, PARAMS)
    # the same rules: accepted, and the state decays as its rules say
    same = wdmask.decay(0.5, presets.all)
    updates, _ = jax.jit(same.update)(GRADS, restored, PARAMS)
    assert _decayed(updates) == ALL


def test_state_of_another_transform_in_the_same_process_is_refused():
    state = wdmask.decay(0.5, presets.standard).init(PARAMS)
    with pytest.raises(wdmask.MaskError, match=r"Dense_0.kernel 1.0 -> 0.0"):
        wdmask.decay(0.5, [wdmask.Rule(path="**", decay=False)]).update(GRADS, state, PARAMS)


def test_inject_hyperparams_rebuilding_decay_each_step_keeps_working():
    tx = optax.inject_hyperparams(lambda weight_decay: wdmask.decay(weight_decay, presets.standard))(0.5)
    state = tx.init(PARAMS)
    for _ in range(2):
        updates, state = tx.update(GRADS, state, PARAMS)
    assert _decayed(updates) == STANDARD


_CHILD = textwrap.dedent("""
    import json, pickle, sys
    import jax, jax.numpy as jnp
    with open(sys.argv[1], "rb") as f:
        loaded = pickle.load(f)  # before wdmask.decay is ever called in this process
    import wdmask
    from wdmask import presets
    params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.full((2, 2), 2.0)},
              "LayerNorm_0": {"bias": jnp.ones(2), "scale": jnp.ones(2)}}
    grads = jax.tree.map(jnp.zeros_like, params)
    out = {"leaves": len(jax.tree.leaves(loaded))}
    fresh = wdmask.decay(0.5, presets.standard).init(params)
    out["same_structure"] = jax.tree.structure(loaded) == jax.tree.structure(fresh)
    out["fingerprint"] = loaded.spec.fingerprint
    updates, _ = jax.jit(wdmask.decay(0.5, presets.standard).update)(grads, loaded, params)
    out["decayed"] = {f"{k}.{n}": bool((v != 0).any()) for k, d in updates.items() for n, v in d.items()}
    try:
        wdmask.decay(0.5, presets.all).update(grads, loaded, params)
        out["other_rules"] = "accepted"
    except wdmask.MaskError as e:
        out["other_rules"] = str(e)
    print(json.dumps(out))
""")


def test_pickled_state_in_another_process_has_the_same_structure_and_checks_its_rules(tmp_path):
    state = wdmask.decay(0.5, presets.standard).init(PARAMS)
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps(state))
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "12345", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["same_structure"] is True
    assert out["leaves"] == 0  # a constant decay holds no arrays: the structure is all there is
    assert out["fingerprint"] == state.spec.fingerprint
    assert out["decayed"] == STANDARD
    assert "1 -> " not in out["other_rules"] and "3 leaves changed decision: Dense_0.bias 0.0 -> 1.0" in \
        out["other_rules"]


@pytest.mark.parametrize("wd", [0.5, optax.constant_schedule(0.5)], ids=["constant", "schedule"])
def test_flax_serialization_of_a_train_state_restores_onto_the_target(wd):
    old = optax.chain(wdmask.decay(wd, presets.all), optax.sgd(1.0, momentum=0.9))
    new = optax.chain(wdmask.decay(wd, presets.standard), optax.sgd(1.0, momentum=0.9))
    state = {"params": PARAMS, "opt": old.init(PARAMS)}
    _, state["opt"] = old.update(jax.tree.map(jnp.ones_like, PARAMS), state["opt"], PARAMS)  # momentum != 0
    data = serialization.to_bytes(state)
    restored = serialization.from_bytes({"params": PARAMS, "opt": new.init(PARAMS)}, data)
    assert isinstance(restored["opt"][0], type(state["opt"][0]))
    np.testing.assert_array_equal(restored["opt"][1][0].trace["Dense_0"]["kernel"],
                                  state["opt"][1][0].trace["Dense_0"]["kernel"])
    # onto a target built under the new rules: the new decisions (the target's), never the checkpoint's
    updates, _ = new.update(GRADS, restored["opt"], PARAMS)
    momentum = jax.tree.map(lambda t: -0.9 * t, state["opt"][1][0].trace)
    assert _decayed(jax.tree.map(lambda u, m: u - m, updates, momentum)) == STANDARD
    # without a target: the same decisions as with one (the state dict holds no mask to go back to)
    raw = serialization.msgpack_restore(data)["opt"]
    bare = optax.chain(wdmask.decay(wd, presets.standard), optax.sgd(1.0))
    plain, _ = bare.update(GRADS, (raw["0"], bare.init(PARAMS)[1]), PARAMS)
    assert _decayed(plain) == STANDARD


def test_orbax_restore_with_and_without_target_give_the_same_updates(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    schedule = optax.linear_schedule(0.0, 1.0, 10)
    old = optax.chain(wdmask.decay(schedule, presets.all), optax.sgd(1.0))
    new = optax.chain(wdmask.decay(schedule, presets.standard), optax.sgd(1.0))
    state = old.init(PARAMS)
    _, state = old.update(GRADS, state, PARAMS)  # count 1: the schedule gives 0.1 at the next step
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", state)
    checkpointer.wait_until_finished()
    with_target = checkpointer.restore(tmp_path / "ckpt", new.init(PARAMS))
    without = checkpointer.restore(tmp_path / "ckpt")
    a, _ = new.update(GRADS, with_target, PARAMS)
    b, _ = new.update(GRADS, without, PARAMS)
    assert jax.tree.map(lambda x: np.asarray(x).tolist(), a) == jax.tree.map(lambda x: np.asarray(x).tolist(), b)
    np.testing.assert_allclose(a["Dense_0"]["kernel"], np.full((2, 2), -0.2), rtol=1e-6)  # 0.1 * 2 (count 1)
    assert _decayed(a) == STANDARD


def test_restore_without_target_that_does_not_fit_is_refused():
    tx = wdmask.decay(optax.constant_schedule(0.5), presets.standard)  # one step count in the state
    with pytest.raises(wdmask.MaskError, match=r"restored from a checkpoint without a target.*tx.init\(params\)"):
        tx.update(GRADS, {"inner": {"inner_state": {}}}, PARAMS)


def test_fingerprint_is_stable_and_follows_the_decisions():
    a = wdmask.decay(0.5, presets.standard).init(PARAMS).spec
    b = wdmask.decay(0.5, list(presets.standard)).init(PARAMS).spec
    c = wdmask.decay(0.5, presets.all).init(PARAMS).spec
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(a.fingerprint) == 16 and int(a.fingerprint, 16) >= 0
    assert pickle.loads(pickle.dumps(a)) == a and hash(pickle.loads(pickle.dumps(a))) == hash(a)
    assert "_hash" not in pickle.dumps(a).decode("latin-1")


def test_update_with_params_of_other_shapes_names_the_leaf():
    tx = wdmask.decay(0.5, presets.standard)
    state = tx.init(PARAMS)
    other = {**PARAMS, "Dense_0": {"bias": jnp.ones(3), "kernel": jnp.ones((3, 3))}}
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(wdmask.MaskError, match=r"`updates` leaf 'Dense_0.bias' has shape \(3,\), but the mask "
                                                   r"was built at init for shape \(2,\)"):
            update(jax.tree.map(jnp.zeros_like, other), state, other)
    with pytest.raises(wdmask.MaskError, match=r"`params` leaf 'Dense_0.bias' has shape \(3,\)"):
        tx.update(GRADS, state, other)
