"""describe(): inventories of linen, NNX and plain pytrees, and decisions leaf by leaf vs hand-written tables."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import wdmask
from tests.jax.models import RESNET_SAMPLE, TOKENS, Auto, NResNet, ResNet, Transformer, init, nnx_model
from wdmask import presets

Y, N = True, False


def decisions(inventory, rules):
    made = wdmask.decide(inventory, rules)
    return {i.dotted: made[i.path].multiplier != 0 for i in inventory}


def kinds(inventory):
    return {i.dotted: (i.layer, i.role, i.stacked) for i in inventory}


# ----------------------------------------------------------------------------- (1) linen ResNet, explicit names

# path: (layer, role, stacked, feeds_norm, decay under standard, decay under standard_scale_invariant)
RESNET = {
    "conv1.kernel": ("conv", "kernel", 0, Y, Y, N),
    "bn1.scale": ("norm.batch", "scale", 0, N, N, N),
    "bn1.bias": ("norm.batch", "bias", 0, N, N, N),
    "layer1_0.conv1.kernel": ("conv", "kernel", 0, Y, Y, N),
    "layer1_0.bn1.scale": ("norm.batch", "scale", 0, N, N, N),
    "layer1_0.bn1.bias": ("norm.batch", "bias", 0, N, N, N),
    "layer1_0.conv2.kernel": ("conv", "kernel", 0, Y, Y, N),
    "layer1_0.bn2.scale": ("norm.batch", "scale", 0, N, N, N),
    "layer1_0.bn2.bias": ("norm.batch", "bias", 0, N, N, N),
    "layer2_0.conv1.kernel": ("conv", "kernel", 0, Y, Y, N),
    "layer2_0.bn1.scale": ("norm.batch", "scale", 0, N, N, N),
    "layer2_0.bn1.bias": ("norm.batch", "bias", 0, N, N, N),
    "layer2_0.conv2.kernel": ("conv", "kernel", 0, Y, Y, N),
    "layer2_0.bn2.scale": ("norm.batch", "scale", 0, N, N, N),
    "layer2_0.bn2.bias": ("norm.batch", "bias", 0, N, N, N),
    "layer2_0.downsample.conv.kernel": ("conv", "kernel", 0, Y, Y, N),
    "layer2_0.downsample.bn.scale": ("norm.batch", "scale", 0, N, N, N),
    "layer2_0.downsample.bn.bias": ("norm.batch", "bias", 0, N, N, N),
    "fc.kernel": ("linear", "kernel", 0, N, Y, Y),
    "fc.bias": ("linear", "bias", 0, N, N, N),
}


@pytest.fixture(scope="module")
def resnet_inventory():
    return wdmask.describe(ResNet(), RESNET_SAMPLE)


def test_linen_resnet_table(resnet_inventory):
    inv = resnet_inventory
    assert sorted(i.dotted for i in inv) == sorted(RESNET)
    assert {i.dotted: (i.layer, i.role, i.stacked, i.feeds_norm) for i in inv} == {
        k: v[:4] for k, v in RESNET.items()}
    assert decisions(inv, presets.standard) == {k: v[4] for k, v in RESNET.items()}
    assert decisions(inv, presets.standard_scale_invariant) == {k: v[5] for k, v in RESNET.items()}
    assert all(i.source == "graph" for i in inv)  # every leaf is used by the traced forward pass
    by = {i.dotted: i for i in inv}
    assert by["bn1.scale"].module_type == "flax.linen.BatchNorm"
    assert by["fc.kernel"].module_type == "flax.linen.Dense"


def test_resnet_names_alone_miss_bn1_kind_and_model_fixes_it():
    params = init(ResNet(), RESNET_SAMPLE)["params"]
    plain = {i.dotted: i for i in wdmask.describe(params)}
    # Names alone: `bn1`, `downsample.bn` are not auto-names -> kind unknown; only the leaf name
    # `scale` (Flax's name for every norm gain) says it is a norm gain.
    assert (plain["bn1.scale"].layer, plain["bn1.scale"].role) == ("other", "scale")
    assert plain["layer2_0.downsample.bn.scale"].layer == "other"
    hand = wdmask.mask(params, presets.standard)
    assert hand["bn1"]["scale"] is False and hand["bn1"]["bias"] is False  # right by leaf names
    by_kind = wdmask.mask(params, presets.torchvision)  # a rule on the layer kind cannot see it
    assert by_kind["bn1"]["scale"] is True  # wrong: a BatchNorm gain would be decayed
    fixed = wdmask.mask(params, presets.torchvision, model=ResNet(), sample=RESNET_SAMPLE)
    assert fixed["bn1"]["scale"] is False and fixed["layer2_0"]["downsample"]["bn"]["scale"] is False
    assert fixed["conv1"]["kernel"] is True and fixed["fc"]["bias"] is True  # torchvision decays biases


def test_variables_dict_uses_params_collection(resnet_inventory):
    variables = init(ResNet(), RESNET_SAMPLE)
    assert "batch_stats" in variables
    inv = wdmask.describe(ResNet(), RESNET_SAMPLE, params=variables)
    assert [i.dotted for i in inv] == [i.dotted for i in resnet_inventory]
    m = wdmask.mask(variables, presets.standard, model=ResNet(), sample=RESNET_SAMPLE)
    assert m["batch_stats"]["bn1"] == {"mean": False, "var": False}
    assert m["params"]["conv1"]["kernel"] is True


# ----------------------------------------------------------------------------- (2) linen Transformer, scan + remat

# path: (layer, role, stacked, decay under standard, decay under nanogpt (per-layer ndim >= 2))
TRANSFORMER = {
    "wte.embedding": ("embedding", "embedding", 0, Y, Y),
    "layers.ln1.scale": ("norm.layer", "scale", 1, N, N),
    "layers.ln1.bias": ("norm.layer", "bias", 1, N, N),
    "layers.attn.query.kernel": ("linear", "kernel", 1, Y, Y),
    "layers.attn.query.bias": ("linear", "bias", 1, N, Y),  # (heads, head_dim) per layer: 2-D for nanogpt
    "layers.attn.key.kernel": ("linear", "kernel", 1, Y, Y),
    "layers.attn.key.bias": ("linear", "bias", 1, N, Y),
    "layers.attn.value.kernel": ("linear", "kernel", 1, Y, Y),
    "layers.attn.value.bias": ("linear", "bias", 1, N, Y),
    "layers.attn.out.kernel": ("linear", "kernel", 1, Y, Y),
    "layers.attn.out.bias": ("linear", "bias", 1, N, N),
    "layers.ln2.scale": ("norm.rms", "scale", 1, N, N),
    "layers.fc1.kernel": ("linear", "kernel", 1, Y, Y),
    "layers.fc1.bias": ("linear", "bias", 1, N, N),
    "layers.fc2.kernel": ("linear", "kernel", 1, Y, Y),
    "layers.fc2.bias": ("linear", "bias", 1, N, N),
    "ln_f.scale": ("norm.layer", "scale", 0, N, N),
    "ln_f.bias": ("norm.layer", "bias", 0, N, N),
}


def test_linen_transformer_table():
    inv = wdmask.describe(Transformer(), TOKENS)
    assert kinds(inv) == {k: v[:3] for k, v in TRANSFORMER.items()}
    assert decisions(inv, presets.standard) == {k: v[3] for k, v in TRANSFORMER.items()}
    assert decisions(inv, presets.nanogpt) == {k: v[4] for k, v in TRANSFORMER.items()}
    by = {i.dotted: i for i in inv}
    assert by["layers.ln1.scale"].shape == (2, 8) and by["layers.ln1.scale"].ndim == 1
    assert by["layers.ln2.scale"].module_type == "flax.linen.RMSNorm"
    assert by["layers.attn.query.kernel"].module_type == "flax.linen.DenseGeneral"


def test_scanned_layernorm_by_names_alone():
    params = init(Transformer(), TOKENS)["params"]
    plain = {i.dotted: i for i in wdmask.describe(params)}
    # `ln1` says norm: a norm scale is 1-D per layer, so the (2, 8) one is stacked once, from the names alone
    assert (plain["layers.ln1.scale"].layer, plain["layers.ln1.scale"].stacked) == ("norm.layer", 1)
    assert wdmask.mask(params, presets.nanogpt)["layers"]["ln1"]["scale"] is False  # per-layer ndim 1
    assert plain["layers.attn.query.kernel"].stacked == 0  # an explicit name that says nothing: the axis is invisible
    fixed = wdmask.mask(params, presets.nanogpt, model=Transformer(), sample=TOKENS)
    assert fixed["layers"]["ln1"]["scale"] is False


# ----------------------------------------------------------------------------- (3) NNX ResNet

# path: (layer, role, decay under standard)
NRESNET = {
    "conv1.kernel": ("conv", "kernel", Y),
    "bn1.scale": ("norm.batch", "scale", N),
    "bn1.bias": ("norm.batch", "bias", N),
    "head.kernel": ("linear", "kernel", Y),
    "head.bias": ("linear", "bias", N),
    **{f"blocks.{b}.{name}.{leaf}": (kind, role, dec)
       for b in ("0", "1")
       for name, leaf, kind, role, dec in (
           ("conv1", "kernel", "conv", "kernel", Y), ("bn1", "scale", "norm.batch", "scale", N),
           ("bn1", "bias", "norm.batch", "bias", N), ("conv2", "kernel", "conv", "kernel", Y),
           ("bn2", "scale", "norm.batch", "scale", N), ("bn2", "bias", "norm.batch", "bias", N))},
    "blocks.1.downsample.layers.0.kernel": ("conv", "kernel", Y),
    "blocks.1.downsample.layers.1.scale": ("norm.batch", "scale", N),
    "blocks.1.downsample.layers.1.bias": ("norm.batch", "bias", N),
}


def test_nnx_resnet_table():
    model = nnx_model(lambda: NResNet(rngs=nnx.Rngs(0)))
    inv = wdmask.describe(model)
    assert {i.dotted: (i.layer, i.role) for i in inv} == {k: v[:2] for k, v in NRESNET.items()}
    assert decisions(inv, presets.standard) == {k: v[2] for k, v in NRESNET.items()}
    assert all(i.feeds_norm is None and i.source == "type" and i.stacked == 0 for i in inv)
    by = {i.dotted: i for i in inv}
    assert by["bn1.scale"].module_type == "flax.nnx.BatchNorm"
    # nnx.Param only: BatchNorm running statistics are not in the inventory
    assert not any("mean" in i.dotted for i in inv)
    # and names alone get `bn1` wrong, as for linen
    plain = {i.dotted: i.layer for i in wdmask.describe(nnx.state(model, nnx.Param))}
    assert plain["bn1.scale"] == "other"


def test_nnx_vmap_stacked():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return nnx.LayerNorm(4, rngs=nnx.Rngs(key))

    inv = {i.dotted: i for i in wdmask.describe(make(jax.random.split(jax.random.key(0), 3)))}
    assert inv["scale"].shape == (3, 4) and inv["scale"].stacked == 1 and inv["scale"].ndim == 1
    assert inv["scale"].layer == "norm.layer"


# ----------------------------------------------------------------------------- (4) plain auto-named pytrees

# path: (layer, role, decay under standard)
AUTO = {
    "Embed_0.embedding": ("embedding", "embedding", Y),
    "Conv_0.kernel": ("conv", "kernel", Y),
    "Conv_0.bias": ("conv", "bias", N),
    "BatchNorm_0.scale": ("norm.batch", "scale", N),
    "BatchNorm_0.bias": ("norm.batch", "bias", N),
    "Dense_0.kernel": ("linear", "kernel", Y),  # boxed in nn.Partitioned
    "Dense_0.bias": ("linear", "bias", N),
    "LayerNorm_0.scale": ("norm.layer", "scale", N),
    "LayerNorm_0.bias": ("norm.layer", "bias", N),
    "GroupNorm_0.scale": ("norm.group", "scale", N),
    "GroupNorm_0.bias": ("norm.group", "bias", N),
    "CheckpointDense_0.kernel": ("linear", "kernel", Y),  # nn.remat prefix stripped
    "CheckpointDense_0.bias": ("linear", "bias", N),
    "RMSNorm_0.scale": ("norm.rms", "scale", N),
    "Dense_1.kernel": ("linear", "kernel", Y),
    "Dense_1.bias": ("linear", "bias", N),
}


def test_plain_auto_names_with_partitioned_boxes():
    variables = init(Auto(), TOKENS)
    assert isinstance(variables["params"]["Dense_0"]["kernel"], nn.Partitioned)
    for tree in (variables, variables["params"], jax.tree.map(lambda x: x, variables["params"])):
        inv = wdmask.describe(tree)
        assert {i.dotted: (i.layer, i.role) for i in inv} == {k: v[:2] for k, v in AUTO.items()}
        assert decisions(inv, presets.standard) == {k: v[2] for k, v in AUTO.items()}
        assert all(i.source == "name" for i in inv)
    by = {i.dotted: i for i in wdmask.describe(variables)}
    assert by["Dense_0.kernel"].shape == (4, 4)  # unboxed
    m = wdmask.mask(variables["params"], presets.standard)
    assert m["Dense_0"]["kernel"] is True  # one bool where the box was: a prefix of the boxed tree
    # the model agrees with the names here
    exact = wdmask.describe(Auto(), TOKENS, params=variables)
    assert {i.dotted: (i.layer, i.role) for i in exact} == {k: v[:2] for k, v in AUTO.items()}


def test_plain_frozendict_and_lift_prefixes():
    from flax.core import FrozenDict

    tree = FrozenDict({"ScanBlock_0": {"LayerNorm_0": {"scale": jnp.ones((3, 4), jnp.float32)},
                                       "Dense_0": {"kernel": jnp.ones((3, 4, 4), jnp.float32),
                                                   "bias": jnp.ones((3, 4), jnp.float32)}},
                       "MultiHeadDotProductAttention_0": {"query": {"kernel": jnp.ones((4, 2, 2), jnp.float32)}},
                       "VmapConv_0": {"kernel": jnp.ones((3, 3, 2, 2), jnp.float32)}})
    by = {i.dotted: i for i in wdmask.describe(tree)}
    assert (by["ScanBlock_0.LayerNorm_0.scale"].layer, by["ScanBlock_0.LayerNorm_0.scale"].stacked) == (
        "norm.layer", 1)  # a norm scale is 1-D per layer: the extra axis is a stack
    assert by["ScanBlock_0.Dense_0.kernel"].stacked == 1 and by["ScanBlock_0.Dense_0.bias"].stacked == 1
    assert by["MultiHeadDotProductAttention_0.query.kernel"].layer == "linear"
    assert by["VmapConv_0.kernel"].layer == "conv"


def test_leaves_sharing_owner_and_name_are_classified_by_their_own_context():
    """Describe classifies a stack once per distinct leaf of a block; what differs between leaves must not be
    shared: the rank (a stacked copy), the grandparent under an attention child, a declaration."""
    f = jnp.float32
    tree = {"Block_0": {"LayerNorm_0": {"scale": jnp.ones(4, f)}, "Dense_0": {"kernel": jnp.ones((4, 4), f)}},
            "Stack_0": {"LayerNorm_0": {"scale": jnp.ones((3, 4), f)}, "Dense_0": {"kernel": jnp.ones((3, 4, 4), f)}},
            "MultiHeadDotProductAttention_0": {"query": {"kernel": jnp.ones((4, 2, 2), f)}},
            "router": {"query": {"kernel": jnp.ones((4, 2, 2), f)}},
            "Dense_1": {"kernel": jnp.ones((4, 4), f), "bias": wdmask.no_decay(nn.initializers.ones)(None, (4,), f)}}
    by = {i.dotted: i for i in wdmask.describe(tree)}
    assert (by["Block_0.LayerNorm_0.scale"].stacked, by["Stack_0.LayerNorm_0.scale"].stacked) == (0, 1)
    assert (by["Block_0.Dense_0.kernel"].stacked, by["Stack_0.Dense_0.kernel"].stacked) == (0, 1)
    assert by["MultiHeadDotProductAttention_0.query.kernel"].layer == "linear"
    assert by["router.query.kernel"].layer == "other"  # an explicit parent tells nothing about `query`
    assert (by["Dense_1.bias"].declared, by["Dense_1.kernel"].declared) == ("no_decay", "")


def test_integer_and_bool_leaves_recorded_never_decayed():
    tree = {"Dense_0": {"kernel": jnp.ones((2, 2), jnp.float32), "count": jnp.zeros((), jnp.int32),
                        "flag": jnp.zeros((2,), bool)}}
    by = {i.dotted: i for i in wdmask.describe(tree)}
    assert by["Dense_0.count"].dtype == "int32" and by["Dense_0.flag"].dtype == "bool"
    assert wdmask.mask(tree, presets.all) == {"Dense_0": {"kernel": True, "count": False, "flag": False}}


# ----------------------------------------------------------------------------- user classes


class MyBatchNorm(nn.BatchNorm):
    """A subclass: still a BatchNorm."""


class MyRMSNorm(nn.Module):
    """A user norm class (not a Flax class): known by its class name."""

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.ones, (x.shape[-1],))
        return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w


class UserModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="proj")(x)
        x = MyRMSNorm(name="norm_a")(x)
        x = MyBatchNorm(use_running_average=False, name="norm_b")(x)
        pos = self.param("pos", nn.initializers.zeros, (4,))
        return x + pos


def test_user_and_subclassed_norms():
    by = {i.dotted: i for i in wdmask.describe(UserModel(), jnp.ones((2, 4), jnp.float32))}
    assert (by["norm_a.weight"].layer, by["norm_a.weight"].role) == ("norm.rms", "scale")
    assert by["norm_a.weight"].module_type.endswith("test_describe.MyRMSNorm")
    assert (by["norm_b.scale"].layer, by["norm_b.scale"].role) == ("norm.batch", "scale")
    assert by["norm_b.scale"].module_type.endswith("test_describe.MyBatchNorm")
    # a 1-D vector added to the activations is a bias by usage, whatever its name
    assert (by["pos"].layer, by["pos"].role, by["pos"].source) == ("other", "bias", "graph")
    assert by["proj.kernel"].feeds_norm is True  # into the user norm class


def test_explain_flax():
    text = str(wdmask.explain(ResNet(), presets.standard, sample=RESNET_SAMPLE))
    assert "layer2_0.downsample.bn.scale" in text and "norm.batch" in text


def test_describe_errors():
    with pytest.raises(ValueError, match="needs `sample`"):
        wdmask.describe(ResNet())
    with pytest.raises(TypeError, match="instantiate"):
        wdmask.describe(ResNet)
    with pytest.raises(wdmask.MaskError, match="expected an array"):
        wdmask.describe({"Dense_0": {"kernel": "oops"}})
    params = init(ResNet(), RESNET_SAMPLE)["params"]
    wrong = {**params, "extra": {"kernel": jnp.ones((2, 2), jnp.float32)}}
    with pytest.raises(wdmask.MaskError, match="extra"):
        wdmask.describe(ResNet(), RESNET_SAMPLE, params=wrong)
