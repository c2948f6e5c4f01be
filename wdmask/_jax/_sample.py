"""``sample`` / ``sample_kwargs`` -> the arguments of one abstract trace: traced arrays and static values.

Every trace of a Flax model (linen ``init``, the usage trace of ``apply``, the NNX forward) goes
through ``Sample``: array leaves (``jax.Array``, ``numpy`` arrays and scalars,
``jax.ShapeDtypeStruct``) are traced; every other leaf (``bool``, ``int``, ``float``, ``str``,
``None``, enums, ...) is passed as the static Python value it is, so ``sample=(x, False)`` reaches
``__call__(x, train=False)``-style code as a real ``False``, never a tracer.

Collective axis names (``nn.BatchNorm(axis_name="batch")``, ``lax.pmean(x, "data")``): a model written for
``pmap``/``shard_map`` names axes its own call does not bind, and tracing it raises ``NameError: unbound axis
name``. ``bind_axes`` runs a trace again with each such name bound as a size-1 axis (``jax.make_jaxpr(...,
axis_env=...)``): a collective over one device is the identity, so no shape and no answer changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["AxisEnv", "Sample", "bind_axes", "trace_shapes", "unbound_axis"]

T = TypeVar("T")
#: ``((axis name, size), ...)``: the named axes a trace binds (``jax.make_jaxpr(..., axis_env=...)``).
AxisEnv = tuple[tuple[Hashable, int], ...]
#: How many distinct unbound axis names ``bind_axes`` binds before giving up (a model names a handful).
MAX_AXES = 8
_UNBOUND = re.compile(r"unbound axis name:?\s*(?P<name>.+?)(?:\.\s+To fix|\.?\s*$)", re.DOTALL)


def unbound_axis(error: BaseException) -> str | None:
    """The axis name a ``NameError: unbound axis name: <name>`` from JAX is about, else ``None``.

    Examples:
      >>> unbound_axis(NameError("Found an unbound axis name: batch. To fix this, please call psum under ..."))
      'batch'
      >>> unbound_axis(NameError("name 'x' is not defined")) is None
      True
    """
    if not isinstance(error, NameError):
        return None
    found = _UNBOUND.search(str(error))
    return found.group("name").strip() if found else None


def bind_axes(trace: Callable[[AxisEnv], T], names: Iterable[Hashable] = ()) -> T:
    """``trace(axis_env)``, retried with every collective axis name the traced code leaves unbound bound to size 1.

    ``names`` are bound from the start (axis names read from the model's modules, which may be non-strings);
    a name JAX reports as unbound is added and the whole trace run again, up to ``MAX_AXES`` names. Any
    other error, or a name that is already bound, propagates.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> def trace(env):
      ...     return jax.make_jaxpr(lambda x: jax.lax.pmean(x, "batch"), axis_env=env)(jnp.ones(2)).out_avals[0].shape
      >>> bind_axes(trace)  # NameError: unbound axis name: batch, without the binding
      (2,)
    """
    env: list[tuple[Hashable, int]] = [(n, 1) for n in dict.fromkeys(names)]
    while True:
        try:
            return trace(tuple(env))
        except NameError as e:
            name = unbound_axis(e)
            if name is None or len(env) >= MAX_AXES or any(str(n) == name for n, _ in env):
                raise
            env.append((name, 1))


def trace_shapes(fn: Callable[..., Any], axis_env: AxisEnv, *args: Any) -> Any:
    """``jax.eval_shape(fn, *args)`` with the named axes of ``axis_env`` bound (``make_jaxpr`` when there are any)."""
    import jax

    if not axis_env:
        return jax.eval_shape(fn, *args)
    return jax.make_jaxpr(fn, axis_env=list(axis_env), return_shape=True)(*args)[1]


def _abstract_types() -> tuple[type, ...]:
    import jax

    return (jax.ShapeDtypeStruct, jax.core.Tracer)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


class Sample:
    """Example inputs: positional ``args`` (``sample``: a tuple/list is unpacked, anything else is one
    argument) and keyword ``kwargs`` (``sample_kwargs``), split into traced arrays and static values.

    Examples:
      >>> import jax.numpy as jnp
      >>> s = Sample.of((jnp.zeros(3), False), {"train": False})
      >>> len(s.arrays), s.call(lambda x, flag, train: (x.shape, flag, train), s.arrays)
      (1, ((3,), False, False))
    """

    def __init__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        import jax

        self.args = args
        self.kwargs = dict(kwargs)
        leaves, self._treedef = jax.tree_util.tree_flatten((self.args, self.kwargs))
        self._leaves = leaves
        self._slots = [i for i, x in enumerate(leaves) if _is_array(x)]
        #: The array leaves, in flatten order: the traced inputs.
        self.arrays: list[Any] = [leaves[i] for i in self._slots]

    @classmethod
    def of(cls, sample: Any, sample_kwargs: Mapping[str, Any] | None = None) -> Sample:
        """``Sample`` from the public ``sample=`` / ``sample_kwargs=`` arguments (a ``Sample`` is returned as is)."""
        if isinstance(sample, Sample):
            if sample_kwargs:
                return cls(sample.args, {**sample.kwargs, **sample_kwargs})
            return sample
        if sample_kwargs is None:
            sample_kwargs = {}
        if not isinstance(sample_kwargs, Mapping) or not all(isinstance(k, str) for k in sample_kwargs):
            raise TypeError(f"`sample_kwargs` must be a dict of keyword arguments (str keys), e.g. "
                            f"{{'train': False}}; got {type(sample_kwargs).__name__} {sample_kwargs!r}"[:300])
        if sample is None:
            args: tuple[Any, ...] = ()
        else:
            args = tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)
        return cls(args, sample_kwargs)

    @property
    def empty(self) -> bool:
        """No positional and no keyword arguments."""
        return not self.args and not self.kwargs

    def rebuild(self, arrays: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` with the array leaves replaced by ``arrays`` (tracers), statics kept."""
        leaves = list(self._leaves)
        arrays = list(arrays)
        for i, a in zip(self._slots, arrays, strict=True):
            leaves[i] = a
        args, kwargs = self._treedef.unflatten(leaves)
        return tuple(args), dict(kwargs)

    def traced(self, *, enlarge: bool = True) -> list[Any]:
        """Abstract stand-ins (``jax.ShapeDtypeStruct``) for ``arrays`` to trace with; when every array input
        has a leading axis of 1 (a batch of one) it is enlarged to 2 (``enlarge``), so that no answer depends on
        the sample's batch size (a learned query broadcast to a batch of one is no broadcast).

        Examples:
          >>> import jax.numpy as jnp
          >>> [a.shape for a in Sample.of(jnp.zeros((1, 3))).traced()]
          [(2, 3)]
        """
        import jax

        batch_one = enlarge and any(len(a.shape) for a in self.arrays) and all(
            a.shape[0] == 1 for a in self.arrays if len(a.shape))
        return [jax.ShapeDtypeStruct((2, *a.shape[1:]) if batch_one and len(a.shape) else a.shape, a.dtype)
                for a in self.arrays]

    def positions(self) -> tuple[list[int], bool]:
        """Which of ``arrays`` are position ids (``wdmask._usage.read_positions``), and whether the integer
        inputs are abstract (their values unseen: a table they index may be read wrongly)."""
        import numpy as np

        from wdmask._usage import read_positions

        ints = [i for i, a in enumerate(self.arrays) if np.issubdtype(np.dtype(a.dtype), np.integer)]
        values = [None if isinstance(self.arrays[i], _abstract_types()) else np.asarray(self.arrays[i]).tolist()
                  for i in ints]
        found, abstract = read_positions(values)
        return [ints[k] for k in found], abstract

    def call(self, fn: Callable[..., Any], arrays: Any) -> Any:
        """``fn(*args, **kwargs)`` with the array leaves replaced by ``arrays``."""
        args, kwargs = self.rebuild(arrays)
        return fn(*args, **kwargs)
