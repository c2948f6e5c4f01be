"""infer_rules(): the shortest rules reproducing an optimizer's decay, verified by round trip."""

import pytest
import torch
from torch import nn

import wdmask
import wdmask_torch
from tests.torch import models as tm
from tests.torch.models import substring_groups


def timm_groups(model: nn.Module, wd: float) -> list[dict]:
    """timm ``param_groups_weight_decay``: no decay when ndim <= 1 or the name ends with .bias."""
    no = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    yes = [p for n, p in model.named_parameters() if not (p.ndim <= 1 or n.endswith(".bias"))]
    return [{"params": no, "weight_decay": 0.0}, {"params": yes, "weight_decay": wd}]


def effective(opt: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}


def round_trip(model: nn.Module, opt: torch.optim.Optimizer, wd: float) -> wdmask.Rules:
    result = wdmask_torch.infer_rules(opt, model)
    assert result.weight_decay == wd  # the reference weight decay is a field, not text in a name
    rules = result.rules
    rebuilt = torch.optim.SGD(wdmask_torch.groups(model, rules, weight_decay=result.weight_decay), lr=0.1)
    want, got = effective(opt), effective(rebuilt)
    assert set(got) == set(want)
    for n, p in model.named_parameters():
        assert got[id(p)] == pytest.approx(want[id(p)], rel=1e-12, abs=0), n
    assert wdmask_torch.audit(opt, model, rules).ok
    assert wdmask.Rules.from_dict(rules.to_dict()) == rules  # plain data: portable to the JAX side
    return rules


MODELS = {"resnet_basic": tm.resnet, "resnet_bottleneck": lambda: tm.resnet("bottleneck"),
          "transformer": tm.TinyTransformer, "convnext": tm.ConvNeXtTiny}


@pytest.mark.parametrize("build", MODELS.values(), ids=list(MODELS))
@pytest.mark.parametrize("grouping", [substring_groups, timm_groups], ids=["substring", "timm"])
def test_round_trip(build: object, grouping: object) -> None:
    model = build()  # type: ignore[operator]
    round_trip(model, torch.optim.SGD(grouping(model, 1e-4), lr=0.1), 1e-4)  # type: ignore[operator]


def test_inferred_rules_are_short_and_in_the_vocabulary() -> None:
    model = tm.resnet("basic")
    timm = round_trip(model, torch.optim.SGD(timm_groups(model, 1e-4), lr=0.1), 1e-4)
    assert timm.to_dict() == {"rules": [{"ndim": "<=1", "decay": False}]}
    assert timm.name == "inferred"
    substring = round_trip(model, torch.optim.SGD(substring_groups(model, 1e-4), lr=0.1), 1e-4)
    assert substring.to_dict() == {"rules": [{"ndim": "<=1", "decay": False},
                                             {"path": "**.downsample.1.weight", "decay": True}]}
    model = tm.TinyTransformer()
    std = torch.optim.AdamW(wdmask_torch.groups(model), lr=1e-3)
    assert round_trip(model, std, 1e-2).to_dict() == {"rules": [{"ndim": "<=1", "decay": False}]}


def test_multipliers_plain_sgd_and_no_decay() -> None:
    model = tm.resnet("basic")
    rules = wdmask.presets.torchvision_rules(0.0, bias_multiplier=0.5)
    opt = torch.optim.SGD(wdmask_torch.groups(model, rules, weight_decay=2e-4), lr=0.1)
    inferred = round_trip(model, opt, 2e-4)
    assert inferred.to_dict() == {"rules": [{"role": "bias", "multiplier": 0.5}, {"role": "scale", "decay": False}]}
    assert round_trip(model, torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4), 1e-4).to_dict() == {
        "rules": []}
    none = wdmask_torch.infer_rules(torch.optim.Adam(model.parameters()), model)
    assert none.weight_decay is None and len(none.rules) == 0 and none.rules.default == 0.0


def test_bad_input() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"`optimizer` holds none of the 2 trainable parameters of `model` \(Linear\)"):
        wdmask_torch.infer_rules(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), model)
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch\.optim\.Optimizer"):
        wdmask_torch.infer_rules(model, model)  # type: ignore[arg-type]


def test_infer_rules_with_example_inputs_round_trips_a_graph_built_grouping() -> None:
    from tests.torch.test_audit import TokenBlock

    model, x = TokenBlock(), torch.zeros(2, 4, 8)
    opt = torch.optim.SGD(wdmask_torch.groups(model, wdmask.presets.standard, weight_decay=0.05, example_inputs=x),
                          lr=0.1)
    inferred = wdmask_torch.infer_rules(opt, model, example_inputs=x)
    assert inferred.weight_decay == 0.05
    rebuilt = wdmask_torch.groups(model, inferred.rules, weight_decay=inferred.weight_decay, example_inputs=x)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)]: g["weight_decay"] for g in rebuilt for p in g["params"]} == {
        "cls": 0.0, "table": 0.0, "lambda1": 0.0, "proj.weight": 0.05, "proj.bias": 0.0}
