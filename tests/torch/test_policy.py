"""torch side of per-parameter policy: groups with lr multipliers and labels, ``optimizers`` (Muon + AdamW)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import wdmask
import wdmask_torch
from tests.torch.policy_models import GPT, ViT, mae_param_groups_lrd, timm_param_groups_layer_decay
from wdmask import Rule, Rules, presets

X_VIT = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
IDX = torch.randint(0, 16, (2, 6), generator=torch.Generator().manual_seed(2))


def _per_param(groups: list[dict]) -> dict[int, tuple[float, float]]:
    return {id(p): (g["weight_decay"], g["lr_scale"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("traced", [False, True], ids=["registration", "traced"])
def test_groups_reproduce_mae_param_groups_lrd_on_a_vit(traced):
    torch.manual_seed(0)
    model = ViT(depth=4)
    ours = wdmask_torch.groups(model, presets.standard + presets.layer_decay(0.75), weight_decay=0.05, lr=1e-3,
                               example_inputs=X_VIT if traced else None)
    mae = mae_param_groups_lrd(model, 0.05, model.no_weight_decay(), 0.75)
    assert _per_param(ours) == _per_param(mae)
    assert len(ours) == len(mae)  # one group per distinct (weight decay, lr)
    for g in ours:
        assert g["lr"] == 1e-3 * g["lr_scale"]


class HeadFirst(nn.Module):
    """The head is registered before the blocks but runs after them: only a trace knows."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.embed = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for b in self.blocks:
            x = torch.relu(b(x))
        return self.head(x)


def test_traced_call_order_places_a_head_registered_first():
    model = HeadFirst()
    rules = presets.standard + presets.layer_decay(0.5)

    def scale_of(groups: list[dict]) -> float:
        return next(g["lr_scale"] for g in groups for p in g["params"] if p is model.head.weight)

    assert wdmask_torch.call_order(model, torch.zeros(2, 3)) == [(), ("embed",), ("blocks", "0"), ("blocks", "1"),
                                                                 ("head",)]
    assert scale_of(wdmask_torch.groups(model, rules, lr=1.0)) == 0.5 ** 3  # registration: before the blocks
    assert scale_of(wdmask_torch.groups(model, rules, lr=1.0, example_inputs=torch.zeros(2, 3))) == 1.0


def test_groups_need_lr_for_lr_multipliers():
    with pytest.raises(ValueError, match=r"learning-rate multiplier 0\.5 .*pass `lr=`"):
        wdmask_torch.groups(ViT(), presets.standard + presets.layer_decay(0.5))
    with pytest.raises(TypeError, match=r"`lr` must be a finite real number >= 0, got str"):
        wdmask_torch.groups(ViT(), presets.standard, lr="1")


def test_groups_without_policy_rules_are_unchanged():
    model = ViT()
    before = wdmask_torch.groups(model, presets.standard, weight_decay=0.05)
    assert [sorted(g) for g in before] == [["params", "weight_decay"]] * 2
    assert [sorted(g) for g in wdmask_torch.groups(model, presets.standard, weight_decay=0.05, lr=0.1)] == [
        ["lr", "params", "weight_decay"]] * 2


MUON = presets.standard + presets.muon


def _factories() -> dict:
    return {"muon": lambda g: torch.optim.Muon(g, momentum=0.9), "adamw": lambda g: torch.optim.AdamW(g)}


def _gpt_labels(model: GPT) -> dict[str, str]:
    opts = wdmask_torch.optimizers(model, MUON, _factories(), weight_decay=0.1, lr=0.02, example_inputs=IDX)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: label for label, o in opts.optimizers.items() for g in o.param_groups for p in g["params"]}


def test_muon_labels_on_a_gpt():
    labels = _gpt_labels(GPT())
    muon = sorted(n for n, lab in labels.items() if lab == "muon")
    assert muon == sorted(f"transformer.h.{i}.{m}.weight" for i in range(2)
                          for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))
    # the tied embedding / head, the position table, norms and biases: AdamW
    assert labels["transformer.wte.weight"] == labels["transformer.wpe.weight"] == "adamw"
    assert labels["transformer.ln_f.weight"] == labels["transformer.h.0.attn.qkv.bias"] == "adamw"


