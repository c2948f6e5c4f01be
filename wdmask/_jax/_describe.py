r"""``describe``: a Flax model or a params pytree -> inventory (one ``ParamInfo`` per trainable leaf).

Three inputs, three levels of trust (``ParamInfo.source``):

* a **linen module** with ``sample=`` inputs: the exact class of every module, recorded by an
  ``nn.intercept_methods`` interceptor while ``model.init`` is traced abstractly
  (``source="type"``); per-slice shapes inside ``nn.scan``/``nn.vmap`` give ``stacked``; the
  same trace yields ``feeds_norm`` (see ``_feeds_norm``);
* an **NNX module**: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``
  (``source="type"``; ``feeds_norm`` is ``None``: NNX graphs are not traced);
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

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from wdmask._errors import MaskError
from wdmask._kinds import is_auto_name, kind_from_name, role_from_name
from wdmask._types import ParamInfo, Path

PyTree = Any

# Prefixes linen lifted transforms put in front of a wrapped class's auto-name (``CheckpointDense_0``).
_LIFT_PREFIXES = ("Checkpoint", "Remat", "Scan", "Vmap", "Jit", "MapVariables", "Map")
_LIFT_RX = re.compile(rf"^(?:{'|'.join(_LIFT_PREFIXES)})+(?=[A-Z])")
_ATTENTION_CHILDREN = frozenset({"query", "key", "value", "out", "qkv"})

# Exact classes, looked up along the MRO (so subclasses count); names are attributes of flax.linen / flax.nnx.
_LINEN_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",  # wrappers: their own leaves are not a norm's gain/shift
    "Conv": "conv", "ConvTranspose": "conv", "ConvLocal": "conv",
    "Dense": "linear", "DenseGeneral": "linear", "Einsum": "linear", "Fp8Einsum": "linear",
    "Embed": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group",
    "InstanceNorm": "norm.instance", "RMSNorm": "norm.rms",
}
_NNX_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",
    "Conv": "conv", "ConvTranspose": "conv",
    "Linear": "linear", "LinearGeneral": "linear", "Einsum": "linear", "LoRALinear": "linear",
    "Embed": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group",
    "InstanceNorm": "norm.instance", "RMSNorm": "norm.rms",
}

NEEDS_SAMPLE_MSG = (
    "describing a linen module needs `sample`: example inputs for `model.init` (an array, or a tuple of "
    "positional arguments such as `(x, False)`); shapes are traced abstractly, nothing is computed. "
    "Alternatively describe the params pytree alone (name heuristics: explicit names such as `bn1` stay unknown)."
)


class Leaf(NamedTuple):
    """One flattened leaf of a params-like tree."""

    keypath: tuple[Any, ...]  # jax key path, up to the leaf or its box
    path: Path  # strings, relative to the params root (a variables dict's ``params`` collection stripped)
    shape: tuple[int, ...]
    dtype: str
    trainable: bool  # in the ``params`` collection / an ``nnx.Param``
    declared: bool = False  # a ``wdmask.no_decay`` box / ``nnx.Param(..., no_decay=True)``


# --------------------------------------------------------------------------- flattening


@functools.cache
def _flax_boxes() -> tuple[type, ...]:
    try:
        from flax import nnx
        from flax.linen import meta
    except ImportError:  # pragma: no cover - flax is part of the jax extra
        return ()
    return (meta.AxisMetadata, nnx.Variable)


def key_str(key: Any) -> str:
    """A jax key-path entry as a string (``DictKey('conv1')`` -> ``"conv1"``, ``SequenceKey(0)`` -> ``"0"``)."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def is_variables(tree: Any) -> bool:
    """Whether ``tree`` looks like linen variables ``{"params": {...}, "batch_stats": {...}, ...}``."""
    return (isinstance(tree, Mapping) and "params" in tree
            and all(isinstance(k, str) and isinstance(v, Mapping) for k, v in tree.items()))


def _unbox(x: Any) -> Any:
    boxes = _flax_boxes()
    while boxes and isinstance(x, boxes):
        x = x.get_value() if hasattr(x, "get_value") else x.value if hasattr(x, "value") else x.unbox()
    return x


