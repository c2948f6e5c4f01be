"""Flattening params-like trees: ``Leaf`` records, Flax boxes (``nn.Partitioned``, ``nnx.Param``) unboxed.

The one place that answers "what are the leaves of this tree, and where are they?" for every JAX input.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from wdmask._errors import MaskError
from wdmask._types import ParamInfo, Path

PyTree = Any


class Leaf(NamedTuple):
    """One flattened leaf of a params-like tree."""

    keys: Path  # the jax key path as strings (``key_str``), up to the leaf or its box, from the tree's root
    path: Path  # relative to the params root (``keys`` without a variables dict's ``params`` collection)
    shape: tuple[int, ...]
    dtype: str
    trainable: bool  # in the ``params`` collection / an ``nnx.Param``
    declared: bool = False  # a ``wdmask.no_decay`` box / ``nnx.Param(..., no_decay=True)``
    boxed: bool = False  # held in a Flax box (``nn.Partitioned``, ``nnx.Param``), which may carry axis metadata



@functools.cache
def _flax_boxes() -> tuple[type, ...]:
    try:
        from flax import nnx
        from flax.linen import meta
    except ImportError:  # pragma: no cover - flax is part of the jax extra
        return ()
    return (meta.AxisMetadata, nnx.Variable)


def is_box(x: Any) -> bool:
    """Whether ``x`` is a Flax box (``nn.Partitioned`` or any ``AxisMetadata``, an ``nnx.Variable``): the
    ``is_leaf`` of every flatten here, so a box is one leaf.

    Asked of the class: ``isinstance`` would also ask jax, for every node of the tree, whether it is a tracer
    standing for a Variable (only under flax's experimental ``flax_hijax_variable``), which doubled the cost
    of flattening a large tree.
    """
    return issubclass(type(x), _flax_boxes())


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


def _shape_dtype(x: Any, where: Path) -> tuple[tuple[int, ...], str]:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        import numpy as np

        try:
            arr = np.asarray(x)
        except Exception:
            arr = None
        if arr is None or arr.dtype.kind not in "biufc":
            raise MaskError(f"params leaf {'.'.join(where)!r}: expected an array, got {type(x).__name__} {x!r}; a "
                            "params pytree holds arrays (or nn.Partitioned / nnx.Param boxes around arrays); for an "
                            "Equinox model pass `eqx.filter(model, eqx.is_inexact_array)`")
        shape, dtype = arr.shape, arr.dtype
    try:
        name = _dtype_name(dtype)
    except TypeError:  # an unhashable dtype-like object
        name = str(dtype)
    return tuple(map(int, shape)), name


@functools.cache
def _dtype_name(dtype: Any) -> str:
    return str(dtype)  # numpy's dtype.__str__ is slow, and params hold a handful of dtypes


def flatten(tree: PyTree) -> tuple[list[Leaf], Any]:
    """Flatten a params-like tree to leaves (boxes unboxed) and its treedef (boxes as leaves).

    Examples:
      >>> import numpy as np
      >>> leaves, _ = flatten({"params": {"Dense_0": {"kernel": np.zeros((2, 3))}}, "batch_stats": {}})
      >>> [(leaf.keys, leaf.path, leaf.shape, leaf.trainable) for leaf in leaves]
      [(('params', 'Dense_0', 'kernel'), ('Dense_0', 'kernel'), (2, 3), True)]
    """
    import jax

    from wdmask._jax._declare import is_no_decay

    try:
        pairs, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)
    except ValueError as e:
        if "sorting" not in str(e):
            raise
        raise MaskError(f"params: a dict's keys cannot be sorted ({e}); jax flattens a dict in sorted-key order, "
                        "so the keys of one dict must be of one comparable type (e.g. all str)") from None
    variables = is_variables(tree)
    leaves = []
    for keypath, raw in pairs:
        keys = tuple(map(key_str, keypath))
        trainable, path = (keys[0] == "params", keys[1:]) if variables else (True, keys)
        boxed = is_box(raw)
        if boxed:
            from flax import nnx

            if isinstance(raw, nnx.Variable):  # only an nnx.Param is trainable
                trainable = trainable and isinstance(raw, nnx.Param)
        shape, dtype = _shape_dtype(_unbox(raw) if boxed else raw, path)
        leaves.append(Leaf(keys, path, shape, dtype, trainable, boxed and is_no_decay(raw), boxed))
    if _has_module_separators(tree["params"] if variables else tree):
        leaves = split_module_paths(leaves)
    return leaves, treedef


def _has_module_separators(tree: Any) -> bool:
    """Haiku-style params: a dict whose keys are ``/``-separated module paths (``"mlp/~/linear_0"``)."""
    return isinstance(tree, Mapping) and any(type(k) is str and "/" in k for k in tree)


def split_module_paths(leaves: list[Leaf]) -> list[Leaf]:
    """Leaves whose path segments hold Haiku module paths (``"mlp/~/linear_0"``) split into one segment per module
    (``("mlp", "linear_0", "w")``; ``~`` only marks where Haiku made the module). Paths that would then coincide
    are left as they were.

    Examples:
      >>> leaf = Leaf(("mlp/~/linear_0", "w"), ("mlp/~/linear_0", "w"), (2, 3), "float32", True)
      >>> split_module_paths([leaf])[0].path
      ('mlp', 'linear_0', 'w')
    """
    paths = [tuple(part for seg in leaf.path for part in seg.split("/") if part not in ("", "~")) for leaf in leaves]
    if len(set(paths)) != len(paths):
        return leaves
    return [leaf._replace(path=path) for leaf, path in zip(leaves, paths, strict=True)]


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


def shape_difference(expected: Sequence[Leaf], got: Sequence[Leaf]) -> str | None:
    """The first trainable leaf (same paths, in order) whose shape differs, described, or ``None``.

    Examples:
      >>> a = [Leaf(("fc", "kernel"), ("fc", "kernel"), (3, 4), "float32", True)]
      >>> shape_difference(a, [a[0]._replace(shape=(5, 4))])
      "leaf 'fc.kernel' has shape (5, 4) in `params`, (3, 4) in the model"
    """
    for want, have in zip((x for x in expected if x.trainable), (x for x in got if x.trainable), strict=False):
        if want.shape != have.shape:
            return f"leaf {'.'.join(have.path)!r} has shape {have.shape} in `params`, {want.shape} in the model"
    return None


def owner_of(path: Path, owners: Mapping[Path, Any]) -> tuple[Path, Any]:
    """The longest proper prefix of ``path`` in ``owners`` (module path -> module/class), and its value.

    Examples:
      >>> owner_of(("blocks", "ln", "scale"), {(): "root", ("blocks", "ln"): "LayerNorm"})
      (('blocks', 'ln'), 'LayerNorm')
    """
    for n in range(len(path) - 1, -1, -1):
        if path[:n] in owners:
            return path[:n], owners[path[:n]]
    return (), None


def in_call_order(inventory: Sequence[ParamInfo], modules: Sequence[Path]) -> list[ParamInfo]:
    """``inventory`` in the traced module call order: by the first call of each leaf's owner (its longest path
    prefix in ``modules``, as the trace recorded them); leaves no module owns last, ``Block_2`` before ``Block_10``.

    Examples:
      >>> inv = [ParamInfo(("bn1", "scale"), (4,)), ParamInfo(("conv1", "kernel"), (3, 3, 3, 4))]
      >>> [str(i) for i in in_call_order(inv, [(), ("conv1",), ("bn1",)])]
      ['conv1.kernel', 'bn1.scale']
    """
    rank = {m: i for i, m in enumerate(modules)}

    def key(info: ParamInfo) -> tuple[int, tuple[Any, ...]]:
        for n in range(len(info.path) - 1, 0, -1):
            if info.path[:n] in rank:
                return rank[info.path[:n]], ()
        return len(rank), tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", seg))
                                for seg in info.path)

    return sorted(inventory, key=key)
