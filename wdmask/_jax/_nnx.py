"""An NNX module -> inventory: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``.

With a ``sample``, one abstract forward pass (``jax.make_jaxpr`` of ``nnx.merge(graphdef, params, rest)(*sample)``,
params as invars) gives the module call order, ``feeds_norm`` (conv/linear outputs and norm inputs are
tagged by patching each module class's ``__call__`` for the trace, see ``_feeds_norm``) and every
parameter's usage (``_usage``: the class keeps the layer kind, the graph decides the role).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from wdmask._errors import MaskError
from wdmask._jax._classes import NNX_KINDS, _stacked_from_ndim, expected_ndim, kind_from_class, module_type_name
from wdmask._jax._sample import Sample
from wdmask._jax._stacks import box_metadata, nnx_axes
from wdmask._jax._tree import PyTree, first_difference, flatten, owner_of
from wdmask._kinds import role_from_name
from wdmask._types import ParamInfo, Path
from wdmask._usage import Use, with_usage


class NnxTrace(NamedTuple):
    """What one abstract forward pass of an NNX module records."""

    order: list[Path]  # module paths in first-call order
    feeds_norm: dict[Path, bool]  # conv/linear module path -> feeds a norm
    usage: dict[Path, tuple[Use, ...]]  # param leaf path -> uses


def trace_nnx(model: Any, sample: Any, *, sample_kwargs: Mapping[str, Any] | None = None) -> NnxTrace:
    """One ``jax.make_jaxpr`` of the forward pass on a merged copy of ``model`` (the model is not touched)."""
    import jax
    from flax import nnx

    from wdmask._jax import _feeds_norm
    from wdmask._jax._usage import abstract, leaf_paths, merge_uses, usage_from_jaxpr

    s = Sample.of(sample, sample_kwargs)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    order: dict[Path, None] = {}
    tagger = _feeds_norm.Tagger()
    kinds: dict[type, str] = {}

    def forward(params: Any, rest: Any, arrays: Any) -> Any:
        copy = nnx.merge(graphdef, params, rest)
        modules = list(nnx.iter_modules(copy))
        paths = {id(m): tuple(str(p) for p in path) for path, m in modules}
        classes = {type(m) for _, m in modules}
        saved = {cls: cls.__dict__.get("__call__") for cls in classes}
        for cls in classes:
            kinds[cls] = kind_from_class(cls, NNX_KINDS, "flax.nnx")
        try:
            for cls in classes:
                inner = cls.__call__

                def recorded(self: Any, *a: Any, _inner: Any = inner, _kind: str = kinds[cls], **k: Any) -> Any:
                    path = paths.get(id(self))
                    if path is None:
                        return _inner(self, *a, **k)
                    order.setdefault(path, None)
                    if _kind.startswith("norm.") and a:
                        a = (tagger.tag_input(path, a[0]), *a[1:])
                    out = _inner(self, *a, **k)
                    if _kind in ("conv", "linear"):
                        out = tagger.tag_output(path, out)
                    return out

                cls.__call__ = recorded  # type: ignore[method-assign]
            return s.call(copy, arrays)
        finally:
            for cls, orig in saved.items():
                if orig is None:
                    if "__call__" in cls.__dict__:
                        del cls.__call__
                else:
                    cls.__call__ = orig  # type: ignore[method-assign]

    abstract_params = abstract(params)
    closed = jax.make_jaxpr(forward)(abstract_params, rest, abstract(s.arrays))
    invars = list(closed.jaxpr.invars)
    n_params = len(jax.tree.leaves(abstract_params))
    n_data = len(jax.tree.leaves(abstract(s.arrays)))
    data = invars[len(invars) - n_data:] if n_data else []
    usage = merge_uses(leaf_paths(params), usage_from_jaxpr(closed, invars[:n_params], data))
    return NnxTrace(list(order), tagger.analyze(closed), usage)


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
        trace = trace_nnx(model, sample, sample_kwargs=sample_kwargs)
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
    declared_paths = {leaf.path for leaf in model_leaves if leaf.declared}
    meta = box_metadata(nnx.state(model, nnx.Param))  # sharding names / param_scan_axis: which axis is stacked
    out = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        owner_path, module = owner_of(leaf.path, owners)
        name = leaf.path[-1] if leaf.path else ""
        kind = kind_from_class(type(module), NNX_KINDS, "flax.nnx")
        role = role_from_name(kind, name, owner_path[-1] if owner_path else "")
        ranked = _stacked_from_ndim(leaf.shape, expected_ndim(kind, role, module))
        axes = nnx_axes(leaf.shape, module, kind, role, ranked, meta.get(leaf.path))
        declared = "no_decay" if leaf.declared or leaf.path in declared_paths else ""
        feeds = None
        if trace is not None:
            feeds = trace.feeds_norm.get(owner_path, False) if kind in ("conv", "linear") else False
        info = ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind, role, len(axes), feeds,
                         module_type_name(type(module)), "type", declared, stacked_axes=axes)
        out.append(with_usage(info, trace.usage.get(leaf.path) if trace is not None else None))
    return out, trace.order if trace is not None else None
