"""Real-model structures (torch): leaf-by-leaf roles and ``standard`` decisions, and every anchor preset
against an independent re-implementation of its anchor's published rule, run on the torch module tree."""

from __future__ import annotations

import fnmatch
import re

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import wdmask  # noqa: E402
import wdmask_torch  # noqa: E402
from tests.torch.real_models import MODELS  # noqa: E402
from wdmask import presets  # noqa: E402

# --------------------------------------------------------------------------- leaf by leaf
# path: layer role standard-decision [declared]     (decision: + decays, - does not)
EXPECTED = {
    "vit": """
        cls_token other token - declared
        dist_token other token - declared
        reg_token other token -
        pos_embed other position - declared
        patch_embed.proj.weight conv kernel +
        patch_embed.proj.bias conv bias -
        blocks.0.norm1.weight norm.layer scale -
        blocks.0.norm1.bias norm.layer bias -
        blocks.0.attn.qkv.weight linear kernel +
        blocks.0.attn.qkv.bias linear bias -
        blocks.0.attn.proj.weight linear kernel +
        blocks.0.attn.proj.bias linear bias -
        blocks.0.ls1.gamma other gain -
        blocks.0.norm2.weight norm.layer scale -
        blocks.0.norm2.bias norm.layer bias -
        blocks.0.mlp.fc1.weight linear kernel +
        blocks.0.mlp.fc1.bias linear bias -
        blocks.0.mlp.fc2.weight linear kernel +
        blocks.0.mlp.fc2.bias linear bias -
        blocks.0.ls2.gamma other gain -
        blocks.1.gamma_1 other gain -
        blocks.1.gamma_2 other gain -
        blocks.1.norm1.weight norm.layer scale -
        blocks.1.norm1.bias norm.layer bias -
        blocks.1.attn.in_proj_weight linear kernel +
        blocks.1.attn.in_proj_bias linear bias -
        blocks.1.attn.out_proj.weight linear kernel +
        blocks.1.attn.out_proj.bias linear bias -
        swin.relative_position_bias_table other position -
        swin.qkv.weight linear kernel +
        swin.qkv.bias linear bias -
        swin.proj.weight linear kernel +
        swin.proj.bias linear bias -
        norm.weight norm.layer scale -
        norm.bias norm.layer bias -
        head.weight linear kernel +
        head.bias linear bias -
    """,
    "swin": """
        absolute_pos_embed other position - declared
        patch_embed.proj.weight conv kernel +
        patch_embed.proj.bias conv bias -
        patch_embed.norm.weight norm.layer scale -
        patch_embed.norm.bias norm.layer bias -
        layers.0.relative_position_bias_table other position - declared
        layers.0.qkv.weight linear kernel +
        layers.0.qkv.bias linear bias -
        layers.0.proj.weight linear kernel +
        layers.0.proj.bias linear bias -
        layers.1.relative_position_bias_table other position - declared
        layers.1.qkv.weight linear kernel +
        layers.1.qkv.bias linear bias -
        layers.1.proj.weight linear kernel +
        layers.1.proj.bias linear bias -
        norm.weight norm.layer scale -
        norm.bias norm.layer bias -
        head.weight linear kernel +
        head.bias linear bias -
    """,
    "convnext": """
        stem.0.weight conv kernel +
        stem.0.bias conv bias -
        stem.1.weight norm.layer scale -
        stem.1.bias norm.layer bias -
        stages.0.layer_scale other gain -
        stages.0.block.0.weight conv kernel +
        stages.0.block.0.bias conv bias -
        stages.0.block.1.weight norm.layer scale -
        stages.0.block.1.bias norm.layer bias -
        stages.0.block.2.weight conv kernel +
        stages.0.block.2.bias conv bias -
        stages.0.block.4.weight conv kernel +
        stages.0.block.4.bias conv bias -
        stages.1.gamma other gain -
        stages.1.conv_dw.weight conv kernel +
        stages.1.conv_dw.bias conv bias -
        stages.1.norm.weight norm.layer scale -
        stages.1.norm.bias norm.layer bias -
        stages.1.mlp.fc1.weight linear kernel +
        stages.1.mlp.fc1.bias linear bias -
        stages.1.mlp.fc2.weight linear kernel +
        stages.1.mlp.fc2.bias linear bias -
        downsample_layers.0.weight norm.layer scale -
        downsample_layers.0.bias norm.layer bias -
        downsample_layers.1.weight conv kernel +
        downsample_layers.1.bias conv bias -
        head.0.weight norm.layer scale -
        head.0.bias norm.layer bias -
        head.2.weight linear kernel +
        head.2.bias linear bias -
    """,
    "resmlp": """
        stem.proj.weight conv kernel +
        stem.proj.bias conv bias -
        blocks.0.ls1 other gain -
        blocks.0.ls2 other gain -
        blocks.0.norm1.alpha other gain -
        blocks.0.norm1.beta other bias -
        blocks.0.linear_tokens.weight linear kernel +
        blocks.0.linear_tokens.bias linear bias -
        blocks.0.norm2.alpha other gain -
        blocks.0.norm2.beta other bias -
        blocks.0.mlp_channels.fc1.weight linear kernel +
        blocks.0.mlp_channels.fc1.bias linear bias -
        blocks.0.mlp_channels.fc2.weight linear kernel +
        blocks.0.mlp_channels.fc2.bias linear bias -
        norm.alpha other gain -
        norm.beta other bias -
        head.weight linear kernel +
        head.bias linear bias -
    """,
    "nfnet": """
        stem.weight conv kernel +
        stem.bias conv bias -
        stem.gain conv gain -
        stages.0.skipinit_gain other gain -
        stages.0.conv1.weight conv kernel +
        stages.0.conv1.bias conv bias -
        stages.0.conv1.gain conv gain -
        stages.0.conv2.weight conv kernel +
        stages.0.conv2.bias conv bias -
        stages.0.conv2.gain conv gain -
        head.weight linear kernel +
        head.bias linear bias -
    """,
    "bnact": """
        conv1.weight conv kernel +
        bn1.weight norm.batch scale -
        bn1.bias norm.batch bias -
        conv2.weight conv kernel +
        bn2.weight norm.batch scale -
        bn2.bias norm.batch bias -
        fc.weight linear kernel +
        fc.bias linear bias -
    """,
    "gpt2": """
        transformer.wte.weight embedding embedding +
        transformer.wpe.weight embedding position -
        transformer.h.0.ln_1.weight norm.layer scale -
        transformer.h.0.ln_1.bias norm.layer bias -
        transformer.h.0.attn.c_attn.weight linear kernel +
        transformer.h.0.attn.c_attn.bias linear bias -
        transformer.h.0.attn.c_proj.weight linear kernel +
        transformer.h.0.attn.c_proj.bias linear bias -
        transformer.h.0.ln_2.weight norm.layer scale -
        transformer.h.0.ln_2.bias norm.layer bias -
        transformer.h.0.mlp.c_fc.weight linear kernel +
        transformer.h.0.mlp.c_fc.bias linear bias -
        transformer.h.0.mlp.c_proj.weight linear kernel +
        transformer.h.0.mlp.c_proj.bias linear bias -
        transformer.ln_f.weight norm.layer scale -
        transformer.ln_f.bias norm.layer bias -
    """,
    "llama": """
        model.embed_tokens.weight embedding embedding +
        model.layers.0.input_layernorm.weight norm.rms scale -
        model.layers.0.self_attn.q_proj.weight linear kernel +
        model.layers.0.self_attn.k_proj.weight linear kernel +
        model.layers.0.self_attn.v_proj.weight linear kernel +
        model.layers.0.self_attn.o_proj.weight linear kernel +
        model.layers.0.post_attention_layernorm.weight norm.rms scale -
        model.layers.0.mlp.gate_proj.weight linear kernel +
        model.layers.0.mlp.up_proj.weight linear kernel +
        model.layers.0.mlp.down_proj.weight linear kernel +
        model.norm.weight norm.rms scale -
        t5.relative_attention_bias.weight embedding position -
        t5.layer_norm.weight norm.rms scale -
        t5.scale.weight norm.rms scale -
        lm_head.weight linear kernel +
    """,
    "bert": """
        bias other bias -
        embeddings.word_embeddings.weight embedding embedding +
        embeddings.position_embeddings.weight embedding position -
        embeddings.token_type_embeddings.weight embedding embedding +
        embeddings.LayerNorm.weight norm.layer scale -
        embeddings.LayerNorm.bias norm.layer bias -
        encoder.layer.0.attention.self.query.weight linear kernel +
        encoder.layer.0.attention.self.query.bias linear bias -
        encoder.layer.0.attention.self.key.weight linear kernel +
        encoder.layer.0.attention.self.key.bias linear bias -
        encoder.layer.0.attention.self.value.weight linear kernel +
        encoder.layer.0.attention.self.value.bias linear bias -
        encoder.layer.0.attention.output.dense.weight linear kernel +
        encoder.layer.0.attention.output.dense.bias linear bias -
        encoder.layer.0.attention.output.LayerNorm.weight norm.layer scale -
        encoder.layer.0.attention.output.LayerNorm.bias norm.layer bias -
        pooler.dense.weight linear kernel +
        pooler.dense.bias linear bias -
    """,
    "flash": """
        mixer.A_log other other - declared
        mixer.D other other - declared
        mixer.in_proj.weight linear kernel +
        mixer.in_proj.bias linear bias -
        pos_block.0.weight conv kernel - declared
        pos_block.0.bias conv bias - declared
    """,
}


