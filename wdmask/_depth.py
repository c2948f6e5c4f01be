r"""Depth of each parameter in the forward pass, from structure (and the call order when a trace gives one).

``ParamInfo.depth`` is 0 for what runs before the first repeated block (stem, patch/token embeddings, cls and
position tables), ``i`` for the ``i``-th block in forward order, and ``depth_max`` (the number of blocks + 1) for
what runs after the last (final norm, head). A leaf stacked along one axis (``nn.scan``) gets one depth per slice.

Blocks are the items of *repeated module containers*: ``blocks.N``, ``layers.N``, ``encoder.layer.N``, ``h.N``
(torch, NNX) or ``blocks_N`` (linen), where at least two items have alike parameters (the same relative paths
and ranks for more than half of them). An item that is itself mostly a repeated container is a *stage*: its
own items are the blocks (Swin ``layers.i.blocks.j``, ConvNeXt ``stages.i.blocks.j``), and what else it holds
(a downsample) sits where the order puts it. Blocks are ordered by the forward call order when a trace gives
one, else by registration order (torch ``named_parameters()``); a linen params pytree without a trace is in
sorted-key order, which says nothing about what runs first: leaves outside the blocks are then placed by name
(embeddings, stems, tokens, positions before; the rest after) and reported as guesses.

A ``depth`` already set (by a traced resolver) is kept.

Examples:
  >>> from wdmask import ParamInfo
  >>> inv = [ParamInfo(tuple(p.split(".")), (4, 4)) for p in
  ...        ["cls_token", "patch_embed.proj.weight", "blocks.0.fc.weight", "blocks.1.fc.weight", "head.weight"]]
  >>> [i.depth for i in with_depth(inv)]
  [0, 0, 1, 2, 3]
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence

from wdmask._errors import RuleError, UnclassifiedWarning
from wdmask._types import ParamInfo, Path

__all__ = ["blocks_of", "largest_depth", "owner_index", "traced_depths", "with_depth"]

_AUTO = re.compile(r"(.+)_(\d+)")
#: Names of what runs before the first block, for leaves whose position no order tells (a params pytree).
_BEFORE = re.compile(r"(?i).*(embed|stem|patch|token|cls|pos|wte|wpe|tok_|input).*")

Container = tuple[Path, str]  # (prefix, name): items are prefix + (name + index)


def _index(seg: str) -> tuple[str, int] | None:
    """``("", 3)`` for ``"3"`` (torch/NNX item), ``("blocks", 3)`` for ``"blocks_3"`` (linen), else ``None``."""
    if seg.isdigit():
        return "", int(seg)
    m = _AUTO.fullmatch(seg)
    return (m.group(1), int(m.group(2))) if m else None


@dataclasses.dataclass
class _Unit:
    prefix: Path  # the block item (or the stacked leaves' common owner)
    leaves: list[int]
    slices: int = 1  # > 1: a stack of blocks along the stacked axis


def _similar(a: frozenset[tuple[Path, int]], b: frozenset[tuple[Path, int]]) -> bool:
    return len(a & b) * 2 > max(len(a), len(b))


def _containers(infos: Sequence[ParamInfo], members: Sequence[int],
                depth: int) -> dict[Container, dict[int, list[int]]]:
    """Containers whose items are the first index segment at position >= ``depth`` of each member's path."""
    out: dict[Container, dict[int, list[int]]] = {}
    for n in members:
        path = infos[n].path
        for k in range(depth, len(path) - 1):
            idx = _index(path[k])
            if idx is not None:
                name, i = idx
                out.setdefault((path[:k], name), {}).setdefault(i, []).append(n)
                break
    return out


def _item_prefix(container: Container, i: int, infos: Sequence[ParamInfo], leaf: int) -> Path:
    prefix, _ = container
    return infos[leaf].path[:len(prefix) + 1]


def _signature(infos: Sequence[ParamInfo], leaves: Sequence[int], cut: int) -> frozenset[tuple[Path, int]]:
    return frozenset((infos[n].path[cut:], infos[n].ndim) for n in leaves)


def _units(infos: Sequence[ParamInfo], members: Sequence[int], depth: int) -> list[_Unit]:
    """The blocks among ``members`` (paths at least ``depth`` long), stages opened into their blocks."""
    units: list[_Unit] = []
    for container, items in _containers(infos, members, depth).items():
        if len(items) < 2:
            continue
        cut = len(container[0]) + 1
        sigs = {i: _signature(infos, leaves, cut) for i, leaves in items.items()}
        alike = {i for i in sigs if any(j != i and _similar(sigs[i], sigs[j]) for j in sigs)}
        if len(alike) < 2:
            continue
        for i in sorted(alike):
            leaves = items[i]
            inner = _units(infos, leaves, cut)
            # a stage of blocks: what its blocks leave (a downsample, a norm) is no bigger than a block
            if len(inner) >= 2 and len(leaves) - sum(len(u.leaves) for u in inner) <= max(len(u.leaves) for u in inner):
                units += inner
            else:
                units.append(_Unit(_item_prefix(container, i, infos, leaves[0]), list(leaves)))
    return units


