"""Patterns from real JAX code nobody on this project wrote (issue 23), as small structures written from scratch:
the flax ImageNet ResNet (BatchNorm with ``axis_name``), a MaxText-style ``nnx.vmap`` stage stack (stacked at
axis 1, partition names on the Variables), an Equinox model built abstractly, Haiku params dicts and HF-style
Flax param names described from the params alone. Every trace is abstract: nothing is compiled."""

from __future__ import annotations

import functools
import warnings

import pytest

jax = pytest.importorskip("jax")
import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import wdmask  # noqa: E402
from wdmask import presets  # noqa: E402


def _decided(inv, rules=presets.standard):
    d = wdmask.decide(inv, rules)
    return {i.dotted: (i.layer, i.role, d[i.path].decay) for i in inv}


# -- the flax ImageNet example's ResNet: BatchNorm(use_running_average=not train, axis_name="batch") ------------

class ResNetBlock(nn.Module):  # examples/imagenet/models.py, written again at toy size
    filters: int
    conv: type
    norm: type
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = functools.partial(nn.Conv, use_bias=False)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 axis_name="batch")
        x = conv(4, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = ResNetBlock(4, conv=conv, norm=norm)(x)
        x = ResNetBlock(8, conv=conv, norm=norm, strides=(2, 2))(x)
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


IMAGES = jnp.ones((2, 16, 16, 3), jnp.float32)
_BN = {"scale": ("norm.batch", "scale", False), "bias": ("norm.batch", "bias", False)}
# path -> (layer, role, decayed by standard), and which convs feed a BatchNorm (all of them: conv -> bn)
RESNET = {
    "conv_init.kernel": ("conv", "kernel", True),
    **{f"bn_init.{k}": v for k, v in _BN.items()},
    **{f"ResNetBlock_{b}.Conv_{c}.kernel": ("conv", "kernel", True) for b in (0, 1) for c in (0, 1)},
    **{f"ResNetBlock_{b}.BatchNorm_{n}.{k}": v for b in (0, 1) for n in (0, 1) for k, v in _BN.items()},
    "ResNetBlock_1.conv_proj.kernel": ("conv", "kernel", True),
    **{f"ResNetBlock_1.norm_proj.{k}": v for k, v in _BN.items()},
    "Dense_0.kernel": ("linear", "kernel", True),
    "Dense_0.bias": ("linear", "bias", False),
}


def test_imagenet_resnet_with_axis_name_batchnorm_in_train_mode():
    inv = wdmask.describe(ResNet(), sample=IMAGES, sample_kwargs={"train": True})  # NameError: unbound axis before
    assert _decided(inv) == RESNET
    assert {i.dotted for i in inv if i.feeds_norm} == {k for k in RESNET if "onv" in k}
    facts = [(i.dotted, i.layer, i.role, i.feeds_norm, i.stacked) for i in inv]
    eval_mode = wdmask.describe(ResNet(), sample=IMAGES, sample_kwargs={"train": False})
    assert [(i.dotted, i.layer, i.role, i.feeds_norm, i.stacked) for i in eval_mode] == facts  # mode: same answers
    params = jax.eval_shape(functools.partial(ResNet().init, train=False), jax.random.key(0), IMAGES)["params"]
    got = wdmask.mask(params, presets.standard, model=ResNet(), sample=(IMAGES, True))
    assert {".".join(str(getattr(k, "key", k)) for k in p): m for p, m in jax.tree_util.tree_flatten_with_path(got)[0]} \
        == {k: v[2] for k, v in RESNET.items()}


class NnxBnNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(4, axis_name="batch", rngs=rngs)
        self.fc = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.fc(nnx.relu(self.bn(self.conv(x))).mean((1, 2)))


def test_nnx_batchnorm_with_axis_name_in_train_and_eval_mode():
    model = nnx.eval_shape(lambda: NnxBnNet(nnx.Rngs(0)))
    expected = {"conv.kernel": ("conv", "kernel", True), "bn.scale": ("norm.batch", "scale", False),
                "bn.bias": ("norm.batch", "bias", False), "fc.kernel": ("linear", "kernel", True),
                "fc.bias": ("linear", "bias", False)}
    for mode in (model.train, model.eval):
        mode()
        inv = wdmask.describe(model, sample=IMAGES[..., :3])
        assert _decided(inv) == expected
        assert {i.dotted: i.feeds_norm for i in inv}["conv.kernel"] is True


class BrokenLinen(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(x).reshape(3, -1)  # 2 * 4 elements do not reshape to 3 rows: the model's own bug


class BrokenNnx(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.fc(x)


def test_a_model_failing_on_the_sample_raises_its_own_error_named_as_the_models():
    eqx = pytest.importorskip("equinox")
    cases = {
        "BrokenLinen": (BrokenLinen(), jnp.ones((2, 8))),
        "BrokenNnx": (nnx.eval_shape(lambda: BrokenNnx(nnx.Rngs(0))), jnp.ones((2, 5))),
        "Linear": (eqx.filter_eval_shape(eqx.nn.Linear, 4, 2, key=jax.random.key(0)), jnp.ones(5)),
    }
    for name, (model, x) in cases.items():
        with pytest.raises(wdmask.MaskError, match=rf"{name} fails on `sample` by itself") as caught:
            wdmask.describe(model, sample=x)
        assert isinstance(caught.value.__cause__, TypeError), name  # the model's own error, kept


# -- MaxText-style pipeline stages: nnx.vmap(out_axes=StateAxes({nnx.Param: 1, ...: 0}), transform_metadata) ----

D, F, L = 8, 16, 3
_P = nnx.with_partitioning


class StageNorm(nnx.Module):  # a project's own RMSNorm: states its size, like MaxText's
    def __init__(self, n):
        self.num_features = n
        self.scale = nnx.Param(jnp.ones((n,)), out_sharding=("norm",))

    def __call__(self, x):
        return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * self.scale


class DecoderLayer(nnx.Module):
    def __init__(self, rngs):
        init = nnx.initializers.lecun_normal()
        self.pre_norm = StageNorm(D)
        self.q = nnx.LinearGeneral(D, (2, 4), rngs=rngs, kernel_init=_P(init, ("embed", "heads", "kv")),
                                   bias_init=_P(nnx.initializers.zeros, ("heads", "kv")))
        self.wi = nnx.Linear(D, F, use_bias=False, rngs=rngs, kernel_init=_P(init, ("embed", "mlp")))
        self.wo = nnx.Linear(F, D, use_bias=False, rngs=rngs)  # no partition names
        self.post_norm = nnx.LayerNorm(D, rngs=rngs)  # no partition names
        self.gate = nnx.Param(jnp.zeros((D,)))  # no names, and no layer that states its shape

    def __call__(self, x):
        h = self.q(self.pre_norm(x)).reshape(x.shape)
        return self.post_norm(x + self.wo(jax.nn.gelu(self.wi(h))) * self.gate)


class Stage(nnx.Module):
    def __init__(self, rngs, partition="layers_per_stage", repeats=0):
        @nnx.split_rngs(splits=L)
        @nnx.vmap(in_axes=0, out_axes=nnx.StateAxes({nnx.Param: 1, ...: 0}), axis_name=partition,
                  transform_metadata={nnx.PARTITION_NAME: partition})
        def make(rngs):
            return DecoderLayer(rngs)

        if repeats:  # circular pipeline: the stages stacked again, at axis 0
            make = nnx.split_rngs(splits=repeats)(nnx.vmap(make, in_axes=0, out_axes=0, transform_metadata={
                nnx.PARTITION_NAME: "circular_repeats"}))
        self.layers = make(rngs)

    def __call__(self, x):  # the stage runs its layers with a scan over axis 1
        graphdef, params, rest = nnx.split(self.layers, nnx.Param, ...)

        def body(x, p):
            return nnx.merge(graphdef, p, rest)(x), None

        return jax.lax.scan(body, x, jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), params))[0]


def _stage(**kwargs):
    with nnx.use_eager_sharding(False):  # partition names without a mesh
        return nnx.eval_shape(lambda: Stage(nnx.Rngs(0), **kwargs))


STAGE_LEAVES = ("gate", "post_norm.bias", "post_norm.scale", "pre_norm.scale", "q.bias", "q.kernel", "wi.kernel",
                "wo.kernel")
# timm's `ndim <= 1` and `.bias` rule, on the per-layer rank: kernels decay, the gate and norms do not
STAGE_TIMM = {"gate": False, "post_norm.bias": False, "post_norm.scale": False, "pre_norm.scale": False,
              "q.bias": False, "q.kernel": True, "wi.kernel": True, "wo.kernel": True}


@pytest.mark.parametrize("partition", ["layers_per_stage", "pipe"])
def test_maxtext_style_stage_stack_at_axis_1(partition):
    model = _stage(partition=partition)  # "pipe" is no stacking name: the layers' own shapes show the axis
    for inv in (wdmask.describe(model), wdmask.describe(model, sample=jnp.ones((2, 4, D)))):
        assert {i.dotted: i.stacked_axes for i in inv} == {f"layers.{k}": (1,) for k in STAGE_LEAVES}
        assert {i.dotted: i.layer_shape for i in inv}["layers.q.kernel"] == (D, 2, 4)
        d = wdmask.decide(inv, presets.timm)
        assert {i.dotted[len("layers."):]: d[i.path].decay for i in inv} == STAGE_TIMM
    if partition == "layers_per_stage":  # the params alone: the stacking name, and the unnamed leaves agree with it
        inv = wdmask.describe(nnx.state(model, nnx.Param))
        assert {i.dotted: i.stacked_axes for i in inv} == {f"layers.{k}": (1,) for k in STAGE_LEAVES}


def test_maxtext_style_circular_repeats_of_stages():
    model = _stage(repeats=2)  # (repeats, ..., layers_per_stage, ...): axes 0 and 2
    for inv in (wdmask.describe(model), wdmask.describe(nnx.state(model, nnx.Param))):
        assert {i.dotted: i.stacked_axes for i in inv} == {f"layers.{k}": (0, 2) for k in STAGE_LEAVES}


# -- Equinox models built abstractly (eqx.filter_eval_shape) -----------------------------------------------------

def _eqx_net():
    eqx = pytest.importorskip("equinox")

    class Net(eqx.Module):
        conv: eqx.nn.Conv2d
        norm: eqx.nn.LayerNorm
        emb: eqx.nn.Embedding
        head: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.conv = eqx.nn.Conv2d(3, 4, 3, key=k1)
            self.norm = eqx.nn.LayerNorm(4)
            self.emb = eqx.nn.Embedding(5, 4, key=k2)
            self.head = eqx.nn.Linear(4, 2, key=k3)

        def __call__(self, x, ids):
            h = self.conv(x).mean((1, 2)) + self.emb(ids)
            return self.head(self.norm(h))

    return eqx, Net


EQX_NET = {"conv.weight": ("conv", "kernel", True), "conv.bias": ("conv", "bias", False),
           "norm.weight": ("norm.layer", "scale", False), "norm.bias": ("norm.layer", "bias", False),
           "emb.weight": ("embedding", "embedding", True), "head.weight": ("linear", "kernel", True),
           "head.bias": ("linear", "bias", False)}


def _materialize(abstract):
    return jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), abstract)


