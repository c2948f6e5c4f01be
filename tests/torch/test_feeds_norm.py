"""feeds_norm: one forward pass with hooks and a TorchFunctionMode; hooks never outlive it."""

import pytest
import torch
from torch import nn

import wdmask_torch


def feeds(model: nn.Module, x: object) -> dict[str, bool | None]:
    """``{dotted path: feeds_norm}`` of every kernel."""
    return {i.dotted: i.feeds_norm for i in wdmask_torch.describe(model, x) if i.role == "kernel"}


class Twice(nn.Module):
    """One conv whose output goes into a BatchNorm and also into the residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class SharedConv(nn.Module):
    """The same conv called twice: into a BatchNorm, then into a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + torch.relu(self.conv(x))


class LinearReshapeNorm(nn.Module):
    """linear -> size queries -> reshape -> LayerNorm; a second linear never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.ln = nn.LayerNorm(4)
        self.unused = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        b, n = y.shape[0], y.size(1)
        return self.ln(y.reshape(b, n // 4, 4))


class Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.bn(self.conv(x))
        raise RuntimeError("boom in forward")


class ReturnsBoth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return self.ln(y), y


class AttnNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.ln = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.attn(x, x, x)[0])


IMG = torch.zeros(2, 3, 6, 6)

CASES = {
    "conv_bn": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), IMG, {"0.weight": True}),
    "conv_relu_bn": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)), IMG, {"0.weight": False}),
    "conv_inplace_relu_bn": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(4)), IMG,
                             {"0.weight": False}),
    "conv_used_twice": (Twice(), IMG, {"conv.weight": False}),
    "shared_conv_called_twice": (SharedConv(), IMG, {"conv.weight": False}),
    "linear_reshape_layernorm": (LinearReshapeNorm(), torch.zeros(2, 8), {"fc.weight": True, "unused.weight": False}),
    "linear_returned_and_normed": (ReturnsBoth(), torch.zeros(2, 4), {"fc.weight": False}),
    "conv_flatten_linear": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 2)), IMG,
                            {"0.weight": False, "2.weight": False}),
    "mha_out_proj_layernorm": (AttnNorm(), torch.zeros(2, 3, 4),
                               {"attn.in_proj_weight": False, "attn.out_proj.weight": True}),
    "linear_gn_via_unsqueeze": (nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (4, 1)), nn.GroupNorm(2, 4)),
                                torch.zeros(2, 4), {"0.weight": True}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_feeds_norm_cases(case: tuple[nn.Module, torch.Tensor, dict[str, bool | None]]) -> None:
    model, x, expected = case
    got = feeds(model, x)
    assert {k: got[k] for k in expected} == expected


def test_bias_gets_the_producers_flag_too() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    assert [(i.dotted, i.feeds_norm) for i in wdmask_torch.describe(net, torch.zeros(1, 4))] == [
        ("0.weight", True), ("0.bias", True), ("1.weight", False), ("1.bias", False)]  # traced: known not to


def test_without_example_inputs_nothing_runs_and_feeds_norm_is_none() -> None:
    model = Boom()
    assert {i.feeds_norm for i in wdmask_torch.describe(model)} == {None}


def test_hooks_removed_and_flags_restored_even_when_forward_raises() -> None:
    model = Boom().train()
    model.bn.eval()
    with pytest.raises(RuntimeError, match="boom in forward") as info:
        wdmask_torch.describe(model, IMG)
    assert "feeds_norm" in "".join(getattr(info.value, "__notes__", []))
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks_always_called
    assert model.training and model.conv.training and not model.bn.training
    assert not torch.overrides._is_torch_function_mode_enabled()


def test_probe_runs_in_eval_without_grad_and_leaves_rng_and_stats_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    stats = model[1].running_mean.clone()
    x = torch.randn(2, 3, 6, 6)
    state = torch.random.get_rng_state()
    wdmask_torch.describe(model, x)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(model[1].running_mean, stats) and model[1].num_batches_tracked.item() == 0
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_kwargs_and_meta_device() -> None:
    class KW(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.ln = nn.LayerNorm(4)

        def forward(self, *, x: torch.Tensor) -> torch.Tensor:
            return self.ln(self.fc(x))

    assert feeds(KW(), {"x": torch.zeros(1, 4)}) == {"fc.weight": True}
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3))
    assert feeds(net, torch.zeros(2, 3, 8, 8, device="meta")) == {"0.weight": True, "2.weight": False}


def test_feeds_norm_user_norm_with_functional_inside() -> None:
    class MyRMSNorm(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # ops on the input inside a norm are not escapes
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    net = nn.Sequential(nn.Linear(4, 4), MyRMSNorm(4), nn.Linear(4, 2))
    assert feeds(net, torch.zeros(1, 4)) == {"0.weight": True, "2.weight": False}
    inv = {i.dotted: (i.layer, i.source) for i in wdmask_torch.describe(net)}
    assert inv["1.weight"] == ("norm.rms", "name")