def blocks_of(infos: Sequence[ParamInfo]) -> list[Path]:
    """The block prefixes found from structure, in natural order (stacked blocks not included).

    Examples:
      >>> from wdmask import ParamInfo
      >>> inv = [ParamInfo(tuple(p.split(".")), (2, 2)) for p in
      ...        ["layers.0.blocks.0.w", "layers.0.blocks.1.w", "layers.1.blocks.0.w", "layers.1.blocks.1.w"]]
      >>> [".".join(p) for p in blocks_of(inv)]
      ['layers.0.blocks.0', 'layers.0.blocks.1', 'layers.1.blocks.0', 'layers.1.blocks.1']
    """
    return [u.prefix for u in _units(infos, range(len(infos)), 0)]


def _natural(path: Path) -> tuple[tuple[object, ...], ...]:
    return tuple(tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", seg)) for seg in path)


def with_depth(infos: Sequence[ParamInfo], order: Sequence[Path] | None = None, *, registration: bool | None = None,
               strict: bool = False, guess: bool = True) -> list[ParamInfo]:
    """``infos`` with ``depth`` filled where it is ``None`` (see the module docstring).

    Args:
      infos: the inventory.
      order: module paths in forward call order (first call first), from a traced forward pass.
      registration: without ``order``, whether the inventory order is the module registration order (torch,
        NNX); ``None``: assumed for torch-style paths (with index segments such as ``blocks.0``), not for
        linen-style ones (``blocks_0``, sorted pytree keys).
      strict: raise ``RuleError`` instead of warning about guessed depths.
      guess: place the leaves no order tells (their module never ran) by name, and say so; ``False``: leave their
        depth ``None`` (a describe fills what it knows; the guess is made, and reported, when rules need it).

    Returns:
      A new list, one ``ParamInfo`` per leaf, in the same order.
    """
    infos = list(infos)
    if all(i.depth is not None for i in infos):  # a traced resolver gave every depth
        return _stamped(infos, next((i.depth_max for i in infos if i.depth_max is not None), largest_depth(infos)))
    if registration is None:
        registration = any(seg.isdigit() for i in infos for seg in i.path)
    units = _units(infos, [n for n, i in enumerate(infos) if not i.stacked], 0)
    in_unit = {n for u in units for n in u.leaves}
    stacks: dict[tuple[str, int], _Unit] = {}
    for n, info in enumerate(infos):
        if info.stacked == 1 and n not in in_unit:
            size = info.shape[info.stacked_axes[0]]
            stacks.setdefault((info.path[0], size), _Unit(info.path[:1], [], size)).leaves.append(n)
    units += list(stacks.values())
    position = _positions(infos, order, registration)
    if position is None:  # no order at all: blocks by natural order of their paths
        units.sort(key=lambda u: _natural(u.prefix))
    else:
        units.sort(key=lambda u: min(position[n] for n in u.leaves))
    depth_of: dict[int, int | tuple[int, ...] | None] = {}
    starts: list[tuple[float, int]] = []  # (first position, first depth) of each unit, in order
    d = 1
    for u in units:
        value: int | tuple[int, ...] = tuple(range(d, d + u.slices)) if u.slices > 1 else d
        for n in u.leaves:
            depth_of[n] = value
        if position is not None:
            starts.append((min(position[n] for n in u.leaves), d))
        d += u.slices
    depth_max = d
    guessed: list[str] = []
    stage_of = _stage_of(units)
    for n, info in enumerate(infos):
        if n in depth_of or info.depth is not None:
            continue
        if not units:
            depth_of[n] = 0
        elif position is not None and position[n] != float("inf"):
            later = [first for pos, first in starts if pos > position[n]]
            depth_of[n] = depth_max if not later else 0 if len(later) == len(starts) else later[0]
            stage = stage_of(info.path)
            if stage is not None:  # inside a stage, outside its blocks: within the stage's depths
                depth_of[n] = min(max(depth_of[n], stage[0]), stage[1])
        elif guess:
            stage = stage_of(info.path)
            if stage is not None:
                depth_of[n] = stage[0]
            else:
                depth_of[n] = 0 if _BEFORE.fullmatch(info.dotted) else depth_max
            guessed.append(info.dotted)
        else:
            depth_of[n] = None
    if guessed:
        listed = ", ".join(guessed[:10]) + (f" and {len(guessed) - 10} more" if len(guessed) > 10 else "")
        why = ("their modules did not run in the traced forward pass" if position is not None
               else "no forward order known")
        msg = (f"the depth of {len(guessed)} parameter(s) outside the repeated blocks is a guess ({why}; placed by "
               f"name): {listed}. Fix: pass the model with its sample (`model=..., sample=...`) or `example_inputs=` "
               "that run them so the call order is traced, or set their lr with a rule (Rule(path=..., lr=...))")
        if strict:
            raise RuleError(msg)
        warnings.warn(msg, UnclassifiedWarning, stacklevel=4)
    depth_max = next((i.depth_max for i in infos if i.depth_max is not None), depth_max)  # a describe's, kept
    return [dataclasses.replace(info, depth=depth_of[n] if info.depth is None else info.depth, depth_max=depth_max)
            for n, info in enumerate(infos)]


def traced_depths(infos: Sequence[ParamInfo]) -> list[ParamInfo]:
    """The depths a traced describe gives (both adapters): from structure and the traced call order (``call_index``;
    an inventory whose trace records none, Equinox's, is in its modules' registration order). A leaf whose module
    never ran keeps ``depth=None``: placing it is a guess, made and reported when rules read depths.

    Examples:
      >>> inv = [ParamInfo(tuple(p.split(".")), (4, 4), call_index=k) for p, k in
      ...        [("head.w", 3), ("embed.w", 0), ("blocks.0.w", 1), ("blocks.1.w", 2), ("aux.w", None)]]
      >>> [i.depth for i in traced_depths(inv)]
      [3, 0, 1, 2, None]
    """
    return with_depth(infos, registration=True, guess=False)


def largest_depth(infos: Sequence[ParamInfo]) -> int:
    """The largest depth in ``infos`` (slices of stacked leaves included); 0 when none is known."""
    best = 0
    for info in infos:
        d = info.depth
        if isinstance(d, tuple):
            best = max((best, *d))
        elif d is not None:
            best = max(best, d)
    return best


def _stamped(infos: list[ParamInfo], depth_max: int) -> list[ParamInfo]:
    """``infos`` with the inventory's ``depth_max``."""
    return [info if info.depth_max == depth_max else dataclasses.replace(info, depth_max=depth_max) for info in infos]


def _positions(infos: Sequence[ParamInfo], order: Sequence[Path] | None, registration: bool) -> list[float] | None:
    """Each leaf's position in the forward: its owner's index in ``order``, else its ``call_index`` (the trace
    described it), else its inventory index (registration order).

    A parameter held directly by the root module (a cls token, a position table: ``cls_token``, ``pos_embed``)
    comes first: the root runs before everything, and torch lists its own parameters first too.
    """
    never = float("inf")  # its module never ran
    if order is not None:
        index: dict[Path, int] = {}
        for k, p in enumerate(order):
            index.setdefault(tuple(p), k)
        return [float(k) if (k := owner_index(info.path, index)) is not None else never for info in infos]
    if any(info.call_index is not None for info in infos):
        return [float(info.call_index) if info.call_index is not None else never for info in infos]
    if not registration:
        return None
    return [-1.0 if len(info.path) == 1 else float(n) for n, info in enumerate(infos)]


def owner_index(path: Path, index: Mapping[Path, int]) -> int | None:
    """The call index (``index``: module path -> position in the call order) of the nearest module owning the leaf at
    ``path`` (the root ``()`` for a leaf it holds directly); ``None`` when no owner ran.

    Examples:
      >>> owner_index(("blocks", "0", "fc", "weight"), {(): 0, ("blocks", "0"): 3})
      3
    """
    for cut in range(len(path) - 1, 0 if len(path) > 1 else -1, -1):
        k = index.get(path[:cut])
        if k is not None:
            return k
    return None


def _stage_of(units: Sequence[_Unit]):  # type: ignore[no-untyped-def]
    """A function: path -> (first, last) depth of the stage (a parent of several blocks) holding it, or None."""
    spans: dict[Path, list[int]] = {}
    d = 1
    for u in units:
        for cut in range(1, len(u.prefix)):
            spans.setdefault(u.prefix[:cut], []).append(d)
        d += u.slices
    stages = {p: (min(ds), max(ds)) for p, ds in spans.items() if len(ds) >= 2 and len(ds) < d - 1}

    def find(path: Path) -> tuple[int, int] | None:
        for cut in range(len(path) - 1, 0, -1):
            span = stages.get(path[:cut])
            if span is not None:
                return span
        return None

    return find