def _loss(model: nn.Module) -> torch.Tensor:
    return model(IDX).square().mean()


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()


def test_optimizers_step_like_hand_built_muon_and_adamw():
    torch.manual_seed(0)
    a = GPT()
    b = copy.deepcopy(a)
    opts = wdmask_torch.optimizers(a, MUON, _factories(), weight_decay=0.1, lr=0.02, example_inputs=IDX)
    assert isinstance(opts, torch.optim.Optimizer) and sorted(opts.optimizers) == ["adamw", "muon"]
    muon_names = {f"transformer.h.{i}.{m}.weight" for i in range(2)
                  for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    named = list(b.named_parameters())
    hand_muon = torch.optim.Muon([p for n, p in named if n in muon_names], lr=0.02, weight_decay=0.1, momentum=0.9)
    decayed = [p for n, p in named if n == "transformer.wte.weight"]
    rest = [p for n, p in named if n not in muon_names and n != "transformer.wte.weight"]
    hand_adamw = torch.optim.AdamW([{"params": rest, "weight_decay": 0.0}, {"params": decayed, "weight_decay": 0.1}],
                                   lr=0.02)
    _train(a, opts, 3)
    for _ in range(3):
        hand_muon.zero_grad()
        hand_adamw.zero_grad()
        _loss(b).backward()
        hand_muon.step()
        hand_adamw.step()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_optimizers_state_dict_round_trip():
    torch.manual_seed(0)
    a = GPT()
    b = copy.deepcopy(a)
    opt_a = wdmask_torch.optimizers(a, MUON, _factories(), weight_decay=0.1, lr=0.02)
    _train(a, opt_a, 2)
    saved_model, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict())
    assert saved_opt["labels"] == ["adamw", "muon"]
    _train(a, opt_a, 2)
    b.load_state_dict(saved_model)
    opt_b = wdmask_torch.optimizers(b, MUON, _factories(), weight_decay=0.1, lr=0.02)
    opt_b.load_state_dict(saved_opt)
    _train(b, opt_b, 2)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match=r"the state holds optimizers \['adamw'\]"):
        opt_b.load_state_dict({"labels": ["adamw"], "optimizers": {}})


@pytest.mark.parametrize("make", [lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 0.5 ** s),
                                  lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4)],
                         ids=["LambdaLR", "CosineAnnealingLR"])
def test_schedulers_schedule_every_group_and_keep_ratios(make):
    torch.manual_seed(0)
    model = GPT()
    rules = MUON + presets.layer_decay(0.5)
    opts = wdmask_torch.optimizers(model, rules, _factories(), weight_decay=0.1, lr=0.02)
    initial = [g["lr"] for g in opts.param_groups]
    assert len(set(initial)) > 2  # several lr multipliers across both optimizers
    sched = make(opts)
    for step in range(1, 4):
        _train(model, opts, 1)
        sched.step()
        factors = {round(g["lr"] / lr0, 12) for g, lr0 in zip(opts.param_groups, initial, strict=True)}
        assert len(factors) == 1 and factors != {1.0}, step  # every group scheduled, by the same factor
    # the inner optimizers' groups are the ones scheduled
    assert [g["lr"] for o in opts.optimizers.values() for g in o.param_groups] == [g["lr"] for g in opts.param_groups]


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_conv_kernels_labelled_muon_are_rerouted_not_crashing():
    model = ConvNet()
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"2 parameter\(s\) .*not 2-D and go to 'adamw'.*"
                                                        r"blocks\.0\.weight \(4, 4, 3, 3\)"):
        opts = wdmask_torch.optimizers(model, MUON, _factories(), weight_decay=0.1, lr=0.02)
    assert [(r.path, r.label, r.to) for r in opts.rerouted] == [("blocks.0.weight", "muon", "adamw"),
                                                                ("blocks.1.weight", "muon", "adamw")]
    assert "muon" not in opts.optimizers  # nothing 2-D was left for Muon
    decays = {id(p): g["weight_decay"] for g in opts.param_groups for p in g["params"]}
    assert decays[id(model.blocks[0].weight)] == 0.1  # rerouted with its own weight decay
    with pytest.raises(ValueError, match=r"labelled 'muon' are not 2-D \(e.g. 'blocks.0.weight' \(4, 4, 3, 3\)\)"):
        wdmask_torch.optimizers(model, MUON, _factories(), fallback=None, weight_decay=0.1, lr=0.02)


