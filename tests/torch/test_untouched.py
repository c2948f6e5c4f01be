"""Describing with example inputs changes nothing observable: modes, parameters, buffers, RNG states, threads."""

from __future__ import annotations

import random
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import wdmask
import wdmask_torch
from wdmask import presets


# --------------------------------------------------------------------------- what "unchanged" means
def bits(t: torch.Tensor) -> bytes:
    """A tensor's exact bytes (``-0.0`` differs from ``0.0``)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def rng_states() -> tuple[bytes, Any, Any]:
    np_state = np.random.get_state()
    return bits(torch.get_rng_state()), (np_state[0], np_state[1].tobytes(), *np_state[2:]), random.getstate()


def observe(model: nn.Module) -> dict[str, Any]:
    """Everything describing must leave as it was: state_dict bits, tensor objects, each module's mode, RNGs."""
    return {
        "state": {k: (v.dtype, tuple(v.shape), bits(v)) for k, v in model.state_dict(keep_vars=True).items()},
        "objects": [(id(m), [(k, id(v)) for k, v in m._parameters.items()], [(k, id(v)) for k, v in m._buffers.items()],
                     [(k, id(v)) for k, v in m._modules.items()]) for m in model.modules()],
        "modes": [m.training for m in model.modules()],
        "rng": rng_states(),
    }


def each_entry_point(model: nn.Module, x: Any) -> dict[str, Callable[[], Any]]:
    """Every public call that runs the model on example inputs."""
    def audit() -> Any:
        opt = torch.optim.SGD(wdmask_torch.groups(model, example_inputs=x), lr=0.1, weight_decay=1e-4)
        return wdmask_torch.audit(opt, model, example_inputs=x)

    def infer() -> Any:
        opt = torch.optim.SGD(wdmask_torch.groups(model, example_inputs=x), lr=0.1, weight_decay=1e-4)
        return wdmask_torch.infer_rules(opt, model, example_inputs=x)

    return {
        "describe": lambda: wdmask_torch.describe(model, x),
        "groups": lambda: wdmask_torch.groups(model, presets.standard_scale_invariant, example_inputs=x),
        "explain": lambda: wdmask.explain(model, presets.standard, example_inputs=x),
        "audit": audit,
        "infer_rules": infer,
    }


ENTRY_POINTS = ["describe", "groups", "explain", "audit", "infer_rules"]


# --------------------------------------------------------------------------- modules that notice
class LoRALinear(nn.Linear):
    """loralib's ``MergedLinear`` pattern: ``train(False)`` merges ``B @ A`` into the frozen weight, ``train(True)``
    takes it back out; the forward adds the adapters only while unmerged."""

    def __init__(self, d: int, r: int = 2) -> None:
        super().__init__(d, d)
        self.weight.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(r, d))
        self.lora_B = nn.Parameter(torch.randn(d, r))
        self.merged = False
        self.train_calls = 0

    def train(self, mode: bool = True) -> LoRALinear:
        self.train_calls += 1
        super().train(mode)
        with torch.no_grad():
            if not mode and not self.merged:
                self.weight += self.lora_B @ self.lora_A
                self.merged = True
            elif mode and self.merged:
                self.weight -= self.lora_B @ self.lora_A
                self.merged = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.merged else out + x @ self.lora_A.T @ self.lora_B.T


class Observer(nn.Module):
    """A QAT-style observer: min/max/scale updated in place, a call counter, a buffer rebound by the forward."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.register_buffer("scale", torch.ones(d))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("last", torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.min_val.copy_(torch.minimum(self.min_val, x.min()))
        self.max_val.copy_(torch.maximum(self.max_val, x.max()))
        self.scale.mul_(0.5).add_((self.max_val - self.min_val) / 255)
        self.calls += 1
        self.last = x.detach().mean(0)  # rebinds the buffer to a new tensor
        return x


class AlwaysBatchStats(nn.BatchNorm1d):
    """A BatchNorm that updates its running statistics whatever its mode (as some fused / custom norms do)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 0.5, self.eps)


class Noisy(nn.Module):
    """Draws from torch, NumPy and Python's RNGs on every call, in any mode."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(x.shape) * float(np.random.rand()) * random.random()
        return self.proj(x + noise)


class Raises(nn.Module):
    """Mutates a buffer and draws random numbers, then raises."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        torch.rand(3), np.random.rand(), random.random()
        raise RuntimeError("broken forward")