def _shape_dtype(x: Any, where: str) -> tuple[tuple[int, ...], str]:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        import numpy as np

        try:
            arr = np.asarray(x)
        except Exception:
            arr = None
        if arr is None or arr.dtype.kind not in "biufc":
            raise MaskError(f"params leaf {where!r}: expected an array, got {type(x).__name__} {x!r}; a params "
                            "pytree holds arrays (or nn.Partitioned / nnx.Param boxes around arrays)")
        shape, dtype = arr.shape, arr.dtype
    try:
        name = _dtype_name(dtype)
    except TypeError:  # an unhashable dtype-like object
        name = str(dtype)
    return tuple(int(d) for d in shape), name


@functools.cache
def _dtype_name(dtype: Any) -> str:
    return str(dtype)  # numpy's dtype.__str__ is slow, and params hold a handful of dtypes


def _box_test(boxes: tuple[type, ...]) -> Callable[[Any], bool]:
    """``isinstance(x, boxes)``, decided once per type of ``x``; tracers are checked one by one (a
    tracer may stand for an ``nnx.Variable``). Spares every node of a plain pytree NNX's slow check."""
    from jax.core import Tracer

    by_type: dict[type, bool] = {}

    def is_box(x: Any) -> bool:
        cls = type(x)
        if cls not in by_type:
            if issubclass(cls, Tracer):
                return isinstance(x, boxes)
            by_type[cls] = isinstance(x, boxes)
        return by_type[cls]

    return is_box


def flatten(tree: PyTree) -> tuple[list[Leaf], Any]:
    """Flatten a params-like tree to leaves (boxes unboxed) and its treedef (boxes as leaves)."""
    import jax

    from wdmask._jax._declare import is_no_decay

    boxes = _flax_boxes()
    is_box = _box_test(boxes) if boxes else None
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)
    variables = is_variables(tree)
    nnx_var = boxes[1] if boxes else None
    leaves = []
    for keypath, raw in pairs:
        strs = tuple(key_str(k) for k in keypath)
        trainable = True
        if variables:
            trainable, strs = strs[0] == "params", strs[1:]
        boxed = is_box is not None and is_box(raw)
        if boxed and isinstance(raw, nnx_var):
            from flax import nnx

            trainable = trainable and isinstance(raw, nnx.Param)
        shape, dtype = _shape_dtype(_unbox(raw) if boxed else raw, ".".join(strs))
        leaves.append(Leaf(tuple(keypath), strs, shape, dtype, trainable, boxed and is_no_decay(raw)))
    return leaves, treedef


def first_difference(expected: Sequence[Path], got: Sequence[Path]) -> str:
    """Describe the first leaf (in flatten order) where two path lists differ."""
    want, have = set(expected), set(got)
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            da, db = ".".join(a), ".".join(b)
            if b not in want:
                return f"unexpected {db!r} (leaf #{i}; expected {da!r} there)"
            if a not in have:
                return f"missing {da!r} (leaf #{i}; got {db!r} there)"
            return f"leaf #{i}: expected {da!r}, got {db!r} (same paths, different order)"
    if len(expected) > len(got):
        return f"missing {'.'.join(expected[len(got)])!r} (expected {len(expected)} leaves, got {len(got)})"
    if len(got) > len(expected):
        return f"unexpected {'.'.join(got[len(expected)])!r} (expected {len(expected)} leaves, got {len(got)})"
    return "same paths, different container types (e.g. dict vs FrozenDict vs nnx.State, or a box added/removed)"


# --------------------------------------------------------------------------- helpers shared by all inputs


def module_type_name(cls: type) -> str:
    """Qualified class name: ``"flax.linen.BatchNorm"`` for public Flax classes, else module + qualname."""
    for public in ("flax.linen", "flax.nnx"):
        if cls.__module__.startswith(public + "."):
            import importlib

            if getattr(importlib.import_module(public), cls.__name__, None) is cls:
                return f"{public}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def kind_from_class(cls: type, table: Mapping[str, str], public: str) -> str:
    """Layer kind of a module class: exact Flax classes along the MRO, then the user class name."""
    import importlib

    namespace = importlib.import_module(public)
    for base in cls.__mro__:
        kind = table.get(base.__name__)
        if kind is not None and getattr(namespace, base.__name__, None) is base:
            return kind
    return kind_from_name(cls.__name__) or "other"


