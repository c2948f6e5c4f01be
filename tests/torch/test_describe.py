"""describe: layer kind, role, decision and feeds_norm leaf by leaf against hand-written tables."""

import contextlib
import subprocess
import sys

import pytest
import torch
from torch import nn

import wdmask
import wdmask_torch
from tests.torch import models as tm

# path: (layer, role, decayed by presets.standard, feeds_norm with example inputs)
BASIC_RESNET = {
    "conv1.weight": ("conv", "kernel", 1, True),
    "bn1.weight": ("norm.batch", "scale", 0, False),
    "bn1.bias": ("norm.batch", "bias", 0, False),
    "layer1.0.conv1.weight": ("conv", "kernel", 1, True),
    "layer1.0.bn1.weight": ("norm.batch", "scale", 0, False),
    "layer1.0.bn1.bias": ("norm.batch", "bias", 0, False),
    "layer1.0.conv2.weight": ("conv", "kernel", 1, True),
    "layer1.0.bn2.weight": ("norm.batch", "scale", 0, False),
    "layer1.0.bn2.bias": ("norm.batch", "bias", 0, False),
    "layer2.0.conv1.weight": ("conv", "kernel", 1, True),
    "layer2.0.bn1.weight": ("norm.batch", "scale", 0, False),
    "layer2.0.bn1.bias": ("norm.batch", "bias", 0, False),
    "layer2.0.conv2.weight": ("conv", "kernel", 1, True),
    "layer2.0.bn2.weight": ("norm.batch", "scale", 0, False),
    "layer2.0.bn2.bias": ("norm.batch", "bias", 0, False),
    "layer2.0.downsample.0.weight": ("conv", "kernel", 1, True),
    "layer2.0.downsample.1.weight": ("norm.batch", "scale", 0, False),
    "layer2.0.downsample.1.bias": ("norm.batch", "bias", 0, False),
    "fc.weight": ("linear", "kernel", 1, False),
    "fc.bias": ("linear", "bias", 0, False),
}
_BOTTLENECK_BLOCK = {
    "conv1.weight": ("conv", "kernel", 1, True),
    "bn1.weight": ("norm.batch", "scale", 0, False),
    "bn1.bias": ("norm.batch", "bias", 0, False),
    "conv2.weight": ("conv", "kernel", 1, True),
    "bn2.weight": ("norm.batch", "scale", 0, False),
    "bn2.bias": ("norm.batch", "bias", 0, False),
    "conv3.weight": ("conv", "kernel", 1, True),
    "bn3.weight": ("norm.batch", "scale", 0, False),
    "bn3.bias": ("norm.batch", "bias", 0, False),
    "downsample.0.weight": ("conv", "kernel", 1, True),
    "downsample.1.weight": ("norm.batch", "scale", 0, False),
    "downsample.1.bias": ("norm.batch", "bias", 0, False),
}
BOTTLENECK_RESNET = {
    "conv1.weight": ("conv", "kernel", 1, True),
    "bn1.weight": ("norm.batch", "scale", 0, False),
    "bn1.bias": ("norm.batch", "bias", 0, False),
    **{f"layer1.0.{k}": v for k, v in _BOTTLENECK_BLOCK.items()},
    **{f"layer2.0.{k}": v for k, v in _BOTTLENECK_BLOCK.items()},
    "fc.weight": ("linear", "kernel", 1, False),
    "fc.bias": ("linear", "bias", 0, False),
}
_TRANSFORMER_BLOCK = {
    "ln1.weight": ("norm.layer", "scale", 0, False),
    "ln1.bias": ("norm.layer", "bias", 0, False),
    "attn.in_proj_weight": ("linear", "kernel", 1, False),  # MHA internals: the output is out_proj's
    "attn.in_proj_bias": ("linear", "bias", 0, False),
    "attn.out_proj.weight": ("linear", "kernel", 1, False),  # -> residual add
    "attn.out_proj.bias": ("linear", "bias", 0, False),
    "norm2.weight": ("norm.rms", "scale", 0, False),
    "fc1.weight": ("linear", "kernel", 1, False),  # -> gelu
    "fc1.bias": ("linear", "bias", 0, False),
    "fc2.weight": ("linear", "kernel", 1, False),
    "fc2.bias": ("linear", "bias", 0, False),
}
TRANSFORMER = {
    # a loose parameter of the root module comes first; the traced pass sees a (1, L, D) table sliced and added
    # whole to the activations: a position table, not decayed (without a graph it is unclassified: see below)
    "pos": ("other", "position", 0, False),
    "tok.weight": ("embedding", "embedding", 1, False),  # tied to head.weight, which is not listed again
    **{f"blocks.0.{k}": v for k, v in _TRANSFORMER_BLOCK.items()},
    **{f"blocks.1.{k}": v for k, v in _TRANSFORMER_BLOCK.items()},
    "ln_f.weight": ("norm.layer", "scale", 0, False),
    "ln_f.bias": ("norm.layer", "bias", 0, False),
}
_CONVNEXT_BLOCK = {
    "gamma": ("other", "gain", 0, False),  # layer scale: not decayed by `standard` (nor by timm: 1-D)
    "dwconv.weight": ("conv", "kernel", 1, True),  # -> permute -> LayerNorm
    "dwconv.bias": ("conv", "bias", 0, True),
    "norm.weight": ("norm.layer", "scale", 0, False),
    "norm.bias": ("norm.layer", "bias", 0, False),
    "pwconv1.weight": ("linear", "kernel", 1, False),
    "pwconv1.bias": ("linear", "bias", 0, False),
    "pwconv2.weight": ("linear", "kernel", 1, False),
    "pwconv2.bias": ("linear", "bias", 0, False),
}
CONVNEXT = {
    "stem.0.weight": ("conv", "kernel", 1, True),  # -> custom LayerNorm2d
    "stem.0.bias": ("conv", "bias", 0, True),
    "stem.1.weight": ("norm.layer", "scale", 0, False),
    "stem.1.bias": ("norm.layer", "bias", 0, False),
    **{f"stage1.{k}": v for k, v in _CONVNEXT_BLOCK.items()},
    "down.0.weight": ("norm.layer", "scale", 0, False),
    "down.0.bias": ("norm.layer", "bias", 0, False),
    "down.1.weight": ("conv", "kernel", 1, False),  # -> dwconv and the residual
    "down.1.bias": ("conv", "bias", 0, False),
    **{f"stage2.{k}": v for k, v in _CONVNEXT_BLOCK.items()},
    "head.weight": ("linear", "kernel", 1, False),
    "head.bias": ("linear", "bias", 0, False),
}

