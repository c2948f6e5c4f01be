"""groups(): minimal, deterministic param groups; wrappers; optimizer state round trip; bad input."""

import copy
import json
import os
import random
import subprocess
import sys

import pytest
import torch
import torch_models as tm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import wdmask
import wdmask_torch


def names(groups: list[dict]) -> list[list[str]]:
    return [[n for n, _ in g["params"]] for g in groups]


def test_standard_gives_two_groups_no_decay_first() -> None:
    model = tm.resnet("basic")
    gs = wdmask_torch.groups(model)
    assert len(gs) == 2
    assert gs[0]["weight_decay"] == 0.0 and "weight_decay" not in gs[1]
    assert names(gs)[1] == ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer2.0.conv1.weight",
                            "layer2.0.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight"]
    named = dict(model.named_parameters())
    assert all(p is named[n] for g in gs for n, p in g["params"])
    opt = torch.optim.SGD(gs, lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4]  # the decayed group inherits
    assert opt.param_groups[0]["param_names"][:3] == ["bn1.weight", "bn1.bias", "layer1.0.bn1.weight"]


def test_group_counts_on_test_models() -> None:
    counts = {k: [len(g["params"]) for g in wdmask_torch.groups(build())] for k, build in {
        "resnet_basic": tm.resnet, "resnet_bottleneck": lambda: tm.resnet("bottleneck"),
        "transformer": tm.TinyTransformer, "convnext": tm.ConvNeXtTiny}.items()}
    assert counts == {"resnet_basic": [13, 7], "resnet_bottleneck": [19, 10], "transformer": [16, 10],
                      "convnext": [19, 9]}


def test_weight_decay_value_and_multipliers() -> None:
    model = tm.resnet("basic")
    assert [g["weight_decay"] for g in wdmask_torch.groups(model, weight_decay=0.1)] == [0.0, 0.1]
    rules = wdmask.presets.torchvision_rules(0.0, bias_multiplier=0.5)
    gs = wdmask_torch.groups(model, rules, weight_decay=1e-4, lr=0.01)
    assert [(g["weight_decay"], g["lr"], len(g["params"])) for g in gs] == [(0.0, 0.01, 6), (5e-05, 0.01, 7),
                                                                         (1e-4, 0.01, 7)]  # BN β is a bias too
    with pytest.raises(ValueError, match=r"multiplier 0.5 to 7 parameter\(s\) \(e.g. 'bn1.bias'\); pass `weight_decay="):
        wdmask_torch.groups(model, rules)
    assert len(wdmask_torch.groups(model, wdmask.presets.all)) == 1


def test_scale_invariant_groups_need_example_inputs() -> None:
    model = tm.resnet("basic")
    gs = wdmask_torch.groups(model, wdmask.presets.standard_scale_invariant, example_inputs=torch.zeros(1, 3, 8, 8))
    assert names(gs)[1] == ["fc.weight"]
    with pytest.warns(wdmask.UnmatchedRuleWarning, match="feeds_norm is only known when"):
        wdmask_torch.groups(model, [wdmask.Rule(feeds_norm=True, decay=False)])


def test_bad_input() -> None:
    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module, got list"):
        wdmask_torch.groups([nn.Linear(2, 2)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`model` \(Sequential\) has no parameters"):
        wdmask_torch.groups(nn.Sequential(nn.ReLU()))
    frozen = nn.Sequential(nn.Linear(2, 2)).requires_grad_(False)
    with pytest.raises(ValueError, match=r"all 2 parameters of `model` \(Sequential\) are frozen.*include_frozen=True"):
        wdmask_torch.groups(frozen)
    assert names(wdmask_torch.groups(frozen, include_frozen=True)) == [["0.bias"], ["0.weight"]]
    with pytest.raises(wdmask.RuleError, match=r"unknown kind 'norm.batchh'.*Did you mean 'norm.batch'"):
        wdmask_torch.groups(tm.resnet(), [{"layer": "norm.batchh", "decay": False}])
    with pytest.warns(wdmask.UnmatchedRuleWarning, match=r"1 rule\(s\) matched no parameter: rules\[0\] \{layer='embedding'"):
        gs = wdmask_torch.groups(tm.resnet(), [{"layer": "embedding", "decay": False}])
    assert len(gs) == 1
    with pytest.raises(wdmask.RuleError, match=r"matched no parameter: rules\[0\] \{layer='embedding'"):
        wdmask_torch.groups(tm.resnet(), [{"layer": "embedding", "decay": False}], strict=True)
    with pytest.raises(ValueError, match="`params` cannot be a group option"):
        wdmask_torch.groups(tm.resnet(), params=[])


def test_tied_and_frozen_parameters() -> None:
    model = tm.TinyTransformer()
    model.blocks[0].requires_grad_(False)
    gs = wdmask_torch.groups(model)
    flat = [n for g in names(gs) for n in g]
    assert "head.weight" not in flat and "tok.weight" in flat
    assert not any(n.startswith("blocks.0.") for n in flat)
    torch.optim.AdamW(gs, lr=1e-3)  # no "appear in more than one parameter group"


def decisions_of(model: nn.Module) -> list[tuple]:
    return [(i.dotted, i.layer, i.role, i.shape) for i in wdmask_torch.describe(model)]


def test_torch_compile_wrapper() -> None:
    model = tm.resnet("basic")
    compiled = torch.compile(model)  # constructs an OptimizedModule; nothing is compiled or run
    assert type(compiled).__name__ == "OptimizedModule"
    assert next(iter(dict(compiled.named_parameters()))) == "_orig_mod.conv1.weight"
    assert decisions_of(compiled) == decisions_of(model)
    assert names(wdmask_torch.groups(compiled)) == names(wdmask_torch.groups(model))
    nested = nn.Sequential(torch.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))))
    inv = wdmask_torch.describe(nested, torch.zeros(1, 3, 6, 6))  # runs eagerly (set_stance force_eager)
    assert [(i.dotted, i.feeds_norm) for i in inv] == [("0.0.weight", True), ("0.0.bias", True),
                                                       ("0.1.weight", None), ("0.1.bias", None)]


