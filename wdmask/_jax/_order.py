"""Flax inventories in module call order, for pairing with torch (never sorted pytree keys)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wdmask._pair import natural_key, order_by_modules, order_like
from wdmask._types import ParamInfo, Path

__all__ = ["flax_inventory", "nnx_call_order"]


def nnx_call_order(model: Any, sample: Any) -> list[Path]:
    """NNX module paths in first-call order, from one abstract forward pass on a copy of ``model``."""
    import jax
    from flax import nnx

    from wdmask._jax._linen import as_args

    graphdef, state = nnx.split(model)
    order: dict[Path, None] = {}

    def forward(state: Any, *args: Any) -> Any:
        copy = nnx.merge(graphdef, state)
        paths = {id(m): tuple(str(p) for p in path) for path, m in nnx.iter_modules(copy)}
        classes = {type(m) for _, m in nnx.iter_modules(copy)}
        saved = {cls: cls.__dict__.get("__call__") for cls in classes}
        try:
            for cls in classes:
                inner = cls.__call__

                def recorded(self: Any, *a: Any, _inner: Any = inner, **k: Any) -> Any:
                    if id(self) in paths:
                        order.setdefault(paths[id(self)], None)
                    return _inner(self, *a, **k)

                cls.__call__ = recorded  # type: ignore[method-assign]
            return copy(*args)
        finally:
            for cls, orig in saved.items():
                if orig is None:
                    del cls.__call__
                else:
                    cls.__call__ = orig  # type: ignore[method-assign]

    jax.eval_shape(forward, state, *as_args(sample))
    return list(order)


def flax_inventory(flax_model_or_params: Any, *, sample: Any = None,
                   reference: Sequence[ParamInfo] | None = None) -> list[ParamInfo]:
    """The Flax inventory in call order, ready for ``pair``.

    * linen module + ``sample``: exact classes, ``feeds_norm``, call order from ``nn.intercept_methods``;
    * NNX module: exact classes; with ``sample``, call order from one abstract forward pass;
      without, the order of ``reference``'s owner names, else natural key order;
    * params pytree / variables: auto-name kinds; ordered like ``reference`` (the torch inventory) when
      every owner name has a torch twin (``layer1_0.conv1`` ~ ``layer1.0.conv1``), else natural key order
      (``Block_2`` before ``Block_10``: creation order for auto-named compact modules).
    """
    from flax import linen as nn
    from flax import nnx

    from wdmask._jax._describe import describe
    from wdmask._jax._linen import linen_call_order

    obj = flax_model_or_params
    if isinstance(obj, nn.Module):
        inventory = describe(obj, sample)
        return order_by_modules(inventory, linen_call_order(obj, sample))
    inventory = describe(obj)
    if isinstance(obj, nnx.Module) and sample is not None:
        return order_by_modules(inventory, nnx_call_order(obj, sample))
    named = order_like(inventory, reference) if reference is not None else None
    return named if named is not None else sorted(inventory, key=lambda i: natural_key(i.path))
