r"""Describing never crashes on structure it cannot trace: read what can be read, report the rest.

* A linen module that overrides ``init`` is traced through flax's own ``nn.Module.init`` (which
  runs the module's ``__call__``), never through the override (which may take other arguments,
  or call methods on the unbound module: "Can't access module paths on unbound modules").
* If tracing still fails, the module's own ``init`` is run on ``sample`` abstractly, without
  interception. If that fails too (a ``__call__`` that needs more than ``sample``, a shape error in
  the model), the error is the model's: a ``MaskError`` names the model, the model's error is its
  ``__cause__``. If it runs (a wrapper flax cannot intercept), the variables come from ``params=``
  or from that ``init``, and the leaves are described from their names and partition metadata; an
  ``UnclassifiedWarning`` says why the classes are unknown.
* NNX modules wrapped for linen (``nnx.bridge.ToLinen``, ``to_linen``), as the model, a dataclass
  field or made inside ``@nn.compact`` (the linen trace records the instances): the trace sees one
  opaque module; the wrapped NNX class is built abstractly (``nnx.eval_shape``) and its own classes
  (``nnx.iter_modules``) give the kinds of the leaves under it, the graph their roles; during the
  ``model.apply`` trace the inputs of its norm classes are read from the jaxpr's source info
  (``bridged_norm_codes``) so ``feeds_norm`` crosses the bridge.
  A class that cannot be built abstractly is reported (``UnclassifiedWarning``).
* Linen modules inside NNX (``nnx.bridge.ToNNX``) are handled by ``_nnx``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from wdmask._errors import MaskError, UnclassifiedWarning
from wdmask._jax._tree import PyTree
from wdmask._types import ParamInfo, Path
from wdmask._warn import warn


def own_init(model: Any) -> Callable[..., Any]:
    """``model.init`` when it is flax's own, else flax's ``nn.Module.init`` bound to ``model``."""
    import flax.linen as nn

    if getattr(type(model), "init", None) is nn.Module.init:
        return model.init
    return lambda *args, **kwargs: nn.Module.init(model, *args, **kwargs)


#: The model's own call failed on the sample: its error is the ``__cause__`` of the ``MaskError``.
MODEL_FAILED_MSG = (
    "describe(): {model} fails on `sample` by itself ({call}, without wdmask's tracing): {kind}: {error}. "
    "Fix the model call or the sample (`sample` is unpacked into positional arguments, `sample_kwargs` are keyword "
    "arguments; non-array values are passed as static Python values). Pass the params pytree instead to describe "
    "without a forward pass: wdmask.describe(params) (names only), or mask(params, rules)."
)
# What flax/jax raise when the class interceptor or the trace meets code it cannot trace (the model's own
# call still runs): describing falls back to names. Other errors of a working model are wdmask's and propagate.
_UNTRACEABLE = (TypeError, ValueError, AttributeError, KeyError, IndexError, NotImplementedError)


def traced_or_error(trace: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``trace``; return ``(result, None)`` or ``(None, error)`` for any error (``describe_untraced`` decides
    whose it is: the model's own, or the tracing's)."""
    try:
        return trace(), None
    except Exception as e:
        return None, e


def model_failed(model: Any, call: str, error: BaseException) -> MaskError:
    """The ``MaskError`` for a model whose own ``call`` raised ``error`` on the sample (raise it ``from error``)."""
    return MaskError(MODEL_FAILED_MSG.format(model=type(model).__name__, call=call, kind=type(error).__name__,
                                             error=str(error)[:500].rstrip(".")))


def tracing_failed(error: BaseException) -> bool:
    """Whether ``error`` (raised while tracing a model whose own call runs) is one describing falls back from."""
    return isinstance(error, _UNTRACEABLE) or type(error).__module__.startswith(("flax", "jax"))


def describe_untraced(model: Any, sample: Any, params: PyTree | None, error: BaseException, *,
                      sample_kwargs: Mapping[str, Any] | None = None) -> list[ParamInfo]:
    """Inventory from names when ``model.init`` could not be traced with the interceptor.

    The model's own ``init`` is run on ``sample`` abstractly first (collective axis names bound): if it fails
    too, that failure is the model's and is raised as a ``MaskError`` naming the model, the original error as its
    ``__cause__``; if it runs, ``error`` was the tracing's: a known kind falls back to names with an
    ``UnclassifiedWarning``, any other propagates.
    """
    import jax

    from wdmask._jax._plain import describe_tree
    from wdmask._jax._sample import Sample, bind_axes, trace_shapes
    from wdmask._jax._stacks import stacked_by_metadata
    from wdmask._jax._tree import flatten

    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    s = Sample.of(sample, sample_kwargs)
    try:
        own = bind_axes(lambda env: trace_shapes(
            lambda arrays: s.call(lambda *a, **k: model.init(rngs, *a, **k), arrays), env, s.arrays))
    except Exception as e2:  # the module's own init does not run on `sample` either: the model's error
        raise model_failed(model, f"{type(model).__name__}.init(rng, *sample, **sample_kwargs)", e2) from e2
    if not tracing_failed(error):
        raise error
    tree = own if params is None else params
    warn(
        f"describe(): could not trace {type(model).__name__} with the class interceptor "
        f"({type(error).__name__}: {str(error)[:200]}); its leaves are described from names and partition "
        "metadata only (explicit names such as `bn1` stay unclassified)",
        UnclassifiedWarning)
    leaves = flatten(tree)[0]
    return list(describe_tree(leaves, stacked_by_metadata(tree, leaves)))


