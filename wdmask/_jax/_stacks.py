r"""Layer-stacking axes (``ParamInfo.stacked_axes``) from a framework's own metadata, at any axis position.

Evidence, most trusted first:

1. **Per-slice shapes** (linen ``nn.scan``/``nn.vmap`` seen from inside by the interceptor; NNX
   per-layer shapes from the layer's attributes): the stacked axes are the ones whose removal
   leaves the per-layer shape; when several choices fit (``(8, 8, 8)`` vs ``(8, 8)``), partition
   names decide, else the leading axes (the ``variable_axes`` default).
2. **Partition names** (``nn.Partitioned`` / ``nn.LogicallyPartitioned`` ``names``, NNX
   ``out_sharding`` / ``sharding`` / ``sharding_names`` metadata, which ``nn.scan``'s
   ``metadata_params={nn.PARTITION_NAME: "layers"}`` and ``nnx.vmap``'s ``transform_metadata``
   insert at the stacking axis): an axis with a stacking name (``is_stack_name``) is a stacking
   axis; every other name (``"embed"``, ``"heads"``, ``"kv"``) is a real axis, so a ``DenseGeneral``
   kernel ``(768, 12, 64)`` named ``("embed", "heads", "kv")`` is not stacked. A name the per-slice
   shapes of one leaf show to be at a stacked axis (MaxText's ``"layers_per_stage"`` at axis 1 of a
   kernel whose layer states its shape) is a stacking name for every leaf of that model.
3. An NNX ``param_scan_axis`` metadata entry (an int) on the ``nnx.Param``.
4. **Siblings** (``agree_with_siblings``): a leaf with none of the above (an ``nnx.Param`` without
   partition names in a layer that states no shapes) takes the stacked axes every leaf with evidence
   under its nearest common module has, when its own sizes there match: ``nnx.vmap(...,
   out_axes=StateAxes({nnx.Param: 1, ...: 0}))`` stacks every parameter of a layer at the same axis.

Stacking names are ``STACK_NAMES`` and names of the form ``<words_>layer(s)|stage(s)|repeat(s)|scan|stack
<_per_word>`` (``"layers_per_stage"``, ``"circular_repeats"``, ``"decoder_layers"``), never a name that says
``norm`` (``"layer_norm"``): the count of stacked axes from names alone stays conservative, and a params tree
without any metadata keeps the rank inference of ``_plain`` (per-layer rank of the owner's kind).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from wdmask._jax._tree import Leaf, PyTree, _flax_boxes, is_box, is_variables, key_str
from wdmask._types import Path

#: Partition / sharding names that mark a layer-stacking axis (lower-cased), besides ``_STACK_NAME``.
STACK_NAMES = frozenset({"layers", "layer", "stage", "stages", "scan", "stack"})
_STACK_NAME = re.compile(r"(?:[a-z0-9]+_)*(?:layers?|stages?|repeats?|scan|scanned|stack|stacked)(?:_per_[a-z0-9]+)?")
_NNX_NAME_KEYS = ("out_sharding", "sharding_names", "sharding")
Names = tuple[tuple[Any, ...] | None, int | None]  # (partition names, param_scan_axis) of one boxed leaf


def is_stack_name(entry: Any, learned: Collection[str] = ()) -> bool:
    """Whether a partition-names entry (a name, or a tuple of mesh-axis names) marks a stacking axis.

    Examples:
      >>> [is_stack_name(n) for n in ("layers", "layers_per_stage", "circular_repeats", "layer_norm", "embed")]
      [True, True, True, False, False]
      >>> is_stack_name("pipe", learned={"pipe"}), is_stack_name(("stage", "layers"))
      (True, True)
    """
    if isinstance(entry, str):
        low = entry.lower()
        return low in STACK_NAMES or low in learned or (
            "norm" not in low and _STACK_NAME.fullmatch(low) is not None)
    if isinstance(entry, (tuple, list)) and entry:
        return all(isinstance(e, str) and is_stack_name(e, learned) for e in entry)
    return False


def axes_from_names(names: Sequence[Any], learned: Collection[str] = ()) -> tuple[int, ...]:
    """Positions of stacking names in a partition-names tuple (``learned``: more stacking names).

    Examples:
      >>> axes_from_names(("embed", "layers", "mlp")), axes_from_names(("embed", "heads", "kv"))
      ((1,), ())
    """
    return tuple(i for i, entry in enumerate(names) if is_stack_name(entry, learned))


def learn_stack_names(pairs: Sequence[tuple[tuple[int, ...], Names | None]]) -> frozenset[str]:
    """Partition names found at stacked axes: ``pairs`` are ``(stacked axes known from per-slice shapes, names)``.

    Examples:
      >>> sorted(learn_stack_names([((1,), (("embed", "pipe", "mlp"), None)), ((), (("embed",), None))]))
      ['pipe']
    """
    found: set[str] = set()
    for axes, meta in pairs:
        names = meta[0] if meta is not None else None
        if not axes or names is None:
            continue
        for a in axes:
            entry = names[a] if a < len(names) else None
            for e in entry if isinstance(entry, (tuple, list)) else (entry,):
                if isinstance(e, str):
                    found.add(e.lower())
    return frozenset(found)


def slice_fits(full: tuple[int, ...], piece: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every choice of axes of ``full`` whose removal leaves ``piece`` (more than one: only names can tell).

    Examples:
      >>> slice_fits((8, 3, 16), (8, 16)), slice_fits((4, 4), (4,))
      ([(1,)], [(0,), (1,)])
    """
    n = len(full) - len(piece)
    if n < 0:
        return []
    return [axes for axes in itertools.combinations(range(len(full)), n)
            if tuple(d for a, d in enumerate(full) if a not in axes) == tuple(piece)]


