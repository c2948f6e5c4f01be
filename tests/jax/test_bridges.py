"""Flax bridges: linen modules inside NNX (``nnx.bridge.ToNNX``) and NNX modules made inside ``@nn.compact``
(``nnx.bridge.ToLinen``/``to_linen``) are described by the wrapped framework's own classes."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import wdmask
from wdmask import presets

X = jnp.ones((2, 3))
FIELDS = ("shape", "layer", "role", "module_type", "source", "stacked_axes", "feeds_norm", "usage")


class Compact(nn.Module):
    """Auto-named and explicitly named compact submodules; an RMSNorm the names cannot tell."""

    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm()(nn.Dense(8)(x))  # Dense_0 feeds a norm
        x = nn.RMSNorm(name="final")(nn.Dense(8, name="proj")(x))
        return nn.Dense(4, name="head")(x)


class Built(nn.Module):
    """Submodules made in ``setup`` (readable without a call)."""

    def setup(self):
        self.fc = nn.Dense(8)
        self.norms = [nn.RMSNorm(), nn.LayerNorm()]

    def __call__(self, x):
        return self.norms[1](self.norms[0](self.fc(x)))


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        class Blk(nn.Module):
            @nn.compact
            def __call__(self, h, _):
                return h + nn.Dense(3, name="fc")(nn.LayerNorm(name="ln")(h)), None

        return nn.scan(Blk, variable_axes={"params": 0}, split_rngs={"params": True}, length=4)(name="blocks")(x, None)[0]


class Outer(nnx.Module):
    def __init__(self, inner: nn.Module, rngs: nnx.Rngs):
        self.lin = nnx.Linear(3, 3, rngs=rngs)
        self.bridged = nnx.bridge.ToNNX(inner, rngs=rngs)

    def __call__(self, x):
        return self.bridged(self.lin(x))  # the bridge's output is the model's output, as for the bare module


def _outer(inner: nn.Module) -> Outer:
    return nnx.eval_shape(lambda: nnx.bridge.lazy_init(Outer(inner, nnx.Rngs(0)), X))  # abstract: no eager init


def _fields(info: wdmask.ParamInfo) -> tuple:
    return tuple(getattr(info, f) for f in FIELDS)


@pytest.mark.parametrize("inner", [Compact(), Built(), Scanned()], ids=["compact", "setup", "scan"])
def test_tonnx_with_sample_is_described_as_the_bare_linen_module(inner):
    model = _outer(inner)
    bare = {i.path: _fields(i) for i in wdmask.describe(inner, sample=X)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", wdmask.UnclassifiedWarning)
        inv = wdmask.describe(model, sample=X)
    wrapped = {i.path[1:]: _fields(i) for i in inv if i.path[0] == "bridged"}
    assert wrapped == bare
    assert [str(i) for i in inv][:2] == ["lin.bias", "lin.kernel"]  # call order: lin runs before the bridge


def test_tonnx_kinds_and_decay_under_standard():
    model = _outer(Compact())
    state = nnx.state(model, nnx.Param)
    m = wdmask.mask(state, presets.standard, model=model, sample=X)
    flat = {".".join(map(str, k)): v for k, v in nnx.to_flat_state(m)}
    # from the principle: norm gains/shifts and biases are not decayed, linear maps are
    assert flat == {"lin.bias": False, "lin.kernel": True,
                    "bridged.Dense_0.bias": False, "bridged.Dense_0.kernel": True,
                    "bridged.LayerNorm_0.bias": False, "bridged.LayerNorm_0.scale": False,
                    "bridged.proj.bias": False, "bridged.proj.kernel": True,
                    "bridged.final.scale": False,
                    "bridged.head.bias": False, "bridged.head.kernel": True}
    kinds = {str(i): i.layer for i in wdmask.describe(model, sample=X)}
    assert (kinds["bridged.final.scale"], kinds["bridged.head.kernel"], kinds["bridged.Dense_0.kernel"]) == (
        "norm.rms", "linear", "linear")
    feeds = {str(i): i.feeds_norm for i in wdmask.describe(model, sample=X) if i.layer == "linear"}
    assert feeds["bridged.Dense_0.kernel"] and feeds["bridged.proj.kernel"] and not feeds["bridged.head.kernel"]
    tx = optax.add_decayed_weights(0.1, mask=m)
    updates = jax.eval_shape(lambda p: tx.update(p, tx.init(p), p)[0], state)  # optax takes the mask
    assert jax.tree.structure(updates) == jax.tree.structure(state)


def test_tonnx_without_sample_reads_classes_it_can_and_reports_the_rest():
    model = _outer(Built())
    with warnings.catch_warnings():
        warnings.simplefilter("error", wdmask.UnclassifiedWarning)
        inv = {str(i): (i.layer, i.role, i.module_type) for i in wdmask.describe(model)}
    assert inv["bridged.norms_0.scale"] == ("norm.rms", "scale", "flax.linen.RMSNorm")  # setup: exact classes
    assert inv["bridged.norms_1.bias"] == ("norm.layer", "bias", "flax.linen.LayerNorm")
    assert inv["bridged.fc.kernel"] == ("linear", "kernel", "flax.linen.Dense")

    model = _outer(Compact())
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"bridged\.final\.scale.*Pass `sample=`") as record:
        inv = {str(i): (i.layer, i.role, i.source) for i in wdmask.describe(model)}
    message = str(record[0].message)
    assert "bridged.head.kernel" in message and "bridged.Dense_0" not in message
    assert inv["bridged.Dense_0.kernel"] == ("linear", "kernel", "name")  # auto-names still tell the kind
    assert inv["bridged.LayerNorm_0.scale"] == ("norm.layer", "scale", "name")
    assert inv["bridged.final.scale"][0] == "other" and inv["bridged.head.kernel"][0] == "other"


class Mixer(nnx.Module):
    def __init__(self, d: int, rngs: nnx.Rngs):
        self.norm = nnx.RMSNorm(d, rngs=rngs)
        self.fc = nnx.Linear(d, 4, rngs=rngs)
        self.gain = nnx.Param(jnp.ones(4))

    def __call__(self, x):
        return self.fc(self.norm(x)) * self.gain


class Proj(nnx.Module):
    def __init__(self, d: int, rngs: nnx.Rngs):
        self.fc = nnx.Linear(d, 4, rngs=rngs)
        self.ln = nnx.LayerNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.ln(self.fc(x))


class Host(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nnx.bridge.ToLinen(Mixer, args=(3,))(nn.Dense(3)(x))  # Dense_0 feeds Mixer's RMSNorm
        x = nnx.bridge.to_linen(Mixer, 4, name="second")(x)
        return nnx.bridge.to_linen(Proj, 4, name="third")(x)


def test_tolinen_made_in_compact_gets_the_nnx_classes():
    bare = {i.path: (i.layer, i.role, i.module_type) for i in wdmask.describe(Mixer(3, nnx.Rngs(0)), sample=X)}
    inv = wdmask.describe(Host(), sample=X)
    for prefix in ("ToLinen_0", "second"):
        got = {i.path[1:]: (i.layer, i.role, i.module_type) for i in inv if i.path[0] == prefix}
        assert got == bare
    feeds = {str(i): i.feeds_norm for i in inv if i.role == "kernel"}
    # through the bridges: Dense_0 -> Mixer.norm; Mixer.fc -> `* gain` (not a norm); Proj.fc -> Proj.ln
    assert feeds == {"Dense_0.kernel": True, "ToLinen_0.fc.kernel": False, "second.fc.kernel": False,
                     "third.fc.kernel": True}
    assert bare[("norm", "scale")] == ("norm.rms", "scale", "flax.nnx.RMSNorm")
    assert bare[("gain",)][1] == "gain"  # from usage (multiplies the output), not from the name
    params = jax.eval_shape(lambda: Host().init(jax.random.key(0), X))["params"]
    m = wdmask.mask(params, presets.standard, model=Host(), sample=X)
    assert jax.tree.structure(m) == jax.tree.structure(params)
    assert m["ToLinen_0"] == {"norm": {"scale": False}, "fc": {"kernel": True, "bias": False}, "gain": False}
    assert m["third"] == {"ln": {"scale": False, "bias": False}, "fc": {"kernel": True, "bias": False}}
    assert m["Dense_0"] == {"kernel": True, "bias": False}
    tx = optax.add_decayed_weights(0.1, mask=m)
    assert jax.tree.structure(jax.eval_shape(lambda p: tx.update(p, tx.init(p), p)[0], params)) == \
        jax.tree.structure(params)


def test_tolinen_that_cannot_be_built_abstractly_is_reported(monkeypatch):
    from wdmask._jax import _fallback

    monkeypatch.setattr(_fallback, "_nnx_owners", lambda bridge: None)
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"ToLinen at `ToLinen_0` \(Mixer\)"):
        inv = {str(i): i.layer for i in wdmask.describe(Host(), sample=X)}
    assert inv["Dense_0.kernel"] == "linear"
