"""Real-model structures (Flax): a ViT-ish linen module and an NNX twin with position/class-token
parameters, layer scale, a relative position bias table, a position ``Embed`` and a parameter declared
with ``wdmask.no_decay``; leaf by leaf, boxed and unboxed, and abstract (``jax.eval_shape``) params."""

from __future__ import annotations

import functools

import pytest

jax = pytest.importorskip("jax")
import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import wdmask  # noqa: E402
from wdmask import presets  # noqa: E402

D, N = 8, 4


class LayerScale(nn.Module):  # timm LayerScale
    @nn.compact
    def __call__(self, x):
        return x * self.param("gamma", nn.initializers.constant(1e-5), (x.shape[-1],))


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3 * D, name="qkv")(nn.LayerNorm(name="norm1")(x))[..., :D]
        return x + LayerScale(name="ls1")(nn.Dense(D, name="proj")(y))


class ViT(nn.Module):
    @nn.compact
    def __call__(self, x):  # x: (B, N, D) patches
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, D))
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, N + 1, D))
        memory = self.param("memory", wdmask.no_decay(nn.initializers.normal(0.02)), (2, D))  # declared
        x = nn.Dense(D, name="patch_embed")(x)
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, D)), x], axis=1) + pos
        x = Block(name="blocks_0")(x)
        table = self.param("relative_position_bias_table", nn.initializers.zeros, (9, 2))
        pe = nn.Embed(N + 1, D, name="position_embeddings")(jnp.arange(N + 1))
        tok = nn.Embed(16, D, name="word_embeddings")(jnp.zeros((1,), jnp.int32))
        x = nn.LayerNorm(name="norm")(x + pe + tok + memory.sum(0) + table.sum())
        return nn.Dense(10, name="head")(x[:, 0])


X = jnp.ones((2, N, D), jnp.float32)


@functools.cache
@functools.cache
def _init():  # once, abstractly, filled by numpy: an eager init compiles every op, a jitted one for ~4 s
    from tests.jax.models import init

    return init(ViT(), X)["params"]

# path: layer role standard-decision [declared]; roles are what the forward pass does with each leaf:
# `memory.sum(0)` and `table.sum()` are added to the activations (biases), and `word_embeddings` is read at a
# constant index (`jnp.zeros`), never by the inputs: a constant lookup, like a position table.
EXPECTED = """
    blocks_0.ls1.gamma other gain -
    blocks_0.norm1.bias norm.layer bias -
    blocks_0.norm1.scale norm.layer scale -
    blocks_0.proj.bias linear bias -
    blocks_0.proj.kernel linear kernel +
    blocks_0.qkv.bias linear bias -
    blocks_0.qkv.kernel linear kernel +
    cls_token other token -
    head.bias linear bias -
    head.kernel linear kernel +
    memory other bias - declared
    norm.bias norm.layer bias -
    norm.scale norm.layer scale -
    patch_embed.bias linear bias -
    patch_embed.kernel linear kernel +
    pos_embed other position -
    position_embeddings.embedding embedding position -
    relative_position_bias_table other bias -
    word_embeddings.embedding embedding position -
"""


def _table(text):
    rows = []
    for line in text.strip().splitlines():
        path, layer, role, decision, *declared = line.split()
        rows.append((path, layer, role, decision == "+", "no_decay" if declared else ""))
    return rows


def _rows(inv):
    d = wdmask.decide(inv, presets.standard)
    return [(i.dotted, i.layer, i.role, d[i.path].decay, i.declared) for i in inv]


def test_linen_vit_leaf_by_leaf_with_model():
    assert sorted(_rows(wdmask.describe(ViT(), X))) == sorted(_table(EXPECTED))  # call order vs sorted keys


def test_linen_vit_params_alone_boxed_and_unboxed():
    params = _init()
    box = wdmask._jax._declare.box_class()
    assert isinstance(params["memory"], box) and isinstance(params["memory"], nn.meta.AxisMetadata)
    by_name = {i.dotted: i for i in wdmask.describe(params)}
    assert by_name["memory"].declared == "no_decay" and by_name["memory"].shape == (2, D)
    assert by_name["cls_token"].role == "token" and by_name["blocks_0.ls1.gamma"].role == "gain"
    assert by_name["position_embeddings.embedding"].role == "position"  # owner name, from the params alone
    unboxed = nn.meta.unbox(params)
    assert not any(i.declared for i in wdmask.describe(unboxed))  # the box was the declaration
    with_model = {i.dotted: i.declared for i in wdmask.describe(ViT(), X, params=unboxed)}
    assert with_model["memory"] == "no_decay"  # ... but the model's own init still has it
    assert wdmask.mask(params, presets.standard)["memory"] is False
    assert wdmask.mask(unboxed, presets.standard, model=ViT(), sample=X)["memory"] is False