def _table(text: str) -> list[tuple[str, str, str, bool, str]]:
    rows = []
    for line in text.strip().splitlines():
        path, layer, role, decision, *declared = line.split()
        rows.append((path, layer, role, decision == "+", "no_decay" if declared else ""))
    return rows


@pytest.mark.parametrize("name", list(EXPECTED))
def test_roles_and_standard_decisions_leaf_by_leaf(name):
    model = MODELS[name]()
    inv = wdmask_torch.describe(model)
    decisions = wdmask.decide(inv, presets.standard)
    got = [(i.dotted, i.layer, i.role, decisions[i.path].decay, i.declared) for i in inv]
    assert got == _table(EXPECTED[name])


def test_module_types_and_sources_of_custom_classes():
    inv = {i.dotted: i for i in wdmask_torch.describe(MODELS["gpt2"]())}
    c_attn = inv["transformer.h.0.attn.c_attn.weight"]
    assert (c_attn.shape, c_attn.source, c_attn.module_type) == ((8, 24), "name", "tests.torch.real_models.Conv1D")
    inv = {i.dotted: i for i in wdmask_torch.describe(MODELS["llama"]())}
    assert inv["t5.layer_norm.weight"].source == "name"  # T5LayerNorm: named LayerNorm, RMS-style (no bias, eps)
    inv = {i.dotted: i for i in wdmask_torch.describe(MODELS["convnext"]())}
    assert inv["stem.1.weight"].source == "type" and inv["downsample_layers.0.weight"].source == "name"
    inv = {i.dotted: i for i in wdmask_torch.describe(MODELS["bnact"]())}
    assert inv["bn1.weight"].module_type == "tests.torch.real_models.BatchNormAct2d" and inv["bn1.weight"].source == "type"


