"""Flax inventories in module call order, for pairing with torch (never sorted pytree keys)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wdmask._pair import natural_key, order_like
from wdmask._types import ParamInfo, Path

__all__ = ["flax_inventory", "nnx_call_order"]


def nnx_call_order(model: Any, sample: Any, *, sample_kwargs: Mapping[str, Any] | None = None) -> list[Path]:
    """NNX module paths in first-call order, from one abstract forward pass on a copy of ``model``."""
    from wdmask._jax._nnx import trace_nnx

    return trace_nnx(model, sample, sample_kwargs=sample_kwargs).order


def flax_inventory(flax_model_or_params: Any, *, sample: Any = None,
                   reference: Sequence[ParamInfo] | None = None,
                   sample_kwargs: Mapping[str, Any] | None = None) -> list[ParamInfo]:
    """The Flax inventory in call order, ready for ``pair``.

    * linen module + ``sample``: exact classes, ``feeds_norm``, call order from ``nn.intercept_methods``;
    * NNX module: exact classes; with ``sample``, call order, ``feeds_norm`` and usage from one abstract
      forward pass;
      without, the order of ``reference``'s owner names, else natural key order;
    * params pytree / variables: auto-name kinds; ordered like ``reference`` (the torch inventory) when
      every owner name has a torch twin (``layer1_0.conv1`` ~ ``layer1.0.conv1``), else natural key order
      (``Block_2`` before ``Block_10``: creation order for auto-named compact modules).
    """
    from flax import linen as nn
    from flax import nnx

    from wdmask._jax._describe import describe

    obj = flax_model_or_params
    if isinstance(obj, nn.Module) or (isinstance(obj, nnx.Module) and (sample is not None or sample_kwargs)):
        return describe(obj, sample, sample_kwargs=sample_kwargs)  # traced: already in call order
    inventory = describe(obj)
    named = order_like(inventory, reference) if reference is not None else None
    return named if named is not None else sorted(inventory, key=lambda i: natural_key(i.path))
