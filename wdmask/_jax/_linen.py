"""A linen module + ``sample`` -> inventory, from two abstract traces (``model.init``, ``model.apply``).

An ``nn.intercept_methods`` interceptor records the exact class of every module
(``source="type"``) and per-slice shapes inside ``nn.scan``/``nn.vmap`` (``stacked``) while
``model.init`` is traced with ``jax.eval_shape``; then one ``jax.make_jaxpr`` of ``model.apply``
(params as invars) yields ``feeds_norm`` (see ``_feeds_norm``) and every parameter's usage (see
``_usage``): the class keeps the layer kind, the graph decides the role (``source="graph"``).
Non-array leaves of ``sample`` and ``sample_kwargs`` are static arguments (see ``_sample``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from wdmask._depth import owner_index
from wdmask._errors import MaskError
from wdmask._jax._classes import LINEN_KINDS, NNX_KINDS, kind_from_class, module_type_name
from wdmask._jax._fallback import (
    bridge_tables,
    bridged_norm_codes,
    bridged_owner,
    describe_untraced,
    linen_bridges,
    own_init,
    traced_or_error,
    warn_unbuilt_bridges,
)
from wdmask._jax._plain import describe_tree
from wdmask._jax._sample import AxisEnv, Sample, bind_axes, trace_shapes
from wdmask._jax._stacks import box_metadata, slice_axes, slice_fits
from wdmask._jax._tree import PyTree, _unbox, first_difference, flatten, owner_of, shape_difference
from wdmask._kinds import role_from_name
from wdmask._types import ParamInfo, Path
from wdmask._usage import Use, param_info

NEEDS_SAMPLE_MSG = (
    "describing a linen module needs `sample`: example inputs for `model.init` (an array, or a tuple of "
    "positional arguments such as `(x, False)`; keyword arguments go in `sample_kwargs={'train': False}`; "
    "non-array values are passed as static Python values); shapes are traced abstractly, nothing is computed. "
    "Alternatively describe the params pytree alone (name heuristics: explicit names such as `bn1` stay unknown)."
)




class LinenTrace(NamedTuple):
    """What tracing ``model.init`` (classes, shapes) and ``model.apply`` (graph) abstractly records."""

    owners: dict[Path, type]  # module path -> class, first writer wins, in call (pre-)order
    slice_shapes: dict[Path, tuple[int, ...]]  # leaf path -> per-slice shape seen inside the module
    variables: Any  # abstract variables (ShapeDtypeStruct leaves)
    feeds_norm: dict[Path, bool] | None  # params leaf path -> feeds a norm (kernel/bias of a producer); None: untraced
    usage: dict[Path, tuple[Use, ...]] | None = None  # params leaf path -> uses; None if not traced
    bridges: dict[Path, Any] | None = None  # module path -> nnx.bridge.ToLinen instance seen in the init trace
    tagged_bridges: set[Path] | None = None  # bridges whose NNX module ran in the apply trace (feeds_norm)
    bridge_tables: dict[Path, Any] | None = None  # bridge path -> its NNX modules by relative path (None: unbuilt)
    contract_axes: dict[Path, Any] | None = None  # kernel leaf path -> traced (reduction, output) axes


def _is_lifted(cls: type) -> bool:
    return cls.__module__ == "flax.linen.transforms"



def _interceptor(owners: dict[Path, type] | None, slices: dict[Path, tuple[int, ...]] | None,
                 codes: set[Any] | None, *, bridges: dict[Path, Any] | None = None,
                 prefix: Callable[[], Path | None] | None = None,
                 bridges_called: set[Path] | None = None, declared: set[Path] | None = None) -> Callable[..., Any]:
    """An ``nn.intercept_methods`` interceptor recording classes / per-slice shapes and, in ``codes``, the
    ``__call__`` code of every linen norm class that runs (its input is then read from the jaxpr: feeds_norm).

    ``bridges`` collects the ``nnx.bridge.ToLinen`` *instances* (also those made inside ``@nn.compact``);
    ``prefix`` (linen run inside an NNX ``ToNNX``) gives the path to put in front of every module path,
    or ``None`` for a module outside any bridge (left alone); ``bridges_called`` gets the path of each ``ToLinen``
    that runs (its NNX norm inputs are then known from the jaxpr, ``_fallback.bridged_norm_codes``);
    ``declared`` gets the path of every parameter a module asks for (``self.param``: its scope's reservations).
    """
    from flax.linen import Module
    from flax.nnx.bridge import ToLinen

    from wdmask._jax._feeds_norm import call_code

    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, ctx: Any) -> Any:
        module = ctx.module
        cls = type(module)
        if _is_lifted(cls) or not isinstance(module, Module):
            return next_fun(*args, **kwargs)
        head = prefix() if prefix is not None else ()
        if head is None:
            return next_fun(*args, **kwargs)
        path = (*head, *(str(p) for p in module.path))
        if owners is not None:
            owners.setdefault(path, cls)
        if isinstance(module, ToLinen):
            if bridges is not None:
                bridges.setdefault(path, module)
            if bridges_called is not None:
                bridges_called.add(path)
        is_call = ctx.method_name == "__call__"
        kind = kind_from_class(cls, LINEN_KINDS, "flax.linen") if codes is not None and is_call else ""
        if kind.startswith("norm."):
            code = call_code(cls)
            if code is not None:
                codes.add(code)  # its inputs are read from the jaxpr's source info (``_feeds_norm.norm_codes``)
        out = next_fun(*args, **kwargs)
        if declared is not None and module.scope is not None:
            declared.update((*path, str(n)) for n, cols in module.scope.reservations.items() if "params" in cols)
        if slices is not None:
            params = module.variables.get("params", {}) if module.scope is not None else {}
            for name, value in params.items():
                if not isinstance(value, Mapping):
                    slices.setdefault((*path, str(name)), tuple(_unbox(value).shape))
        return out

    return interceptor


def trace_linen(model: Any, sample: Any, *, feeds_norm: bool = True,
                sample_kwargs: Mapping[str, Any] | None = None, params: PyTree | None = None) -> LinenTrace:
    """Trace ``model.init`` abstractly (classes, per-slice shapes); with ``feeds_norm`` also ``model.apply``
    (one ``jax.make_jaxpr``: norm feeding and every parameter's usage). Given ``params``, ``model.apply`` on them
    is the one trace (``_trace_given``). Collective axis names the model leaves unbound
    (``nn.BatchNorm(axis_name="batch")``) are bound to size 1 (``bind_axes``)."""
    s = Sample.of(sample, sample_kwargs)
    if params is not None and feeds_norm:
        given = _trace_given(model, s, params)
        if given is not None:
            return given
    return bind_axes(lambda env: _trace_linen(model, s, env, feeds_norm))


def _trace_given(model: Any, s: Sample, params: PyTree) -> LinenTrace | None:
    """One abstract trace of ``model.apply`` on the given ``params`` (other collections made on the fly), the class
    interceptor recording classes and per-slice shapes during it: no ``init`` trace.

    ``None`` (trace ``init`` as well) when the given params cannot stand for what ``init`` tells: the trace fails
    (other shapes, another model: ``init`` gives the error), a parameter is missing or one no module asks for is
    given, the model declares ``wdmask.no_decay`` on params given without their boxes, a stacked axis only
    partition names could place, or an ``nnx.bridge.ToLinen`` (its NNX classes are read before the walk).
    """
    import flax.linen as nn
    import jax

    from wdmask._jax._declare import watch_declarations
    from wdmask._jax._fallback import _bridges
    from wdmask._jax._usage import abstract, trace_sample

    if _bridges(model):
        return None
    owners: dict[Path, type] = {}
    slices: dict[Path, tuple[int, ...]] = {}
    bridges: dict[Path, Any] = {}
    codes: set[Any] = set()
    asked: set[Path] = set()  # the parameters the modules ask for
    made: dict[str, Any] = {}

    def forward(params: Any, arrays: Any) -> Any:
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        args, kwargs = s.rebuild(arrays)
        out, variables = model.apply({"params": params}, *args, rngs=rngs, mutable=True, **kwargs)
        made["variables"] = abstract(variables)
        return out

    try:
        with watch_declarations() as declared, nn.intercept_methods(_interceptor(owners, slices, codes,
                                                                                 bridges=bridges, declared=asked)):
            traced = bind_axes(lambda env: trace_sample(forward, params, (), s, lambda: _slots(params, owners),
                                                        axis_env=list(env), norm_codes=codes))
    except Exception:
        return None
    variables = made["variables"]
    leaves = [leaf for leaf in flatten(params)[0] if leaf.trainable]
    meta = box_metadata(params)
    if (bridges or any(leaf.path not in asked for leaf in leaves)
            or [leaf.path for leaf in flatten(variables.get("params", {}))[0]] != [leaf.path for leaf in leaves]
            or (declared and not any(leaf.declared for leaf in leaves))
            or any(len(slice_fits(leaf.shape, slices[leaf.path])) > 1 for leaf in leaves
                   if leaf.path in slices and meta.get(leaf.path) is None)):
        return None
    return LinenTrace(owners, slices, variables, traced.feeds_norm, traced.usage, contract_axes=traced.contract_axes)


def _trace_linen(model: Any, s: Sample, env: AxisEnv, feeds_norm: bool) -> LinenTrace:
    import flax.linen as nn
    import jax

    from wdmask._jax._usage import abstract, trace_sample

    owners: dict[Path, type] = {}
    slices: dict[Path, tuple[int, ...]] = {}
    bridges: dict[Path, Any] = {}

    def init(arrays: Any) -> Any:
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        args, kwargs = s.rebuild(arrays)
        return own_init(model)(rngs, *args, **kwargs)

    with nn.intercept_methods(_interceptor(owners, slices, None, bridges=bridges)):
        variables = trace_shapes(init, env, abstract(s.arrays))
    if not feeds_norm:
        return LinenTrace(owners, slices, variables, None, bridges=bridges)
    params = variables.get("params", {}) if isinstance(variables, Mapping) else {}
    others = {k: v for k, v in variables.items() if k != "params"} if isinstance(variables, Mapping) else {}
    codes: set[Any] = set(bridged_norm_codes(tables := bridge_tables(bridges)))

    def forward(params: Any, others: Any, arrays: Any) -> Any:
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        args, kwargs = s.rebuild(arrays)
        return model.apply({"params": params, **others}, *args, rngs=rngs, mutable=True, **kwargs)

    tagged: set[Path] = set()
    with nn.intercept_methods(_interceptor(None, None, codes, bridges_called=tagged)):
        traced = trace_sample(forward, params, (abstract(others),), s, _slots(params, owners),
                              axis_env=list(env), norm_codes=codes)
    tagged &= {path for path, table in tables.items() if table is not None}
    return LinenTrace(owners, slices, variables, traced.feeds_norm, traced.usage, bridges, tagged, tables,
                      traced.contract_axes)



def _slots(params: PyTree, owners: dict[Path, type]) -> dict[Path, str]:
    """``kernel``/``bias`` for the leaves the classes say are a conv/dense layer's kernel or bias (the trace's
    input/kernel slots of ``wdmask._usage.resolve``)."""
    out = {}
    for leaf in flatten(params)[0]:
        owner_path, cls = owner_of(leaf.path, owners)
        if cls is None or not owner_path:
            continue
        kind = kind_from_class(cls, LINEN_KINDS, "flax.linen")
        role = role_from_name(kind, leaf.path[-1], owner_path[-1]) if kind in ("conv", "linear") else ""
        if role in ("kernel", "bias"):
            out[leaf.path] = role
    return out


def describe_linen(model: Any, sample: Any, params: PyTree | None, *,
                   sample_kwargs: Mapping[str, Any] | None = None) -> list[ParamInfo]:
    """Inventory of a linen module from abstract traces of ``model.init`` and ``model.apply`` on ``sample``."""
    return describe_linen_traced(model, sample, params, sample_kwargs=sample_kwargs)[0]


def describe_linen_traced(model: Any, sample: Any, params: PyTree | None, *,
                          sample_kwargs: Mapping[str, Any] | None = None
                          ) -> tuple[list[ParamInfo], list[Path], PyTree | None]:
    """``describe_linen``, the module call order and the abstract variables of ``model.init`` (``None`` when the
    model could not be traced), from the same two traces."""
    if sample is None and not sample_kwargs:
        raise ValueError(NEEDS_SAMPLE_MSG)
    trace, error = traced_or_error(lambda: trace_linen(model, sample, feeds_norm=True, sample_kwargs=sample_kwargs,
                                                       params=params))
    if trace is None:  # never raise from deep inside flax: describe what can be read, and say so
        return describe_untraced(model, sample, params, error, sample_kwargs=sample_kwargs), [], None
    model_leaves, _ = flatten(trace.variables)
    if params is None:
        leaves = model_leaves
    else:
        leaves, _ = flatten(params)
        want = [leaf.path for leaf in model_leaves if leaf.trainable]
        got = [leaf.path for leaf in leaves if leaf.trainable]
        if want != got:
            raise MaskError(f"`params` do not match `model` ({type(model).__name__} initialised with `sample`): "
                            f"{first_difference(want, got)}; pass the params of this model (variables['params'])")
        wrong = shape_difference(model_leaves, leaves)
        if wrong:
            raise MaskError(f"`params` do not match `model` ({type(model).__name__} initialised with `sample`): "
                            f"{wrong}; a `sample` of the wrong shape (the model's params are shaped by it), or "
                            "params of another model with the same paths")
    # Declarations live in the boxes of the model's own init: also known when `params` were unboxed.
    declared_paths = {leaf.path for leaf in model_leaves if leaf.declared}
    meta = {**box_metadata(trace.variables), **box_metadata(params)}  # partition names: which axis is stacked
    tables = linen_bridges(model, trace)
    usage, contract = trace.usage, trace.contract_axes or {}
    called = {path: k for k, path in enumerate(trace.owners)}  # module path -> position in the call order
    out = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        owner_path, cls = owner_of(leaf.path, trace.owners)
        name = leaf.path[-1] if leaf.path else ""
        if cls is None:  # pragma: no cover - the root module always owns the rest
            out.append(describe_tree([leaf])[0])
            continue
        kind = kind_from_class(cls, LINEN_KINDS, "flax.linen")
        role = role_from_name(kind, name, owner_path[-1] if owner_path else "")
        feeds = None if trace.feeds_norm is None else trace.feeds_norm.get(leaf.path, False)
        bridged = bridged_owner(leaf.path, tables)
        if bridged is not None:  # under an nnx.bridge.ToLinen: the wrapped NNX module's own class
            root, rel_owner, module = bridged
            cls, kind = type(module), kind_from_class(type(module), NNX_KINDS, "flax.nnx")
            role = role_from_name(kind, name, rel_owner[-1] if rel_owner else "")
            feeds = feeds if root in (trace.tagged_bridges or ()) else None  # its norms seen in the trace
        out.append(param_info(
            leaf.path, leaf.shape, leaf.dtype, layer=kind, role=role, source="type",
            stacked_axes=slice_axes(leaf.shape, trace.slice_shapes.get(leaf.path), meta.get(leaf.path)),
            feeds_norm=feeds, module_type=module_type_name(cls),
            declared="no_decay" if leaf.declared or leaf.path in declared_paths else "",
            uses=None if usage is None else usage.get(leaf.path), contract_axes=contract.get(leaf.path),
            call_index=owner_index(leaf.path, called) if usage is not None else None))
    warn_unbuilt_bridges(tables, [info.path for info in out])
    return out, list(trace.owners), trace.variables


def linen_call_order(model: Any, sample: Any, *, sample_kwargs: Mapping[str, Any] | None = None) -> list[Path]:
    """Module paths in first-call order (pairing follows call order, never sorted keys)."""
    return list(trace_linen(model, sample, feeds_norm=False, sample_kwargs=sample_kwargs).owners)