class Block(nn.Module):
    """Linear -> LoRA -> observer -> a norm that updates its statistics in any mode -> noise."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.lora = LoRALinear(d)
        self.obs = Observer(d)
        self.bn = AlwaysBatchStats(d)
        self.noisy = Noisy(d)
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.noisy(self.bn(self.obs(self.lora(x)))))


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


# --------------------------------------------------------------------------- item 1: nothing changes
@pytest.mark.parametrize("mode", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_describing_changes_nothing(entry: str, mode: bool) -> None:
    seeded()
    model = Block().train(mode)
    x = torch.randn(3, 4)
    weight, merged = bits(model.lora.weight), model.lora.merged
    calls = model.lora.train_calls
    before = observe(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        each_entry_point(model, x)[entry]()
    assert bits(model.lora.weight) == weight and model.lora.merged is (not mode) and merged is (not mode)
    assert model.lora.train_calls == calls  # describing never calls `train()`/`eval()` overrides
    assert observe(model) == before


def test_the_lora_weight_is_not_merged_and_its_adapters_are_seen() -> None:
    seeded()
    model = nn.Sequential(LoRALinear(4), nn.LayerNorm(4)).train()
    weight = model[0].weight.detach().clone()
    infos = {i.dotted: i for i in wdmask_torch.describe(model, torch.randn(2, 4), include_frozen=True)}
    assert torch.equal(model[0].weight, weight) and model[0].training and not model[0].merged
    assert infos["0.lora_A"].usage == ("contract",) and infos["0.lora_B"].usage == ("contract",)


def test_restored_tensors_are_the_same_objects_with_the_same_bits() -> None:
    seeded()
    model = Block()
    buffers = {n: b for n, b in model.named_buffers()}
    expected = {n: b.clone() for n, b in buffers.items()}
    wdmask_torch.describe(model, torch.randn(3, 4))
    assert [(n, id(b)) for n, b in model.named_buffers()] == [(n, id(b)) for n, b in buffers.items()]
    for n, b in model.named_buffers():
        assert b is buffers[n] and bits(b) == bits(expected[n]), n
    assert int(model.obs.calls) == 0 and int(model.bn.num_batches_tracked) == 0


def test_negative_zero_is_put_back_bit_for_bit() -> None:
    class Flip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("z", torch.zeros(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.z.mul_(-1.0)  # 0.0 -> -0.0: equal as numbers, different bits
            return self.lin(x)

    model = Flip()
    wdmask_torch.describe(model, torch.zeros(1, 2))
    assert bits(model.z) == bits(torch.zeros(2))


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_raising_forward_also_restores_everything(entry: str) -> None:
    seeded()
    model, x = nn.Sequential(LoRALinear(3), Observer(3), Raises()).train(), torch.randn(2, 3)
    before = observe(model)
    with pytest.raises(RuntimeError, match="broken forward"):
        each_entry_point(model, x)[entry]()
    assert observe(model) == before and not model[0].merged


def test_rng_states_are_left_as_they_were() -> None:
    model, x = Block(), torch.randn(3, 4)
    seeded(3)
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    seeded(3)
    wdmask_torch.describe(model, x)
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_an_rng_the_forward_does_not_draw_from_is_never_written() -> None:
    """A forward that draws nothing writes no RNG state back: a thread drawing meanwhile is not rewound."""
    writes: list[str] = []
    real = torch.set_rng_state

    def spy(state: torch.Tensor) -> None:
        writes.append("torch")
        real(state)

    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    torch.set_rng_state = spy  # type: ignore[assignment]
    try:
        wdmask_torch.describe(model, torch.randn(2, 4))
    finally:
        torch.set_rng_state = real  # type: ignore[assignment]
    assert writes == []


# --------------------------------------------------------------------------- item 2: inference mode
def test_groups_inside_inference_mode_equals_outside() -> None:
    seeded()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1),
                          Observer(1))
    x = torch.randn(2, 3, 6, 6)

    def summary(gs: list[dict[str, Any]]) -> list[tuple[float, list[str]]]:
        return [(g["weight_decay"], [n for n, _ in g["params"]]) for g in gs]

    outside = summary(wdmask_torch.groups(model, presets.standard_scale_invariant, weight_decay=0.1,
                                          example_inputs=x, named=True))
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor
    before = observe(model)
    with torch.inference_mode():
        inside = summary(wdmask_torch.groups(model, presets.standard_scale_invariant, weight_decay=0.1,
                                             example_inputs=xi, named=True))
    assert inside == outside == [(0.0, ["0.weight", "1.weight", "1.bias", "3.bias"]), (0.1, ["3.weight"])]
    assert observe(model) == before


# --------------------------------------------------------------------------- concurrency
class Slow(nn.Module):
    """A conv -> (norm | relu -> norm) block that sleeps and draws inside its forward, to widen every race."""

    def __init__(self, feeds: bool) -> None:
        super().__init__()
        self.feeds = feeds
        self.lin = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 4)
        self.obs = Observer(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        time.sleep(0.002)
        y = self.ln(y if self.feeds else torch.relu(y)) + 0 * torch.rand(y.shape)
        time.sleep(0.002)
        return self.head(self.obs(y))


def test_concurrent_describes_match_single_threaded_results() -> None:
    seeded()
    models = [Slow(feeds=i % 2 == 0) for i in range(4)]
    shared = Slow(feeds=True)
    for i, m in enumerate([*models, shared]):
        m.train(i % 3 != 1)
        m.ln.train(i % 2 == 0)
    jobs = [*models, shared, shared]  # two threads describe the same model at once
    x = torch.randn(2, 4)

    def result(m: nn.Module) -> list[tuple[float, list[str]]]:
        gs = wdmask_torch.groups(m, presets.standard_scale_invariant, weight_decay=0.1, example_inputs=x, named=True)
        return [(g["weight_decay"], [n for n, _ in g["params"]]) for g in gs]

    expected = [result(m) for m in jobs]
    assert expected[0] != expected[1]  # the feeds / not-feeds models differ (lin.weight decayed or not)
    before = [observe(m) for m in jobs]
    rng = rng_states()
    for _ in range(3):
        got: list[Any] = [None] * len(jobs)
        barrier = threading.Barrier(len(jobs))

        def work(i: int, got: list[Any] = got, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            got[i] = result(jobs[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == expected
        assert [observe(m) for m in jobs] == before
        assert rng_states() == rng


# --------------------------------------------------------------------------- hypothesis: random module trees
class Reshaping(nn.Module):
    """(N, 4) -> conv1d over the 4 features as a length-4 signal -> (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(1)).squeeze(1)


