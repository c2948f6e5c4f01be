"""Twin ResNets: inventories pair in call order, the weight port round-trips exactly, forwards agree."""

from __future__ import annotations

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from flax import nnx

import wdmask
import wdmask_torch
from tests.parity._parity_utils import ARCHS, BNCounter, nhwc, twins
from wdmask import ParamInfo, models, presets
from wdmask._dispatch import compare
from wdmask._jax._describe import describe
from wdmask._jax._order import flax_inventory
from wdmask._pair import PairError, pair
from wdmask_migrate._port import from_flax, to_flax

#: The models whose pairing and port are checked: ResNet-50 (bottlenecks) only with ``-m slow``.
MODELS = [pytest.param("resnet18"), pytest.param("resnet50", marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch", MODELS)
def test_linen_inventory_pairs_in_call_order(arch: str) -> None:
    tw = twins(arch)
    pairs = pair(wdmask_torch.describe(tw.torch_model), flax_inventory(tw.flax_model, sample=tw.sample))
    names = {t.dotted: f.dotted for t, f in pairs}
    assert names["conv1.weight"] == "conv1.kernel"
    assert names["bn1.weight"] == "bn1.scale"
    assert names["layer2.0.downsample.0.weight"] == "layer2_0.downsample_0.kernel"
    assert names["layer2.0.downsample.1.bias"] == "layer2_0.downsample_1.bias"
    assert names["fc.weight"] == "fc.kernel"
    # every torch name is the linen name with the index dots written "_" and weight -> kernel/scale
    for t, f in pairs:
        leaf = {"kernel": "weight", "scale": "weight"}.get(f.path[-1], f.path[-1])
        assert t.dotted == ".".join(f.path[:-1]).replace("_", ".") + "." + leaf


def test_sorted_keys_do_not_pair() -> None:
    # params alone keep pytree (sorted-key) order: pairing them fails, and the error says what to pass
    tw = twins("resnet18")
    params = jax.eval_shape(tw.flax_model.init, jax.random.key(0), tw.sample)["params"]
    with pytest.raises(PairError, match=r"torch leaf #0 `conv1.weight` .* with Flax `bn1.scale` .*roles differ.*"
                                        r"follows call order, not sorted pytree keys"):
        pair(wdmask_torch.describe(tw.torch_model), describe(params))
    # the model and its sample: call order, so the same two inventories pair
    assert len(pair(wdmask_torch.describe(tw.torch_model), describe(tw.flax_model, tw.sample))) == len(
        wdmask_torch.describe(tw.torch_model))


def test_block_10_follows_call_order() -> None:
    widths = [3 + i for i in range(13)]
    t = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in itertools.pairwise(widths)])
    f = nn.Sequential([nn.Dense(b) for b in widths[1:]])
    sample = jnp.zeros((1, 3))
    pairs = pair(wdmask_torch.describe(t), flax_inventory(f, sample=sample))
    assert [(a.dotted, b.dotted) for a, b in pairs][20:22] == [("10.weight", "layers_10.kernel"),
                                                              ("10.bias", "layers_10.bias")]
    # a params pytree alone: auto-names in natural order (layers_2 before layers_10)
    params = jax.eval_shape(f.init, jax.random.key(0), sample)["params"]
    assert len(pair(wdmask_torch.describe(t), flax_inventory(params))) == 24


@pytest.mark.parametrize(("torch_inv", "flax_inv", "match"), [
    ([ParamInfo(("fc", "weight"), (2, 4), layer="linear", role="kernel")],
     [ParamInfo(("fc", "kernel"), (2, 4), layer="linear", role="kernel")],
     r"`fc.weight` .* shapes differ: torch \(2, 4\) is \(4, 2\) in Flax after the linear layout change"),
    ([ParamInfo(("c", "weight"), (8, 3, 3, 3), layer="conv", role="kernel")],
     [ParamInfo(("c", "kernel"), (3, 3, 3, 8), layer="linear", role="kernel")],
     r"`c.weight` .* layer kinds differ \(conv vs linear\)"),
    ([ParamInfo(("bn", "weight"), (4,), layer="norm.batch", role="scale")],
     [ParamInfo(("bn", "scale"), (4,), layer="norm.batch", role="scale"),
      ParamInfo(("bn", "bias"), (4,), layer="norm.batch", role="bias")],
     r"Flax leaf #1 `bn.bias` \(norm.batch bias, shape \(4,\)\) has no torch twin"),
])
def test_pair_errors(torch_inv: list[ParamInfo], flax_inv: list[ParamInfo], match: str) -> None:
    with pytest.raises(PairError, match=match):
        pair(torch_inv, flax_inv)
    assert issubclass(PairError, ValueError)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if "num_batches" not in k}


