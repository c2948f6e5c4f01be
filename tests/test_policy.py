"""Per-parameter policy beyond decay: lr / lr_decay / optimizer actions, each cascading on its own; depth."""

from __future__ import annotations

import warnings

import pytest

import wdmask
from wdmask import ParamInfo, Rule, Rules, presets
from wdmask._depth import blocks_of, with_depth


def _inv(*specs: tuple[str, tuple[int, ...], str, str]) -> list[ParamInfo]:
    return [ParamInfo(tuple(p.split(".")), shape, layer=layer, role=role) for p, shape, layer, role in specs]


VIT = _inv(("cls_token", (1, 1, 8), "other", "token"), ("pos_embed", (1, 5, 8), "other", "position"),
           ("patch_embed.proj.weight", (8, 3, 2, 2), "conv", "kernel"), ("patch_embed.proj.bias", (8,), "conv", "bias"),
           *[x for i in range(3) for x in ((f"blocks.{i}.norm1.weight", (8,), "norm.layer", "scale"),
                                           (f"blocks.{i}.attn.qkv.weight", (24, 8), "linear", "kernel"),
                                           (f"blocks.{i}.mlp.fc1.weight", (16, 8), "linear", "kernel"),
                                           (f"blocks.{i}.mlp.fc2.weight", (8, 16), "linear", "kernel"))],
           ("norm.weight", (8,), "norm.layer", "scale"), ("head.weight", (10, 8), "linear", "kernel"),
           ("head.bias", (10,), "linear", "bias"))


def test_each_setting_cascades_on_its_own():
    rules = Rules([Rule(role="kernel", decay=True, lr=2.0), Rule(path="head.*", lr=10.0),
                   Rule(path="head.*", optimizer="adamw"), Rule(role="bias", decay=False),
                   Rule(layer="linear", role="kernel", optimizer="muon")])
    d = wdmask.decide(VIT, rules)
    head_w, head_b = d[("head", "weight")], d[("head", "bias")]
    # head.weight: decay from rule 0 (the lr-only rule 1 never overrides it), lr from rule 1, optimizer from rule 4
    assert (head_w.multiplier, head_w.rule, head_w.lr, head_w.optimizer) == (1.0, 0, 10.0, "muon")
    assert head_w.winners() == {"decay": 0, "lr": 1, "lr_decay": None, "optimizer": 4}
    assert (head_b.multiplier, head_b.rule, head_b.lr, head_b.optimizer) == (0.0, 3, 10.0, "adamw")
    qkv = d[("blocks", "1", "attn", "qkv", "weight")]
    assert (qkv.multiplier, qkv.lr, qkv.optimizer, qkv.lr_rule) == (1.0, 2.0, "muon", 0)
    cls = d[("cls_token",)]
    assert (cls.multiplier, cls.rule, cls.lr, cls.optimizer) == (1.0, None, 1.0, None)