def test_layernorm_without_bias_stays_layer_norm():
    class NanoLayerNorm(nn.Module):  # nanoGPT LayerNorm(ndim, bias=False): a `bias` attribute that is None
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))
            self.bias = None

    assert [i.layer for i in wdmask_torch.describe(nn.Sequential(NanoLayerNorm(), nn.LayerNorm(4, bias=False)))] == [
        "norm.layer", "norm.layer"]


def test_tied_embeddings_one_decision_all_owners_explained():
    model = MODELS["gpt2"]()
    inv = wdmask_torch.describe(model)
    wte = next(i for i in inv if i.dotted == "transformer.wte.weight")
    assert wte.aliases == ("lm_head.weight",) and all(i.dotted != "lm_head.weight" for i in inv)
    rows = wdmask.explain(model, presets.standard)
    assert next(r for r in rows if r.path == "transformer.wte.weight").aliases == ("lm_head.weight",)
    assert "transformer.wte.weight (= lm_head.weight)" in str(rows)
    groups = wdmask_torch.groups(model, presets.mingpt, weight_decay=0.1)  # one tensor, one group
    tensors = [p for g in groups for p in g["params"]]
    assert sum(p is model.lm_head.weight for p in tensors) == 1


def test_tied_embedding_registered_after_the_head_keeps_the_embedding_role():
    class HeadFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm_head = nn.Linear(4, 16, bias=False)
            self.wte = nn.Embedding(16, 4)
            self.wte.weight = self.lm_head.weight

    (info,) = wdmask_torch.describe(HeadFirst())
    assert (info.dotted, info.layer, info.role, info.aliases) == ("lm_head.weight", "embedding", "embedding",
                                                                  ("wte.weight",))


