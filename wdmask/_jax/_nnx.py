"""An NNX module -> inventory: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``.

With a ``sample``, one abstract forward pass (``jax.make_jaxpr`` of ``nnx.merge(graphdef, params, rest)(*sample)``,
params as invars) gives the module call order (the order the parameters are first used), ``feeds_norm``
(norm inputs read from the equations' ``source_info``: traced inside a norm class's ``__call__``; no class is
patched, see ``_feeds_norm.norm_codes``) and every parameter's usage (``_usage``: the class keeps the layer
kind, the graph decides the role).

Linen modules wrapped by ``nnx.bridge.ToNNX`` are described by their linen classes: with a sample, an
``nn.intercept_methods`` interceptor (the linen one, paths put under the bridge whose ``__call__`` is on the
Python stack) records every linen
module the bridge runs, its per-slice shapes (``nn.scan``) and its norm classes (for ``feeds_norm``); without one, the
classes readable without a call (the wrapped module, its fields, what its ``setup`` makes); submodules
made inside ``@nn.compact`` then get kinds from their auto-names, and explicit names are reported
(``UnclassifiedWarning``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from wdmask._depth import owner_index
from wdmask._errors import MaskError, UnclassifiedWarning
from wdmask._jax._classes import (
    LINEN_KINDS,
    NNX_KINDS,
    _stacked_from_ndim,
    expected_ndim,
    kind_from_class,
    module_type_name,
)
from wdmask._jax._plain import extra_tables
from wdmask._jax._sample import Sample, bind_axes, trace_shapes
from wdmask._jax._stacks import (
    agree_with_siblings,
    axes_from_slice,
    box_metadata,
    learn_stack_names,
    metadata_axes,
    nnx_axes,
    nnx_axes_evidence,
    nnx_layer_shape,
    slice_axes,
)
from wdmask._jax._tree import Leaf, PyTree, first_difference, flatten, owner_of, shape_difference
from wdmask._kinds import role_from_name
from wdmask._types import ParamInfo, Path
from wdmask._usage import Use, param_info
from wdmask._warn import warn


class NnxTrace(NamedTuple):
    """What one abstract forward pass of an NNX module records."""

    order: list[Path]  # module paths in first-call order
    feeds_norm: dict[Path, bool]  # param leaf path -> feeds a norm (kernel/bias of a producer)
    usage: dict[Path, tuple[Use, ...]]  # param leaf path -> uses
    linen: dict[Path, type] | None = None  # linen module path (under a ToNNX) -> class, from the interceptor
    linen_slices: dict[Path, tuple[int, ...]] | None = None  # leaf path -> per-slice shape inside linen
    contract_axes: dict[Path, Any] | None = None  # kernel leaf path -> traced (reduction, output) axes


def trace_nnx(model: Any, sample: Any, *, sample_kwargs: Mapping[str, Any] | None = None) -> NnxTrace:
    """One ``jax.make_jaxpr`` of the forward pass on a merged copy of ``model`` (the model is not touched).

    Nothing is patched: the norm modules' inputs are read from the jaxpr (``norm_codes``, each equation's
    ``source_info`` shows the norm ``__call__`` it was traced in), the call order from the order in which the
    parameters are first used, and linen modules under an ``nnx.bridge.ToNNX`` from linen's own
    ``nn.intercept_methods`` (the bridge they run in read from the Python stack)."""
    import flax.linen as nn
    from flax import nnx

    from wdmask._jax import _feeds_norm
    from wdmask._jax._linen import _interceptor
    from wdmask._jax._usage import first_uses, leaf_paths, trace_sample

    s = Sample.of(sample, sample_kwargs)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    linen: dict[Path, type] = {}
    linen_slices: dict[Path, tuple[int, ...]] = {}
    bridge_paths: dict[int, Path] = {}
    codes = set(_feeds_norm.norm_codes({type(m) for _, m in nnx.iter_modules(model)},
                                       lambda cls: kind_from_class(cls, NNX_KINDS, "flax.nnx")))
    # + the linen norm classes run under a ToNNX, added by the interceptor
    interceptor = _interceptor(linen, linen_slices, codes, prefix=lambda: _calling_bridge(bridge_paths))

    def forward(params: Any, rest: Any, arrays: Any) -> Any:
        copy = nnx.merge(graphdef, params, rest)
        bridge_paths.clear()
        bridge_paths.update({id(m): tuple(str(p) for p in path) for path, m in nnx.iter_modules(copy)
                             if isinstance(m, nnx.bridge.ToNNX)})
        if not bridge_paths:
            return s.call(copy, arrays)
        with nn.intercept_methods(interceptor):
            return s.call(copy, arrays)

    traced = bind_axes(lambda env: trace_sample(forward, params, (rest,), s, axis_env=list(env),
                                                norm_codes=codes))
    paths = leaf_paths(params)
    first = first_uses(traced.closed, len(paths))
    owners: dict[Path, float] = {}
    for path, k in zip(paths, first, strict=True):
        owners[path[:-1]] = min(owners.get(path[:-1], k), k)
    order = sorted((p for p, k in owners.items() if k != float("inf")), key=owners.__getitem__)
    return NnxTrace(order, traced.feeds_norm, traced.usage, linen, linen_slices, traced.contract_axes)


def _calling_bridge(bridge_paths: dict[int, Path]) -> Path | None:
    """The path of the innermost ``nnx.bridge.ToNNX`` whose ``__call__`` is on the Python stack, or ``None``."""
    import sys

    from flax import nnx

    from wdmask._jax import _feeds_norm

    code = _feeds_norm.call_code(nnx.bridge.ToNNX)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            path = bridge_paths.get(id(frame.f_locals.get("self")))
            if path is not None:
                return path
        frame = frame.f_back
    return None


def _trace_or_fall_back(model: Any, sample: Any, sample_kwargs: Mapping[str, Any] | None) -> NnxTrace | None:
    """``trace_nnx``; if it fails, the model's own forward pass is run abstractly: its failure is the model's
    (a ``MaskError`` naming the model, the model's error as ``__cause__``); a tracing failure of a model that runs
    describes without a forward pass (``None``) and says so, and any other error propagates."""
    from flax import nnx

    from wdmask._jax._fallback import model_failed, traced_or_error, tracing_failed
    from wdmask._jax._usage import abstract

    trace, error = traced_or_error(lambda: trace_nnx(model, sample, sample_kwargs=sample_kwargs))
    if error is None:
        return trace
    s = Sample.of(sample, sample_kwargs)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    try:
        bind_axes(lambda env: trace_shapes(lambda p, a: s.call(nnx.merge(graphdef, p, rest), a), env,
                                           abstract(params), abstract(s.arrays)))
    except Exception as own:
        raise model_failed(model, f"{type(model).__name__}(*sample, **sample_kwargs)", own) from own
    if not tracing_failed(error):
        raise error
    warn(f"describe(): could not trace {type(model).__name__} on `sample` ({type(error).__name__}: "
         f"{str(error)[:200]}); described without a forward pass (classes known; feeds_norm and roles "
         "from usage unknown)", UnclassifiedWarning)
    return None


def describe_nnx(model: Any, params: PyTree | None, sample: Any = None, *,
                 sample_kwargs: Mapping[str, Any] | None = None) -> list[ParamInfo]:
    """Inventory of an NNX module: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``;
    with ``sample``, ``feeds_norm`` and roles from one abstract forward pass."""
    return describe_nnx_traced(model, params, sample, sample_kwargs=sample_kwargs)[0]


def describe_nnx_traced(model: Any, params: PyTree | None, sample: Any = None, *,
                        sample_kwargs: Mapping[str, Any] | None = None) -> tuple[list[ParamInfo], list[Path] | None]:
    """``describe_nnx`` and the call order (``None`` without a sample), from one trace."""
    from flax import nnx

    trace = None
    if sample is not None or sample_kwargs:
        trace = _trace_or_fall_back(model, sample, sample_kwargs)
    owners = {tuple(str(p) for p in path): module for path, module in nnx.iter_modules(model)}
    model_leaves, _ = flatten(nnx.state(model, nnx.Param))
    if params is None:
        leaves = model_leaves
    else:
        leaves, _ = flatten(params)
        want = [leaf.path for leaf in model_leaves]
        got = [leaf.path for leaf in leaves if leaf.trainable]
        if want != got:
            raise MaskError(f"`params` do not match `model` ({type(model).__name__}): {first_difference(want, got)}; "
                            "pass nnx.state(model, nnx.Param) (or its pure form)")
        wrong = shape_difference(model_leaves, leaves)
        if wrong:
            raise MaskError(f"`params` do not match `model` ({type(model).__name__}): {wrong}; pass "
                            "nnx.state(model, nnx.Param) of this model")
    declared_paths = {leaf.path for leaf in model_leaves if leaf.declared}
    meta = box_metadata(nnx.state(model, nnx.Param))  # sharding names / param_scan_axis: which axis is stacked
    facts: list[dict[str, Any]] = []  # per trainable leaf: what is known before it is built
    static: dict[Path, dict[Path, type]] = {}  # ToNNX path -> its linen classes readable without a call
    unknown: list[str] = []  # bridged leaves whose linen class is not known (described from names)
    trusted: list[bool] = []  # per leaf: its stacked axes rest on evidence, not on a rank guess
    owned = [(leaf, *owner_of(leaf.path, owners)) for leaf in leaves if leaf.trainable]
    learned = _learned_stack_names(owned, meta)
    for leaf, owner_path, module in owned:
        name = leaf.path[-1] if leaf.path else ""
        if isinstance(module, nnx.bridge.ToNNX):
            if owner_path not in static:
                static[owner_path] = _linen_classes(module)
            fact = _bridged(leaf, owner_path, static[owner_path], trace, meta.get(leaf.path), unknown)
            trusted.append(True)
        else:
            kind = kind_from_class(type(module), NNX_KINDS, "flax.nnx")
            role = role_from_name(kind, name, owner_path[-1] if owner_path else "")
            ranked = _stacked_from_ndim(leaf.shape, expected_ndim(kind, role, module))
            axes, evidence = nnx_axes_evidence(leaf.shape, module, kind, role, ranked, meta.get(leaf.path), learned)
            trusted.append(bool(evidence))
            fact = {"layer": kind, "role": role, "stacked_axes": axes, "module_type": module_type_name(type(module)),
                    "source": "type", "feeds_norm": None if trace is None else trace.feeds_norm.get(leaf.path, False)}
        declared = leaf.declared or leaf.path in declared_paths
        facts.append({"path": leaf.path, "shape": leaf.shape, "dtype": leaf.dtype,
                      "declared": "no_decay" if declared else "", **fact})
    if not all(trusted):  # a leaf without evidence: stacked like its layer's other leaves (nnx.vmap stacks alike)
        agreed = agree_with_siblings([f["path"] for f in facts], [f["shape"] for f in facts],
                                     [f["stacked_axes"] for f in facts], trusted)
        for f, axes in zip(facts, agreed, strict=True):
            f["stacked_axes"] = axes
    if trace is None:  # no graph: a second embedding table may hold positions
        for k in extra_tables(facts):
            facts[k]["role"] = "other"
    called = {path: k for k, path in enumerate(trace.order)} if trace is not None else {}
    out = [param_info(**f, uses=None if trace is None else trace.usage.get(f["path"]),
                      contract_axes=None if trace is None else (trace.contract_axes or {}).get(f["path"]),
                      call_index=owner_index(f["path"], called) if trace is not None else None)
           for f in facts]
    if unknown:
        warn(
            f"describe(): {len(unknown)} parameter(s) of linen modules wrapped by nnx.bridge.ToNNX have no known "
            f"layer kind: {', '.join(unknown[:8])}{', ...' if len(unknown) > 8 else ''} (submodules created inside "
            "@nn.compact exist only while the module runs; without `sample=` only Flax auto-names such as `Dense_0` "
            "give a kind, explicit names stay layer `other`). Pass `sample=` (the model's inputs) to get the exact "
            "linen classes",
            UnclassifiedWarning)
    return out, trace.order if trace is not None else None


def _learned_stack_names(owned: list[tuple[Leaf, Path, Any]], meta: dict[Path, Any]) -> frozenset[str]:
    """Partition names at the axes a layer's own attributes show stacked (``_stacks.learn_stack_names``):
    ``nnx.vmap(..., transform_metadata={nnx.PARTITION_NAME: "layers_per_stage"})`` names the stacking axis of
    every leaf with partition names, whatever the name."""
    pairs = []
    for leaf, owner_path, module in owned:
        names = meta.get(leaf.path)
        if names is None or names[0] is None or module is None:
            continue
        kind = kind_from_class(type(module), NNX_KINDS, "flax.nnx")
        piece = nnx_layer_shape(module, kind, role_from_name(kind, leaf.path[-1], owner_path[-1] if owner_path else ""))
        axes = axes_from_slice(leaf.shape, piece) if piece is not None else None
        if axes:
            pairs.append((axes, names))
    return learn_stack_names(pairs)


def _linen_classes(bridge: Any) -> dict[Path, type]:
    """Classes of the linen modules a ``ToNNX`` wraps that can be read without calling it, by path relative to
    the bridge: the wrapped module itself, its dataclass-field submodules and those its ``setup`` makes (bound to
    the bridge's variables). Submodules made inside ``@nn.compact`` exist only during a call: not here."""
    import flax.linen as nn
    from flax.nnx.bridge import variables as bv

    root = bridge.to_nnx__module
    table: dict[Path, type] = {(): type(root)}
    try:
        attrs = {k: v for k, v in vars(bridge).items() if not k.startswith(("to_nnx__", "_pytree__"))}
        bound = root.bind(bv.nnx_attrs_to_linen_vars(attrs))
    except Exception:  # variables the bridge cannot convert: only the wrapped class is known
        return table

    def visit(m: Any, path: Path, depth: int) -> None:
        try:
            m._try_setup()
            children = dict(m._state.children)
        except Exception:
            return
        for name, child in children.items():
            if isinstance(child, nn.Module) and depth < 32:
                table.setdefault((*path, str(name)), type(child))
                visit(child, (*path, str(name)), depth + 1)

    visit(bound, (), 0)
    return table


def _bridged(leaf: Leaf, bridge_path: Path, static: dict[Path, type], trace: NnxTrace | None,
             meta: Any, unknown: list[str]) -> dict[str, Any]:
    """What is known of a leaf of a linen module wrapped by ``nnx.bridge.ToNNX`` (``param_info`` arguments): its
    linen class from the trace's interceptor (with a sample) or from what the module states without a call, else
    its names (listed in ``unknown``)."""
    from wdmask._jax._plain import describe_tree

    rel = leaf.path[len(bridge_path):]
    name = rel[-1] if rel else ""
    cls, axes, owner_name = None, None, ""
    if trace is not None and trace.linen:
        owner_path, cls = owner_of(leaf.path, {p: c for p, c in trace.linen.items() if p[:len(bridge_path)]
                                               == bridge_path})
        owner_name = owner_path[-1] if len(owner_path) > len(bridge_path) else ""
        piece = (trace.linen_slices or {}).get(leaf.path)
        if cls is not None:
            axes = slice_axes(leaf.shape, piece, meta)
    if cls is None and rel[:-1] in static:  # the immediate owner only: an ancestor's class is not the leaf's
        cls, owner_name = static[rel[:-1]], (rel[-2] if len(rel) >= 2 else "")
    if cls is None:  # names: an auto-name (`Dense_0`) gives the kind; an explicit one (`head`) is reported
        info = describe_tree([leaf], {leaf.path: a} if (a := metadata_axes(leaf.shape, meta)) is not None else None)[0]
        if info.layer == "other":
            unknown.append(".".join(leaf.path))
        return {"layer": info.layer, "role": info.role, "stacked_axes": info.stacked_axes, "source": info.source,
                "module_type": "", "feeds_norm": None}
    kind = kind_from_class(cls, LINEN_KINDS, "flax.linen")
    role = role_from_name(kind, name, owner_name)
    if axes is None:
        axes = nnx_axes(leaf.shape, None, kind, role, _stacked_from_ndim(leaf.shape, expected_ndim(
            kind, role, None, owner_name)), meta)
    return {"layer": kind, "role": role, "stacked_axes": axes, "source": "type", "module_type": module_type_name(cls),
            "feeds_norm": None if trace is None else trace.feeds_norm.get(leaf.path, False)}