IMG = torch.zeros(2, 3, 8, 8)
MODELS = {
    "resnet_basic": (lambda: tm.resnet("basic"), IMG, BASIC_RESNET),
    "resnet_bottleneck": (lambda: tm.resnet("bottleneck"), IMG, BOTTLENECK_RESNET),
    "transformer": (tm.TinyTransformer, torch.zeros(2, 6, dtype=torch.long), TRANSFORMER),
    "convnext": (tm.ConvNeXtTiny, IMG, CONVNEXT),
}


def table(model: nn.Module, x: object = None, rules: wdmask.Rules = wdmask.presets.standard) -> dict:
    inventory = wdmask_torch.describe(model, x)
    decisions = wdmask.decide(inventory, rules)
    return {i.dotted: (i.layer, i.role, int(decisions[i.path].multiplier), i.feeds_norm) for i in inventory}


@pytest.mark.parametrize("case", MODELS.values(), ids=list(MODELS))
def test_leaf_by_leaf(case: tuple) -> None:
    build, x, expected = case
    got = table(build(), x)
    assert list(got) == list(expected)  # named_parameters() order
    assert got == expected


@pytest.mark.parametrize("case", MODELS.values(), ids=list(MODELS))
def test_without_example_inputs_feeds_norm_is_unknown(case: tuple) -> None:
    build, _, expected = case
    expected = {k: (*v[:3], None) for k, v in expected.items()}
    if "pos" in expected:  # no graph: a loose `pos` has no class or name evidence -> unclassified, decayed
        expected["pos"] = ("other", "other", 1, None)
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"1 parameter\(s\).*: pos\. Fix") if "pos" in expected \
            else contextlib.nullcontext():
        assert table(build()) == expected


