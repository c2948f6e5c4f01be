"""stacked_axes from framework metadata at any axis; describing never crashes; restored-state errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import wdmask

P = nn.with_partitioning
X = jnp.ones((2, 8))


class Blk(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        h = nn.LayerNorm(scale_init=P(nn.initializers.ones, ("embed",)), bias_init=P(nn.initializers.zeros, ("embed",)),
                         name="ln")(x)
        h = nn.Dense(16, kernel_init=P(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=P(nn.initializers.zeros, ("mlp",)), name="fc")(h)
        return x + h[:, :8], None


class Stack(nn.Module):
    remat: bool = False

    @nn.compact
    def __call__(self, x):
        body = nn.remat(Blk) if self.remat else Blk
        x, _ = nn.scan(body, variable_axes={"params": 1}, split_rngs={"params": True}, length=3,
                       metadata_params={nn.PARTITION_NAME: "layers"})(name="layers")(x, None)
        return x


@pytest.mark.parametrize("remat", [False, True])
def test_linen_scan_at_axis_1(remat):
    model = Stack(remat)
    variables = jax.eval_shape(model.init, jax.random.key(0), X)  # shapes and boxes suffice: nothing compiled
    # the layer axis (length 3) sits at position 1 of every leaf: kernel (8, 3, 16), scale/bias (8, 3)
    with_model = {i.dotted: i.stacked_axes for i in wdmask.describe(model, sample=X)}
    assert with_model == {f"layers.{k}": (1,) for k in ("fc.bias", "fc.kernel", "ln.bias", "ln.scale")}
    names_only = {i.dotted: i.stacked_axes for i in wdmask.describe(variables)}  # Partitioned names, no model
    assert names_only == with_model
    layer_shapes = {i.dotted: i.layer_shape for i in wdmask.describe(variables)}
    assert layer_shapes["layers.fc.kernel"] == (8, 16) and layer_shapes["layers.ln.scale"] == (8,)


def test_densegeneral_head_axes_are_not_layers():
    mha = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
    params = jax.eval_shape(mha.init, jax.random.key(0), jnp.ones((1, 3, 8)))["params"]
    inv = {i.dotted: i for i in wdmask.describe(params)}  # query kernel (8, 2, 4): embed, heads, head_dim
    assert inv["query.kernel"].shape == (8, 2, 4) and inv["query.kernel"].stacked == 0
    assert inv["query.bias"].stacked == 0 and inv["out.kernel"].stacked == 0
    boxed = {"attn": {"query": {"kernel": nn.Partitioned(jnp.ones((8, 2, 4)), ("embed", "heads", "kv")),
                                "bias": nn.Partitioned(jnp.ones((3, 2, 4)), ("layers", "heads", "kv"))}}}
    inv = {i.dotted: i.stacked_axes for i in wdmask.describe(boxed)}
    assert inv == {"attn.query.kernel": (), "attn.query.bias": (0,)}


class NBlk(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(8, 16, rngs=rngs)
        self.ln = nnx.LayerNorm(8, rngs=rngs)


def test_nnx_vmap_at_axis_1_and_param_scan_axis():
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=0, out_axes=1)
    def make(rngs):
        return NBlk(rngs)

    inv = {i.dotted: (i.shape, i.stacked_axes) for i in wdmask.describe(nnx.eval_shape(lambda: make(nnx.Rngs(0))))}
    assert inv == {"lin.bias": ((16, 3), (1,)), "lin.kernel": ((8, 3, 16), (1,)),
                   "ln.bias": ((8, 3), (1,)), "ln.scale": ((8, 3), (1,))}

    class Custom(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((4, 3, 4)), param_scan_axis=1)

    assert [i.stacked_axes for i in wdmask.describe(Custom())] == [(1,)]


def test_linen_module_overriding_init_and_tolinen_bridge():
    class Custom(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4, name="fc")(nn.LayerNorm(name="ln")(x))

        def init(self, rng, x):  # a project's own init
            return super().init(rng, x)

    inv = {i.dotted: (i.layer, i.role) for i in wdmask.describe(Custom(), sample=X)}
    assert inv == {"fc.bias": ("linear", "bias"), "fc.kernel": ("linear", "kernel"),
                   "ln.bias": ("norm.layer", "bias"), "ln.scale": ("norm.layer", "scale")}

    class N(nnx.Module):
        def __init__(self, rngs):
            self.ln = nnx.LayerNorm(8, rngs=rngs)
            self.fc = nnx.Linear(8, 4, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.ln(x))

    inv = {i.dotted: (i.layer, i.role) for i in wdmask.describe(nnx.bridge.ToLinen(N), sample=X)}
    assert inv == {"fc.bias": ("linear", "bias"), "fc.kernel": ("linear", "kernel"),
                   "ln.bias": ("norm.layer", "bias"), "ln.scale": ("norm.layer", "scale")}


def test_a_model_failing_on_its_sample_gets_its_own_error_as_the_cause():
    class NeedsTwo(nn.Module):
        @nn.compact
        def __call__(self, x, y):  # `sample` gives one argument: the model's own init fails on it
            return nn.Dense(4)(x) + y

    params = {"Dense_0": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(4)}}
    for given in (None, params):  # with params= too: the model's own call is what fails, not the tracing
        with pytest.raises(wdmask.MaskError, match=r"NeedsTwo fails on `sample` by itself.*Pass the params pytree") \
                as caught:
            wdmask.describe(NeedsTwo(), sample=X, params=given)
        assert isinstance(caught.value.__cause__, TypeError) and "y" in str(caught.value.__cause__)


def test_untraceable_module_falls_back_to_names_with_a_warning(monkeypatch):
    from wdmask._jax import _linen

    class Fine(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(x)

    def cannot_trace(*args, **kwargs):  # what flax raises when interception meets a wrapper it cannot trace
        raise TypeError("cannot intercept this wrapper")

    monkeypatch.setattr(_linen, "trace_linen", cannot_trace)
    with pytest.warns(wdmask.UnclassifiedWarning, match="could not trace Fine.*cannot intercept"):
        inv = wdmask.describe(Fine(), sample=X)  # the model's own init runs: its variables, named by Flax
    assert {i.dotted: i.role for i in inv} == {"Dense_0.bias": "bias", "Dense_0.kernel": "kernel"}

    monkeypatch.setattr(_linen, "trace_linen", lambda *a, **k: 1 / 0)  # a wdmask bug is not hidden
    with pytest.raises(ZeroDivisionError):
        wdmask.describe(Fine(), sample=X)


def test_state_restored_without_target():
    params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
    tx = optax.chain(wdmask.decay(0.5), optax.sgd(1.0))
    state = tx.init(params)
    restored = ({"inner": {"inner_state": None}}, state[1])  # what orbax gives back without a target
    # the decisions of the transform (a constant decay's state holds no arrays), as a restore onto a target gives
    assert jax.tree.map(lambda x: x.tolist(), tx.update(params, restored, params)[0]) == {
        "Dense_0": {"bias": [-1.0, -1.0], "kernel": [[-1.5, -1.5], [-1.5, -1.5]]}}
    with pytest.raises(wdmask.MaskError, match="order of transforms"):
        tx.update(params, (state[1], state[0]), params)


def test_nnx_scan_over_layers_stacked_at_axis_1() -> None:
    # Layers created with nnx.vmap(out_axes=1) and run with nnx.scan(in_axes=(1, Carry)): the layer axis is
    # axis 1 of every stacked leaf (kernel (D, L, D), bias and LayerNorm (D, L)), with and without a sample.
    from flax import nnx

    layers, d = 3, 4

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.ln = nnx.LayerNorm(d, rngs=rngs)
            self.fc = nnx.Linear(d, d, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return x + self.fc(self.ln(x))

    class Stack(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            @nnx.split_rngs(splits=layers)
            @nnx.vmap(in_axes=(0,), out_axes=1, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make(rngs: nnx.Rngs) -> Block:
                return Block(rngs)

            self.blocks = make(rngs)
            self.head = nnx.Linear(d, 2, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            @nnx.scan(in_axes=(1, nnx.Carry), out_axes=nnx.Carry, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def body(block: Block, x: jax.Array) -> jax.Array:
                return block(x)

            return self.head(body(self.blocks, x))

    model, x = nnx.eval_shape(lambda: Stack(nnx.Rngs(0))), jnp.ones((2, d))  # abstract: describe only traces
    want = {"blocks.fc.kernel": ((d, layers, d), (1,), "kernel"), "blocks.fc.bias": ((d, layers), (1,), "bias"),
            "blocks.ln.scale": ((d, layers), (1,), "scale"), "blocks.ln.bias": ((d, layers), (1,), "bias"),
            "head.kernel": ((d, 2), (), "kernel"), "head.bias": ((2,), (), "bias")}
    for inv in (wdmask.describe(model), wdmask.describe(model, sample=x)):
        assert {str(i): (i.shape, i.stacked_axes, i.role) for i in inv} == want
        assert {str(i): i.ndim for i in inv if str(i).startswith("blocks.ln")} == {"blocks.ln.scale": 1,
                                                                                    "blocks.ln.bias": 1}
    assert {str(i): i.source for i in wdmask.describe(model, sample=x)} == dict.fromkeys(want, "graph")
    decided = wdmask.mask(nnx.state(model, nnx.Param), wdmask.presets.nanogpt, model=model)
    assert decided["blocks"]["ln"]["scale"] is False and decided["blocks"]["fc"]["kernel"] is True