def test_declarations_names_patterns_prefixes_keywords_attribute():
    class Declaring(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 4))
            self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
            self.extra = nn.Parameter(torch.zeros(4, 4))
            self.extra._no_weight_decay = True
            self.posenc = nn.Linear(4, 4)
            self.posenc_other = nn.Linear(4, 4)  # shares a prefix string, not a module path: not declared
            self.table = nn.Module()
            self.table.attn_bias_cache = nn.Parameter(torch.zeros(3, 3))

        def no_weight_decay(self):
            return ["pos_embed", "blocks.*.weight", "posenc"]

        def no_weight_decay_keywords(self):
            return ("bias_cache",)

    inv = wdmask_torch.describe(nn.parallel.DataParallel(Declaring()))
    assert {i.dotted for i in inv if i.declared} == {
        "pos_embed", "blocks.0.weight", "blocks.1.weight", "extra", "posenc.weight", "posenc.bias",
        "table.attn_bias_cache"}
    d = wdmask.decide(inv, presets.standard)
    assert not d[("extra",)].decay and d[("posenc_other", "weight")].decay


# --------------------------------------------------------------------------- anchors, re-implemented on the module tree


def anchor_timm(model):  # timm create_optimizer_v2 -> param_groups_weight_decay(no_weight_decay_list=...)
    nwd = set(getattr(model, "no_weight_decay", lambda: set())())
    return {n: not (p.ndim <= 1 or n.endswith(".bias") or any(fnmatch.fnmatch(n, pat) for pat in nwd))
            for n, p in model.named_parameters() if p.requires_grad}


def anchor_swin(model):  # microsoft/Swin-Transformer optimizer.py set_weight_decay(skip_list, skip_keywords)
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    keywords = set(getattr(model, "no_weight_decay_keywords", lambda: set())())
    return {n: not (len(p.shape) == 1 or n.endswith(".bias") or n in skip or any(k in n for k in keywords))
            for n, p in model.named_parameters() if p.requires_grad}


_HF_PATTERNS = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")]


def _hf_names(module):  # transformers trainer_pt_utils.get_parameter_names(model, [nn.LayerNorm], patterns)
    out = []
    for name, child in module.named_children():
        out += [f"{name}.{n}" for n in _hf_names(child)
                if not isinstance(child, nn.LayerNorm)
                and not any(p.search(f"{name}.{n}".lower()) for p in _HF_PATTERNS)]
    out += [k for k in module._parameters if not any(p.search(k.lower()) for p in _HF_PATTERNS)]
    return out


def anchor_hf(model):  # Trainer.create_optimizer: decay iff the name is in get_decay_parameter_names
    decay = set(_hf_names(model))
    return {n: n in decay for n, p in model.named_parameters() if p.requires_grad}


def anchor_mingpt(model):  # minGPT configure_optimizers; None where minGPT's own asserts would stop
    decay, no_decay = set(), set()
    for mn, m in model.named_modules():
        for pn, _ in m.named_parameters():
            fpn = f"{mn}.{pn}" if mn else pn
            if pn.endswith("bias"):
                no_decay.add(fpn)
            elif pn.endswith("weight") and isinstance(m, nn.Linear):
                decay.add(fpn)
            elif pn.endswith("weight") and isinstance(m, (nn.LayerNorm, nn.Embedding)):
                no_decay.add(fpn)
    no_decay.add("pos_emb")  # minGPT's special case for its loose position parameter
    return {n: (None if (n in decay) == (n in no_decay) else n in decay) for n, _ in model.named_parameters()}


def anchor_nanogpt(model):
    return {n: p.dim() >= 2 for n, p in model.named_parameters() if p.requires_grad}


_TV_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
             nn.LocalResponseNorm)


def anchor_torchvision(model, norm_weight_decay=0.0, custom_keys=()):  # references/classification/utils.py
    wd = 1.0
    groups: dict[int, set[float]] = {}

    def add(module, prefix=""):
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            value = None
            for key, key_wd in custom_keys:
                target = f"{prefix}.{name}" if prefix != "" and "." in key else name
                if key == target:
                    value = key_wd
                    break
            if value is None:
                value = norm_weight_decay if norm_weight_decay is not None and isinstance(module, _TV_NORMS) else wd
            groups.setdefault(id(p), set()).add(value)
        for child_name, child in module.named_children():
            add(child, f"{prefix}.{child_name}" if prefix != "" else child_name)

    add(model)
    out = {}
    for n, p in model.named_parameters():
        (value,) = groups[id(p)]  # a tensor in two groups would make torch raise
        out[n] = value
    return out


