"""Sharded params (NamedSharding over 8 fake CPU devices): decay keeps shardings and equals the unsharded result."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import wdmask

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    rng = np.random.default_rng(0)
    shapes = {"Dense_0": {"kernel": (8, 16), "bias": (16,)}, "LayerNorm_0": {"scale": (16,), "bias": (16,)},
              "Embed_0": {"embedding": (32, 8)}}
    specs = {"Dense_0": {"kernel": P("data", "model"), "bias": P("model")},
             "LayerNorm_0": {"scale": P(), "bias": P("model")}, "Embed_0": {"embedding": P("data", None)}}
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)
    params = jax.tree.map(lambda s: rng.standard_normal(s).astype(np.float32), shapes, is_leaf=is_shape)
    grads = jax.tree.map(lambda s: rng.standard_normal(s).astype(np.float32), shapes, is_leaf=is_shape)
    shardings = jax.tree.map(lambda p: NamedSharding(mesh, p), specs, is_leaf=lambda x: isinstance(x, P))
    sp, sg = jax.device_put(params, shardings), jax.device_put(grads, shardings)

    tx = optax.chain(wdmask.decay(0.1, wdmask.presets.standard), optax.adam(1e-2))
    step = jax.jit(tx.update)
    state = tx.init(sp)
    for _ in range(2):
        updates, state = step(sg, state, sp)
    for u, s in zip(jax.tree.leaves(updates), jax.tree.leaves(shardings)):
        assert u.sharding.is_equivalent_to(s, u.ndim), (u.sharding, s)

    ref_tx = optax.chain(optax.masked(optax.add_decayed_weights(0.1), wdmask.mask(params, wdmask.presets.standard)),
                         optax.adam(1e-2))
    ref_state = ref_tx.init(params)
    for _ in range(2):
        ref, ref_state = jax.jit(ref_tx.update)(grads, ref_state, params)
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                                            updates, ref)))
    assert diff <= 1e-6, diff
    print("OK", diff)
''')


def test_sharded_updates_keep_sharding_and_values():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK"), proc.stdout
