"""Entry points take an inventory built once: ``groups``/``audit``/``infer_rules(inventory=describe(...))``
give what describing with the same example inputs gives, and an inventory of another model is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wdmask
import wdmask_torch
from wdmask import presets


class Block(nn.Module):  # the README's model: cls, table and lambda1 are classified by the graph only
    def __init__(self, dim=8, tokens=4):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.table = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.proj = nn.Linear(dim, dim)
        self.lambda1 = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.table
        return x + self.lambda1 * self.proj(x)


def _names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in groups]


def test_groups_from_an_inventory_equal_groups_from_example_inputs():
    model, x = Block(), torch.zeros(2, 4, 8)
    inv = wdmask_torch.describe(model, example_inputs=x)
    got = _names(model, wdmask_torch.groups(model, presets.standard, weight_decay=0.05, inventory=inv))
    assert got == [(0.0, ["cls", "table", "lambda1", "proj.bias"]), (0.05, ["proj.weight"])]
    assert got == _names(model, wdmask_torch.groups(model, presets.standard, weight_decay=0.05, example_inputs=x))


def test_audit_and_infer_rules_read_the_same_inventory():
    model, x = Block(), torch.zeros(2, 4, 8)
    inv = wdmask_torch.describe(model, example_inputs=x)
    opt = torch.optim.AdamW(wdmask_torch.groups(model, weight_decay=0.05, inventory=inv), lr=1e-3)
    assert wdmask_torch.audit(opt, model, inventory=inv).ok
    assert not wdmask_torch.audit(opt, model).ok  # without the graph, cls/table/lambda1 read as decayed
    rebuilt = wdmask_torch.infer_rules(opt, model, inventory=inv)
    assert {str(i): d.multiplier for i, d in zip(inv, wdmask.decide(inv, rebuilt.rules).values(), strict=True)} == {
        "cls": 0.0, "table": 0.0, "proj.weight": 1.0, "proj.bias": 0.0, "lambda1": 0.0}


def test_an_inventory_of_another_model_is_refused():
    other = wdmask_torch.describe(Block(dim=4), example_inputs=torch.zeros(2, 4, 4))
    with pytest.raises(wdmask.MaskError, match=r"`inventory` does not describe these parameters: cls has shape"):
        wdmask_torch.groups(Block(), inventory=other)
    with pytest.raises(TypeError, match="`inventory=` or `example_inputs=`, not both"):
        wdmask_torch.groups(Block(), inventory=other, example_inputs=torch.zeros(2, 4, 8))
    with pytest.raises(TypeError, match="must be a list of ParamInfo"):
        wdmask_torch.groups(Block(), inventory="model.pt")