def test_scale_invariant_preset_uses_feeds_norm() -> None:
    got = table(tm.resnet("basic"), IMG, wdmask.presets.standard_scale_invariant)
    assert [k for k, v in got.items() if v[2]] == ["fc.weight"]  # every conv feeds a BatchNorm


def test_sources_and_module_types() -> None:
    by_path = {i.dotted: i for i in wdmask_torch.describe(tm.ConvNeXtTiny())}
    assert (by_path["stem.1.weight"].source, by_path["stem.1.weight"].module_type) == (
        "name", "tests.torch.models.LayerNorm2d")
    assert (by_path["stage2.norm.weight"].source, by_path["stage2.norm.weight"].module_type) == (
        "type", "torch.nn.LayerNorm")
    resnet = {i.dotted: i.module_type for i in wdmask_torch.describe(tm.resnet())}
    assert resnet["bn1.weight"] == "torch.nn.BatchNorm2d" and resnet["fc.bias"] == "torch.nn.Linear"


class MyBatchNorm(nn.BatchNorm2d):
    pass


class FancyNorm(nn.Module):  # a "norm" by name that owns a 2-D parameter: not trusted as a norm
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 4))


class ScaleNorm(nn.Module):  # a scalar gain (0-D) still counts
    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.tensor(1.0))


KINDS = {
    "conv1d": (nn.Conv1d(2, 2, 1), {"weight": ("conv", "kernel"), "bias": ("conv", "bias")}),
    "conv_transpose3d": (nn.ConvTranspose3d(2, 2, 1), {"weight": ("conv", "kernel"), "bias": ("conv", "bias")}),
    "bilinear": (nn.Bilinear(2, 2, 2), {"weight": ("linear", "kernel"), "bias": ("linear", "bias")}),
    "embedding_bag": (nn.EmbeddingBag(5, 2), {"weight": ("embedding", "embedding")}),
    "sync_bn": (nn.SyncBatchNorm(2), {"weight": ("norm.batch", "scale"), "bias": ("norm.batch", "bias")}),
    "bn_subclass": (MyBatchNorm(2), {"weight": ("norm.batch", "scale"), "bias": ("norm.batch", "bias")}),
    "instance_norm": (nn.InstanceNorm2d(2, affine=True),
                      {"weight": ("norm.instance", "scale"), "bias": ("norm.instance", "bias")}),
    "group_norm": (nn.GroupNorm(1, 2), {"weight": ("norm.group", "scale"), "bias": ("norm.group", "bias")}),
    "rms_norm": (nn.RMSNorm(2), {"weight": ("norm.rms", "scale")}),
    "layer_norm_no_bias": (nn.LayerNorm(2, bias=False), {"weight": ("norm.layer", "scale")}),
    "fancy_norm_2d": (FancyNorm(), {"weight": ("other", "other")}),
    "scale_norm": (ScaleNorm(), {"g": ("norm.layer", "scale")}),
    "mha_kdim_bias_kv": (nn.MultiheadAttention(4, 2, kdim=3, vdim=5, add_bias_kv=True), {
        "q_proj_weight": ("linear", "kernel"), "k_proj_weight": ("linear", "kernel"),
        "v_proj_weight": ("linear", "kernel"), "in_proj_bias": ("linear", "bias"), "bias_k": ("linear", "bias"),
        "bias_v": ("linear", "bias"), "out_proj.weight": ("linear", "kernel"), "out_proj.bias": ("linear", "bias")}),
}


@pytest.mark.parametrize("case", KINDS.values(), ids=list(KINDS))
def test_kinds_by_class(case: tuple) -> None:
    module, expected = case
    assert {i.dotted: (i.layer, i.role) for i in wdmask_torch.describe(module)} == expected


