"""audit(): an existing optimizer's per-parameter weight decay vs the rules."""

import pytest
import torch
from torch import nn

import wdmask
import wdmask_torch
from tests.torch import models as tm
from tests.torch.models import substring_groups


def test_plain_sgd_decays_bn_and_biases() -> None:
    model = tm.resnet("basic")
    report = wdmask_torch.audit(torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4), model)
    assert not report.ok and report.reference == 1e-4
    flagged = [r.path for r in report.mismatches]
    assert flagged == [n for n, p in model.named_parameters() if "bn" in n or "downsample.1" in n or n == "fc.bias"]
    assert all(r.reason.startswith("decayed; rules: ") for r in report.mismatches)
    assert not report.missing and not report.duplicates and not report.foreign
    text = str(report)
    assert "audit FAILED vs rules 'standard': 13 mismatched of 20 parameters" in text
    assert "layer2.0.downsample.1.weight" in text and "norm scale/shift" in text
    with pytest.raises(AssertionError, match="13 mismatched"):
        report.assert_ok()


def test_groups_optimizer_is_ok_with_any_weight_decay() -> None:
    model = tm.TinyTransformer()
    for opt in (torch.optim.AdamW(wdmask_torch.groups(model), lr=1e-3),  # inherits AdamW's 1e-2
                torch.optim.SGD(wdmask_torch.groups(model, weight_decay=3e-4), lr=0.1)):
        report = wdmask_torch.audit(opt, model)
        report.assert_ok()
        assert report.ok and str(report).startswith("audit ok vs rules 'standard': 26 parameters agree")
    assert wdmask_torch.audit(opt, model).reference == 3e-4


def test_multiplier_ratios_are_checked() -> None:
    model = tm.resnet("basic")
    rules = wdmask.presets.torchvision_rules(0.0, bias_multiplier=0.5)
    opt = torch.optim.SGD(wdmask_torch.groups(model, rules, weight_decay=1e-3), lr=0.1)
    assert wdmask_torch.audit(opt, model, rules).ok
    opt.param_groups[1]["weight_decay"] = 1e-3  # biases now get x1 instead of x0.5
    report = wdmask_torch.audit(opt, model, rules)
    assert {r.path for r in report.mismatches} == {n for n in dict(model.named_parameters()) if n.endswith("bias")}
    assert "weight_decay 0.001 != 0.0005" in report.mismatches[0].reason


def test_substring_grouping_misses_the_downsample_bn() -> None:
    model = tm.resnet("basic")
    report = wdmask_torch.audit(torch.optim.SGD(substring_groups(model, 1e-4), lr=0.1), model)
    assert [r.path for r in report.mismatches] == ["layer2.0.downsample.1.weight"]


def test_missing_duplicate_and_foreign_parameters() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    other = nn.Linear(2, 2)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = torch.optim.SGD([{"params": [model[0].weight, model[0].weight, other.weight]},
                               {"params": [model[1].weight, model[1].bias], "weight_decay": 0.0}],
                              lr=0.1, weight_decay=1e-4)
    report = wdmask_torch.audit(opt, model)
    assert [r.path for r in report.missing] == ["0.bias"]
    assert [(r.path, r.count) for r in report.duplicates] == [("0.weight", 2)]
    assert report.foreign == ("param_groups[0]['params'][2] (2, 2)",)
    assert "1 missing, 1 duplicated, 1 foreign" in str(report)


def test_no_decay_anywhere_and_bad_input() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    report = wdmask_torch.audit(torch.optim.Adam(model.parameters()), model)
    assert report.reference is None and [r.path for r in report.mismatches] == ["0.weight"]
    assert report.mismatches[0].reason.startswith("not decayed")
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch\.optim\.Optimizer or an object with "
                                        r"`param_groups`.*got list; pass the optimizer itself"):
        wdmask_torch.audit([], model)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got Holder whose param_groups\[0\] is str, not a dict with 'params'"):
        wdmask_torch.audit(Holder(["oops"]), model)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch\.optim\.Optimizer or .*got Holder"):
        wdmask_torch.infer_rules(Holder(None), model)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module"):
        wdmask_torch.audit(torch.optim.Adam(model.parameters()), {"a": 1})  # type: ignore[arg-type]


