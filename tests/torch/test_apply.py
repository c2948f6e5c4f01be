"""groups(): minimal, deterministic param groups; wrappers; optimizer state round trip; bad input."""

import copy
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import wdmask
import wdmask_torch
from tests.torch import models as tm


def names(groups: list[dict], model: nn.Module) -> list[list[str]]:
    """Each group's parameter names, found by tensor identity in ``model`` (the groups hold plain tensors)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert all(isinstance(p, torch.Tensor) for g in groups for p in g["params"])
    return [[by_id[id(p)] for p in g["params"]] for g in groups]


def test_standard_gives_two_groups_no_decay_first() -> None:
    model = tm.resnet("basic")
    gs = wdmask_torch.groups(model)
    assert len(gs) == 2
    assert gs[0]["weight_decay"] == 0.0 and "weight_decay" not in gs[1]
    assert names(gs, model)[1] == ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer2.0.conv1.weight",
                            "layer2.0.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight"]
    assert sorted(id(p) for g in gs for p in g["params"]) == sorted(id(p) for p in model.parameters())
    opt = torch.optim.SGD(gs, lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4]  # the decayed group inherits
    assert all("param_names" not in g for g in opt.param_groups)  # plain groups, as from model.parameters()
    assert names(opt.param_groups, model)[0][:3] == ["bn1.weight", "bn1.bias", "layer1.0.bn1.weight"]


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
    assert names(gs, model)[1] == ["fc.weight"]
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
    assert names(wdmask_torch.groups(frozen, include_frozen=True), frozen) == [["0.bias"], ["0.weight"]]
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
    flat = [n for g in names(gs, model) for n in g]
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
    assert names(wdmask_torch.groups(compiled), model) == names(wdmask_torch.groups(model), model)
    nested = nn.Sequential(torch.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))))
    inv = wdmask_torch.describe(nested, torch.zeros(1, 3, 6, 6))  # runs eagerly (set_stance force_eager)
    assert [(i.dotted, i.feeds_norm) for i in inv] == [("0.0.weight", True), ("0.0.bias", True),
                                                       ("0.1.weight", False), ("0.1.bias", False)]


def test_data_parallel_prefix_stripped_but_a_real_module_attribute_kept() -> None:
    model = tm.resnet("basic")
    dp = nn.DataParallel(model)  # CPU: no devices, just wraps
    assert next(iter(dict(dp.named_parameters()))) == "module.conv1.weight"
    assert decisions_of(dp) == decisions_of(model)
    assert names(wdmask_torch.groups(dp), model) == names(wdmask_torch.groups(model), model)

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


NAMED_TORCH = torch.torch_version.TorchVersion(torch.__version__) >= "2.6"
needs_named = pytest.mark.skipif(not NAMED_TORCH, reason="named param groups need torch >= 2.6")


@pytest.mark.parametrize("named", [False, pytest.param(True, marks=needs_named)], ids=["plain", "named"])
def test_optimizer_state_dict_round_trip(named: bool) -> None:
    torch.manual_seed(0)
    a = tm.resnet("basic")
    opt_a = torch.optim.SGD(wdmask_torch.groups(a, weight_decay=1e-2, named=named), lr=0.05, momentum=0.9)
    train(a, opt_a, 3, seed=1)
    saved = copy.deepcopy(opt_a.state_dict())  # as if saved to disk: no shared buffers
    torch.manual_seed(123)
    b = tm.resnet("basic")
    b.load_state_dict(a.state_dict())
    opt_b = torch.optim.SGD(wdmask_torch.groups(b, weight_decay=1e-2, named=named), lr=0.05, momentum=0.9)
    opt_b.load_state_dict(saved)
    if named:
        expected = [[n for n, _ in wdmask_torch.groups(a, weight_decay=1e-2, named=True)[i]["params"]] for i in (0, 1)]
        assert [g["param_names"] for g in saved["param_groups"]] == expected
        assert [g["param_names"] for g in opt_b.param_groups] == expected == names(opt_a.param_groups, a)
    else:
        assert all("param_names" not in g for g in [*opt_b.param_groups, *saved["param_groups"]])
    pairs = list(zip(a.parameters(), b.parameters(), strict=True))
    assert len(opt_b.state) == len(opt_a.state) == len(pairs)
    for pa, pb in pairs:  # the loaded momentum buffers are exactly the saved ones, on the right tensors
        assert pa is not pb and torch.equal(opt_b.state[pb]["momentum_buffer"], opt_a.state[pa]["momentum_buffer"])
    train(a, opt_a, 3, seed=2)
    train(b, opt_b, 3, seed=2)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


@needs_named
def test_named_groups_fill_param_names() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    gs = wdmask_torch.groups(net, weight_decay=0.1, named=True)
    assert [[(n, p is dict(net.named_parameters())[n]) for n, p in g["params"]] for g in gs] == [
        [("0.bias", True), ("1.weight", True), ("1.bias", True)], [("0.weight", True)]]
    opt = torch.optim.AdamW(gs, lr=1e-3)
    assert [g["param_names"] for g in opt.param_groups] == [["0.bias", "1.weight", "1.bias"], ["0.weight"]]
    assert all(isinstance(p, torch.Tensor) for g in opt.param_groups for p in g["params"])


def test_named_groups_refused_on_torch_before_2_6(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(RuntimeError, match=r"groups\(named=True\) needs torch >= 2\.6.*this is torch 2\.5\.1.*named=False"):
        wdmask_torch.groups(nn.Linear(2, 2), named=True)
    with pytest.raises(TypeError, match=r"`named` must be True or False, got str 'yes'"):
        wdmask_torch.groups(nn.Linear(2, 2), named="yes")  # type: ignore[arg-type]


def test_default_groups_take_a_later_plain_add_param_group() -> None:
    """Lightning's BackboneFinetuning adds a plain group later: torch refuses mixing named and unnamed groups."""
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    head = nn.Linear(4, 2)
    opt = torch.optim.SGD(wdmask_torch.groups(net, weight_decay=1e-3), lr=0.1)
    opt.add_param_group({"params": list(head.parameters()), "weight_decay": 0.5})
    assert [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [(3, 0.0), (1, 1e-3), (2, 0.5)]
    assert opt.param_groups[2]["params"][0] is head.weight


class SortingOptimizer(torch.optim.Optimizer):
    """Muon-style: sorts/filters each group's params before ``super().__init__`` (tuples would break this)."""

    def __init__(self, params: list[dict], lr: float = 0.1, weight_decay: float = 0.0) -> None:
        groups = [{**g, "params": sorted(g["params"], key=lambda p: p.numel())} for g in params]
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad + group["weight_decay"] * p, alpha=-group["lr"])


