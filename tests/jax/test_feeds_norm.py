"""feeds_norm for linen: a conv/dense output that goes straight (through shape-only ops) into a norm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import pytest
from flax import nnx

import wdmask
from tests.jax.models import init

X = jnp.ones((2, 4, 4, 3), jnp.float32)


class Cases(nn.Module):
    @nn.compact
    def __call__(self, x):
        bn = lambda name: nn.BatchNorm(use_running_average=False, name=name)  # noqa: E731
        a = bn("bn_a")(nn.Conv(4, (3, 3), name="conv_bn")(x))  # conv -> bn
        b = bn("bn_b")(nn.relu(nn.Conv(4, (3, 3), name="conv_relu_bn")(a)))  # conv -> relu -> bn
        c = nn.Conv(4, (3, 3), name="conv_twice")(b)
        c = bn("bn_c")(c) + c  # output used twice
        flat = c.reshape(c.shape[0], -1)
        d = nn.Dense(6, name="dense_reshape_ln")(flat)  # dense -> reshape/transpose/astype -> ln
        d = nn.LayerNorm(name="ln_d")(d.reshape(2, 2, 3).transpose(0, 2, 1).astype(jnp.float32))
        shared = nn.Dense(3, name="dense_shared")
        e = nn.LayerNorm(name="ln_e")(shared(d))  # one call into a norm ...
        f = shared(d) * 2.0  # ... another call elsewhere
        g = nn.remat(nn.Dense)(3, name="dense_remat_ln")(e + f)
        g = nn.LayerNorm(name="ln_g")(g)
        return nn.Dense(2, name="head")(g)  # model output: escapes


EXPECTED = {
    "conv_bn": True, "conv_relu_bn": False, "conv_twice": False, "dense_reshape_ln": True,
    "dense_shared": False, "dense_remat_ln": True, "head": False,
}


def test_linen_cases():
    inv = wdmask.describe(Cases(), X)
    got = {i.path[0]: i.feeds_norm for i in inv if i.layer in ("conv", "linear")}
    assert got == EXPECTED
    assert all(i.feeds_norm is False for i in inv if i.layer.startswith("norm."))
    # both the kernel and the bias of a producer carry it
    assert {i.dotted for i in inv if i.feeds_norm} == {f"{p}.{leaf}" for p, v in EXPECTED.items() if v
                                                       for leaf in ("kernel", "bias")}


class ScanBody(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        h = nn.LayerNorm(name="ln")(nn.Dense(4, name="pre")(x))
        return x + nn.Dense(4, name="post")(h), None


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        body = nn.scan(nn.remat(ScanBody), variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        x, _ = body(name="layers")(x, None)
        return x


def test_through_scan_and_remat():
    by = {i.dotted: i for i in wdmask.describe(Scanned(), jnp.ones((2, 4), jnp.float32))}
    assert by["layers.pre.kernel"].feeds_norm is True and by["layers.pre.kernel"].stacked == 1
    assert by["layers.post.kernel"].feeds_norm is False


def test_unknown_without_graph():
    params = init(Cases(), X)["params"]
    assert all(i.feeds_norm is None for i in wdmask.describe(params))
    model = nnx.eval_shape(lambda: nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    assert all(i.feeds_norm is None for i in wdmask.describe(model))


def test_scale_invariant_rule_needs_the_graph():
    params = init(Cases(), X)["params"]
    rules = wdmask.presets.standard + wdmask.Rule(feeds_norm=True, decay=False)
    with pytest.warns(wdmask.UnmatchedRuleWarning, match="feeds_norm is only known"):
        wdmask.mask(params, rules)
    m = wdmask.mask(params, rules, model=Cases(), sample=X)
    assert m["conv_bn"]["kernel"] is False and m["conv_twice"]["kernel"] is True
