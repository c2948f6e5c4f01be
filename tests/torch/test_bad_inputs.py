"""Bad arguments to the torch entry points: a clear error naming the argument, before any work is done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import wdmask
import wdmask_torch
from wdmask import Rule


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)


def step_lr() -> Any:
    return torch.optim.lr_scheduler.StepLR(sgd(net()), step_size=2)


class Obj:
    pass


#: (call, error type, message regex). Every message names the argument.
BAD: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "groups_include_frozen_str": (lambda: wdmask_torch.groups(net(), include_frozen="no"), TypeError,
                                  r"wdmask_torch.groups: `include_frozen` must be True or False, got str 'no'; "
                                  r"write True or False, not a string"),
    "groups_include_frozen_none": (lambda: wdmask_torch.groups(net(), include_frozen=None), TypeError,
                                   r"`include_frozen` must be True or False, got NoneType None"),
    "groups_strict_str": (lambda: wdmask_torch.groups(net(), strict="no"), TypeError,
                          r"wdmask_torch.groups: `strict` must be True or False, got str 'no'"),
    "groups_strict_int": (lambda: wdmask_torch.groups(net(), strict=1), TypeError,
                          r"`strict` must be True or False, got int 1"),
    "groups_strict_tensor": (lambda: wdmask_torch.groups(net(), strict=torch.tensor(True)), TypeError,
                             r"`strict` must be True or False, got Tensor"),
    "groups_named_str": (lambda: wdmask_torch.groups(net(), named="no"), TypeError,
                         r"`named` must be True or False, got str 'no'"),
    "describe_include_frozen_str": (lambda: wdmask_torch.describe(net(), include_frozen="no"), TypeError,
                                    r"wdmask_torch.describe: `include_frozen` must be True or False, got str 'no'"),
    "overflowing_group_weight_decay": (
        lambda: wdmask_torch.groups(net(), [Rule(layer="linear", role="kernel", multiplier=1e308)], weight_decay=10),
        ValueError, r"weight_decay \* multiplier = 10 \* 1e\+308 overflows to inf for 1 parameter\(s\) "
                    r"\(e.g. '0.weight', multiplier set by rules\[0\]\)"),
    "options_by_multiplier_str_key": (lambda: wdmask_torch.groups(net(), options_by_multiplier={"a": {}}), TypeError,
                                      r"`options_by_multiplier` keys must be the weight-decay multipliers .* got key "
                                      r"str 'a'"),
    "options_by_multiplier_bool_key": (lambda: wdmask_torch.groups(net(), options_by_multiplier={True: {}}),
                                       TypeError, r"`options_by_multiplier` keys .* got key bool True"),
    "options_by_multiplier_list": (lambda: wdmask_torch.groups(net(), options_by_multiplier=[1]), TypeError,
                                   r"`options_by_multiplier` must be a dict \{multiplier: \{option: value\}\}.* "
                                   r"got list \[1\]"),
    "options_by_multiplier_value": (lambda: wdmask_torch.groups(net(), options_by_multiplier={0.0: 5}), TypeError,
                                    r"`options_by_multiplier`\[0.0\] must be a dict of group options .* got int 5"),
    "options_by_multiplier_option_name": (lambda: wdmask_torch.groups(net(), options_by_multiplier={0.0: {1: 2}}),
                                          TypeError, r"`options_by_multiplier`\[0.0\] keys must be option names"),
    "schedule_steps_str": (lambda: wdmask_torch.to_optax_schedule(step_lr(), steps="5"), TypeError,
                           r"`steps` must be an int >= 1 .* got str '5'"),
    "schedule_steps_float": (lambda: wdmask_torch.to_optax_schedule(step_lr(), steps=1.5), TypeError,
                             r"`steps` must be an int >= 1 .* got float 1.5"),
    "schedule_steps_bool": (lambda: wdmask_torch.to_optax_schedule(step_lr(), steps=True), TypeError,
                            r"`steps` must be an int >= 1 .* got bool True"),
    "unwrap_not_a_module": (lambda: wdmask_torch.unwrap(42), TypeError, r"`model` must be a torch.nn.Module, got int"),
    "unregister_norm_list": (lambda: wdmask_torch.unregister_norm([]), TypeError,
                             r"unregister_norm: `cls` must be an nn.Module subclass, got \[\]"),
}
FLAX_BAD: dict[str, tuple[Callable[[Any, Any, Any], Any], type[Exception], str]] = {
    "to_flax_flax_model_int": (lambda f, v, x: wdmask_torch.to_flax(net(), v, flax_model=42, sample=x), TypeError,
                               r"to_flax: `flax_model` must be a flax.linen or flax.nnx Module .* got int 42"),
    "from_flax_flax_model_int": (lambda f, v, x: wdmask_torch.from_flax(net(), v, flax_model=42, sample=x),
                                 TypeError, r"from_flax: `flax_model` must be a flax.linen or flax.nnx Module"),
    "from_flax_variables_int": (lambda f, v, x: wdmask_torch.from_flax(net(), 42, flax_model=f, sample=x), TypeError,
                                r"from_flax: `variables` must be linen variables .* got int 42"),
    "to_flax_dtype_int": (lambda f, v, x: wdmask_torch.to_flax(net(), v, flax_model=f, sample=x, dtype=42),
                          TypeError, r"to_flax: `dtype` must be a floating dtype .* got int 42"),
    "to_flax_dtype_text": (lambda f, v, x: wdmask_torch.to_flax(net(), v, flax_model=f, sample=x, dtype="a"),
                           TypeError, r"to_flax: `dtype` must be a floating dtype .* got str 'a'"),
    "to_optax_flax_scalar": (lambda f, v, x: (lambda m: wdmask_torch.to_optax(sgd(m), m, 42))(net()), TypeError,
                             r"to_optax: `flax_params_or_model` must be Flax params or variables .* got int 42"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=list(BAD))
def test_bad_argument_is_refused_clearly(case: tuple[Callable[[], Any], type[Exception], str]) -> None:
    call, error, match = case
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("case", FLAX_BAD.values(), ids=list(FLAX_BAD))
def test_bad_flax_argument_is_refused_clearly(case: tuple[Callable[[Any, Any, Any], Any], type[Exception], str]
                                              ) -> None:
    jax = pytest.importorskip("jax")
    linen = pytest.importorskip("flax.linen")
    f = linen.Sequential([linen.Dense(2), linen.BatchNorm(use_running_average=True)])
    x = jax.numpy.zeros((1, 3))
    v = jax.eval_shape(f.init, jax.random.key(0), x)
    call, error, match = case
    with pytest.raises(error, match=match):
        call(f, v, x)


def test_a_large_but_finite_group_weight_decay_is_kept() -> None:
    groups = wdmask_torch.groups(net(), [Rule(layer="linear", role="kernel", multiplier=1e300)], weight_decay=10)
    assert [g["weight_decay"] for g in groups] == [10.0, 1e301]


def test_the_bool_is_checked_before_the_model_runs() -> None:
    calls = []

    class Spy(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return super().forward(x)

    with pytest.raises(TypeError, match="`strict`"):
        wdmask_torch.groups(Spy(2, 2), strict="no", example_inputs=torch.zeros(1, 2))
    assert calls == []


def test_rules_given_as_a_tensor_is_a_rule_error_not_a_torch_iteration_error() -> None:
    """``rules=torch.tensor(1.)`` used to fail inside torch ("iteration over a 0-d tensor")."""
    model = torch.nn.Linear(2, 2)
    with pytest.raises(wdmask.RuleError, match="`rules` must be a wdmask Rules"):
        wdmask_torch.groups(model, torch.tensor(1.0))
    with pytest.raises(wdmask.RuleError, match="`rules` must be a wdmask Rules"):
        wdmask_torch.groups(model, torch.ones(3))