def test_default_groups_in_an_optimizer_that_sorts_its_params() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = SortingOptimizer(wdmask_torch.groups(net, weight_decay=0.5), lr=0.1)
    assert [[p.numel() for p in g["params"]] for g in opt.param_groups] == [[5, 5, 5], [15]]
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for n, p in net.named_parameters():  # independent: θ - η(g + λθ) with λ = 0.5 only on the Linear weight
        wd = 0.5 if n == "0.weight" else 0.0
        assert torch.allclose(p, before[n] - 0.1 * (1.0 + wd * before[n]), atol=1e-7), n


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_groups_in_zero_redundancy_optimizer() -> None:
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    twin = copy.deepcopy(net)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        gs = wdmask_torch.groups(net, weight_decay=0.1)
        opt = ZeroRedundancyOptimizer(gs, optimizer_class=torch.optim.SGD, lr=0.1)
        ref = torch.optim.SGD(wdmask_torch.groups(twin, weight_decay=0.1), lr=0.1)
        x = torch.randn(6, 3)
        for model, o in ((net, opt), (twin, ref)):
            for _ in range(2):
                o.zero_grad()
                model(x).square().mean().backward()
                o.step()
        assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.1]
        for (n, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
            assert torch.equal(p, q), n
    finally:
        dist.destroy_process_group()


BAD_WEIGHT_DECAY = {
    "nan": (float("nan"), ValueError), "inf": (float("inf"), ValueError), "negative": (-0.1, ValueError),
    "bool": (True, TypeError), "str": ("0.01", TypeError), "np_nan": (np.float64("nan"), ValueError),
    "tensor_negative": (torch.tensor(-1.0), ValueError), "vector": (torch.ones(2), TypeError),
    "schedule": (lambda step: 0.1, TypeError),
}


@pytest.mark.parametrize("value,error", BAD_WEIGHT_DECAY.values(), ids=list(BAD_WEIGHT_DECAY))
def test_bad_weight_decay_is_refused(value: object, error: type) -> None:
    with pytest.raises(error, match=r"^wdmask_torch\.groups: `weight_decay` must be a finite real number >= 0, got "):
        wdmask_torch.groups(nn.Linear(2, 2), weight_decay=value)  # type: ignore[arg-type]


def test_weight_decay_zero_d_tensor_becomes_a_float() -> None:
    gs = wdmask_torch.groups(nn.Linear(2, 2), weight_decay=torch.tensor(0.25))  # type: ignore[arg-type]
    assert [(type(g["weight_decay"]), g["weight_decay"]) for g in gs] == [(float, 0.0), (float, 0.25)]


def check_partition(model: nn.Module) -> list[list[str]]:
    """Every trainable parameter in exactly one group, in named_parameters() order within a group."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        with pytest.raises(ValueError, match=r"has no parameters|are frozen"):
            wdmask_torch.groups(model)
        return []
    gs = wdmask_torch.groups(model, weight_decay=1e-3)
    ids = [id(p) for g in gs for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert set(ids) == {id(p) for p in trainable}
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    for g in gs:
        idx = [order[n] for n in names([g], model)[0]]
        assert idx == sorted(idx)
    assert [g["weight_decay"] for g in gs] == sorted(g["weight_decay"] for g in gs)
    out = names(gs, model)
    torch.optim.SGD(gs, lr=0.1)  # accepts the groups
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
        "import json, sys; sys.path.insert(0, sys.argv[1]); from tests.torch import models as tm; import wdmask_torch\n"
        "out = []\n"
        "for spec in json.loads(sys.argv[2]):\n"
        "    m = tm.build(spec)\n"
        "    by_id = {id(p): n for n, p in m.named_parameters()}\n"
        "    out.append([[by_id[id(p)] for p in g['params']] for g in wdmask_torch.groups(m, weight_decay=1e-3)]\n"
        "        if any(p.requires_grad for p in m.parameters()) else [])\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(pathlib.Path(__file__).resolve().parents[2]), json.dumps(specs)],
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
