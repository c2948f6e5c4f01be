"""A plain params pytree -> inventory from names alone (Flax auto-names of each leaf's immediate owner).

An explicitly named owner (``bn1``, ``downsample``) cannot be classified from the tree: its leaves
get ``layer="other"`` and a role from the leaf name only (``source="shape"``). Pass ``model=``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from wdmask._jax._classes import _ATTENTION_CHILDREN, _stacked_from_ndim, expected_ndim, strip_lift
from wdmask._jax._tree import Leaf
from wdmask._kinds import is_auto_name, kind_from_name, role_from_name
from wdmask._types import Inventory, ParamInfo, Path


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


def _classify(path: Path, shape: tuple[int, ...], declared: bool, memo: _NameMemo) -> tuple[str, str, int, str, str]:
    """``(layer, role, stacked, source, declared)`` of a leaf from its owner's name, its own name and its rank."""
    kind = _name_kind(path, memo)
    name = path[-1] if path else ""
    owner = memo.strip_lift(path[-2]) if len(path) >= 2 else ""
    declared_ = "no_decay" if declared else ""
    if kind is None:
        role = memo.role_from_name("other", name, owner)
        kind_ = "embedding" if role == "embedding" else "other"
        if kind_ == "embedding":  # an explicitly named Embed: its name may say it holds positions
            role = memo.role_from_name(kind_, name, owner)
        return kind_, role, 0, "name" if kind_ != "other" else "shape", declared_
    role = memo.role_from_name(kind, name, owner)
    return kind, role, _stacked_from_ndim(shape, expected_ndim(kind, role, owner_name=owner)), "name", declared_


def describe_tree(leaves: Sequence[Leaf]) -> Inventory:
    """Inventory from names alone (Flax auto-names and leaf names).

    A leaf's entry depends only on its owner's and its own name (and the grandparent's under an attention
    child), its rank, dtype and declaration, so a stack of identical blocks is described once per distinct
    leaf: an ``Inventory`` of those kinds.
    """
    memo = _NameMemo()
    seen: dict[tuple[Any, ...], int] = {}
    kinds: list[ParamInfo] = []
    kind_of: list[int] = []
    paths: list[Path] = []
    shapes: list[tuple[int, ...]] = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        path, shape = leaf.path, leaf.shape
        # the grandparent matters only under an attention child (``query`` of ``MultiHeadDotProductAttention_0``)
        key = (path[-3:] if len(path) >= 2 and path[-2] in _ATTENTION_CHILDREN else path[-2:], len(shape),
               leaf.dtype, leaf.declared)
        kind = seen.get(key)
        if kind is None:
            layer, role, stacked, source, declared = _classify(path, shape, leaf.declared, memo)
            kind = seen[key] = len(kinds)
            kinds.append(ParamInfo(path, shape, leaf.dtype, layer, role, stacked, source=source, declared=declared))
        kind_of.append(kind)
        paths.append(path)
        shapes.append(shape)
    return Inventory(kinds, kind_of, paths, shapes)
