r"""``to_optax``: a ``torch.optim`` optimizer (and its LR scheduler) as the Optax transform with identical updates.

Each torch param group becomes one exact Optax chain (its own ``lr``, betas, eps, momentum and
``weight_decay``); the chains are combined with ``optax.multi_transform`` keyed ``"group0"``,
``"group1"``, ... by a labels pytree naming, for every Flax leaf, the torch group of its twin.
The twins come from ``wdmask.pair`` (layer call order, kind, role, shape modulo layout).

Where optax has the exact torch math the chain uses the optax built-ins:

========  ==============================================================================
SGD       ``add_decayed_weights(λ)``, ``trace(μ, nesterov)``, ``scale_by_learning_rate(η)``
Adam      ``add_decayed_weights(λ)`` (coupled L2, *before* the moments), ``scale_by_adam(eps_root=0)``, lr
AdamW     ``scale_by_adam``, ``add_decayed_weights(λ)`` (decoupled, *after*), ``scale_by_learning_rate(η)``
RMSprop   L2, ``scale_by_rms``/``scale_by_stddev(eps_in_sqrt=False)``, ``trace(μ)``, lr (lr *after* the trace)
========  ==============================================================================

and a small custom transform where optax's math differs from torch's: SGD with ``dampening``
(``trace_dampened``), Adam/AdamW ``amsgrad`` (``scale_by_torch_amsgrad``), Adagrad
(``scale_by_torch_adagrad``), RAdam (``scale_by_torch_radam``), NAdam (``scale_by_torch_nadam``).
torch's decoupled step ``θ ← θ(1 − ηλ) − η u`` equals ``θ − η(u + λθ)``, i.e. ``add_decayed_weights(λ)``
after the preconditioner and before ``scale_by_learning_rate(η)``.

jax and optax are imported inside the functions: ``import wdmask_torch`` loads neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from wdmask._errors import _what
from wdmask._jax._twins import (
    scale_by_torch_adagrad,
    scale_by_torch_amsgrad,
    scale_by_torch_muon,
    scale_by_torch_nadam,
    scale_by_torch_radam,
    trace_dampened,
)
from wdmask._optional import JAX, require

__all__ = ["group_chains", "to_optax"]

GradientTransformation = Any  # optax.GradientTransformation (optax is imported lazily)
PyTree = Any
ScalarOrSchedule = Any

SUPPORTED = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "RAdam", "NAdam", "Muon")
FROZEN = "frozen"
NOT_AN_OPTIMIZER_MSG = ("`optimizer` must be a torch.optim.Optimizer ({supported}), got {what}; to convert a "
                        "scheduler pass it as `scheduler=` next to its optimizer")


# --------------------------------------------------------------------------- torch optimizer -> chains


def _kind(optimizer: Any) -> str:
    """The supported torch class ``optimizer`` is (or subclasses without overriding ``step``)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        what = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
        raise TypeError(NOT_AN_OPTIMIZER_MSG.format(supported=", ".join(SUPPORTED), what=what))
    for cls in type(optimizer).__mro__:
        if cls.__module__.startswith("torch.optim") and cls.__name__ in SUPPORTED:
            return cls.__name__
        if "step" in cls.__dict__:
            break  # a user subclass with its own step(): its math is unknown
    raise NotImplementedError(
        f"to_optax: {type(optimizer).__name__} is not supported (its update math has no converter here, or a "
        f"subclass overrides step()); supported: {', '.join(f'torch.optim.{n}' for n in SUPPORTED)}")


def _float(x: Any, what: str, g: int) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"param_groups[{g}] `{what}` must be a scalar, got a tensor of shape {tuple(x.shape)}")
        return float(x.item())
    return float(x)


def _scalar_dtype() -> str:
    """torch's dtype for optimizer scalars such as NAdam's ``mu_product`` (``_get_scalar_dtype``)."""
    return "float64" if torch.get_default_dtype() == torch.float64 else "float32"