@pytest.mark.parametrize("arch", MODELS)
def test_port_round_trips_exactly(arch: str) -> None:
    tw = twins(arch)
    with torch.no_grad():  # non-trivial running stats
        for _ in range(2):
            tw.torch_model(torch.randn(4, 3, 16, 16, dtype=torch.float64))
    variables = to_flax(tw.torch_model, tw.variables, flax_model=tw.flax_model, sample=tw.sample)
    make_torch = ARCHS[arch][0]
    torch.manual_seed(123)
    other = make_torch(num_classes=10, small_input=True, **ARCHS[arch][2]).double()
    from_flax(other, variables, flax_model=tw.flax_model, sample=tw.sample)
    want, got = _state(tw.torch_model), _state(other)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # without the Flax model: leaves are ordered by their owner names (layer1_0.conv1 ~ layer1.0.conv1)
    by_name = to_flax(tw.torch_model, tw.variables)
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), by_name, variables))  # numpy: no compile


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_linen_forward_agrees(train: bool) -> None:
    tw = twins("resnet18")
    m = tw.torch_model
    with torch.no_grad():
        m.train()
        m(torch.randn(4, 3, 16, 16, dtype=torch.float64))
    variables = to_flax(m, tw.variables, flax_model=tw.flax_model, sample=tw.sample)
    counter = BNCounter(m)
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16))
    m.train(train)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    got, new = jax.jit(lambda v, x: tw.flax_model.apply(v, x, use_running_average=not train,
                                                        mutable=["batch_stats"]))(variables, jnp.asarray(nhwc(x)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)
    after = to_flax(m, variables, flax_model=tw.flax_model, sample=tw.sample)["batch_stats"]
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            got_mean = _get(new["batch_stats"], _flax_path(name))["mean"]
            np.testing.assert_allclose(np.asarray(got_mean), _get(after, _flax_path(name))["mean"], atol=1e-12)
            if train:  # torch's running_var uses the unbiased batch variance: undo it
                n, kept = counter.n[name], 0.9 * np.asarray(_get(variables["batch_stats"], _flax_path(name))["var"])
                var = kept + (np.asarray(_get(new["batch_stats"], _flax_path(name))["var"]) - kept) * n / (n - 1)
                np.testing.assert_allclose(var, mod.running_var.numpy(), atol=1e-12)


def _flax_path(torch_name: str) -> tuple[str, ...]:
    """``layer1.0.downsample.1`` -> ``("layer1_0", "downsample_1")``."""
    parts = torch_name.split(".")
    out: list[str] = []
    for p in parts:
        if p.isdigit():
            out[-1] = f"{out[-1]}_{p}"
        else:
            out.append(p)
    return tuple(out)


def _get(tree, path):  # type: ignore[no-untyped-def]
    for k in path:
        tree = tree[k]
    return tree


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_nnx_port_and_forward(train: bool) -> None:
    tw = twins("resnet18")
    m = tw.torch_model
    with torch.no_grad():
        m(torch.randn(4, 3, 16, 16, dtype=torch.float64))
    net = nnx.eval_shape(lambda: models.nnx_resnet18(width=8, layers=(1, 1, 1, 1), small_input=True,
                                                     param_dtype=jnp.float64))  # every leaf comes from torch
    to_flax(m, net, sample=tw.sample)
    pairs = pair(wdmask_torch.describe(m), flax_inventory(net, sample=tw.sample))
    assert pairs[-2][1].dotted == "fc.kernel" and pairs[3][1].dotted == "layer1.0.conv1.kernel"
    x = np.random.default_rng(2).standard_normal((8, 3, 16, 16))
    m.train(train)
    net.train() if train else net.eval()
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    got = nnx.jit(lambda net, x: net(x))(net, jnp.asarray(nhwc(x)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(net.layer1[0].bn1.mean[...]), m.layer1[0].bn1.running_mean.numpy(),
                               atol=1e-12)
    other = wdmask_torch.models.resnet18(width=8, layers=(1, 1, 1, 1), small_input=True).double()
    from_flax(other, net)  # NNX names are torch's: ordered by name without a sample
    np.testing.assert_array_equal(other.fc.weight.detach().numpy(), np.asarray(net.fc.kernel[...]).T)


@pytest.mark.parametrize("preset", presets.names)
def test_compare_is_empty_under_every_preset(preset: str) -> None:
    tw = twins("resnet18")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compare(tw.torch_model, tw.flax_model, presets.by_name(preset), sample=tw.sample,
                       example_inputs=tw.example) == []


def test_compare_reports_a_difference() -> None:
    tw = twins("resnet18")
    rules = wdmask.Rules([*presets.standard, wdmask.Rule(path="layer1.0.conv1.weight", decay=False)])  # torch names only
    diffs = compare(tw.torch_model, tw.flax_model, rules, sample=tw.sample)
    assert [str(d) for d in diffs] == [f"torch layer1.0.conv1.weight: no decay (rule {len(presets.standard)}) != "
                                       "flax layer1_0.conv1.kernel: decay (default)"]


def test_from_flax_names_itself_when_model_is_not_a_module() -> None:
    with pytest.raises(TypeError, match=r"wdmask_torch\.from_flax\(model\)"):  # used to say to_flax
        from_flax({"weight": torch.zeros(2)}, {})


def test_pair_follows_call_order_of_explicitly_named_flax_modules() -> None:
    # Sorted pytree keys (bn, conv, head) differ from call order (conv, bn, head): describe(model, sample)
    # must list the leaves in call order so pair() matches each torch layer with its twin.
    import jax.numpy as jnp
    import torch
    from flax import linen as nn

    import wdmask
    import wdmask_torch

    class TorchNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
            self.bn = torch.nn.BatchNorm2d(4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.bn(self.conv(x)).mean((2, 3)))

    class FlaxNet(nn.Module):
        @nn.compact
        def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
            x = nn.Conv(4, (3, 3), padding="VALID", use_bias=False, name="conv")(x)
            x = nn.BatchNorm(use_running_average=True, name="bn")(x)
            return nn.Dense(2, name="head")(x.mean((1, 2)))

    flax_inv = wdmask.describe(FlaxNet(), sample=jnp.zeros((1, 8, 8, 3)))
    assert [str(i) for i in flax_inv] == ["conv.kernel", "bn.bias", "bn.scale", "head.bias", "head.kernel"]
    pairs = wdmask.pair(wdmask_torch.describe(TorchNet()), flax_inv)
    assert [(str(t), str(f)) for t, f in pairs] == [
        ("conv.weight", "conv.kernel"), ("bn.weight", "bn.scale"), ("bn.bias", "bn.bias"),
        ("head.weight", "head.kernel"), ("head.bias", "head.bias")]


def test_compare_passes_on_guesses_it_sees() -> None:
    # a parameter no class or name places is a guess on both sides: compare must say so, not swallow it
    import jax.numpy as jnp
    import torch
    from flax import linen as nn

    import wdmask

    class TorchMix(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    class FlaxMix(nn.Module):
        @nn.compact
        def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
            return x @ self.param("w", nn.initializers.ones, (2, 2))

    torch_net = torch.nn.Sequential(torch.nn.Linear(3, 2), TorchMix())
    flax_net = nn.Sequential([nn.Dense(2), FlaxMix()])
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"decayed by the rules' default: 1\.w\b"):
        assert wdmask.compare(torch_net, flax_net, wdmask.presets.standard, sample=jnp.zeros((1, 3))) == []