def expected_ndim(kind: str, role: str, module: Any = None, owner_name: str = "") -> int | None:
    """Per-layer rank of a leaf, when the layer tells it; used to infer ``stacked``."""
    if kind.startswith("norm."):
        return 1 if role in ("scale", "bias") else None
    if role == "embedding" and kind == "embedding":
        return 2
    if kind not in ("conv", "linear"):
        return None
    general = type(module).__name__ if module is not None else owner_name
    if module is not None:
        ins, outs = getattr(module, "in_features", None), getattr(module, "out_features", None)
        ks = getattr(module, "kernel_size", None)
        if kind == "conv" and isinstance(ks, Sequence):
            return {"kernel": len(ks) + 2, "bias": 1}.get(role)
        if isinstance(ins, int) and isinstance(outs, int):
            return {"kernel": 2, "bias": 1}.get(role)
        if isinstance(ins, Sequence) and isinstance(outs, Sequence):
            return {"kernel": len(ins) + len(outs), "bias": len(outs)}.get(role)
        return None
    if "General" in general or "Einsum" in general:
        return None
    if role == "bias":
        return 1
    if role == "kernel" and kind == "linear":
        return 2
    return None


def _stacked_from_ndim(shape: tuple[int, ...], ndim: int | None) -> int:
    return len(shape) - ndim if ndim is not None and len(shape) > ndim else 0


def strip_lift(name: str) -> str:
    """``CheckpointDense_0`` -> ``Dense_0``; ``ScanBlock_2`` -> ``Block_2``."""
    return _LIFT_RX.sub("", name) if is_auto_name(name) else name


# --------------------------------------------------------------------------- plain pytrees


class _NameMemo:
    """The name heuristics, memoized for one ``describe`` (auto-names such as ``Dense_0`` recur in every block)."""

    def __init__(self) -> None:
        self.strip_lift = functools.cache(strip_lift)
        self.is_auto_name = functools.cache(is_auto_name)
        self.kind_from_name = functools.cache(kind_from_name)
        self.role_from_name = functools.cache(role_from_name)


def _name_kind(path: Path, memo: _NameMemo) -> str | None:
    """Kind from the immediate owner's auto-name (never an ancestor's)."""
    if len(path) < 2:
        return None
    owner = memo.strip_lift(path[-2])
    if memo.is_auto_name(owner):
        return memo.kind_from_name(owner)
    if owner in _ATTENTION_CHILDREN and len(path) >= 3:
        parent = memo.strip_lift(path[-3])
        if memo.is_auto_name(parent) and "Attention" in parent:
            return "linear"
    return None


def describe_tree(leaves: Sequence[Leaf]) -> list[ParamInfo]:
    """Inventory from names alone (Flax auto-names and leaf names)."""
    memo = _NameMemo()
    out = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        kind = _name_kind(leaf.path, memo)
        name = leaf.path[-1] if leaf.path else ""
        owner = memo.strip_lift(leaf.path[-2]) if len(leaf.path) >= 2 else ""
        declared = "no_decay" if leaf.declared else ""
        if kind is None:
            role = memo.role_from_name("other", name, owner)
            kind_ = "embedding" if role == "embedding" else "other"
            if kind_ == "embedding":  # an explicitly named Embed: its name may say it holds positions
                role = memo.role_from_name(kind_, name, owner)
            out.append(ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind_, role,
                                 source="name" if kind_ != "other" else "shape", declared=declared))
            continue
        role = memo.role_from_name(kind, name, owner)
        stacked = _stacked_from_ndim(leaf.shape, expected_ndim(kind, role, owner_name=owner))
        out.append(ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind, role, stacked, source="name",
                             declared=declared))
    return out