def axes_from_slice(full: tuple[int, ...], piece: tuple[int, ...],
                    prefer: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
    """Which axes of ``full`` removed leave ``piece``; ``None`` if no choice does.

    Examples:
      >>> axes_from_slice((8, 3, 16), (8, 16)), axes_from_slice((4, 4), (4,)), axes_from_slice((4, 4), (4,), (1,))
      ((1,), (0,), (1,))
    """
    fits = slice_fits(full, piece)
    if not fits:
        return None
    if prefer is not None and tuple(prefer) in fits:
        return tuple(prefer)
    leading = tuple(range(len(full) - len(piece)))
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


def metadata_axes(shape: tuple[int, ...], meta: Names | None, learned: Collection[str] = ()
                  ) -> tuple[int, ...] | None:
    """Stacked axes the metadata states for a leaf of ``shape``; ``None`` when it states nothing usable."""
    if meta is None:
        return None
    names, axis = meta
    if names is not None and len(names) == len(shape):
        return axes_from_names(names, learned)
    if axis is not None and -len(shape) <= axis < len(shape):
        return (axis % len(shape),)
    return None


def stacked_by_metadata(tree: PyTree, leaves: Sequence[Leaf]) -> dict[Path, tuple[int, ...]]:
    """Params-only describe: the stacked axes partition names in ``tree``'s boxes state (``leaves =
    flatten(tree)[0]``), by path; a leaf without names under a module whose named leaves are all stacked alike
    takes their axes (``agree_with_siblings``). Leaves absent from the result keep the rank inference."""
    if not any(leaf.boxed for leaf in leaves):
        return {}
    meta = box_metadata(tree)
    if not meta:
        return {}
    mine = [leaf for leaf in leaves if leaf.trainable]
    named = [metadata_axes(leaf.shape, meta.get(leaf.path)) for leaf in mine]
    trusted = [bool(n) for n in named]  # a stacking name seen: the leaf's axes are known, not inferred from rank
    if any(trusted):
        named = agree_with_siblings([leaf.path for leaf in mine], [leaf.shape for leaf in mine], named, trusted)
    return {leaf.path: axes for leaf, axes in zip(mine, named, strict=True) if axes is not None}


def agree_with_siblings(paths: Sequence[Path], shapes: Sequence[tuple[int, ...]],
                        axes: Sequence[tuple[int, ...] | None],
                        trusted: Sequence[bool]) -> list[tuple[int, ...] | None]:
    """Stacked axes of the leaves without evidence (``trusted[i]`` false) from the trusted leaves under their
    nearest common module (a non-empty path prefix): when every such leaf is stacked at the same axes with the same
    sizes, and the leaf has those sizes there, it is stacked there too (``nnx.vmap`` stacks every parameter of
    a layer alike). Otherwise, and for a group that is not stacked, the leaf keeps its axes (``None``: unknown).

    Examples:
      >>> paths = [("layers", "fc", "kernel"), ("layers", "gate"), ("head", "w")]
      >>> shapes = [(8, 3, 16), (8, 3), (8, 3)]
      >>> agree_with_siblings(paths, shapes, [(1,), (), ()], [True, False, False])
      [(1,), (1,), ()]
    """
    groups: dict[Path, set[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    for path, shape, ax, ok in zip(paths, shapes, axes, trusted, strict=True):
        if not ok:
            continue
        stamp = (tuple(ax), tuple(shape[a] for a in ax))
        for n in range(1, len(path)):
            groups.setdefault(path[:n], set()).add(stamp)
    out = [None if a is None else tuple(a) for a in axes]
    for i, (path, shape, ok) in enumerate(zip(paths, shapes, trusted, strict=True)):
        if ok:
            continue
        for n in range(len(path) - 1, 0, -1):
            stamps = groups.get(path[:n])
            if stamps is None:
                continue
            if len(stamps) == 1:
                (ax, sizes), = stamps
                if ax and all(a < len(shape) for a in ax) and tuple(shape[a] for a in ax) == sizes:
                    out[i] = ax
            break  # the nearest module with evidence decides, agreeing or not
    return out


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


def nnx_axes(shape: tuple[int, ...], module: Any, kind: str, role: str, fallback: int, meta: Names | None,
             learned: Collection[str] = ()) -> tuple[int, ...]:
    """NNX: stacked axes from the per-layer shape the module states, else metadata, else ``fallback`` leading axes."""
    return nnx_axes_evidence(shape, module, kind, role, fallback, meta, learned)[0]


def nnx_axes_evidence(shape: tuple[int, ...], module: Any, kind: str, role: str, fallback: int, meta: Names | None,
                      learned: Collection[str] = ()) -> tuple[tuple[int, ...], str]:
    """``nnx_axes`` and where they come from: ``"shape"`` (the layer's attributes), ``"names"`` (a stacking name or
    ``param_scan_axis``), ``""`` (nothing told: partition names without a stacking name, or the rank guess)."""
    named = metadata_axes(shape, meta, learned)
    piece = nnx_layer_shape(module, kind, role)
    if piece is not None:
        axes = axes_from_slice(tuple(shape), piece, named or None)
        if axes is not None:
            return axes, "shape"
    if named:
        return named, "names"
    if named is not None:
        return named, ""
    return tuple(range(fallback)), ""
