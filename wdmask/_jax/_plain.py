"""A plain params pytree -> inventory from names alone (Flax auto-names of each leaf's immediate owner).

An explicitly named owner (``bn1``, ``downsample``) cannot be classified from the tree: its leaves
get ``layer="other"`` and a role from the leaf name only (``source="shape"``). Pass ``model=``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from wdmask._jax._classes import _ATTENTION_CHILDREN, _stacked_from_ndim, expected_ndim, strip_lift
from wdmask._jax._tree import Leaf
from wdmask._kinds import is_auto_name, kind_from_name, role_from_name
from wdmask._types import ParamInfo, Path


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
