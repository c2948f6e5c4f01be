"""Each preset against an independent re-statement of its anchor's published rule."""

import re

import pytest

import wdmask
from wdmask import _examples, presets


def _inventory():
    return _examples.resnet() + _examples.transformer()


def _timm(info):  # timm param_groups_weight_decay
    return not (len(info.shape) <= 1 or info.dotted.endswith(".bias") or info.declared == "no_decay")


def _nanogpt(info):  # nanoGPT configure_optimizers
    return len(info.shape) >= 2


def _hf(info):  # transformers Trainer.get_decay_parameter_names (LayerNorm type + name patterns)
    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    return info.layer != "norm.layer" and not any(re.search(p, info.dotted.lower()) for p in patterns)


def _mingpt(info):  # minGPT: only weights of whitelisted Linear (and conv) modules
    return info.dotted.endswith("weight") and info.module_type in ("torch.nn.Linear", "torch.nn.Conv2d")


def _torchvision(info):  # set_weight_decay with norm_weight_decay=0; its norm_classes have no RMSNorm
    return info.layer not in ("norm.batch", "norm.layer", "norm.group", "norm.instance")


def _standard(info):
    return not (info.layer.startswith("norm.") or info.dotted.endswith("bias"))


def _all(info):
    return True


ANCHORS = {"timm": _timm, "nanogpt": _nanogpt, "hf": _hf, "mingpt": _mingpt, "torchvision": _torchvision,
           "detectron2": _torchvision, "standard": _standard, "all": _all}


@pytest.mark.parametrize("name", list(ANCHORS))
def test_preset_reproduces_anchor(name):
    inv = _inventory()
    decisions = wdmask.decide(inv, presets.by_name(name))
    got = {i.dotted: decisions[i.path].decay for i in inv}
    want = {i.dotted: ANCHORS[name](i) for i in inv}
    assert got == want


def test_hf_quirk_decays_rmsnorm_not_named_norm():
    inv = _examples.transformer()
    d = wdmask.decide(inv, presets.hf)
    assert d[("blocks", "0", "ln2", "weight")].decay  # HF recognises LayerNorm by type only
    assert not d[("blocks", "0", "ln1", "weight")].decay


def test_scale_invariant_excludes_kernels_feeding_norm():
    inv = _examples.resnet()
    d = wdmask.decide(inv, presets.standard_scale_invariant)
    assert [i.dotted for i in inv if d[i.path].decay] == ["fc.weight"]


def test_parameterized_anchor_presets():
    inv = _examples.resnet()
    tv = wdmask.decide(inv, presets.torchvision_rules(norm_multiplier=0.1, bias_multiplier=0.0))
    assert tv[("bn1", "weight")].multiplier == 0.1
    assert tv[("bn1", "bias")].multiplier == 0.0 and tv[("fc", "bias")].multiplier == 0.0
    d2 = wdmask.decide(inv, presets.detectron2_rules(bias_multiplier=0.5))
    assert d2[("bn1", "weight")].multiplier == 0.0 and d2[("bn1", "bias")].multiplier == 0.5
    assert d2[("conv1", "weight")].multiplier == 1.0


def test_every_preset_named_and_documented():
    for name in presets.names:
        rules = presets.by_name(name)
        assert isinstance(rules, wdmask.Rules) and rules.name == name
        assert all(r.why for r in rules), name
