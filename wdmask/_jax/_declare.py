"""``no_decay``: declare, where a Flax parameter is created, that weight decay must not touch it.

The JAX counterpart of timm's ``model.no_weight_decay()`` and torch's ``p._no_weight_decay = True``.
``no_decay(init_fn)`` returns an initializer whose value is wrapped in a ``NoDecay`` box, an
``nn.meta.AxisMetadata`` like ``nn.Partitioned``: linen's ``self.param`` hands the module the raw array,
the params tree keeps the box, ``describe`` reads it (``declared="no_decay"``) and unboxes it for matching,
and ``nn.meta.unbox`` removes it. Boxes nest both ways with ``nn.with_partitioning``.

NNX has its own metadata: ``nnx.Param(value, no_decay=True)`` or ``nnx.with_metadata(init, no_decay=True)``
declare the same thing and ``describe`` reads them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any

from wdmask._optional import JAX, require

__all__ = ["is_no_decay", "no_decay", "watch_declarations"]

#: Set while ``describe`` traces a linen ``apply`` on given params: each ``no_decay`` initializer flax evaluates
#: (to check a given parameter's shape) adds one, so a declaration the given (unboxed) params lost is noticed.
_SEEN: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("wdmask_no_decay_seen", default=None)


@contextlib.contextmanager
def watch_declarations() -> Iterator[list[bool]]:
    """A list that gets an entry each time a ``no_decay`` initializer runs in this context (see ``_SEEN``)."""
    seen: list[bool] = []
    token = _SEEN.set(seen)
    try:
        yield seen
    finally:
        _SEEN.reset(token)


@functools.cache
def box_class() -> type:
    """The ``NoDecay`` box class (built on first use: ``import wdmask`` loads no Flax)."""
    from flax import struct
    from flax.linen import meta

    class NoDecay(struct.PyTreeNode, meta.AxisMetadata):  # type: ignore[misc]
        """A parameter value the model declares exempt from weight decay (see ``wdmask.no_decay``)."""

        value: Any

        def unbox(self) -> Any:
            v = self.value
            return v.unbox() if isinstance(v, meta.AxisMetadata) else v

        def replace_boxed(self, val: Any) -> Any:
            if isinstance(self.value, meta.AxisMetadata):
                return self.replace(value=self.value.replace_boxed(val))
            return self.replace(value=val)

        def add_axis(self, index: int, params: dict[Any, Any]) -> Any:
            if isinstance(self.value, meta.AxisMetadata):
                return self.replace(value=self.value.add_axis(index, params))
            return self

        def remove_axis(self, index: int, params: dict[Any, Any]) -> Any:
            if isinstance(self.value, meta.AxisMetadata):
                return self.replace(value=self.value.remove_axis(index, params))
            return self

    NoDecay.__module__ = __name__
    NoDecay.__qualname__ = "NoDecay"
    return NoDecay


def no_decay(init_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Flax initializer so the parameter it creates is declared exempt from weight decay.

    Rules match such leaves with ``declared="no_decay"``; ``presets.standard`` and ``presets.timm``
    honour the declaration. Works with ``nn.with_partitioning`` in either order, under ``nn.scan``, and
    on ``jax.eval_shape`` params. For NNX use ``nnx.with_metadata(init_fn, no_decay=True)``.

    Args:
      init_fn: an initializer ``(key, shape, dtype) -> array`` (or one returning a box).

    Returns:
      An initializer returning the value in a ``NoDecay`` box (``nn.meta.AxisMetadata``).

    Examples:
      >>> import flax.linen as nn, jax, jax.numpy as jnp, wdmask
      >>> class Tok(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         cls = self.param("cls", wdmask.no_decay(nn.initializers.zeros), (1, 4))
      ...         return nn.Dense(4)(x) + cls
      >>> params = Tok().init(jax.random.key(0), jnp.ones((1, 4)))["params"]
      >>> wdmask.mask(params, wdmask.presets.standard)["cls"], [(str(i), i.declared) for i in wdmask.describe(params)]
      (False, [('Dense_0.bias', ''), ('Dense_0.kernel', ''), ('cls', 'no_decay')])
    """
    require(*JAX, by="wdmask.no_decay")
    if not callable(init_fn):
        raise TypeError(f"no_decay: `init_fn` must be an initializer (key, shape, dtype) -> array, got "
                        f"{type(init_fn).__name__} {init_fn!r}"[:200])
    cls = box_class()

    @functools.wraps(init_fn)
    def init(*args: Any, **kwargs: Any) -> Any:
        seen = _SEEN.get()
        if seen is not None:
            seen.append(True)
        return cls(init_fn(*args, **kwargs))

    return init


def is_no_decay(raw: Any) -> bool:
    """Whether a (possibly boxed) leaf carries a no-decay declaration: a ``NoDecay`` box at any depth of
    its box chain, or an NNX ``Variable`` with ``no_decay=True`` metadata."""
    try:
        from flax import nnx
        from flax.linen import meta
    except ImportError:  # pragma: no cover - flax is part of the jax extra
        return False
    cls = box_class()
    while True:
        if isinstance(raw, cls):
            return True
        if isinstance(raw, nnx.Variable):
            meta_fn = getattr(raw, "get_metadata", None)
            metadata = meta_fn() if callable(meta_fn) else getattr(raw, "metadata", {})
            if isinstance(metadata, dict) and metadata.get("no_decay") is True:
                return True
            raw = raw.get_value() if hasattr(raw, "get_value") else raw.value
            continue
        if isinstance(raw, meta.AxisMetadata):
            raw = raw.value if hasattr(raw, "value") else raw.unbox()
            continue
        return False
