r"""``describe``: a Flax model or a params pytree -> inventory (one ``ParamInfo`` per trainable leaf).

Three inputs, three levels of trust (``ParamInfo.source``):

* a **linen module** with ``sample=`` inputs: the exact class of every module, recorded by an
  ``nn.intercept_methods`` interceptor while ``model.init`` is traced abstractly
  (``source="type"``); per-slice shapes inside ``nn.scan``/``nn.vmap`` give ``stacked``; the
  same trace yields ``feeds_norm`` (see ``_feeds_norm``);
* an **NNX module**: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``
  (``source="type"``); with ``sample=``, one abstract forward pass gives ``feeds_norm`` and roles
  from usage (without, ``feeds_norm`` is ``None``);
* with a ``sample``, every parameter's **usage** in the traced forward pass (``_usage``) decides its
  role (``source="graph"``; the class keeps the layer kind when known): Einsum kernels, explicitly
  named modules, learned tokens, position tables, layer scales are classified by what the forward
  pass does with them, not by their names;
* a **plain pytree** (dict, ``FrozenDict``, ``{"params": ...}`` variables, ``nn.Partitioned``
  boxes): the Flax auto-name of the leaf's *immediate* owner (``BatchNorm_0``, ``Conv_1``,
  ``CheckpointDense_0``) gives the kind (``source="name"``); an explicitly named owner
  (``bn1``, ``downsample``) cannot be classified: its leaves get ``layer="other"`` and a role
  from the leaf name only (``source="shape"``). Pass ``model=`` to fix that.

``module_type`` is ``"flax.linen.<Name>"`` / ``"flax.nnx.<Name>"`` for classes Flax exports
publicly (``flax.linen.normalization.BatchNorm`` -> ``"flax.linen.BatchNorm"``), else
``f"{cls.__module__}.{cls.__qualname__}"`` (``"my_project.models.RMSNorm"``); ``""`` when unknown.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from wdmask._depth import traced_depths
from wdmask._errors import short_repr
from wdmask._jax._equinox import describe_equinox, is_equinox
from wdmask._jax._linen import describe_linen_traced
from wdmask._jax._nnx import describe_nnx_traced
from wdmask._jax._plain import describe_tree
from wdmask._jax._stacks import stacked_by_metadata
from wdmask._jax._tree import Leaf, PyTree, flatten, in_call_order
from wdmask._optional import JAX, require
from wdmask._types import ParamInfo

TORCH_MODULE_MSG = ("wdmask.{fn}: `{arg}` is a torch module ({name}); wdmask.{fn} works on Flax/JAX params and "
                    "models. For PyTorch use {fix}")
_TORCH_FIX = {
    "mask": "wdmask_torch.groups(model, rules, weight_decay=...): param groups for torch.optim",
    "decay": "wdmask_torch.groups(model, rules, weight_decay=...): param groups for torch.optim",
    "describe": "wdmask_torch.describe(model), or wdmask.explain(model, rules), which takes torch modules",
    **dict.fromkeys(("partition", "labels", "lr_scales", "scale_lr", "muon_dimension_numbers"),
                    "wdmask_torch.optimizers(model, rules, {label: factory}) or wdmask_torch.groups(model, rules, "
                    "lr=...): one optimizer per label, param groups with their lr"),
}


def refuse_torch(obj: Any, fn: str, arg: str) -> None:
    """Raise ``TypeError`` pointing to ``wdmask_torch`` when ``obj`` is a torch module or tensor.

    Checked through ``sys.modules`` so ``wdmask`` never imports torch: if torch is not loaded,
    ``obj`` cannot be one of its objects.
    """
    torch = sys.modules.get("torch")
    if torch is None or obj is None:
        return
    if isinstance(obj, torch.nn.Module):
        raise TypeError(TORCH_MODULE_MSG.format(fn=fn, arg=arg, name=type(obj).__name__, fix=_TORCH_FIX[fn]))
    if isinstance(obj, torch.Tensor):
        raise TypeError(f"wdmask.{fn}: `{arg}` is a torch tensor; wdmask.{fn} works on Flax/JAX params and models. "
                        f"For PyTorch use {_TORCH_FIX[fn]}")
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TypeError(f"wdmask.{fn}: `{arg}` is a dict of torch tensors (a state_dict?); wdmask.{fn} works on "
                        f"Flax/JAX params. For PyTorch use {_TORCH_FIX[fn]}")


def refuse_not_a_model(obj: Any, fn: str, arg: str) -> None:
    """``TypeError`` for what is neither a model nor a params pytree (``None``, a number, a string): such a value
    would otherwise be described as an empty model or a single nameless leaf."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        raise TypeError(f"wdmask.{fn}: `{arg}` must be a Flax linen/NNX or Equinox model or a "
                        f"params pytree (e.g. a dict of arrays), got {type(obj).__name__} {short_repr(obj)}")


def _is_linen(obj: Any) -> bool:
    import flax.linen as nn

    return isinstance(obj, nn.Module)


def _is_nnx(obj: Any) -> bool:
    from flax import nnx

    return isinstance(obj, nnx.Module)