def _chain(kind: str, group: Mapping[str, Any], lr: ScalarOrSchedule, g: int) -> GradientTransformation:
    """The exact Optax chain of one torch param group."""
    import optax

    wd = _float(group.get("weight_decay", 0.0), "weight_decay", g)
    parts: list[Any] = []
    if group.get("maximize", False):
        parts.append(optax.scale(-1.0))  # torch: g <- -g before anything else
    decayed = [optax.add_decayed_weights(wd)] if wd != 0.0 else []
    if kind == "SGD":
        momentum, dampening = float(group["momentum"]), float(group["dampening"])
        parts += decayed
        if momentum != 0.0:
            parts.append(optax.trace(momentum, nesterov=bool(group["nesterov"])) if dampening == 0.0
                         else trace_dampened(momentum, dampening, bool(group["nesterov"])))
    elif kind in ("Adam", "AdamW", "RAdam", "NAdam"):
        b1, b2 = (_float(b, "betas", g) for b in group["betas"])
        eps = float(group["eps"])
        if kind in ("Adam", "AdamW"):
            core = (scale_by_torch_amsgrad(b1, b2, eps) if group.get("amsgrad", False)
                    else optax.scale_by_adam(b1, b2, eps, eps_root=0.0))
        elif kind == "RAdam":
            core = scale_by_torch_radam(b1, b2, eps)
        else:
            core = scale_by_torch_nadam(b1, b2, eps, float(group["momentum_decay"]), mu_product_dtype=_scalar_dtype())
        decoupled = kind == "AdamW" or bool(group.get("decoupled_weight_decay", False))
        parts += [core, *decayed] if decoupled else [*decayed, core]
    elif kind == "RMSprop":
        alpha, eps, momentum = float(group["alpha"]), float(group["eps"]), float(group["momentum"])
        parts += decayed
        parts.append(optax.scale_by_stddev(alpha, eps, eps_in_sqrt=False) if group["centered"]
                     else optax.scale_by_rms(alpha, eps, eps_in_sqrt=False))
        if momentum > 0.0:
            parts.append(optax.trace(momentum))  # torch: buf = μ buf + g/avg; θ -= η buf (lr after the trace)
    elif kind == "Muon":  # θ ← θ(1 - ηλ) - η r NS_bf16(b̃): the direction, then the decoupled decay, then -η
        parts.append(scale_by_torch_muon(
            float(group["momentum"]), bool(group["nesterov"]), tuple(float(c) for c in group["ns_coefficients"]),
            float(group["eps"]), int(group["ns_steps"]), group["adjust_lr_fn"]))
        parts += decayed
    elif kind == "Adagrad":
        parts += decayed
        parts.append(scale_by_torch_adagrad(float(group["lr_decay"]), float(group["initial_accumulator_value"]),
                                            float(group["eps"])))
    parts.append(optax.scale_by_learning_rate(lr))
    return optax.chain(*parts)


def _stepped(state: Mapping[str, Any]) -> bool:
    """Whether a param's optimizer state is past its first step (Adagrad fills ``sum``/``step=0`` eagerly)."""
    step = state.get("step")
    return bool(state) and (step is None or float(step) > 0)


def group_chains(optimizer: torch.optim.Optimizer, *, scheduler: Any = None) -> list[GradientTransformation]:
    r"""One exact Optax chain per torch param group (the building blocks of ``to_optax``).

    Group ``g``'s chain reads that group's ``lr``, betas, eps, momentum, dampening, ``weight_decay``,
    ``maximize``, ... (``foreach``, ``fused``, ``capturable`` and ``differentiable`` do not change the
    math and are ignored). With ``scheduler``, the learning rate is
    ``wdmask_torch.to_optax_schedule(scheduler)[g]``: the scheduler stepped once per ``optimizer.step()``.

    Args:
      optimizer: a fresh (never stepped) ``torch.optim`` SGD, Adam, AdamW, RMSprop, Adagrad, RAdam or NAdam.
      scheduler: an optional ``torch.optim.lr_scheduler`` built over ``optimizer``.

    Returns:
      A list of ``optax.GradientTransformation``, in param-group order.

    Raises:
      TypeError: ``optimizer`` is not a torch optimizer, or ``scheduler`` not a scheduler of it.
      NotImplementedError: another optimizer class (or a subclass overriding ``step``), or a scheduler
        without an exact optax schedule.
      ValueError: the optimizer already holds state (it has stepped).

    Examples:
      >>> import torch
      >>> w = torch.nn.Parameter(torch.zeros(2))
      >>> opt = torch.optim.SGD([{"params": [w], "lr": 0.1}], momentum=0.9, weight_decay=1e-4)
      >>> len(group_chains(opt))
      1
    """
    require(*JAX, by="wdmask_torch.group_chains")
    from wdmask_torch._optimizers import Optimizers

    if isinstance(optimizer, Optimizers):  # a Muon + AdamW pair: each inner optimizer's groups, in order
        if scheduler is not None:
            raise NotImplementedError("to_optax: a scheduler over several optimizers (wdmask_torch.Optimizers) has "
                                      "no converter here; convert with a constant lr")
        return [c for inner in optimizer.optimizers.values() for c in group_chains(inner)]
    kind = _kind(optimizer)
    if any(_stepped(s) for s in optimizer.state.values()):
        raise ValueError(
            f"to_optax: the {type(optimizer).__name__} already holds state (it has stepped: momentum buffers / "
            "moments would be lost); convert a freshly built optimizer before its first step()")
    groups = optimizer.param_groups
    if scheduler is None:
        lrs: list[Any] = [_float(group["lr"], "lr", g) for g, group in enumerate(groups)]
    else:
        if not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
            raise TypeError(f"`scheduler` must be a torch.optim.lr_scheduler object, got {type(scheduler).__name__}")
        if scheduler.optimizer is not optimizer:
            raise TypeError("`scheduler` drives a different optimizer than `optimizer`; pass the pair built together")
        from wdmask_migrate._schedule import to_optax_schedule

        lrs = to_optax_schedule(scheduler)
    return [_chain(kind, group, lrs[g], g) for g, group in enumerate(groups)]


