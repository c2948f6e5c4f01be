"""``from_flax`` / ``to_flax``: everything is found and checked before the first write."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import wdmask

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
linen = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

import wdmask_torch  # noqa: E402


def torch_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for m in (model[1], model[3]):
            m.running_mean.uniform_(), m.running_var.uniform_(1, 2)
    return model


FLAX = linen.Sequential([linen.Dense(2), linen.BatchNorm(use_running_average=True),
                         linen.Dense(2), linen.BatchNorm(use_running_average=True)])
X = jnp.zeros((1, 3))


def variables() -> dict[str, Any]:
    """Values that differ from every torch value (so a partial write would show)."""
    shapes = jax.eval_shape(FLAX.init, jax.random.key(0), X)
    return jax.tree.map(lambda s: jnp.full(s.shape, 7.0, s.dtype), shapes)


def snapshot(model: nn.Module) -> dict[str, bytes]:
    return {k: v.contiguous().view(-1).view(torch.uint8).numpy().tobytes() for k, v in model.state_dict().items()}


def test_a_valid_port_writes_every_leaf() -> None:
    model = wdmask_torch.from_flax(torch_model(), variables(), flax_model=FLAX, sample=X)
    for name, value in model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(value, torch.full_like(value, 7.0)), name


def _drop(tree: dict[str, Any], *path: str) -> dict[str, Any]:
    out = dict(tree)
    if len(path) == 1:
        del out[path[0]]
    else:
        out[path[0]] = _drop(tree[path[0]], *path[1:])
    return out


def _put(tree: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _put(tree[path[0]], value, *path[1:])
    return out


# Each breaks the LAST leaf the port reaches, so the leaves before it would have been written already.
BROKEN: dict[str, tuple[Any, type[Exception], str]] = {
    "missing_batch_stats": (lambda v: _drop(v, "batch_stats", "layers_3", "var"), wdmask.PairError,
                            r"no batch_stats leaf 'batch_stats.layers_3.var'"),
    "wrong_stat_shape": (lambda v: _put(v, jnp.ones(1), "batch_stats", "layers_3", "var"), wdmask.PairError,
                         r"'batch_stats.layers_3.var' has shape \(1,\); torch '3.running_var' \(2,\)"),
    "complex_stat": (lambda v: _put(v, jnp.ones(2, jnp.complex64), "batch_stats", "layers_3", "var"), TypeError,
                     r"'batch_stats.layers_3.var' must hold real numbers .* complex64"),
    "text_leaf": (lambda v: _put(v, "oops", "batch_stats", "layers_3", "var"), TypeError,
                  r"must hold real numbers"),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=list(BROKEN))
def test_a_failing_from_flax_leaves_the_model_bit_identical(case: tuple[Any, type[Exception], str]) -> None:
    breaks, error, match = case
    model = torch_model()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        wdmask_torch.from_flax(model, breaks(variables()), flax_model=FLAX, sample=X)
    assert snapshot(model) == before


def test_bfloat16_flax_leaves_port_exactly() -> None:
    v = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables())
    model = wdmask_torch.from_flax(torch_model().to(torch.bfloat16), v, flax_model=FLAX, sample=X)
    assert torch.equal(model[0].weight, torch.full((2, 3), 7.0, dtype=torch.bfloat16))


def test_a_failing_to_flax_leaves_an_nnx_module_as_it_was() -> None:
    class Net(nnx.Module):
        def __init__(self) -> None:
            self.lin = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
            self.bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))

        def __call__(self, x: Any) -> Any:
            return self.bn(self.lin(x))

    class TorchNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.bn = nn.Linear(3, 2), nn.BatchNorm1d(2)

    target = Net()
    assert wdmask_torch.to_flax(TorchNet(), target) is target  # the pair ports
    target = Net()
    del target.bn.var  # the last leaf the port writes has no place
    before = jax.tree.map(lambda a: a.copy(), nnx.state(target))
    with pytest.raises(wdmask.PairError, match=r"no BatchStat 'bn.var'"):
        wdmask_torch.to_flax(TorchNet(), target)
    after = nnx.state(target)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), before, after))