def describe(params_or_model: Any, sample: Any = None, *, params: PyTree | None = None,
             sample_kwargs: Mapping[str, Any] | None = None) -> list[ParamInfo]:
    r"""Inventory of a Flax/Equinox model or params pytree: one ``ParamInfo`` per trainable leaf.

    Order: a model traced on ``sample`` (linen, NNX) lists its leaves in **module call order** (the
    order ``wdmask.pair`` needs to match torch's ``named_parameters()``); a model without a sample and
    a params pytree list them in pytree flatten order (sorted keys: ``Block_10`` before ``Block_2``).

    * linen ``nn.Module`` + ``sample`` (example inputs for ``model.init``): exact classes,
      ``stacked`` axes of ``nn.scan``/``nn.vmap``, and ``feeds_norm``; abstract traces, no FLOPs (one
      ``model.apply`` when ``params`` are given, else ``init`` and ``apply``);
    * NNX ``nnx.Module``: exact classes; with ``sample``, ``feeds_norm`` and roles from usage too
      (one abstract forward pass), else ``feeds_norm`` is ``None``;
    * params pytree (dict, ``FrozenDict``, ``{"params": ...}`` variables — only the ``params``
      collection is described —, ``nn.Partitioned``/``nnx.Param`` boxes unboxed): Flax auto-names
      of each leaf's immediate owner; explicit names (``bn1``) give ``layer="other"``.

    A traced model's leaves carry their roles from usage, ``contract_axes`` (Muon's dimension numbers),
    ``call_index`` and ``depth`` (0 before the first repeated block, ``i`` in block ``i``, ``depth_max`` after
    the last; ``None`` for a module the forward pass never ran). Integer and bool leaves are listed with their
    dtype (the engine never decays them).

    Args:
      params_or_model: a linen module, an NNX module, or a params pytree.
      sample: example inputs of a linen or NNX module (an array, or a tuple of positional arguments);
        array leaves are traced abstractly, other leaves (``False``, ``3``, ``"mean"``, ``None``) are
        passed as static Python values.
      sample_kwargs: keyword arguments of the forward pass (e.g. ``{"train": False}``), split the same way.
      params: the actual params to describe with a model (their paths must be the model's);
        defaults to the model's own.

    Returns:
      A list of ``ParamInfo``.

    Raises:
      ValueError: a linen module without ``sample``.
      MaskError: ``params`` do not belong to the model.

    Examples:
      >>> import jax.numpy as jnp, wdmask
      >>> inv = wdmask.describe({"BatchNorm_0": {"scale": jnp.ones(3)}, "bn1": {"scale": jnp.ones(3)}})
      >>> [(str(i), i.layer, i.role, i.source) for i in inv]
      [('BatchNorm_0.scale', 'norm.batch', 'scale', 'name'), ('bn1.scale', 'other', 'scale', 'shape')]
    """
    require(*JAX, by="wdmask.describe")
    refuse_torch(params_or_model, "describe", "params_or_model")
    refuse_not_a_model(params_or_model, "describe", "params_or_model")
    if isinstance(params_or_model, type):
        raise TypeError(f"describe() takes a module instance or a params pytree, got the class "
                        f"{params_or_model.__name__}; instantiate it first")
    if is_equinox(params_or_model):
        inventory = describe_equinox(params_or_model, params, sample=sample, sample_kwargs=sample_kwargs)
        return traced_depths(inventory) if any(info.usage for info in inventory) else inventory
    if _is_linen(params_or_model):
        inventory, order, _ = describe_linen_traced(params_or_model, sample, params, sample_kwargs=sample_kwargs)
        return traced_depths(in_call_order(inventory, order)) if order else inventory
    if _is_nnx(params_or_model):
        inventory, nnx_order = describe_nnx_traced(params_or_model, params, sample, sample_kwargs=sample_kwargs)
        return traced_depths(in_call_order(inventory, nnx_order)) if nnx_order else inventory
    if params is not None:
        raise TypeError("describe(): `params=` only goes with a model; pass the params pytree as the first argument")
    if sample is not None or sample_kwargs:
        raise TypeError("describe(): `sample`/`sample_kwargs` only go with a linen or NNX module; a params pytree "
                        "is described by its names (pass the module to get exact classes, usage and feeds_norm)")
    leaves, _ = flatten(params_or_model)
    return list(describe_tree(leaves, stacked_by_metadata(params_or_model, leaves)))


def describe_flattened(tree: PyTree, leaves: Sequence[Leaf]) -> Sequence[ParamInfo]:
    """``describe(tree)`` of a params pytree already flattened to ``leaves`` (``flatten(tree)[0]``), as the
    ``Inventory`` of kinds the name-only describe gives (``decide`` decides once per kind)."""
    if isinstance(tree, type) or is_equinox(tree) or _is_linen(tree) or _is_nnx(tree):
        return describe(tree)
    return describe_tree(leaves, stacked_by_metadata(tree, leaves))


def inventory_for(params: PyTree, leaves: Sequence[Leaf], *, model: Any, sample: Any, fn: str,
                  sample_kwargs: Mapping[str, Any] | None = None,
                  given: Sequence[ParamInfo] | None = None) -> Sequence[ParamInfo]:
    """The inventory an entry point (``mask``, ``decay``, ``audit``, ``infer_rules``) decides on: ``given``
    (built already by ``describe``; checked against ``params``' paths and shapes), else ``model`` described
    with ``sample``, else the params alone."""
    from wdmask._types import given_inventory

    if given is not None:
        if model is not None or sample is not None or sample_kwargs:
            raise TypeError(f"wdmask.{fn}: pass `inventory=` or `model=`/`sample=`, not both (the inventory was "
                            "described with its own model and sample)")
        by_path = given_inventory(given, [(leaf.path, tuple(leaf.shape)) for leaf in leaves if leaf.trainable],
                                  f"wdmask.{fn}")
        return [by_path[leaf.path] for leaf in leaves if leaf.path in by_path]
    if model is not None:
        return describe(model, sample, params=params, sample_kwargs=sample_kwargs)
    if sample is not None or sample_kwargs:
        raise TypeError(f"wdmask.{fn}: `sample`/`sample_kwargs` go with `model=` (a linen or NNX module); pass "
                        "model=... as well")
    return describe_flattened(params, leaves)
