"""Every argument of the JAX entry points is checked: hyperparameters of lars/lamb, low-precision injected
hyperparameters, torch values where JAX is expected, non-models, flags, shapes of params and samples."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import wdmask
from tests.jax.models import init, nnx_model
from wdmask import presets

PARAMS = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}

BAD_HYPERPARAMETERS = {
    "lars_lr_negative": (wdmask.lars, {"learning_rate": -1}, ValueError, r"`learning_rate` must be a finite real "
                         r"number >= 0 or a schedule, got int -1"),
    "lars_lr_str": (wdmask.lars, {"learning_rate": "a"}, TypeError, r"`learning_rate` .* got str 'a'; write the "
                    r"number itself"),
    "lars_lr_nan": (wdmask.lars, {"learning_rate": float("nan")}, ValueError, "got float nan"),
    "lars_lr_torch": (wdmask.lars, {"learning_rate": torch.tensor(0.1)}, TypeError, "torch tensor"),
    "lars_momentum": (wdmask.lars, {"momentum": -0.9}, ValueError, r"`momentum` must be a finite real number >= 0"),
    "lars_trust": (wdmask.lars, {"trust_coefficient": 0.0}, ValueError, r"`trust_coefficient` .* > 0"),
    "lars_eps": (wdmask.lars, {"eps": -1e-8}, ValueError, r"`eps` must be"),
    "lars_nesterov": (wdmask.lars, {"nesterov": "no"}, TypeError, r"`nesterov` must be True or False, got str 'no'"),
    "lamb_b1": (wdmask.lamb, {"b1": 2}, ValueError, r"`b1` must be a finite real number in \[0, 1\), got int 2"),
    "lamb_b2_one": (wdmask.lamb, {"b2": 1.0}, ValueError, r"`b2` must be a finite real number in \[0, 1\)"),
    "lamb_b2_list": (wdmask.lamb, {"b2": [0.9]}, TypeError, r"`b2` must be"),
    "lamb_lr_inf": (wdmask.lamb, {"learning_rate": float("inf")}, ValueError, r"`learning_rate`"),
    "lamb_eps_root": (wdmask.lamb, {"eps_root": -1.0}, ValueError, r"`eps_root`"),
    "lamb_exclude": (wdmask.lamb, {"exclude_from_trust_ratio": 1}, TypeError, r"`exclude_from_trust_ratio` must be "
                     r"True or False"),
    "lamb_wd_torch": (wdmask.lamb, {"weight_decay": torch.tensor(0.1)}, TypeError, "torch tensor"),
}


@pytest.mark.parametrize("factory,kwargs,error,match", BAD_HYPERPARAMETERS.values(), ids=list(BAD_HYPERPARAMETERS))
def test_lars_and_lamb_refuse_bad_hyperparameters(factory, kwargs, error, match):
    args = {"learning_rate": 0.1, "weight_decay": 1e-4, **kwargs}
    with pytest.raises(error, match=rf"wdmask\.{factory.__name__}: .*{match}"):
        factory(**args)


@pytest.mark.parametrize("dtype", [jnp.bfloat16], ids=["bf16"])
@pytest.mark.parametrize("build", [
    lambda weight_decay: wdmask.decay(weight_decay),
    lambda weight_decay: wdmask.lars(0.5, weight_decay),
    lambda weight_decay: wdmask.lamb(0.5, weight_decay),
], ids=["decay", "lars", "lamb"])
def test_low_precision_injected_weight_decay_is_accepted(build, dtype):
    params = jax.tree.map(lambda x: x.astype(dtype), PARAMS)
    tx = optax.inject_hyperparams(build)(0.5)
    state = tx.init(params)
    assert state.hyperparams["weight_decay"].dtype == dtype  # what used to be refused as "not a real number"
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    assert updates["Dense_0"]["kernel"].dtype == dtype
    assert float(updates["Dense_0"]["bias"][0]) == 0.0  # standard: biases are not decayed
    assert float(jnp.abs(updates["Dense_0"]["kernel"][0, 0])) > 0.0


def test_low_precision_injected_weight_decay_decays_exactly_in_fp8():
    params = jax.tree.map(lambda x: x.astype(jnp.float8_e4m3fn), PARAMS)
    tx = optax.inject_hyperparams(lambda weight_decay: wdmask.decay(weight_decay))(0.5)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert jax.tree.map(lambda x: x.astype(jnp.float32).tolist(), updates) == {
        "Dense_0": {"bias": [0.0, 0.0], "kernel": [[0.5, 0.5], [0.5, 0.5]]}}
    for build in (lambda weight_decay: wdmask.lars(0.5, weight_decay), lambda weight_decay: wdmask.lamb(0.5,
                                                                                                      weight_decay)):
        state = optax.inject_hyperparams(build)(0.5).init(params)  # fp8 has too few bits for their steps' values
        assert state.hyperparams["weight_decay"].dtype == jnp.float8_e4m3fn


def test_fully_injected_lamb_in_bfloat16_names_the_rounding_and_the_fix():
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    with pytest.raises(ValueError, match=r"`b2` is a bfloat16 array here .* hyperparam_dtype=jnp.float32"):
        optax.inject_hyperparams(wdmask.lamb)(learning_rate=0.1, weight_decay=0.1).init(params)
    tx = optax.inject_hyperparams(wdmask.lamb, hyperparam_dtype=jnp.float32)(learning_rate=0.1, weight_decay=0.1)
    assert tx.init(params).hyperparams["b2"].dtype == jnp.float32


def test_torch_tensor_weight_decay_is_refused():
    with pytest.raises(TypeError, match=r"wdmask.decay: `weight_decay` .* got Tensor .*torch tensor.*\.item\(\)"):
        wdmask.decay(torch.tensor(0.1))
    with pytest.raises(TypeError, match="`params` is a torch tensor"):
        wdmask.mask(torch.zeros(3), presets.standard)


@pytest.mark.parametrize("call,match", [
    (lambda: wdmask.describe(42), r"wdmask.describe: `params_or_model` must be .* got int 42"),
    (lambda: wdmask.describe(None), r"got NoneType None"),
    (lambda: wdmask.explain(None, presets.standard), r"wdmask.explain: `model_or_inventory` must be .* got NoneType"),
    (lambda: wdmask.explain("resnet", presets.standard), r"got str 'resnet'"),
    (lambda: wdmask.mask(3.0, presets.standard), r"wdmask.mask: `params` must be .* got float 3.0"),
], ids=["describe_int", "describe_none", "explain_none", "explain_str", "mask_float"])
def test_what_is_not_a_model_is_refused(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_strict_must_be_a_bool():
    with pytest.raises(TypeError, match=r"wdmask.decay: `strict` must be True or False, got str 'no'"):
        wdmask.decay(0.1, strict="no")
    with pytest.raises(TypeError, match=r"`strict` must be True or False, got int 1"):
        wdmask.mask(PARAMS, presets.standard, strict=1)


def test_weight_decay_times_multiplier_must_stay_finite():
    rules = [wdmask.Rule(path="**", multiplier=1e308)]
    with pytest.raises(ValueError, match=r"weight_decay 10 times the rules' multiplier 1e\+308 is not finite"):
        wdmask.decay(10.0, rules).init(PARAMS)


class _Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.LayerNorm()(nn.Dense(4)(x)))


def test_linen_sample_of_the_wrong_shape_is_refused_naming_the_leaf():
    model = _Mlp()
    params = init(model, jnp.zeros((2, 3)))["params"]
    # Dense_0 is the outer Dense(2) (built first), Dense_1 the Dense(4) that reads the input
    with pytest.raises(wdmask.MaskError, match=r"leaf 'Dense_1.kernel' has shape \(3, 4\) in `params`, \(5, 4\) in "
                                               r"the model.*`sample` of the wrong shape"):
        wdmask.mask(params, presets.standard, model=model, sample=jnp.zeros((2, 5)))
    tx = wdmask.decay(0.1, model=model, sample=jnp.zeros((2, 5)))
    with pytest.raises(wdmask.MaskError, match=r"'Dense_1.kernel' has shape \(3, 4\)"):
        tx.init(params)


def test_linen_params_of_another_model_with_the_same_paths_are_refused():
    class Wider(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.LayerNorm()(nn.Dense(8)(x)))

    other = init(Wider(), jnp.zeros((2, 3)))["params"]
    with pytest.raises(wdmask.MaskError, match=r"leaf 'Dense_0.kernel' has shape \(8, 2\) in `params`, \(4, 2\)"):
        wdmask.describe(_Mlp(), jnp.zeros((2, 3)), params=other)


def test_nnx_params_of_other_shapes_are_refused_naming_the_leaf():
    model = nnx_model(lambda: nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    other = nnx.state(nnx_model(lambda: nnx.Linear(3, 5, rngs=nnx.Rngs(0))), nnx.Param)
    with pytest.raises(wdmask.MaskError, match=r"leaf 'bias' has shape \(5,\) in `params`, \(4,\) in the model"):
        wdmask.mask(other, presets.standard, model=model)
    np.testing.assert_equal(nnx.to_pure_dict(wdmask.mask(nnx.state(model, nnx.Param), presets.standard,
                                                         model=model)), {"bias": False, "kernel": True})
