"""Depths come from the one traced forward pass of ``describe``: ``groups``/``audit``/``infer_rules`` with
``presets.layer_decay`` and ``example_inputs`` run the model once (before: the usage trace plus a second pass for
the call order), and a traced inventory carries the depths every entry point then uses."""

from __future__ import annotations

import torch
from torch import nn

import wdmask_torch
from tests.torch.policy_models import ViT, mae_layer_id
from wdmask import presets

RULES = presets.standard + presets.layer_decay(0.5)
X = torch.zeros(2, 3)


class Counted(nn.Module):
    """The head is registered before the blocks but runs after them; ``calls`` counts forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.embed = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = self.embed(x)
        for b in self.blocks:
            x = torch.relu(b(x))
        return self.head(x)


# depth by hand: embed before the blocks (0), blocks 1 and 2, the head after them (3) although registered first
DEPTHS = {"head.weight": 3, "head.bias": 3, "embed.weight": 0, "embed.bias": 0, "blocks.0.weight": 1,
          "blocks.0.bias": 1, "blocks.1.weight": 2, "blocks.1.bias": 2}


def test_describe_runs_once_and_fills_depth_from_the_traced_order():
    model = Counted()
    inv = wdmask_torch.describe(model, X)
    assert model.calls == 1
    assert {i.dotted: i.depth for i in inv} == DEPTHS
    assert {i.depth_max for i in inv} == {3}
    assert all(i.depth is None for i in wdmask_torch.describe(model))  # no trace: nothing ordered, nothing run


def test_groups_audit_infer_with_layer_decay_run_the_forward_once():
    model = Counted()
    groups = wdmask_torch.groups(model, RULES, lr=1.0, example_inputs=X)
    assert model.calls == 1  # was 2: the usage trace and a second pass for call_order
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert {n: scale[id(p)] for n, p in names.items()} == {n: 0.5 ** (3 - d) for n, d in DEPTHS.items()}
    model.calls = 0
    opt = torch.optim.AdamW(groups, lr=1.0)
    # audit reads the traced depths too (before: registration order, head before the blocks -> a false mismatch)
    assert wdmask_torch.audit(opt, model, RULES, example_inputs=X).ok
    assert model.calls == 1
    inferred = wdmask_torch.infer_rules(opt, model, example_inputs=X)
    assert model.calls == 2
    assert [r.lr_decay for r in inferred.rules if r.lr_decay is not None] == [0.5]


def test_an_inventory_given_runs_nothing_and_keeps_its_depths():
    model = Counted()
    inv = wdmask_torch.describe(model, X)
    model.calls = 0
    groups = wdmask_torch.groups(model, RULES, lr=1.0, inventory=inv)
    assert wdmask_torch.audit(torch.optim.AdamW(groups, lr=1.0), model, RULES, inventory=inv).ok
    assert model.calls == 0
    assert next(g["lr_scale"] for g in groups for p in g["params"] if p is model.head.weight) == 1.0


def test_call_order_is_one_traced_pass():
    model = Counted()
    assert wdmask_torch.call_order(model, X) == [(), ("embed",), ("blocks", "0"), ("blocks", "1"), ("head",)]
    assert model.calls == 1


def test_vit_depths_are_mae_layer_ids_and_frozen_blocks_keep_their_depth():
    torch.manual_seed(0)
    model = ViT(depth=4)
    x = torch.randn(1, 3, 8, 8)
    num_layers = len(model.blocks) + 1
    assert {i.dotted: i.depth for i in wdmask_torch.describe(model, x)} == {
        n: mae_layer_id(n, num_layers) for n, _ in model.named_parameters()}
    for p in [*model.patch_embed.parameters(), *model.blocks[0].parameters()]:
        p.requires_grad_(False)
    # MAE's ids count blocks by index whether trained or not: a frozen first block still takes depth 1
    assert {i.dotted: i.depth for i in wdmask_torch.describe(model, x)} == {
        n: mae_layer_id(n, num_layers) for n, p in model.named_parameters() if p.requires_grad}


class WithAux(Counted):
    """An auxiliary head the traced forward never runs (used only in some training step, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.aux_head = nn.Linear(4, 2)


def test_a_module_the_trace_never_ran_gets_a_reported_guess_not_a_silent_depth():
    import warnings

    import pytest

    from wdmask import UnclassifiedWarning
    from wdmask._errors import RuleError

    model = WithAux()
    inv = {str(i): i for i in wdmask_torch.describe(model, example_inputs=X)}
    assert inv["aux_head.weight"].depth is None  # unknown: its module did not run
    assert {p: inv[p].depth for p in DEPTHS} == DEPTHS  # the others come from the traced order
    with pytest.warns(UnclassifiedWarning, match=r"did not run in the traced forward pass.*aux_head\.weight"):
        groups = wdmask_torch.groups(model, RULES, weight_decay=0.1, lr=1.0, example_inputs=X)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(model.aux_head.weight)] == 1.0  # placed by name after the blocks (depth_max): multiplier 1
    with pytest.raises(RuleError, match="aux_head"):
        wdmask_torch.groups(model, RULES, weight_decay=0.1, lr=1.0, example_inputs=X, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rules that read no depth: nothing to guess, nothing said
        wdmask_torch.groups(model, presets.standard, weight_decay=0.1, example_inputs=X)