LEAVES: dict[str, Callable[[], nn.Module]] = {
    "linear": lambda: nn.Linear(4, 4), "batchnorm": lambda: nn.BatchNorm1d(4), "layernorm": lambda: nn.LayerNorm(4),
    "conv": Reshaping, "observer": lambda: Observer(4), "stats": lambda: AlwaysBatchStats(4),
    "noisy": lambda: Noisy(4), "lora": lambda: LoRALinear(4), "relu": nn.ReLU, "raises": Raises,
}
_leaf = st.sampled_from(sorted(LEAVES))
_trees = st.recursive(_leaf, lambda children: st.lists(children, min_size=1, max_size=3), max_leaves=6)


def build(tree: Any) -> nn.Module:
    return LEAVES[tree]() if isinstance(tree, str) else nn.Sequential(*(build(t) for t in tree))


def leaves(tree: Any) -> list[str]:
    return [tree] if isinstance(tree, str) else [leaf for t in tree for leaf in leaves(t)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, modes=st.lists(st.booleans(), min_size=1, max_size=40), seed=st.integers(0, 2**16),
       with_inputs=st.booleans())
def test_describing_random_module_trees_changes_nothing(tree: Any, modes: list[bool], seed: int,
                                                        with_inputs: bool) -> None:
    seeded(seed)
    model = build(tree if isinstance(tree, list) else [tree])
    for m, mode in zip(model.modules(), modes * 40, strict=False):
        m.train(mode)  # as the user left it (LoRA merges on train(False) here: that is the user's call)
    x = torch.randn(3, 4) if with_inputs else None
    before = observe(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "raises" in leaves(tree) and with_inputs:
            with pytest.raises(RuntimeError, match="broken forward"):
                wdmask_torch.describe(model, x, include_frozen=True)
        else:
            wdmask_torch.describe(model, x, include_frozen=True)
    assert observe(model) == before


def test_groups_with_layer_decay_and_example_inputs_leave_buffers_as_they_were():
    """The depth order of `presets.layer_decay` comes from a traced pass too: it must leave the model as it was."""
    from wdmask import presets

    class Counted(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))

        def forward(self, x):
            self.calls += 1
            for b in self.blocks:
                x = b(x)
            return x

    model = Counted()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wdmask_torch.groups(model, presets.standard + presets.layer_decay(0.5), lr=0.1, example_inputs=torch.ones(2, 2))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