def _nnx_owners(bridge: Any) -> dict[Path, Any] | None:
    """NNX modules inside a ``ToLinen`` instance, by path relative to it (built abstractly)."""
    from flax import nnx

    cls = getattr(bridge, "nnx_class", None)
    if cls is None:
        return None
    args, kwargs = tuple(getattr(bridge, "args", ()) or ()), dict(getattr(bridge, "kwargs", None) or {})

    def build() -> Any:  # the Rngs must be made inside the abstract trace
        extra = {} if getattr(bridge, "skip_rng", False) else {"rngs": nnx.Rngs(0)}
        return cls(*args, **kwargs, **extra)

    try:
        module = nnx.eval_shape(build)
    except Exception:
        return None
    return {tuple(str(p) for p in path): m for path, m in nnx.iter_modules(module)}


def bridged_norm_codes(tables: dict[Path, dict[Path, Any] | None]) -> frozenset[Any]:
    """The ``__call__`` code objects of the NNX norm classes inside the ``ToLinen`` bridges (``bridge_tables``):
    the linen ``model.apply`` trace reads their inputs from the jaxpr's source info, so ``feeds_norm`` crosses
    the bridge without patching any class."""
    from wdmask._jax._classes import NNX_KINDS, kind_from_class
    from wdmask._jax._feeds_norm import norm_codes

    classes = {type(m) for t in tables.values() if t for m in t.values()}
    return norm_codes(classes, lambda cls: kind_from_class(cls, NNX_KINDS, "flax.nnx"))


def bridge_tables(bridges: dict[Path, Any]) -> dict[Path, dict[Path, Any] | None]:
    """The NNX modules inside each ``ToLinen`` bridge, by path relative to it (``None``: cannot be built)."""
    return {path: _nnx_owners(b) for path, b in bridges.items()}


def _bridges(model: Any) -> dict[Path, Any]:
    """``ToLinen`` instances reachable as the model itself or dataclass fields of linen modules."""
    import flax.linen as nn
    from flax.nnx import bridge

    found: dict[Path, Any] = {}

    def visit(m: Any, path: Path, depth: int) -> None:
        if isinstance(m, bridge.ToLinen):
            found[path] = m
            return
        if depth > 8 or not dataclasses.is_dataclass(m):
            return
        for f in dataclasses.fields(m):
            if f.name in ("parent", "name"):
                continue
            child = getattr(m, f.name, None)
            if isinstance(child, nn.Module):
                visit(child, (*path, child.name or f.name), depth + 1)

    visit(model, (), 0)
    return found


def linen_bridges(model: Any, trace: Any) -> dict[Path, tuple[Any, dict[Path, Any] | None]]:
    """Every ``nnx.bridge.ToLinen`` of a linen model by path -> ``(bridge, the NNX modules it wraps by relative
    path)`` (``None``: the wrapped class cannot be built abstractly). The bridges are the instances the linen trace saw
    (``trace.bridges``: also those created inside ``@nn.compact``) and those reachable as dataclass fields."""
    bridges = dict(getattr(trace, "bridges", None) or {})
    for path, b in _bridges(model).items():
        bridges.setdefault(path, b)
    known = getattr(trace, "bridge_tables", None) or {}
    return {path: (b, known[path] if path in known else _nnx_owners(b)) for path, b in bridges.items()}


def bridged_owner(path: Path, tables: Mapping[Path, tuple[Any, dict[Path, Any] | None]]
                  ) -> tuple[Path, Path, Any] | None:
    """``(bridge path, owner path relative to it, NNX module)`` of a leaf under a ``ToLinen`` bridge whose wrapped
    module could be built (``linen_bridges``); ``None`` for any other leaf."""
    from wdmask._jax._tree import owner_of

    root = next((p for p in sorted(tables, key=len, reverse=True) if path[:len(p)] == p), None)
    table = tables[root][1] if root is not None else None
    if root is None or table is None:
        return None
    owner_path, module = owner_of(path[len(root):], table)
    return None if module is None else (root, owner_path, module)


def warn_unbuilt_bridges(tables: Mapping[Path, tuple[Any, dict[Path, Any] | None]], paths: list[Path]) -> None:
    """``UnclassifiedWarning`` naming the ``ToLinen`` bridges holding some of ``paths`` whose NNX module could not be
    built abstractly (their leaves keep the kinds the linen trace and their names give)."""
    failed = {root: getattr(b, "nnx_class", type(b)).__name__ for root, (b, table) in tables.items()
              if table is None and any(p[:len(root)] == root for p in paths)}
    if not failed:
        return
    where = ", ".join(f"`{'.'.join(p) or '<root>'}` ({name})" for p, name in failed.items())
    warn(f"describe(): could not build the NNX module wrapped by nnx.bridge.ToLinen at {where} "
         "abstractly; its leaves keep the kinds the linen trace and their names give (the NNX classes "
         "are unknown)", UnclassifiedWarning)