_D2_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
             nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)


def anchor_detectron2(model, weight_decay_norm=0.0, overrides=None):  # solver/build.py get_default_optimizer_params
    memo, by_id = set(), {}
    for _, module in model.named_modules():
        for pname, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in memo:
                continue
            memo.add(value)
            wd = 1.0
            if isinstance(module, _D2_NORMS) and weight_decay_norm is not None:
                wd = weight_decay_norm
            wd = (overrides or {}).get(pname, {}).get("weight_decay", wd)
            by_id[id(value)] = wd
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


def _wdmask(model, rules):
    inv = wdmask_torch.describe(model)
    d = wdmask.decide(inv, rules)
    return {i.dotted: d[i.path].multiplier for i in inv}


def _as_bool(mult):
    return {n: m != 0.0 for n, m in mult.items()}


# Where a preset knowingly differs from its anchor on these structures (see the README), per model.
KNOWN = {
    # timm's factory reads only no_weight_decay() names/patterns; wdmask's declarations add keywords, module
    # names and `_no_weight_decay` tensors (the Swin / flash-attention conventions; see test_swin_anchor_exact).
    ("timm", "swin"): {"layers.0.relative_position_bias_table", "layers.1.relative_position_bias_table"},
    ("timm", "flash"): {"mixer.A_log", "pos_block.0.weight"},
    # A custom LayerNorm class that does not subclass nn.LayerNorm (facebookresearch ConvNeXt) under a name
    # without "norm": isinstance-based anchors decay it, wdmask recognises it as a norm by its class name.
    ("hf", "convnext"): {"downsample_layers.0.weight"},
    ("torchvision", "convnext"): {"downsample_layers.0.weight", "downsample_layers.0.bias"},
    ("detectron2", "convnext"): {"downsample_layers.0.weight", "downsample_layers.0.bias"},
}


def _diff(got, want):
    assert got.keys() == want.keys()
    return {n for n in got if got[n] != want[n]}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_timm_anchor(model_name):
    model = MODELS[model_name]()
    assert _diff(_as_bool(_wdmask(model, presets.timm)), anchor_timm(model)) == KNOWN.get(("timm", model_name), set())


def test_swin_anchor_exact():  # timm's rule + no_weight_decay_keywords: what the preset does with declarations
    for model_name in MODELS:
        model = MODELS[model_name]()
        want = anchor_swin(model)
        got = _as_bool(_wdmask(model, presets.timm))
        known = {"flash": {"pos_block.0.weight", "mixer.A_log"},  # module name, `_no_weight_decay`: not Swin's
                 "nfnet": {"stages.0.skipinit_gain"}}  # 0-d: Swin tests len(shape) == 1, timm ndim <= 1
        assert _diff(got, want) == known.get(model_name, set())


@pytest.mark.parametrize("model_name", list(MODELS))
def test_hf_anchor(model_name):
    model = MODELS[model_name]()
    assert _diff(_as_bool(_wdmask(model, presets.hf)), anchor_hf(model)) == KNOWN.get(("hf", model_name), set())


@pytest.mark.parametrize("model_name", list(MODELS))
def test_nanogpt_anchor(model_name):
    model = MODELS[model_name]()
    assert _diff(_as_bool(_wdmask(model, presets.nanogpt)), anchor_nanogpt(model)) == set()


@pytest.mark.parametrize("model_name", list(MODELS))
def test_mingpt_anchor(model_name):
    model = MODELS[model_name]()
    want = anchor_mingpt(model)
    got = _as_bool(_wdmask(model, presets.mingpt))
    assert {n for n, w in want.items() if w is not None and got[n] != w} == set()
    # Where minGPT would stop (unclassified parameters), the preset decays only Linear-like/conv kernels.
    linear_like = set()
    for mn, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, real_conv1d())):
            linear_like.add(f"{mn}.weight")
        if isinstance(m, nn.MultiheadAttention):
            linear_like.add(f"{mn}.in_proj_weight")
    assert {n for n, w in want.items() if w is None and got[n]} == {n for n, w in want.items() if w is None} & linear_like


def real_conv1d():
    from tests.torch.real_models import Conv1D

    return Conv1D