@pytest.mark.parametrize("boxed", [True, False], ids=["boxed", "unboxed"])
def test_decay_on_params_with_no_decay_boxes(boxed):
    params = _init()
    if not boxed:
        params = nn.meta.unbox(params)
    kwargs = {} if boxed else {"model": ViT(), "sample": X}
    tx = wdmask.decay(0.5, presets.standard, **kwargs)
    state = tx.init(params)
    zeros = jax.tree.map(lambda a: jnp.asarray(np.zeros(a.shape, a.dtype)), params)  # numpy: no compile
    updates, _ = jax.jit(tx.update)(zeros, state, params)
    flat = nn.meta.unbox(updates)
    raw = nn.meta.unbox(params)
    assert np.all(np.asarray(flat["memory"]) == 0) and np.all(np.asarray(flat["pos_embed"]) == 0)
    np.testing.assert_allclose(np.asarray(flat["head"]["kernel"]), 0.5 * np.asarray(raw["head"]["kernel"]))
    opt = optax.chain(wdmask.decay(0.5, presets.timm, **kwargs), optax.sgd(0.1))
    updates, _ = jax.jit(opt.update)(zeros, opt.init(params), params)
    assert np.all(np.asarray(nn.meta.unbox(updates)["memory"]) == 0)  # timm honours the declaration (2-D)


def test_no_decay_composes_with_partitioning_and_scan():
    class Scanned(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            w = self.param("w", wdmask.no_decay(nn.with_partitioning(nn.initializers.ones, (None, "model"))),
                           (D, D))
            return x @ w, None

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            layers = nn.scan(Scanned, variable_axes={"params": 0}, split_rngs={"params": True}, length=3,
                             metadata_params={nn.PARTITION_NAME: "layers"})
            return layers(name="layers")(x, None)[0]

    params = Stack().init(jax.random.key(0), jnp.ones((1, D)))["params"]
    assert nn.meta.unbox(params)["layers"]["w"].shape == (3, D, D)
    assert params["layers"]["w"].value.names == ("layers", None, "model")  # Partitioned inside the box got the axis
    (info,) = wdmask.describe(Stack(), jnp.ones((1, D)))
    assert (info.dotted, info.stacked, info.declared) == ("layers.w", 1, "no_decay")


def test_no_decay_rejects_non_callables():
    with pytest.raises(TypeError, match="init_fn"):
        wdmask.no_decay((1, 2))


# --------------------------------------------------------------------------- NNX


class NNXViT(nnx.Module):
    def __init__(self, rngs):
        self.cls_token = nnx.Param(jnp.zeros((1, 1, D)))
        self.pos_embed = nnx.Param(jnp.zeros((1, N + 1, D)))
        self.memory = nnx.Param(jnp.zeros((2, D)), no_decay=True)
        self.extra = nnx.Param(nnx.with_metadata(nnx.initializers.zeros, no_decay=True)(rngs.params(), (3, D)))
        self.patch_embed = nnx.Linear(D, D, rngs=rngs)
        self.norm1 = nnx.LayerNorm(D, rngs=rngs)
        self.ls1 = LayerScaleNNX()
        self.position_embeddings = nnx.Embed(N + 1, D, rngs=rngs)
        self.head = nnx.Linear(D, 10, rngs=rngs)


class LayerScaleNNX(nnx.Module):
    def __init__(self):
        self.gamma = nnx.Param(jnp.full((D,), 1e-5))


NNX_EXPECTED = """
    cls_token other token -
    extra other other - declared
    head.bias linear bias -
    head.kernel linear kernel +
    ls1.gamma other gain -
    memory other other - declared
    norm1.bias norm.layer bias -
    norm1.scale norm.layer scale -
    patch_embed.bias linear bias -
    patch_embed.kernel linear kernel +
    pos_embed other position -
    position_embeddings.embedding embedding position -
"""


def test_nnx_vit_leaf_by_leaf():
    model = nnx.eval_shape(lambda: NNXViT(nnx.Rngs(0)))  # describe reads classes and shapes only
    assert _rows(wdmask.describe(model)) == _table(NNX_EXPECTED)
    state = nnx.state(model, nnx.Param)
    assert [i.declared for i in wdmask.describe(state)] == [r[4] for r in _table(NNX_EXPECTED)]


# --------------------------------------------------------------------------- describe at scale (abstract params)


def test_eval_shape_params_need_no_memory():
    abstract = jax.eval_shape(ViT().init, jax.random.key(0), X)["params"]
    leaves = jax.tree.leaves(nn.meta.unbox(abstract))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert _rows(wdmask.describe(abstract)) == _rows(wdmask.describe(_init()))
    m = wdmask.mask(abstract, presets.standard)
    assert m["memory"] is False and m["head"]["kernel"] is True
    # and a linen model described with a sample is itself traced abstractly
    assert sorted(_rows(wdmask.describe(ViT(), jax.ShapeDtypeStruct(X.shape, X.dtype)))) == sorted(_table(EXPECTED))


def test_nnx_eval_shape_model():
    abstract = nnx.eval_shape(lambda: NNXViT(nnx.Rngs(0)))
    values = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert values and all(isinstance(v, jax.ShapeDtypeStruct) for v in values)
    assert _rows(wdmask.describe(abstract)) == _table(NNX_EXPECTED)