# --------------------------------------------------------------------------- linen


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
            variables = jax.eval_shape(model.init, rngs, *args)
            feeds = None
        else:
            closed, variables = jax.make_jaxpr(model.init, return_shape=True)(rngs, *args)
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
    trace = trace_linen(model, sample, feeds_norm=True)
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
        piece = trace.slice_shapes.get(leaf.path)
        stacked = 0
        if piece is not None and len(piece) < len(leaf.shape) and leaf.shape[len(leaf.shape) - len(piece):] == piece:
            stacked = len(leaf.shape) - len(piece)
        feeds = None
        if trace.feeds_norm is not None:
            feeds = trace.feeds_norm.get(owner_path, False) if kind in ("conv", "linear") else False
        out.append(ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind, role, stacked, feeds,
                             module_type_name(cls), "type", declared))
    return out


def linen_call_order(model: Any, sample: Any) -> list[Path]:
    """Module paths in first-call order (pairing follows call order, never sorted keys)."""
    return list(trace_linen(model, sample, feeds_norm=False).owners)


# --------------------------------------------------------------------------- nnx


def describe_nnx(model: Any, params: PyTree | None) -> list[ParamInfo]:
    """Inventory of an NNX module: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``."""
    from flax import nnx

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
    out = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        owner_path, module = _owner(leaf.path, owners)
        name = leaf.path[-1] if leaf.path else ""
        kind = kind_from_class(type(module), _NNX_KINDS, "flax.nnx")
        role = role_from_name(kind, name, owner_path[-1] if owner_path else "")
        stacked = _stacked_from_ndim(leaf.shape, expected_ndim(kind, role, module))
        declared = "no_decay" if leaf.declared or leaf.path in declared_paths else ""
        out.append(ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind, role, stacked, None,
                             module_type_name(type(module)), "type", declared))
    return out


# --------------------------------------------------------------------------- entry point


def _is_linen(obj: Any) -> bool:
    import flax.linen as nn

    return isinstance(obj, nn.Module)


def _is_nnx(obj: Any) -> bool:
    from flax import nnx

    return isinstance(obj, nnx.Module)


def describe(params_or_model: Any, sample: Any = None, *, params: PyTree | None = None) -> list[ParamInfo]:
    r"""Inventory of a Flax model or params pytree: one ``ParamInfo`` per trainable leaf, in flatten order.

    * linen ``nn.Module`` + ``sample`` (example inputs for ``model.init``): exact classes,
      ``stacked`` axes of ``nn.scan``/``nn.vmap``, and ``feeds_norm``; one abstract trace, no FLOPs;
    * NNX ``nnx.Module``: exact classes; ``feeds_norm`` is ``None``;
    * params pytree (dict, ``FrozenDict``, ``{"params": ...}`` variables — only the ``params``
      collection is described —, ``nn.Partitioned``/``nnx.Param`` boxes unboxed): Flax auto-names
      of each leaf's immediate owner; explicit names (``bn1``) give ``layer="other"``.

    Integer and bool leaves are listed with their dtype (the engine never decays them).

    Args:
      params_or_model: a linen module, an NNX module, or a params pytree.
      sample: example inputs of a linen module (an array, or a tuple of positional arguments).
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
    if isinstance(params_or_model, type):
        raise TypeError(f"describe() takes a module instance or a params pytree, got the class "
                        f"{params_or_model.__name__}; instantiate it first")
    if _is_linen(params_or_model):
        return describe_linen(params_or_model, sample, params)
    if _is_nnx(params_or_model):
        return describe_nnx(params_or_model, params)
    if params is not None:
        raise TypeError("describe(): `params=` only goes with a model; pass the params pytree as the first argument")
    if sample is not None:
        raise TypeError("describe(): `sample` only goes with a linen module; a params pytree is described by its "
                        "names (pass the module to get exact classes and feeds_norm)")
    leaves, _ = flatten(params_or_model)
    return describe_tree(leaves)


def describe_flattened(tree: PyTree, leaves: Sequence[Leaf]) -> list[ParamInfo]:
    """``describe(tree)`` of a params pytree already flattened to ``leaves`` (``flatten(tree)[0]``)."""
    if isinstance(tree, type) or _is_linen(tree) or _is_nnx(tree):
        return describe(tree)
    return describe_tree(leaves)