def test_optimizers_errors():
    with pytest.raises(ValueError, match=r"get no optimizer label.*Rule\(optimizer='adamw'\)"):
        wdmask_torch.optimizers(GPT(), Rules([*presets.standard, Rule(role="kernel", optimizer="muon")]), _factories())
    with pytest.raises(ValueError, match=r"no optimizer for 'muon'; valid labels here: \['adamw'\]"):
        wdmask_torch.optimizers(GPT(), MUON, {"adamw": torch.optim.AdamW}, example_inputs=IDX)


def _layer_of_vit(model: ViT) -> tuple[dict[str, int], int]:
    """timm's ViT layer ids (group_matcher: stem 0, blocks i+1, the rest last), written out by hand."""
    n = len(model.blocks)
    out = {}
    for name, _ in model.named_parameters():
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            out[name] = 0
        elif name.startswith("blocks."):
            out[name] = int(name.split(".")[1]) + 1
        else:
            out[name] = n + 1
    return out, n + 2


def test_audit_and_infer_a_timm_layer_decay_optimizer():
    torch.manual_seed(0)
    model = ViT(depth=4)
    layer_of, num_layers = _layer_of_vit(model)
    timm_groups = timm_param_groups_layer_decay(model, 0.05, model.no_weight_decay(), 0.75, layer_of, num_layers)
    opt = torch.optim.AdamW(timm_groups, lr=1e-3)
    assert wdmask_torch.audit(opt, model, presets.standard + presets.layer_decay(0.75)).ok
    bad = wdmask_torch.audit(opt, model, presets.standard + presets.layer_decay(0.5))
    assert not bad.ok and "blocks.0.attn.qkv.weight" in {r.path for r in bad.mismatches}
    row = next(r for r in bad.rows if r.path == "blocks.0.attn.qkv.weight")
    assert (row.expected_lr, row.actual_lr) == (0.5 ** 4, 0.75 ** 4)
    inferred = wdmask_torch.infer_rules(opt, model)
    assert [r.lr_decay for r in inferred.rules if r.lr_decay is not None] == [0.75]
    rebuilt = wdmask_torch.groups(model, inferred.rules, weight_decay=inferred.weight_decay, lr=1e-3)
    assert _per_param(rebuilt) == _per_param(timm_groups)


def test_audit_and_infer_a_hand_made_muon_adamw_split():
    model = GPT()
    named = dict(model.named_parameters())
    matrices = [p for n, p in named.items() if p.ndim == 2 and ".h." in n]
    rest = [p for p in model.parameters() if all(p is not q for q in matrices)]
    split = {"muon": torch.optim.Muon(matrices, lr=0.02), "adamw": torch.optim.AdamW(rest, lr=1e-3, weight_decay=0.1)}
    rules = presets.all + presets.muon
    assert wdmask_torch.audit(split, model, rules).ok
    inferred = wdmask_torch.infer_rules(split, model)
    labels = {r.optimizer for r in inferred.rules if r.optimizer is not None}
    assert labels == {"muon", "adamw"}
    opts = wdmask_torch.optimizers(model, inferred.rules, _factories(), weight_decay=inferred.weight_decay)
    assert {label: sorted(id(p) for g in o.param_groups for p in g["params"]) for label, o in opts.optimizers.items()} \
        == {"muon": sorted(map(id, matrices)), "adamw": sorted(map(id, rest))}