def test_data_parallel_prefix_stripped_but_a_real_module_attribute_kept() -> None:
    model = tm.resnet("basic")
    dp = nn.DataParallel(model)  # CPU: no devices, just wraps
    assert next(iter(dict(dp.named_parameters()))) == "module.conv1.weight"
    assert decisions_of(dp) == decisions_of(model)
    assert names(wdmask_torch.groups(dp)) == names(wdmask_torch.groups(model))

    class Holder(nn.Module):  # a user attribute called `module` is part of the user's names
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

    assert [i.dotted for i in wdmask_torch.describe(Holder())] == ["module.weight", "module.bias"]


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_optimizer_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    a = tm.resnet("basic")
    opt_a = torch.optim.SGD(wdmask_torch.groups(a, weight_decay=1e-2), lr=0.05, momentum=0.9)
    train(a, opt_a, 3, seed=1)
    torch.manual_seed(123)
    b = tm.resnet("basic")
    b.load_state_dict(a.state_dict())
    opt_b = torch.optim.SGD(wdmask_torch.groups(b, weight_decay=1e-2), lr=0.05, momentum=0.9)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if saved to disk: no shared buffers
    assert [g["param_names"] for g in opt_b.param_groups] == [g["param_names"] for g in opt_a.param_groups]
    train(a, opt_a, 3, seed=2)
    train(b, opt_b, 3, seed=2)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def check_partition(model: nn.Module) -> list[list[str]]:
    """Every trainable parameter in exactly one group, in named_parameters() order within a group."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        with pytest.raises(ValueError, match=r"has no parameters|are frozen"):
            wdmask_torch.groups(model)
        return []
    gs = wdmask_torch.groups(model, weight_decay=1e-3)
    ids = [id(p) for g in gs for _, p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert set(ids) == {id(p) for p in trainable}
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    for g in gs:
        idx = [order[n] for n, _ in g["params"]]
        assert idx == sorted(idx)
    assert [g["weight_decay"] for g in gs] == sorted(g["weight_decay"] for g in gs)
    out = names(gs)
    torch.optim.SGD(gs, lr=0.1)  # accepts the groups (it fills param_names in place)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_property_random_trees_partition_and_order(rng: random.Random) -> None:
    spec = tm.random_spec(rng)
    first = check_partition(tm.build(spec))
    assert check_partition(tm.build(spec)) == first


def test_group_order_identical_across_processes() -> None:
    rng = random.Random(20240605)
    specs = [tm.random_spec(rng) for _ in range(12)]
    here = [check_partition(tm.build(s)) for s in specs]
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import torch_models as tm, wdmask_torch\n"
        "out = []\n"
        "for spec in json.loads(sys.argv[2]):\n"
        "    m = tm.build(spec)\n"
        "    out.append([[n for n, _ in g['params']] for g in wdmask_torch.groups(m, weight_decay=1e-3)]\n"
        "        if any(p.requires_grad for p in m.parameters()) else [])\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), json.dumps(specs)],
                         capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == here


def test_options_by_multiplier_marks_the_no_decay_group() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    gs = wdmask_torch.groups(net, weight_decay=0.1, options_by_multiplier={0.0: {"trust_ratio": False}}, lr=0.5)
    assert [(g["weight_decay"], g.get("trust_ratio"), g["lr"]) for g in gs] == [(0.0, False, 0.5), (0.1, None, 0.5)]
    with pytest.raises(ValueError, match=r"names multiplier\(s\) \[0\.5\] that no parameter gets"):
        wdmask_torch.groups(net, weight_decay=0.1, options_by_multiplier={0.5: {"trust_ratio": False}})
    with pytest.raises(ValueError, match="`weight_decay` cannot be a group option"):
        wdmask_torch.groups(net, weight_decay=0.1, options_by_multiplier={0.0: {"weight_decay": 1.0}})
