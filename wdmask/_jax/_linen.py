"""A linen module + ``sample`` -> inventory, from one abstract trace of ``model.init``.

An ``nn.intercept_methods`` interceptor records the exact class of every module
(``source="type"``) and per-slice shapes inside ``nn.scan``/``nn.vmap`` (``stacked``); the same
trace yields ``feeds_norm`` (see ``_feeds_norm``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from wdmask._errors import MaskError
from wdmask._jax._classes import kind_from_class, module_type_name
from wdmask._jax._fallback import describe_untraced, own_init, refine_bridged, traced_or_error
from wdmask._jax._plain import describe_tree
from wdmask._jax._stacks import box_metadata, slice_axes
from wdmask._jax._tree import PyTree, _unbox, first_difference, flatten
from wdmask._kinds import role_from_name
from wdmask._types import ParamInfo, Path

# Exact classes, looked up along the MRO (so subclasses count); names are attributes of flax.linen.
_LINEN_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",  # wrappers: their own leaves are not a norm's gain/shift
    "Conv": "conv", "ConvTranspose": "conv", "ConvLocal": "conv",
    "Dense": "linear", "DenseGeneral": "linear", "Einsum": "linear", "Fp8Einsum": "linear",
    "Embed": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group",
    "InstanceNorm": "norm.instance", "RMSNorm": "norm.rms",
}
NEEDS_SAMPLE_MSG = (
    "describing a linen module needs `sample`: example inputs for `model.init` (an array, or a tuple of "
    "positional arguments such as `(x, False)`); shapes are traced abstractly, nothing is computed. "
    "Alternatively describe the params pytree alone (name heuristics: explicit names such as `bn1` stay unknown)."
)




class LinenTrace(NamedTuple):
    """What tracing ``model.init`` once with the interceptor records."""

    owners: dict[Path, type]  # module path -> class, first writer wins, in call (pre-)order
    slice_shapes: dict[Path, tuple[int, ...]]  # leaf path -> per-slice shape seen inside the module
    variables: Any  # abstract variables (ShapeDtypeStruct leaves)
    feeds_norm: dict[Path, bool] | None  # producer module path -> feeds a norm; None if not traced


def _is_lifted(cls: type) -> bool:
    return cls.__module__ == "flax.linen.transforms"


def as_args(sample: Any) -> tuple[Any, ...]:
    """``sample`` as positional arguments: a tuple/list is unpacked, anything else is one argument."""
    return tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)


def trace_linen(model: Any, sample: Any, *, feeds_norm: bool = True) -> LinenTrace:
    """Trace ``model.init`` abstractly, recording module classes, per-slice shapes and norm feeding."""
    import flax.linen as nn
    import jax

    from wdmask._jax import _feeds_norm

    owners: dict[Path, type] = {}
    slices: dict[Path, tuple[int, ...]] = {}
    tagger = _feeds_norm.Tagger() if feeds_norm else None

    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, ctx: Any) -> Any:
        module = ctx.module
        cls = type(module)
        if _is_lifted(cls):
            return next_fun(*args, **kwargs)
        path = tuple(str(p) for p in module.path)
        owners.setdefault(path, cls)
        kind = kind_from_class(cls, _LINEN_KINDS, "flax.linen")
        is_call = ctx.method_name == "__call__"
        if tagger is not None and is_call and kind.startswith("norm.") and args:
            args = (tagger.tag_input(path, args[0]), *args[1:])
        out = next_fun(*args, **kwargs)
        params = module.variables.get("params", {}) if module.scope is not None else {}
        for name, value in params.items():
            if not isinstance(value, Mapping):
                slices.setdefault((*path, str(name)), tuple(_unbox(value).shape))
        if tagger is not None and is_call and kind in ("conv", "linear"):
            out = tagger.tag_output(path, out)
        return out

    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    args = as_args(sample)
    with nn.intercept_methods(interceptor):
        if tagger is None:
            variables = jax.eval_shape(own_init(model), rngs, *args)
            feeds = None
        else:
            closed, variables = jax.make_jaxpr(own_init(model), return_shape=True)(rngs, *args)
            feeds = tagger.analyze(closed)
    return LinenTrace(owners, slices, variables, feeds)


def _owner(path: Path, owners: Mapping[Path, Any]) -> tuple[Path, Any]:
    for n in range(len(path) - 1, -1, -1):
        if path[:n] in owners:
            return path[:n], owners[path[:n]]
    return (), None


def describe_linen(model: Any, sample: Any, params: PyTree | None) -> list[ParamInfo]:
    """Inventory of a linen module from one abstract trace of ``model.init(rng, *sample)``."""
    if sample is None:
        raise ValueError(NEEDS_SAMPLE_MSG)
    trace, error = traced_or_error(lambda: trace_linen(model, sample, feeds_norm=True))
    if trace is None:  # never raise from deep inside flax: describe what can be read, and say so
        return describe_untraced(model, sample, params, error)
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
    # Declarations live in the boxes of the model's own init: also known when `params` were unboxed.
    declared_paths = {leaf.path for leaf in model_leaves if leaf.declared}
    meta = {**box_metadata(trace.variables), **box_metadata(params)}  # partition names: which axis is stacked
    out = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        owner_path, cls = _owner(leaf.path, trace.owners)
        name = leaf.path[-1] if leaf.path else ""
        if cls is None:  # pragma: no cover - the root module always owns the rest
            out.append(describe_tree([leaf])[0])
            continue
        kind = kind_from_class(cls, _LINEN_KINDS, "flax.linen")
        role = role_from_name(kind, name, owner_path[-1] if owner_path else "")
        declared = "no_decay" if leaf.declared or leaf.path in declared_paths else ""
        axes = slice_axes(leaf.shape, trace.slice_shapes.get(leaf.path), meta.get(leaf.path))
        feeds = None
        if trace.feeds_norm is not None:
            feeds = trace.feeds_norm.get(owner_path, False) if kind in ("conv", "linear") else False
        out.append(ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind, role, len(axes), feeds,
                             module_type_name(cls), "type", declared, stacked_axes=axes))
    return refine_bridged(out, model, trace.owners)


def linen_call_order(model: Any, sample: Any) -> list[Path]:
    """Module paths in first-call order (pairing follows call order, never sorted keys)."""
    return list(trace_linen(model, sample, feeds_norm=False).owners)
