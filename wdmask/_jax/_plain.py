"""A plain params pytree -> inventory from names alone (the name of each leaf's immediate owner, and its own).

Kinds from the owner's name: Flax auto-names (``BatchNorm_0``, ``Dense_3``), Haiku's auto-names (``linear_1``,
``conv2_d``, ``embed``, ``layer_norm``; Haiku params ``{"mlp/~/linear_0": {"w": ..., "b": ...}}`` have their
paths split into modules, ``("mlp", "linear_0", "w")``) and explicit names that say "norm" (``input_layernorm``,
``final_layer_norm``, ``ln_f``, ``norm1``): ``source="name"``. Any other explicitly named owner (``bn1``,
``downsample``) cannot be classified from the tree: its leaves get ``layer="other"`` and a role from the leaf
name only (``kernel``/``w`` of rank >= 2, ``bias``/``b``, ``scale``, ``embedding``; ``source="shape"``). Pass
``model=``.

What names cannot tell stays a guess, reported by ``decide`` (``UnclassifiedWarning``): a leaf with neither kind
nor role, and a leaf whose kind is known and role is not -- among them every embedding table that is not the
only one and whose owner does not say it holds tokens (``word_embeddings``, ``wte``, ``embed_tokens``): a second
table is as likely a position or segment table.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from wdmask._jax._classes import _ATTENTION_CHILDREN, _stacked_from_ndim, expected_ndim, strip_lift
from wdmask._jax._tree import Leaf
from wdmask._kinds import (
    SCALE_NAMES,
    SHIFT_NAMES,
    is_auto_name,
    kind_from_module_name,
    kind_from_name,
    names_tokens,
    role_from_name,
)
from wdmask._types import Inventory, Path
from wdmask._usage import param_info


class _NameMemo:
    """The name heuristics, memoized for one ``describe`` (auto-names such as ``Dense_0`` recur in every block)."""

    def __init__(self) -> None:
        self.strip_lift = functools.cache(strip_lift)
        self.is_auto_name = functools.cache(is_auto_name)
        self.kind_from_name = functools.cache(kind_from_name)
        self.kind_from_module_name = functools.cache(kind_from_module_name)
        self.role_from_name = functools.cache(role_from_name)


# The leaves a layer kind named by an explicit module name can hold (Flax, Haiku and torch-style names).
_LEAVES_OF = {"norm": SCALE_NAMES | SHIFT_NAMES, "linear": frozenset({"kernel", "w", "weight", "bias", "b"}),
              "conv": frozenset({"kernel", "w", "weight", "bias", "b"}),
              "embedding": frozenset({"embedding", "embeddings", "weight"})}


def _name_kind(path: Path, memo: _NameMemo) -> str | None:
    """Kind from the immediate owner's auto-name (never an ancestor's)."""
    if len(path) < 2:
        return None
    owner = memo.strip_lift(path[-2])
    if memo.is_auto_name(owner):
        return memo.kind_from_name(owner)
    named = memo.kind_from_module_name(owner)  # Haiku auto-names, names that say norm
    if named is not None and path[-1].lower() in _LEAVES_OF.get(named.split(".")[0], ()):
        return named  # ... when the leaf is one such a layer has (a `kernel` under `norm_proj` is no norm's)
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
        if role == "other" and name == "w" and len(shape) >= 2:  # Haiku's kernel name, under an explicit name
            role = "kernel"
        elif role == "other" and name == "b":  # Haiku's bias name
            role = "bias"
        kind_ = "embedding" if role == "embedding" else "other"
        if kind_ == "embedding":  # an explicitly named Embed: its name may say it holds positions
            role = memo.role_from_name(kind_, name, owner)
        return kind_, role, 0, "name" if kind_ != "other" else "shape", declared_
    role = memo.role_from_name(kind, name, owner)
    extra = _stacked_from_ndim(shape, expected_ndim(kind, role, owner_name=owner))
    # leading axes beyond the layer's rank are stacked layers up to the first size-1 one: from there on they are
    # broadcast axes of the parameter itself (Haiku's BatchNorm scale is (1, 1, 1, C))
    stacked = next((i for i, d in enumerate(shape[:extra]) if d == 1), extra)
    return kind, role, stacked, "name", declared_


def describe_tree(leaves: Sequence[Leaf], stacked: Mapping[Path, tuple[int, ...]] | None = None) -> Inventory:
    """Inventory from names alone (Flax auto-names and leaf names).

    A leaf's entry depends only on its owner's and its own name (and the grandparent's under an attention
    child), its rank, dtype and declaration, so a stack of identical blocks is described once per distinct
    leaf: an ``Inventory`` of those kinds. ``stacked``: the stacked axes of the leaves whose partition metadata
    states them (``_stacks.stacked_by_metadata``), instead of the rank inference.
    """
    stacked = stacked or {}
    memo = _NameMemo()
    seen: dict[tuple[Any, ...], int] = {}
    kinds: list[dict[str, Any]] = []
    kind_of: list[int] = []
    paths: list[Path] = []
    shapes: list[tuple[int, ...]] = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        path, shape = leaf.path, leaf.shape
        axes = stacked.get(path)
        # the grandparent matters only under an attention child (``query`` of ``MultiHeadDotProductAttention_0``)
        key = (path[-3:] if len(path) >= 2 and path[-2] in _ATTENTION_CHILDREN else path[-2:], len(shape),
               leaf.dtype, leaf.declared, axes)
        kind = seen.get(key)
        if kind is None:
            layer, role, n, source, declared = _classify(path, shape, leaf.declared, memo)
            kind = seen[key] = len(kinds)
            kinds.append({"path": path, "shape": shape, "dtype": leaf.dtype, "layer": layer, "role": role,
                          "stacked_axes": tuple(range(n)) if axes is None else axes, "source": source,
                          "declared": declared})
        kind_of.append(kind)
        paths.append(path)
        shapes.append(shape)
    counts = collections.Counter(kind_of)
    for k in extra_tables(kinds, [counts[k] for k in range(len(kinds))]):
        kinds[k]["role"] = "other"
    return Inventory([param_info(**facts) for facts in kinds], kind_of, paths, shapes)


def extra_tables(facts: Sequence[Mapping[str, Any]], counts: Sequence[int] | None = None) -> list[int]:
    """Without a graph, the embedding tables whose role is a guess: with more than one table (an entry standing for
    ``counts[k]`` leaves), every table whose owner does not say it holds tokens (``word_embeddings``, ``wte``): a
    class or a name tells a table, not what indexes it -- a position or segment table looks the same.

    Args:
      facts: per leaf (or kind of leaf), at least ``path``, ``layer`` and ``role``.
      counts: how many leaves each entry stands for (default one each).

    Examples:
      >>> facts = [{"path": ("tok_embeddings", "weight"), "layer": "embedding", "role": "embedding"},
      ...          {"path": ("extra", "weight"), "layer": "embedding", "role": "embedding"}]
      >>> extra_tables(facts)
      [1]
    """
    tables = [k for k, f in enumerate(facts) if f["layer"] == "embedding" and f["role"] == "embedding"]
    if sum(counts[k] if counts is not None else 1 for k in tables) < 2:
        return []
    return [k for k in tables
            if not names_tokens(strip_lift(facts[k]["path"][-2]) if len(facts[k]["path"]) >= 2 else "")]
