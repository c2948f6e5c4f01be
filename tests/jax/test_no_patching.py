"""Describing traces by observation: no module class attribute is replaced, before, after or *during* the trace.

The norm modules' inputs come from the jaxpr's source info (the equations traced inside a norm class's
``__call__``), so a Linear feeding a norm is still seen to feed it (NNX, NNX inside ``nnx.bridge.ToLinen``,
Equinox), and a probe layer run by the trace sees its own class and the other classes untouched.
"""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

import wdmask
from tests.jax.models import nnx_model

SEEN: list[dict[type, object]] = []  # what each probe call saw: class -> its own `__call__` attribute


def _own_calls(classes) -> dict[type, object]:
    return {cls: vars(cls).get("__call__") for cls in classes}


class ProbeNorm(nnx.LayerNorm):
    """A LayerNorm that records, while it runs (inside the trace), the ``__call__`` its classes hold."""

    def __call__(self, x, *args, **kwargs):
        SEEN.append(_own_calls(NNX_CLASSES))
        return super().__call__(x, *args, **kwargs)


class PlainRMSNorm(nnx.Module):  # a user norm class (kind from its name), written by hand
    def __init__(self, d: int) -> None:
        self.scale = nnx.Param(jnp.ones(d))

    def __call__(self, x):
        SEEN.append(_own_calls(NNX_CLASSES))
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * self.scale


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.head = nnx.Linear(8, 2, rngs=rngs)  # defined first, called last
        self.fc1 = nnx.Linear(3, 8, rngs=rngs)
        self.ln = ProbeNorm(8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 8, rngs=rngs)
        self.rms = PlainRMSNorm(8)

    def __call__(self, x):
        return self.head(nnx.relu(self.rms(self.fc2(self.ln(self.fc1(x))))))


NNX_CLASSES = (nnx.Linear, nnx.LayerNorm, ProbeNorm, PlainRMSNorm, Net, nnx.Module)
X = jnp.ones((2, 3))
# fc1 -> ProbeNorm and fc2 -> PlainRMSNorm feed norms; head feeds the output
FEEDS = {"fc1.kernel": True, "fc1.bias": True, "fc2.kernel": True, "fc2.bias": True, "head.kernel": False,
         "head.bias": False}


def _feeds(inventory) -> dict[str, bool | None]:
    return {i.dotted: i.feeds_norm for i in inventory if i.dotted in FEEDS}


def test_nnx_describe_replaces_no_class_attribute_before_after_or_during_the_trace():
    before = _own_calls(NNX_CLASSES)
    SEEN.clear()
    inventory = wdmask.describe(nnx_model(lambda: Net(nnx.Rngs(0))), X)
    assert len(SEEN) == 2  # both probes ran inside the trace
    for during in SEEN:
        assert all(during[cls] is before[cls] for cls in NNX_CLASSES), during
    assert _own_calls(NNX_CLASSES) == before
    assert _feeds(inventory) == FEEDS
    owners = list(dict.fromkeys(i.path[0] for i in inventory))
    assert owners == ["fc1", "ln", "fc2", "rms", "head"]  # call order, not attribute or key order


class _Inner(nnx.Module):  # wrapped for linen: its norm input crosses the bridge
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(4, 8, rngs=rngs)
        self.ln = ProbeNorm(8, rngs=rngs)

    def __call__(self, x):
        return self.ln(self.fc(x))


class _Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nnx.bridge.to_linen(_Inner)(x)
        return nn.Dense(2, name="head")(x)


def test_linen_around_nnx_bridge_replaces_no_nnx_class_attribute():
    before = _own_calls((*NNX_CLASSES, _Inner))
    SEEN.clear()
    inventory = wdmask.describe(_Outer(), jnp.ones((2, 4)))
    assert SEEN and all(d[cls] is before[cls] for d in SEEN for cls in NNX_CLASSES)
    assert _own_calls((*NNX_CLASSES, _Inner)) == before
    feeds = {i.path[-2:]: i.feeds_norm for i in inventory if i.path[-2] in ("fc", "head")}
    assert feeds == {("fc", "kernel"): True, ("fc", "bias"): True, ("head", "kernel"): False,
                     ("head", "bias"): False}


class _Eqx(eqx.Module):
    fc: eqx.nn.Linear
    ln: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.fc = eqx.nn.Linear(3, 8, key=k1)
        self.ln = eqx.nn.LayerNorm(8)
        self.head = eqx.nn.Linear(8, 2, key=k2)

    def __call__(self, x):
        return self.head(self.ln(self.fc(x)))


def test_equinox_norm_input_is_seen_without_interception():
    inventory = wdmask.describe(_Eqx(jax.random.key(0)), jnp.ones(3))
    feeds = {i.dotted: i.feeds_norm for i in inventory if i.path[0] in ("fc", "head")}
    assert feeds == {"fc.weight": True, "fc.bias": True, "head.weight": False, "head.bias": False}