class Holder:
    """Optimizer-like, not a torch.optim.Optimizer: only ``param_groups`` (as DeepSpeed ZeRO's optimizers)."""

    def __init__(self, param_groups: object) -> None:
        self.param_groups = param_groups


class AcceleratedLike:
    """accelerate's AcceleratedOptimizer / Lightning's LightningOptimizer: the real optimizer inside."""

    def __init__(self, optimizer: torch.optim.Optimizer, attr: str) -> None:
        setattr(self, attr, optimizer)

    def __getattr__(self, name: str) -> object:  # a wrapper that forwards nothing useful
        raise RuntimeError(f"no {name}")


def wrappers(opt: torch.optim.Optimizer) -> dict[str, object]:
    return {"param_groups_only": Holder(opt.param_groups), "accelerate": AcceleratedLike(opt, "optimizer"),
            "lightning": AcceleratedLike(opt, "_optimizer"),
            "nested": AcceleratedLike(AcceleratedLike(opt, "optimizer"), "_optimizer")}


@pytest.mark.parametrize("kind", ["param_groups_only", "accelerate", "lightning", "nested"])
def test_audit_and_infer_rules_accept_optimizer_wrappers(kind: str) -> None:
    model = tm.resnet("basic")
    plain = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    good = torch.optim.SGD(wdmask_torch.groups(model, weight_decay=1e-4), lr=0.1)
    expected = [r.path for r in wdmask_torch.audit(plain, model).mismatches]
    assert len(expected) == 13
    assert [r.path for r in wdmask_torch.audit(wrappers(plain)[kind], model).mismatches] == expected
    assert wdmask_torch.audit(wrappers(good)[kind], model).ok
    assert wdmask_torch.infer_rules(wrappers(good)[kind], model) == wdmask_torch.infer_rules(good, model)


def test_audit_reads_named_groups_held_by_a_wrapper() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    groups = [{"params": [("0.weight", model[0].weight)], "weight_decay": 0.1},
              {"params": [("0.bias", model[0].bias), ("1.weight", model[1].weight), ("1.bias", model[1].bias)],
               "weight_decay": 0.0}]
    report = wdmask_torch.audit(Holder(groups), model)
    assert report.ok and report.reference == 0.1


class TokenBlock(nn.Module):
    """The README's block: a learned token and a position table only the traced graph classifies."""

    def __init__(self, dim: int = 8, tokens: int = 4) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))  # joined to the sequence
        self.table = nn.Parameter(torch.zeros(1, tokens + 1, dim))  # added whole: a position table
        self.proj = nn.Linear(dim, dim)  # contracted: a kernel
        self.lambda1 = nn.Parameter(torch.ones(dim))  # multiplied: a layer scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.table
        return x + self.lambda1 * self.proj(x)


def test_an_optimizer_built_with_example_inputs_passes_its_own_audit_with_them() -> None:
    model, x = TokenBlock(), torch.zeros(2, 4, 8)
    opt = torch.optim.AdamW(wdmask_torch.groups(model, wdmask.presets.standard, weight_decay=0.05, example_inputs=x),
                            lr=1e-3)
    report = wdmask_torch.audit(opt, model, wdmask.presets.standard, example_inputs=x)
    assert report.ok and not report.mismatches and report.reference == 0.05
    assert {r.path: r.actual for r in report.rows} == {
        "cls": 0.0, "table": 0.0, "lambda1": 0.0, "proj.weight": 0.05, "proj.bias": 0.0}
    with pytest.warns(wdmask.UnclassifiedWarning):  # without the graph the same optimizer looks wrong
        blind = wdmask_torch.audit(opt, model, wdmask.presets.standard)
    assert [r.path for r in blind.mismatches] == ["cls", "table", "lambda1"]
