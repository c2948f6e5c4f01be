"""A linen model described with its params (as ``mask``/``decay``/``partition``... do) is traced once: one
``model.apply`` on the given params, no ``init``; where the params cannot tell what ``init`` would (a declaration
they lost with their boxes, a stacked axis only partition names place, params of another model), ``init`` is
traced as well and the answers are the same as without params."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import wdmask
from wdmask import presets

CALLS = {"n": 0}


class Net(nn.Module):
    """Counts how often its forward pass is traced; a token declared no-decay by its initializer."""

    declare: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        CALLS["n"] += 1
        init = wdmask.no_decay(nn.initializers.zeros) if self.declare else nn.initializers.zeros
        gain = self.param("gain", init, (8,))
        return nn.Dense(3, name="head")(nn.LayerNorm(name="norm")(nn.Dense(8, name="fc")(x)) * gain)


X = jnp.zeros((2, 5))


def _traces(fn) -> int:
    CALLS["n"] = 0
    fn()
    return CALLS["n"]


def _params(model: nn.Module) -> dict:
    return jax.eval_shape(model.init, jax.random.key(0), X)["params"]


def test_with_its_params_the_forward_is_traced_once():
    model, params = Net(), _params(Net())
    assert _traces(lambda: wdmask.describe(model, X)) == 2  # init, then apply
    assert _traces(lambda: wdmask.describe(model, X, params=params)) == 1
    assert _traces(lambda: wdmask.mask(params, presets.standard, model=model, sample=X)) == 1
    by = {str(i): (i.layer, i.role, i.feeds_norm) for i in wdmask.describe(model, X, params=params)}
    assert by == {"fc.kernel": ("linear", "kernel", True), "fc.bias": ("linear", "bias", True),
                  "norm.scale": ("norm.layer", "scale", False), "norm.bias": ("norm.layer", "bias", False),
                  "gain": ("other", "gain", False), "head.kernel": ("linear", "kernel", False),
                  "head.bias": ("linear", "bias", False)}


def test_a_declaration_the_params_lost_with_their_boxes_is_still_read():
    model = Net(declare=True)
    boxed = _params(model)
    unboxed = nn.meta.unbox(boxed)
    declared = {str(i): i.declared for i in wdmask.describe(model, X, params=boxed)}
    assert declared["gain"] == "no_decay" and declared["fc.kernel"] == ""
    assert _traces(lambda: wdmask.describe(model, X, params=boxed)) == 1  # the box is in the params
    assert {str(i): i.declared for i in wdmask.describe(model, X, params=unboxed)} == declared
    # the apply trace noticed the declaration its params lack: init and apply are traced again, as without params
    assert _traces(lambda: wdmask.describe(model, X, params=unboxed)) == 3
    assert wdmask.mask(unboxed, presets.standard, model=model, sample=X)["gain"] is False


class Layer(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        w = self.param("w", nn.with_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")), (4, 4))
        return x @ w, None


class Stack(nn.Module):
    """Four 4x4 layers stacked at axis 1: a (4, 4, 4) leaf whose slices fit any axis; only names place it."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scan = nn.scan(Layer, variable_axes={"params": 1}, split_rngs={"params": True}, length=4,
                       metadata_params={nn.PARTITION_NAME: "layers"})
        return scan(name="layers")(x, None)[0]


def test_a_stacked_axis_only_names_place_is_read_from_the_names():
    x = jnp.zeros((2, 4))
    boxed = jax.eval_shape(Stack().init, jax.random.key(0), x)["params"]
    for params in (boxed, nn.meta.unbox(boxed)):
        (info,) = wdmask.describe(Stack(), x, params=params)
        assert (info.shape, info.stacked_axes) == ((4, 4, 4), (1,))


def test_params_of_another_model_are_refused_as_before():
    params = _params(Net())
    with pytest.raises(wdmask.MaskError, match="shape"):
        wdmask.describe(Net(), X, params={**params, "gain": jnp.zeros(9)})
    missing = {k: v for k, v in params.items() if k != "gain"}
    with pytest.raises(wdmask.MaskError, match="gain"):
        wdmask.describe(Net(), X, params=missing)
    with pytest.raises(wdmask.MaskError, match="bogus"):
        wdmask.describe(Net(), X, params={**params, "fc": {**params["fc"], "bogus": jnp.zeros(2)}})