# --------------------------------------------------------------------------- labels


def _label(value: Any, n: int) -> str:
    valid = [*(f"group{g}" for g in range(n)), FROZEN]  # exactly the keys of to_optax's multi_transform
    if isinstance(value, str) and value in valid:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return f"group{value}"
    raise ValueError(f"`labels` leaf {value!r} names no torch param group; valid: {', '.join(valid)} "
                     f"(or an int 0..{n - 1})")


def _normalize_labels(labels: Any, n: int) -> Any:
    import jax

    def fix(tree: Any) -> Any:
        return jax.tree.map(lambda v: _label(v, n), tree)

    if callable(labels):
        return lambda params: fix(labels(params))
    if not jax.tree.leaves(labels):
        raise ValueError(f"`labels` {labels!r} holds no label; give one per Flax params leaf (a pytree of the "
                         f"params' structure with 'group0'..'group{n - 1}' or ints), or pass the Flax model instead")
    return fix(labels)


def _labeler(by_path: Mapping[tuple[str, ...], str]) -> Callable[[PyTree], PyTree]:
    """``params -> labels pytree`` (same structure; boxes get one label) from each leaf's path."""

    def labels(tree: PyTree) -> PyTree:
        from wdmask._jax._tree import flatten

        leaves, treedef = flatten(tree)
        out = []
        for leaf in leaves:
            if not leaf.trainable:
                out.append(FROZEN)
                continue
            label = by_path.get(leaf.path)
            if label is None:
                from wdmask._pair import PairError

                known = ".".join(next(iter(by_path), ()))
                raise PairError(f"Flax leaf {'.'.join(leaf.path)!r} has no torch twin; pass the params of the "
                                f"model paired with the torch model (known leaves e.g. {known!r})")
            out.append(label)
        return treedef.unflatten(out)

    return labels


def _is_flax_module(obj: Any) -> bool:
    from flax import linen, nnx

    return isinstance(obj, (linen.Module, nnx.Module))


def _paired_labels(optimizer: torch.optim.Optimizer, model: Any, flax: Any, sample: Any,
                   sample_kwargs: Any = None) -> Any:
    """Labels from pairing the torch model with its Flax twin: each leaf gets its torch twin's group."""
    from wdmask._jax._order import flax_inventory
    from wdmask._jax._tree import is_variables
    from wdmask._pair import pair
    from wdmask_torch._describe import inventory

    rows = inventory(model, include_frozen=True, fn="to_optax")
    torch_inv = [info for _, _, info in rows]
    pairs = pair(torch_inv, flax_inventory(flax, sample=sample, reference=torch_inv, sample_kwargs=sample_kwargs))
    group_of = {id(p): g for g, group in enumerate(optimizer.param_groups) for p in group["params"]}
    in_model = {id(p) for _, p, _ in rows}
    stray = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in in_model]
    if stray:
        raise ValueError(f"{len(stray)} optimizer parameter(s) (e.g. shape {tuple(stray[0].shape)}) are not "
                         f"parameters of `model` ({type(model).__name__}); pass the model the optimizer was built on")
    tensor = {info.path: p for _, p, info in rows}
    by_path = {}
    for t, f in pairs:
        g = group_of.get(id(tensor[t.path]))
        by_path[f.path] = FROZEN if g is None else f"group{g}"
    labeler = _labeler(by_path)
    from flax import linen, nnx

    if isinstance(flax, (linen.Module, nnx.Module)):
        return labeler  # params of a module come in the user's containers: label them when seen
    return labeler(flax["params"] if is_variables(flax) else flax)