def test_register_norm() -> None:
    class AdaScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(2, 3))  # 2-D: the name heuristic would refuse it
            self.beta = nn.Parameter(torch.zeros(2, 3))

    assert {i.layer for i in wdmask_torch.describe(AdaScale())} == {"other"}
    assert wdmask_torch.register_norm(AdaScale, "norm.group") is AdaScale
    assert [(i.layer, i.role, i.source) for i in wdmask_torch.describe(AdaScale())] == [
        ("norm.group", "scale", "type"), ("norm.group", "bias", "type")]
    with pytest.raises(ValueError, match=r"not a norm kind; valid: norm\.batch"):
        wdmask_torch.register_norm(AdaScale, "conv")
    with pytest.raises(TypeError, match=r"must be an nn\.Module subclass"):
        wdmask_torch.register_norm(int)  # type: ignore[arg-type]


def test_tied_parameters_appear_once_and_kind_uses_every_owner() -> None:
    class HeadFirst(nn.Module):  # the Linear is registered first: its name is kept, the embedding kind wins
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(3, 5, bias=False)
            self.emb = nn.Embedding(5, 3)
            self.emb.weight = self.head.weight
            self.norm = nn.LayerNorm(3)
            self.alias = self.norm  # the same module under two names

    got = [(i.dotted, i.layer, i.role, i.aliases) for i in wdmask_torch.describe(HeadFirst())]
    assert got == [("head.weight", "embedding", "embedding", ("emb.weight",)),
                   ("norm.weight", "norm.layer", "scale", ("alias.weight",)),
                   ("norm.bias", "norm.layer", "bias", ("alias.bias",))]

    class NormShared(nn.Module):  # a tensor owned by a loose module and by a norm: the norm wins
        def __init__(self) -> None:
            super().__init__()
            self.holder = nn.Module()
            self.holder.w = nn.Parameter(torch.ones(3))
            self.ln = nn.LayerNorm(3)
            self.ln.weight = self.holder.w

    assert next((i.dotted, i.layer) for i in wdmask_torch.describe(NormShared())) == ("holder.w", "norm.layer")


def test_frozen_params_skipped_unless_asked() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    net[0].requires_grad_(False)
    assert [i.dotted for i in wdmask_torch.describe(net)] == ["1.weight", "1.bias"]
    assert len(wdmask_torch.describe(net, include_frozen=True)) == 4


def test_lazy_modules() -> None:
    net = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d())
    with pytest.raises(ValueError, match=r"'0.weight' of lazy module LazyConv2d is not initialized yet; run one"):
        wdmask_torch.describe(net)
    inv = wdmask_torch.describe(net, torch.zeros(1, 3, 5, 5))  # the probing forward initializes them
    assert [(i.dotted, i.layer, i.shape, i.feeds_norm) for i in inv][:3] == [
        ("0.weight", "conv", (4, 3, 3, 3), True), ("0.bias", "conv", (4,), True), ("1.weight", "norm.batch", (4,), False)]


def test_meta_device_model() -> None:
    with torch.device("meta"):
        model = tm.resnet("bottleneck")
    assert table(model, torch.zeros(2, 3, 8, 8, device="meta")) == BOTTLENECK_RESNET
    assert [len(g["params"]) for g in wdmask_torch.groups(model)] == [19, 10]  # 1 + 2 x 4 convs + fc.weight decayed


def test_declared_no_weight_decay() -> None:
    class Declares(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 2))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 2))
            self.fc = nn.Linear(2, 2)
            self.fc.weight._no_weight_decay = True  # type: ignore[attr-defined]

        def no_weight_decay(self) -> set[str]:
            return {"pos_embed", "cls_*"}

    assert [(i.dotted, i.declared) for i in wdmask_torch.describe(Declares())] == [
        ("pos_embed", "no_decay"), ("cls_token", "no_decay"), ("fc.weight", "no_decay"), ("fc.bias", "")]


def test_explain_goes_through_the_adapter() -> None:
    rows = wdmask.explain(tm.resnet(), wdmask.presets.standard)
    assert len(rows) == len(BASIC_RESNET)
    assert [r.multiplier for r in rows] == [float(v[2]) for v in BASIC_RESNET.values()]
    assert "layer2.0.downsample.1.weight" in str(rows)


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module, got generator.*not `model.parameters"):
        wdmask_torch.describe(tm.resnet().parameters())  # type: ignore[arg-type]


def test_import_does_not_import_jax() -> None:
    code = "import sys, wdmask_torch, wdmask; wdmask_torch.groups(__import__('torch').nn.Linear(2, 2)); " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