def test_equinox_model_built_abstractly_is_described_like_the_concrete_one():
    eqx, Net = _eqx_net()
    abstract = eqx.filter_eval_shape(Net, key=jax.random.key(0))
    concrete = _materialize(abstract)  # the same model with arrays (values do not matter): no eager init to compile
    assert isinstance(abstract.conv.weight, jax.ShapeDtypeStruct)
    sample = (jnp.ones((3, 6, 6)), jnp.asarray(1))
    for model in (abstract, concrete):
        assert _decided(wdmask.describe(model)) == EQX_NET
        assert _decided(wdmask.describe(model, sample=sample)) == EQX_NET  # TypeError on the abstract one before
    assert wdmask.describe(abstract, sample=sample) == wdmask.describe(concrete, sample=sample)
    got = wdmask.mask(abstract, presets.standard)  # the structure optax sees of the concrete model
    want = wdmask.mask(eqx.filter(concrete, eqx.is_inexact_array), presets.standard)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert jax.tree.leaves(got) == [v[2] for v in EQX_NET.values()]


# -- params alone: Haiku params dicts, HF-style Flax names, extra tables, extra parameters of a known kind --------

def _z(*shape):
    return np.zeros(shape, np.float32)


def _no_guess(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", wdmask.UnclassifiedWarning)
        return fn()


# Haiku's own structure, written literally: {module path with "/~/": {leaf: array}}
HAIKU = {
    "mlp/~/linear_0": {"w": _z(4, 8), "b": _z(8)},  # hk.nets.MLP
    "mlp/~/linear_1": {"w": _z(8, 2), "b": _z(2)},
    "conv2_d": {"w": _z(3, 3, 3, 4), "b": _z(4)},  # hk.Conv2D, hk.Conv1D
    "conv1_d_1": {"w": _z(3, 4, 4), "b": _z(4)},
    "layer_norm": {"scale": _z(4), "offset": _z(4)},  # hk.LayerNorm, BatchNorm, GroupNorm, RMSNorm
    "batch_norm": {"scale": _z(4), "offset": _z(4)},
    "group_norm": {"scale": _z(4), "offset": _z(4)},
    "rms_norm": {"scale": _z(4)},
    "embed": {"embeddings": _z(10, 4)},  # hk.Embed
    "transformer": {"positional_embeddings": _z(16, 4)},  # hk.get_parameter in a module
    "transformer/~/multi_head_attention/~/query": {"w": _z(4, 8), "b": _z(8)},  # hk.MultiHeadAttention
    "transformer/~/multi_head_attention/~/linear": {"w": _z(8, 4), "b": _z(4)},
    "res_net/~/initial_conv": {"w": _z(7, 7, 3, 4)},  # hk.nets.ResNet's explicit names
    "res_net/~/initial_batchnorm": {"scale": _z(1, 1, 1, 4), "offset": _z(1, 1, 1, 4)},
    "res_net/~/block_group_0/~/block_0/~/batchnorm_0": {"scale": _z(1, 1, 1, 4), "offset": _z(1, 1, 1, 4)},
    "res_net/~/logits": {"w": _z(4, 10), "b": _z(10)},
    "layer_stack/~/linear": {"w": _z(3, 4, 4), "b": _z(3, 4)},  # hk.layer_stack: 3 layers stacked at axis 0
}
# module path -> leaf -> (layer, role, decayed by standard), by hand from Haiku's conventions
_LIN, _CONV, _OTHER = "linear", "conv", "other"
HAIKU_EXPECTED = {
    "mlp.linear_0.w": (_LIN, "kernel", True), "mlp.linear_0.b": (_LIN, "bias", False),
    "mlp.linear_1.w": (_LIN, "kernel", True), "mlp.linear_1.b": (_LIN, "bias", False),
    "conv2_d.w": (_CONV, "kernel", True), "conv2_d.b": (_CONV, "bias", False),
    "conv1_d_1.w": (_CONV, "kernel", True), "conv1_d_1.b": (_CONV, "bias", False),
    "layer_norm.scale": ("norm.layer", "scale", False), "layer_norm.offset": ("norm.layer", "bias", False),
    "batch_norm.scale": ("norm.batch", "scale", False), "batch_norm.offset": ("norm.batch", "bias", False),
    "group_norm.scale": ("norm.group", "scale", False), "group_norm.offset": ("norm.group", "bias", False),
    "rms_norm.scale": ("norm.rms", "scale", False),
    "embed.embeddings": ("embedding", "embedding", True),
    "transformer.positional_embeddings": (_OTHER, "position", False),
    "transformer.multi_head_attention.query.w": (_OTHER, "kernel", True),
    "transformer.multi_head_attention.query.b": (_OTHER, "bias", False),
    "transformer.multi_head_attention.linear.w": (_LIN, "kernel", True),
    "transformer.multi_head_attention.linear.b": (_LIN, "bias", False),
    "res_net.initial_conv.w": (_OTHER, "kernel", True),
    "res_net.initial_batchnorm.scale": ("norm.batch", "scale", False),
    "res_net.initial_batchnorm.offset": ("norm.batch", "bias", False),
    "res_net.block_group_0.block_0.batchnorm_0.scale": ("norm.batch", "scale", False),
    "res_net.block_group_0.block_0.batchnorm_0.offset": ("norm.batch", "bias", False),
    "res_net.logits.w": (_OTHER, "kernel", True), "res_net.logits.b": (_OTHER, "bias", False),
    "layer_stack.linear.w": (_LIN, "kernel", True), "layer_stack.linear.b": (_LIN, "bias", False),
}


def test_haiku_params_dict_described_and_masked_by_its_conventions():
    inv = _no_guess(lambda: wdmask.describe(HAIKU))  # every leaf is known by Haiku's names: nothing guessed
    assert _decided(inv) == HAIKU_EXPECTED
    stacked = {i.dotted: i.stacked for i in inv if i.stacked}
    assert stacked == {"layer_stack.linear.w": 1, "layer_stack.linear.b": 1}
    got = _no_guess(lambda: wdmask.mask(HAIKU, presets.standard))
    assert set(got) == set(HAIKU)  # the mask has the params' own structure: Haiku's keys
    assert got["mlp/~/linear_0"] == {"w": True, "b": False} and got["layer_norm"] == {"scale": False, "offset": False}
    assert wdmask.mask(HAIKU, presets.timm)["layer_stack/~/linear"]["b"] is False  # per-layer ndim 1


_LN = {"scale": _z(8), "bias": _z(8)}
HF_STYLE = {  # transformers-style Flax param names, params alone
    "gpt2": ({"transformer": {"wte": {"embedding": _z(50, 8)}, "wpe": {"embedding": _z(16, 8)},
                              "h": {"0": {"ln_1": _LN, "attn": {"c_attn": {"kernel": _z(8, 24), "bias": _z(24)}},
                                          "ln_2": _LN}},
                              "ln_f": _LN}},
             {"transformer.wte.embedding": ("embedding", "embedding", True),
              "transformer.wpe.embedding": ("embedding", "position", False),
              **{f"transformer.h.0.{n}.{k}": ("norm.layer", r, False) for n in ("ln_1", "ln_2")
                 for k, r in (("scale", "scale"), ("bias", "bias"))},
              "transformer.h.0.attn.c_attn.kernel": ("other", "kernel", True),
              "transformer.h.0.attn.c_attn.bias": ("other", "bias", False),
              "transformer.ln_f.scale": ("norm.layer", "scale", False),
              "transformer.ln_f.bias": ("norm.layer", "bias", False)}),
    "llama": ({"model": {"embed_tokens": {"embedding": _z(50, 8)},
                         "layers": {"0": {"input_layernorm": {"weight": _z(8)},
                                          "self_attn": {"q_proj": {"kernel": _z(8, 8)}},
                                          "post_attention_layernorm": {"weight": _z(8)}}},
                         "norm": {"weight": _z(8)}},
               "lm_head": {"kernel": _z(8, 50)}},
              {"model.embed_tokens.embedding": ("embedding", "embedding", True),
               "model.layers.0.input_layernorm.weight": ("norm.layer", "scale", False),
               "model.layers.0.self_attn.q_proj.kernel": ("other", "kernel", True),
               "model.layers.0.post_attention_layernorm.weight": ("norm.layer", "scale", False),
               "model.norm.weight": ("norm.layer", "scale", False),
               "lm_head.kernel": ("other", "kernel", True)}),
    "t5": ({"shared": {"embedding": _z(50, 8)},
            "encoder": {"final_layer_norm": {"weight": _z(8)}, "layer_norm": {"weight": _z(8)}}},
           {"shared.embedding": ("embedding", "embedding", True),
            "encoder.final_layer_norm.weight": ("norm.layer", "scale", False),
            "encoder.layer_norm.weight": ("norm.layer", "scale", False)}),
}


@pytest.mark.parametrize("family", list(HF_STYLE))
def test_hf_style_flax_norm_and_table_names_from_the_params_alone(family):
    params, expected = HF_STYLE[family]
    assert _decided(_no_guess(lambda: wdmask.describe(params))) == expected  # nothing left to guess


def test_an_embed_that_is_not_the_only_table_is_a_guess_named_in_the_warning():
    bert = {"embeddings": {"word_embeddings": {"embedding": _z(50, 8)},
                           "position_embeddings": {"embedding": _z(16, 8)},
                           "token_type_embeddings": {"embedding": _z(2, 8)}, "LayerNorm": _LN}}
    with pytest.warns(wdmask.UnclassifiedWarning) as record:
        got = wdmask.mask(bert, presets.standard)["embeddings"]
    message = " ".join(str(r.message) for r in record)
    assert "known layer kind have no known role" in message and "embeddings.token_type_embeddings.embedding" in message
    assert "word_embeddings" not in message and "position_embeddings" not in message  # their names tell
    assert (got["word_embeddings"]["embedding"], got["position_embeddings"]["embedding"]) == (True, False)
    assert got["LayerNorm"] == {"scale": False, "bias": False}

    two = {"Embed_0": {"embedding": _z(50, 8)}, "Embed_1": {"embedding": _z(16, 8)}}  # token or position table?
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"no known role.*: Embed_0\.embedding, Embed_1\.embedding"):
        wdmask.mask(two, presets.standard)
    _no_guess(lambda: wdmask.mask({"Embed_0": {"embedding": _z(50, 8)}}, presets.standard))  # the only table