def to_optax(optimizer: torch.optim.Optimizer, model: Any = None, flax_params_or_model: Any = None, *,
             scheduler: Any = None, labels: Any = None, sample: Any = None,
             sample_kwargs: Any = None) -> GradientTransformation:
    r"""The Optax transform whose updates equal ``optimizer.step()``'s on the paired Flax params.

    Built as ``optax.multi_transform`` over the torch param groups, because groups may differ in
    ``lr``, betas, eps, momentum and ``weight_decay``:

    $$\text{tx} = \text{multi\_transform}\bigl(\{\texttt{group}g: \text{chain}_g\},\ \text{labels}\bigr)$$

    where ``chain_g`` is ``group_chains(optimizer, scheduler=scheduler)[g]`` (see the module docstring
    for each optimizer's chain; coupled L2 decay comes before the moment estimates, decoupled decay
    after, both as ``add_decayed_weights`` with the group's own ``weight_decay``), and ``labels`` names,
    for every Flax leaf, the group of its torch twin (``"group0"``, ``"group1"``, ...). Twins come from
    ``wdmask.pair`` on ``wdmask_torch.describe(model)`` and the Flax inventory (call order, kind, role,
    shape modulo layout). Torch parameters in no group (frozen) and non-``params`` collections get the
    label ``"frozen"`` (``optax.set_to_zero``).

    With a scheduler, ``schedule_g(t)`` is the lr torch uses at its ``t``-th ``step()`` when the
    scheduler is stepped once after every ``optimizer.step()``.

    Args:
      optimizer: a freshly built ``torch.optim`` SGD, Adam, AdamW, RMSprop, Adagrad, RAdam or NAdam.
      model: the torch model the optimizer's params belong to.
      flax_params_or_model: its Flax twin: params (or linen variables), a linen module (with ``sample``)
        or an NNX module. Params pytree: ``labels`` is a literal pytree of strings; a module: a callable.
      scheduler: a ``torch.optim.lr_scheduler`` of ``optimizer`` (StepLR, MultiStepLR, CosineAnnealingLR,
        LinearLR, OneCycleLR, SequentialLR, ...: see ``to_optax_schedule``).
      labels: instead of ``model``/``flax_params_or_model``: a pytree (or ``params -> pytree``) with, per
        Flax leaf, its torch group as an int ``g`` or a string ``"group{g}"`` (``"frozen"``: no update).
      sample: example inputs of a linen ``flax_params_or_model`` (traced abstractly for call order).
      sample_kwargs: keyword arguments of the Flax model's forward pass (``{"train": False}``).

    Returns:
      An ``optax.GradientTransformation``. Without ``model``/``labels`` and a single param group: that
      group's chain itself.

    Raises:
      TypeError: not a torch optimizer / scheduler; both or neither of ``labels`` and ``model`` with
        several groups.
      NotImplementedError: an optimizer class or scheduler with no exact Optax equivalent here.
      ValueError: the optimizer already stepped; optimizer params missing from ``model``; bad labels.
      wdmask.PairError: the torch and Flax models cannot be paired.

    Examples:
      >>> import jax.numpy as jnp, torch
      >>> a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
      >>> opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=1e-3)
      >>> tx = to_optax(opt, labels={"w": 0, "b": "group1"})
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(3)}
      >>> updates, _ = tx.update({"w": jnp.zeros(2), "b": jnp.zeros(3)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 9), abs(float(updates["b"][0]))  # decoupled decay -ηλθ on group 0 only
      (-1e-05, 0.0)
    """
    require(*JAX, by="wdmask_torch.to_optax")
    import optax

    chains = group_chains(optimizer, scheduler=scheduler)
    n = len(chains)
    if labels is not None and model is not None:
        raise TypeError("to_optax: pass either `labels` or `model` with `flax_params_or_model`, not both")
    if labels is None and model is None:
        if n == 1 and flax_params_or_model is None:
            return chains[0]
        raise TypeError(f"to_optax: the optimizer has {n} param groups; pass `model` and `flax_params_or_model` "
                        "(its Flax twin) so each Flax leaf gets its group, or `labels=` naming each leaf's group")
    if labels is None:
        if flax_params_or_model is None:
            raise TypeError("to_optax: `model` needs `flax_params_or_model`: the Flax params or module it pairs with")
        if not isinstance(flax_params_or_model, Mapping) and not _is_flax_module(flax_params_or_model):
            raise TypeError("to_optax: `flax_params_or_model` must be Flax params or variables (a dict), a linen "
                            f"module (with `sample`) or an NNX module, got {_what(flax_params_or_model)}")
        labels = _paired_labels(optimizer, model, flax_params_or_model, sample, sample_kwargs)
    else:
        labels = _normalize_labels(labels, n)
    transforms = {f"group{g}": chain for g, chain in enumerate(chains)}
    transforms[FROZEN] = optax.set_to_zero()
    return optax.multi_transform(transforms, labels)