@pytest.mark.parametrize("model_name", list(MODELS))
def test_torchvision_anchor(model_name):
    model = MODELS[model_name]()
    known = KNOWN.get(("torchvision", model_name), set())
    assert _diff(_wdmask(model, presets.torchvision), anchor_torchvision(model)) == known
    keys = [("bias", 0.0), *((k, 0.25) for k in presets.TORCHVISION_EMBEDDING_KEYS)]
    rules = presets.torchvision_rules(0.5, bias_multiplier=0.0, embedding_multiplier=0.25)
    got = _wdmask(model, rules)
    want = anchor_torchvision(model, norm_weight_decay=0.5, custom_keys=keys)
    assert _diff(got, want) == {n for n in known if not n.endswith("bias")}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_detectron2_anchor(model_name):
    model = MODELS[model_name]()
    known = KNOWN.get(("detectron2", model_name), set())
    assert _diff(_wdmask(model, presets.detectron2), anchor_detectron2(model)) == known
    rules = presets.detectron2_rules(0.0, bias_multiplier=0.5, overrides={"pos_embed": 0.0})
    got = _wdmask(model, rules)
    want = anchor_detectron2(model, 0.0, {"bias": {"weight_decay": 0.5}, "pos_embed": {"weight_decay": 0.0}})
    assert _diff(got, want) == {n for n in known if not n.endswith("bias")}


def test_standard_differs_from_every_anchor_only_where_documented():
    """The divergence table of the README, as data: per preset, the parameter categories it decays
    although ``standard`` does not (+) or does not decay although ``standard`` does (-)."""
    seen: dict[str, set[str]] = {}
    for cls in MODELS.values():
        model = cls()
        inv = wdmask_torch.describe(model)
        std = wdmask.decide(inv, presets.standard)
        for preset in ("timm", "hf", "mingpt", "nanogpt", "torchvision", "detectron2"):
            d = wdmask.decide(inv, presets.by_name(preset))
            for i in inv:
                a, b = std[i.path].decay, d[i.path].decay
                if a != b:
                    category = f"{'+' if b else '-'}{i.layer}/{i.role}{'/declared' if i.declared else ''}"
                    seen.setdefault(preset, set()).add(category)
    common = {"+conv/gain", "+embedding/position", "+other/gain", "+other/token"}  # ndim/name rules miss them
    declared = {"+other/token/declared", "+other/position/declared", "+other/other/declared",
                "+conv/kernel/declared"}
    assert seen == {
        "timm": common | {"+other/bias", "+other/position"},  # 3-D Affine beta; 2-D bias table; reg_token
        "nanogpt": common | declared | {"+other/bias", "+other/position"},
        "hf": common | declared | {"+other/bias", "+norm.batch/scale", "+norm.rms/scale"},
        "torchvision": common | declared | {"+other/bias", "+other/position", "+conv/bias", "+conv/bias/declared",
                                             "+linear/bias", "+norm.rms/scale"},
        "detectron2": common | declared | {"+other/bias", "+other/position", "+conv/bias", "+conv/bias/declared",
                                            "+linear/bias", "+norm.rms/scale"},
        "mingpt": {"+conv/kernel/declared", "-embedding/embedding"},
    }


# --------------------------------------------------------------------------- describe at scale


@pytest.mark.parametrize("model_name", list(MODELS))
def test_meta_device_models_describe_like_real_ones(model_name):
    real = wdmask_torch.describe(MODELS[model_name]())
    with torch.device("meta"):
        model = MODELS[model_name]()
    assert all(p.is_meta for p in model.parameters())
    assert wdmask_torch.describe(model) == real
    groups = wdmask_torch.groups(model, presets.standard, weight_decay=0.1)
    assert sum(len(g["params"]) for g in groups) == len(real)


def test_meta_device_feeds_norm_with_example_inputs():
    with torch.device("meta"):
        model = MODELS["bnact"]()
        x = torch.empty(1, 3, 8, 8)
    inv = {i.dotted: i.feeds_norm for i in wdmask_torch.describe(model, example_inputs=x)}
    assert inv["conv1.weight"] is True and inv["conv2.weight"] is True and inv["fc.weight"] is False


def test_describe_never_runs_forward_without_example_inputs():
    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            raise AssertionError("forward must not run")

    assert [i.feeds_norm for i in wdmask_torch.describe(Exploding())] == [None, None]
    wdmask_torch.groups(Exploding(), presets.standard)