class TwoTables(nnx.Module):
    def __init__(self, rngs):
        self.wte = nnx.Embed(50, 8, rngs=rngs)
        self.extra = nnx.Embed(16, 8, rngs=rngs)  # the class says table, not whether tokens or positions index it

    def __call__(self, ids):
        return self.wte(ids) + self.extra(jnp.arange(ids.shape[-1]))


def test_a_second_table_of_a_known_class_is_a_guess_without_a_sample():
    model = nnx.eval_shape(lambda: TwoTables(nnx.Rngs(0)))
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"known layer kind have no known role.*: extra\.embedding\."):
        roles = {k: v[1] for k, v in _decided(wdmask.describe(model)).items()}
    assert roles == {"wte.embedding": "embedding", "extra.embedding": "other"}
    eqx = pytest.importorskip("equinox")

    class Tables(eqx.Module):
        tok_embeddings: eqx.nn.Embedding
        segments: eqx.nn.Embedding

    model = Tables(eqx.nn.Embedding(weight=_z(50, 8)), eqx.nn.Embedding(weight=_z(2, 8)))
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"no known role.*: segments\.weight\."):
        roles = {k: v[1] for k, v in _decided(wdmask.describe(model)).items()}
    assert roles == {"tok_embeddings.weight": "embedding", "segments.weight": "other"}


def test_extra_parameter_of_a_conv_class_is_a_guess_named_in_the_warning():
    eqx = pytest.importorskip("equinox")

    class CentralDifferenceConv(eqx.Module):  # a conv by its class name, with a gate the name does not explain
        weight: jax.Array
        bias: jax.Array
        difference_control: jax.Array

    model = CentralDifferenceConv(_z(4, 3, 3, 3), _z(4, 1, 1), _z())
    inv = wdmask.describe(model)
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"1 parameter\(s\) of a known layer kind have no known role "
                                                         r"\(kernel, bias, embedding, \.\.\.\) and were decayed by "
                                                         r"the rules' default: difference_control\."):
        decided = _decided(inv)
    assert decided == {"weight": ("conv", "kernel", True), "bias": ("conv", "bias", False),
                       "difference_control": ("conv", "other", True)}