def test_presets_keep_their_decisions_when_policy_rules_are_added():
    for name in presets.names:
        base = wdmask.decide(VIT, presets.by_name(name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            more = wdmask.decide(VIT, presets.by_name(name) + presets.layer_decay(0.5) + presets.muon)
        assert {p: (x.multiplier, x.rule, x.reason) for p, x in base.items()} == {
            p: (x.multiplier, x.rule, x.reason) for p, x in more.items()}, name


def mae_layer_id(name: str, num_layers: int) -> int:
    """MAE util/lr_decay.py get_layer_id_for_vit, written out independently."""
    if name in ("cls_token", "pos_embed"):
        return 0
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def test_layer_decay_is_mae_on_a_vit_inventory():
    num_layers = 3 + 1
    d = wdmask.decide(VIT, presets.standard + presets.layer_decay(0.75))
    for info in VIT:
        want = 0.75 ** (num_layers - mae_layer_id(info.dotted, num_layers))
        assert d[info.path].lr == pytest.approx(want, rel=1e-15, abs=0), info.dotted


def test_stacked_leaf_gets_one_lr_per_slice():
    inv = [ParamInfo(("embed", "embedding"), (50, 8), layer="embedding", role="embedding"),
           ParamInfo(("layers", "mlp", "kernel"), (4, 8, 8), layer="linear", role="kernel", stacked=1),
           ParamInfo(("layers", "ln", "scale"), (4, 8), layer="norm.layer", role="scale", stacked=1),
           ParamInfo(("final_norm", "scale"), (8,), layer="norm.layer", role="scale")]
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"depth of 2 parameter\(s\).*embed.embedding, "
                                                        r"final_norm.scale"):
        got = with_depth(inv)
    assert [i.depth for i in got] == [0, (1, 2, 3, 4), (1, 2, 3, 4), 5]
    assert got[1].depth_max == 5 and got[1].in_block and not got[0].in_block and not got[3].in_block
    d = wdmask.decide(got, presets.layer_decay(0.5))
    assert d[("layers", "mlp", "kernel")].lr == (0.5 ** 4, 0.5 ** 3, 0.5 ** 2, 0.5)
    assert d[("embed", "embedding")].lr == 0.5 ** 5 and d[("final_norm", "scale")].lr == 1.0


def _paths(*names: str) -> list[ParamInfo]:
    """Kernels ``weight`` (2-D, ``@4`` suffix: 4-D), norm gains ``gain`` and biases (1-D)."""
    out = []
    for n in names:
        n, _, rank = n.partition("@")
        out.append(ParamInfo(tuple(n.split(".")), (4,) * int(rank or (2 if n.endswith("weight") else 1))))
    return out


STRUCTURES = {
    # BERT: embeddings, encoder.layer.N, pooler
    "bert": (_paths("embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight",
                    "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight",
                    "encoder.layer.1.attention.self.query.weight", "encoder.layer.1.output.dense.weight",
                    "pooler.dense.weight"), [0, 0, 1, 1, 2, 2, 3]),
    # GPT-2: transformer.h.N, tied head listed once
    "gpt": (_paths("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
                   "transformer.h.0.mlp.c_fc.weight", "transformer.h.1.attn.c_attn.weight",
                   "transformer.h.1.mlp.c_fc.weight", "transformer.ln_f.weight"), [0, 0, 1, 1, 2, 2, 3]),
    # Swin: stages of blocks; a stage's downsample at its end stays within the stage's depths
    "swin": (_paths("patch_embed.proj.weight", "layers.0.blocks.0.attn.qkv.weight", "layers.0.blocks.0.mlp.weight",
                    "layers.0.blocks.1.attn.qkv.weight", "layers.0.blocks.1.mlp.weight",
                    "layers.0.downsample.reduction.weight", "layers.1.blocks.0.attn.qkv.weight",
                    "layers.1.blocks.0.mlp.weight", "layers.1.blocks.1.attn.qkv.weight",
                    "layers.1.blocks.1.mlp.weight", "norm.weight", "head.fc.weight"),
             [0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5]),
    # ConvNeXt (timm): stem, stages.i.downsample then stages.i.blocks.j
    "convnext": (_paths("stem.0.weight@4", "stem.0.bias", "stem.1.gain", "stem.1.bias",
                        "stages.0.blocks.0.conv_dw.weight@4", "stages.0.blocks.0.mlp.fc1.weight",
                        "stages.0.blocks.1.conv_dw.weight@4", "stages.0.blocks.1.mlp.fc1.weight",
                        "stages.1.downsample.0.gain", "stages.1.downsample.1.weight@4",
                        "stages.1.blocks.0.conv_dw.weight@4", "stages.1.blocks.0.mlp.fc1.weight",
                        "stages.1.blocks.1.conv_dw.weight@4", "stages.1.blocks.1.mlp.fc1.weight", "head.fc.weight"),
                 [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 5]),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_depth_from_structure(name):
    inv, want = STRUCTURES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # registration order is known: no guesses
        assert [i.depth for i in with_depth(inv)] == want


def test_mlp_sequential_inside_a_block_is_not_a_stage():
    inv = _paths(*[f"blocks.{i}.{p}" for i in range(2) for p in ("norm.gain", "norm.bias", "attn.weight", "attn.bias",
                                                                   "mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
                                                                   "mlp.2.bias")])
    assert [".".join(b) for b in blocks_of(inv)] == ["blocks.0", "blocks.1"]


def test_traced_order_beats_registration_order():
    # a head registered before the blocks but called after them
    inv = _paths("head.weight", "embed.weight", "blocks.0.w.weight", "blocks.1.w.weight")
    assert [i.depth for i in with_depth(inv)] == [0, 0, 1, 2]
    order = [(), ("embed",), ("blocks",), ("blocks", "0"), ("blocks", "0", "w"), ("blocks", "1"),
             ("blocks", "1", "w"), ("head",)]
    assert [i.depth for i in with_depth(inv, order)] == [3, 0, 1, 2]


def test_given_depth_is_kept():
    inv = [ParamInfo(("a",), (2, 2), depth=4), ParamInfo(("b",), (2, 2), depth=(1, 2))]
    out = with_depth(inv)
    assert [i.depth for i in out] == [4, (1, 2)] and out[0].depth_max == 4


BAD_ACTIONS = {
    "lr_negative": ({"role": "bias", "lr": -1.0}, r"`lr`: must be a finite number >= 0, got -1.0"),
    "lr_nan": ({"role": "bias", "lr": float("nan")}, r"`lr`: must be a finite number >= 0"),
    "lr_str": ({"role": "bias", "lr": "1"}, r"`lr`: must be a finite number >= 0, got '1'"),
    "lr_decay_zero": ({"lr_decay": 0.0}, r"`lr_decay`: must be a finite number in \(0, 1\], got 0.0"),
    "lr_decay_big": ({"lr_decay": 1.5}, r"`lr_decay`: must be a finite number in \(0, 1\]"),
    "optimizer_empty": ({"role": "bias", "optimizer": " "}, r"`optimizer`: must be a non-empty label"),
    "optimizer_int": ({"role": "bias", "optimizer": 3}, r"`optimizer`: must be a non-empty label"),
    "no_action": ({"role": "bias"}, r"no action; add decay=True/False or multiplier=.*lr=, lr_decay=, optimizer="),
}


@pytest.mark.parametrize("data,match", BAD_ACTIONS.values(), ids=list(BAD_ACTIONS))
def test_bad_policy_actions(data, match):
    with pytest.raises(wdmask.RuleError, match=match):
        Rules([data])


@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
def test_policy_actions_round_trip_through_files(fmt):
    rules = presets.standard + presets.layer_decay(0.75) + presets.muon + [Rule(path="head.**", lr=10, why="head")]
    text = wdmask.dumps(rules, fmt)
    back = wdmask.loads(text, fmt)
    assert back == rules
    assert back[-1].lr == 10.0 and back[5].lr_decay == 0.75 and back[7].optimizer == "muon"
    assert back[7].in_block is True


def test_explain_shows_lr_and_optimizer_columns_only_when_in_use():
    def header(table) -> list[str]:
        from wdmask._report import render_text

        lines = render_text(table.table(width=200), 200).splitlines()
        return next(line for line in lines if line.lstrip().startswith("path")).split()

    assert "lr" not in header(wdmask.explain(VIT, presets.standard))
    assert "optimizer" not in header(wdmask.explain(VIT, presets.standard))
    table = wdmask.explain(VIT, presets.standard + presets.layer_decay(0.5) + presets.muon)
    assert header(table)[5:8] == ["decay", "lr", "optimizer"]
    row = next(r for r in table if r.path == "blocks.0.attn.qkv.weight")
    assert (row.lr, row.optimizer) == (0.5 ** 3, "muon")
    assert next(r for r in table if r.path == "head.weight").optimizer == "adamw"
    assert next(r for r in table if r.path == "patch_embed.proj.weight").optimizer == "adamw"
