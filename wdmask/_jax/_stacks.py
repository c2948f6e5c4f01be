r"""Layer-stacking axes (``ParamInfo.stacked_axes``) from a framework's own metadata, at any axis position.

Evidence, most trusted first:

1. **Per-slice shapes** (linen ``nn.scan``/``nn.vmap`` seen from inside by the interceptor; NNX
   per-layer shapes from the layer's attributes): the stacked axes are the ones whose removal
   leaves the per-layer shape; when several choices fit (``(8, 8, 8)`` vs ``(8, 8)``), partition
   names decide, else the leading axes (the ``variable_axes`` default).
2. **Partition names** (``nn.Partitioned`` / ``nn.LogicallyPartitioned`` ``names``, NNX
   ``out_sharding`` / ``sharding`` / ``sharding_names`` metadata, which ``nn.scan``'s
   ``metadata_params={nn.PARTITION_NAME: "layers"}`` and ``nnx.vmap``'s ``transform_metadata``
   insert at the stacking axis): an axis named in ``STACK_NAMES`` is a stacking axis; every other
   name (``"embed"``, ``"heads"``, ``"kv"``) is a real axis, so a ``DenseGeneral`` kernel
   ``(768, 12, 64)`` named ``("embed", "heads", "kv")`` is not stacked.
3. An NNX ``param_scan_axis`` metadata entry (an int) on the ``nnx.Param``.

Names are matched exactly (lower-cased) against a short list on purpose: a name that only
*contains* "layer" (``"layer_norm"``) is not taken as stacking — the count of stacked axes from
names alone is conservative, and a params tree without any metadata keeps the rank inference of
``_plain`` (per-layer rank of the owner's kind).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from wdmask._jax._tree import Leaf, PyTree, _box_test, _flax_boxes, is_variables, key_str
from wdmask._types import ParamInfo, Path

#: Partition / sharding names that mark a layer-stacking axis (matched exactly, lower-cased).
STACK_NAMES = frozenset({"layers", "layer", "stage", "stages", "scan", "stack"})
_NNX_NAME_KEYS = ("out_sharding", "sharding_names", "sharding")


def _is_stack_name(entry: Any) -> bool:
    if isinstance(entry, str):
        return entry.lower() in STACK_NAMES
    if isinstance(entry, (tuple, list)) and entry:
        return all(isinstance(e, str) and e.lower() in STACK_NAMES for e in entry)
    return False


def axes_from_names(names: Sequence[Any]) -> tuple[int, ...]:
    """Positions of stacking names in a partition-names tuple.

    Example:
      >>> axes_from_names(("embed", "layers", "mlp")), axes_from_names(("embed", "heads", "kv"))
      ((1,), ())
    """
    return tuple(i for i, entry in enumerate(names) if _is_stack_name(entry))


def axes_from_slice(full: tuple[int, ...], piece: tuple[int, ...],
                    prefer: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
    """Which axes of ``full`` removed leave ``piece``; ``None`` if no choice does.

    Example:
      >>> axes_from_slice((8, 3, 16), (8, 16)), axes_from_slice((4, 4), (4,)), axes_from_slice((4, 4), (4,), (1,))
      ((1,), (0,), (1,))
    """
    n = len(full) - len(piece)
    if n < 0:
        return None
    if n == 0:
        return () if tuple(full) == tuple(piece) else None
    fits = [axes for axes in itertools.combinations(range(len(full)), n)
            if tuple(d for a, d in enumerate(full) if a not in axes) == tuple(piece)]
    if not fits:
        return None
    if prefer is not None and tuple(prefer) in fits:
        return tuple(prefer)
    leading = tuple(range(n))
    return leading if leading in fits else fits[0]


def names_of(box: Any) -> tuple[Any, ...] | None:
    """Partition names of a Flax box (``nn.Partitioned``, ``nn.LogicallyPartitioned``, ``nnx.Variable``)."""
    names = getattr(box, "names", None)
    if isinstance(names, (tuple, list)):
        return tuple(names)
    get = getattr(box, "get_metadata", None)
    if callable(get):
        try:
            meta = get()
        except Exception:
            return None
        for key in _NNX_NAME_KEYS:
            value = meta.get(key) if isinstance(meta, Mapping) else None
            if isinstance(value, (tuple, list)) or type(value).__name__ == "PartitionSpec":
                return tuple(value)
    return None


def scan_axis_of(box: Any) -> int | None:
    """An NNX ``param_scan_axis`` metadata entry, if the box carries one."""
    get = getattr(box, "get_metadata", None)
    if not callable(get):
        return None
    try:
        value = get().get("param_scan_axis")
    except Exception:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def box_metadata(tree: PyTree) -> dict[Path, tuple[tuple[Any, ...] | None, int | None]]:
    """``path -> (partition names, param_scan_axis)`` for every boxed leaf (paths as ``flatten`` gives them)."""
    import jax

    boxes = _flax_boxes()
    if not boxes or tree is None:
        return {}
    is_box = _box_test(boxes)
    try:
        pairs = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)[0]
    except Exception:
        return {}
    strip = is_variables(tree)
    out: dict[Path, tuple[tuple[Any, ...] | None, int | None]] = {}
    for keypath, raw in pairs:
        if not is_box(raw):
            continue
        path = tuple(key_str(k) for k in keypath)
        path = path[1:] if strip else path
        names, axis = names_of(raw), scan_axis_of(raw)
        if names is not None or axis is not None:
            out[path] = (names, axis)
    return out


def metadata_axes(shape: tuple[int, ...], meta: tuple[tuple[Any, ...] | None, int | None] | None
                  ) -> tuple[int, ...] | None:
    """Stacked axes the metadata states for a leaf of ``shape``; ``None`` when it states nothing usable."""
    if meta is None:
        return None
    names, axis = meta
    if names is not None and len(names) == len(shape):
        return axes_from_names(names)
    if axis is not None and -len(shape) <= axis < len(shape):
        return (axis % len(shape),)
    return None


def with_axes(info: ParamInfo, axes: tuple[int, ...] | None) -> ParamInfo:
    """``info`` with ``stacked``/``stacked_axes`` replaced by ``axes`` (unchanged when ``None``)."""
    import dataclasses

    if axes is None or (info.stacked == len(axes) and info.stacked_axes == tuple(axes)):
        return info
    return dataclasses.replace(info, stacked=len(axes), stacked_axes=tuple(axes))


def refine_from_metadata(inventory: Sequence[ParamInfo], tree: PyTree,
                         leaves: Sequence[Leaf]) -> Sequence[ParamInfo]:
    """Params-only describe: partition names in ``tree``'s boxes (``leaves = flatten(tree)[0]``) override the
    rank inference."""
    if not any(leaf.boxed for leaf in leaves):
        return inventory
    meta = box_metadata(tree)
    if not meta:
        return inventory
    return [with_axes(info, metadata_axes(info.shape, meta.get(info.path))) for info in inventory]


def slice_axes(shape: tuple[int, ...], piece: tuple[int, ...] | None,
               meta: tuple[tuple[Any, ...] | None, int | None] | None) -> tuple[int, ...]:
    """Linen: stacked axes from the per-slice shape seen inside ``nn.scan``/``nn.vmap`` (names break ties)."""
    named = metadata_axes(shape, meta)
    if piece is not None and len(piece) < len(shape):
        axes = axes_from_slice(tuple(shape), tuple(piece), named)
        if axes is not None:
            return axes
    return named or ()


def nnx_layer_shape(module: Any, kind: str, role: str) -> tuple[int, ...] | None:
    """Per-layer shape of an NNX layer's leaf from its attributes (``None`` when they do not tell)."""
    def ints(v: Any) -> tuple[int, ...] | None:
        if isinstance(v, int) and not isinstance(v, bool):
            return (v,)
        if isinstance(v, Sequence) and all(isinstance(d, int) for d in v):
            return tuple(v)
        return None

    name = type(module).__name__
    if kind.startswith("norm.") and role in ("scale", "bias"):
        n = ints(getattr(module, "num_features", None))
        return n if n is not None and len(n) == 1 else None
    if kind == "embedding" and role == "embedding":
        a, b = getattr(module, "num_embeddings", None), getattr(module, "features", None)
        return (a, b) if isinstance(a, int) and isinstance(b, int) else None
    if kind in ("conv", "linear"):
        shape = ints(getattr(module, "kernel_shape", None))
        if role == "kernel" and shape is not None and "Einsum" in name:
            return shape
        ins, outs = ints(getattr(module, "in_features", None)), ints(getattr(module, "out_features", None))
        if ins is None or outs is None:
            return None
        ks = ints(getattr(module, "kernel_size", None))
        if kind == "conv" and ks is not None:
            groups = getattr(module, "feature_group_count", 1)
            if role == "kernel" and len(ins) == 1 and isinstance(groups, int) and groups > 0:
                return (*ks, ins[0] // groups, outs[0]) if "Transpose" not in name else (*ks, ins[0], outs[0])
            return outs if role == "bias" else None
        return {"kernel": (*ins, *outs), "bias": outs}.get(role)
    return None


def nnx_axes(shape: tuple[int, ...], module: Any, kind: str, role: str, fallback: int,
             meta: tuple[tuple[Any, ...] | None, int | None] | None) -> tuple[int, ...]:
    """NNX: stacked axes from metadata, else the per-layer shape the module states, else ``fallback`` leading axes."""
    named = metadata_axes(shape, meta)
    if named is not None:
        return named
    piece = nnx_layer_shape(module, kind, role)
    if piece is not None:
        axes = axes_from_slice(tuple(shape), piece)
        if axes is not None:
            return axes
    return tuple(range(fallback))
