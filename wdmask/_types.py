"""Vocabulary shared by the rule engine and both adapters: ``ParamInfo``, ``Decision``, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import overload

Path = tuple[str, ...]

#: Layer kinds a ``ParamInfo`` may carry; rules may also say ``norm`` (any norm).
LAYER_KINDS: tuple[str, ...] = (
    "conv",
    "linear",
    "embedding",
    "norm.batch",
    "norm.layer",
    "norm.group",
    "norm.instance",
    "norm.rms",
    "other",
)
#: Kind patterns rules accept besides the kinds themselves.
LAYER_PATTERNS: tuple[str, ...] = (*LAYER_KINDS[:3], "norm", "norm.*", *LAYER_KINDS[3:])
#: Roles of a parameter within its layer: ``gain`` is a learned multiplier that is not a norm's
#: gamma (layer scale, residual gain, affine alpha, temperature), ``position`` a position embedding or
#: attention bias table, ``token`` a learned token (cls, distillation, register, mask, latents, probes),
#: ``elementwise`` a parameter only passed through elementwise functions (state-space ``A_log``).
ROLES: tuple[str, ...] = ("kernel", "bias", "scale", "embedding", "gain", "position", "token", "elementwise",
                          "other")
#: How the layer kind and role were learned, most trusted first: ``graph`` (usage traced in a
#: forward pass), ``type`` (exact class), ``name`` (auto-name / leaf-name heuristic), ``shape`` (nothing).
SOURCES: tuple[str, ...] = ("graph", "type", "name", "shape")
#: What a model may declare about a parameter (timm ``no_weight_decay()``, ``_no_weight_decay``).
DECLARATIONS: tuple[str, ...] = ("", "no_decay")


@dataclasses.dataclass(frozen=True, slots=True)
class ParamInfo:
    """What the rule engine knows about one trainable leaf.

    Examples:
      >>> info = ParamInfo(("layer1", "bn1", "scale"), (64,), layer="norm.batch", role="scale")
      >>> str(info), info.ndim
      ('layer1.bn1.scale', 1)
    """

    path: Path
    shape: tuple[int, ...]
    dtype: str = "float32"
    layer: str = "other"
    role: str = "other"
    stacked: int = 0
    feeds_norm: bool | None = None
    module_type: str = ""
    source: str = "shape"
    declared: str = ""
    #: Other dotted paths of the same tensor (tied weights such as GPT-2 ``wte``/``lm_head``): the leaf
    #: appears once, under ``path``, and gets one decision; ``explain`` lists these owners too.
    aliases: tuple[str, ...] = ()
    #: Which axes are layer-stacking axes (``nn.scan``/``nnx.scan`` at any position); ``()`` with
    #: ``stacked > 0`` means the leading ``stacked`` axes.
    stacked_axes: tuple[int, ...] = ()
    #: How a traced forward pass consumed the leaf (``wdmask._usage.USAGES``), ``()`` when not traced.
    usage: tuple[str, ...] = ()
    #: Position in the forward pass: 0 before the first repeated block (stem, embeddings, tokens), i for the
    #: i-th block, ``depth_max`` after the last (final norm, head); a tuple (one per slice) for a leaf stacked
    #: along one axis; ``None`` when unknown (``wdmask._depth`` fills it from structure when rules need it).
    depth: int | tuple[int, ...] | None = None
    #: ``(reduction, output)``: the per-layer kernel axes the forward contracts and the axes it produces
    #: (stacked axes excluded, numbered in the full shape); ``None`` when unknown.
    contract_axes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    #: The depth of what runs after the last block in the inventory this leaf belongs to (set with ``depth`` by
    #: ``wdmask._depth.with_depth``); ``None`` when depths are unknown.
    depth_max: int | None = None
    #: Where the leaf's module first runs in the traced forward pass (its index in the module call order, first
    #: call first); ``None`` without a trace, or when the module never ran. Orders the blocks for ``depth``.
    call_index: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.path, tuple) and all(isinstance(p, str) for p in self.path)):
            raise TypeError(f"ParamInfo.path must be a tuple of str, got {self.path!r}")
        if self.layer not in LAYER_KINDS:
            raise ValueError(f"ParamInfo({self.dotted}).layer {self.layer!r}; valid: {', '.join(LAYER_KINDS)}")
        if self.role not in ROLES:
            raise ValueError(f"ParamInfo({self.dotted}).role {self.role!r}; valid: {', '.join(ROLES)}")
        if not 0 <= self.stacked <= len(self.shape):
            raise ValueError(f"ParamInfo({self.dotted}).stacked={self.stacked} with shape {self.shape}")
        axes = self.stacked_axes
        if self.stacked and not axes:
            object.__setattr__(self, "stacked_axes", tuple(range(self.stacked)))
        elif axes and (len(axes) != self.stacked or len(set(axes)) != len(axes)
                       or not all(isinstance(a, int) and 0 <= a < len(self.shape) for a in axes)):
            raise ValueError(f"ParamInfo({self.dotted}).stacked_axes={axes} must be {self.stacked} distinct "
                             f"axes of shape {self.shape}")

    @property
    def dotted(self) -> str:
        """The path joined with dots, e.g. ``"layer1.0.bn1.weight"``."""
        return ".".join(self.path)

    @property
    def ndim(self) -> int:
        """Per-layer rank: ``len(shape) - stacked`` (a scanned LayerNorm scale ``(L, d)`` is 1-D)."""
        return len(self.shape) - self.stacked

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """The per-layer shape: ``shape`` without the stacked axes."""
        return tuple(d for a, d in enumerate(self.shape) if a not in self.stacked_axes)

    @property
    def in_block(self) -> bool | None:
        """Whether the leaf runs inside a repeated block (``0 < depth < depth_max``; every slice of a stack);
        ``None`` when its depth is unknown."""
        depth, top = self.depth, self.depth_max
        if depth is None or top is None:
            return None
        depths = depth if isinstance(depth, tuple) else (depth,)
        return bool(depths) and all(0 < d < top for d in depths)

    @property
    def unclassified(self) -> bool:
        """Neither the layer kind nor the role is known: rules on kind/role can only guess."""
        return self.layer == "other" and self.role == "other"

    @property
    def is_float(self) -> bool:
        """Whether the leaf is floating point (integer and bool leaves are never decayed)."""
        return "float" in self.dtype or "complex" in self.dtype

    def __str__(self) -> str:
        return self.dotted


@dataclasses.dataclass(frozen=True)
class Decision:
    """The engine's verdict for one leaf: one value per setting, and the rule that set it.

    ``multiplier`` scales the weight decay (0 = none); ``rule`` is the index of the rule that set it,
    ``None`` for the rule set's default; ``reason`` says why in words. ``lr`` is the learning-rate
    multiplier, ``lr_decay ** (depth_max - depth)`` included (a tuple along the stacked axis for a leaf with
    one depth per slice); ``optimizer`` the label of the optimizer that trains the leaf (``None``: unlabelled).
    ``lr_rule``, ``lr_decay_rule`` and ``optimizer_rule`` are the rules that set those (``None``: default).

    Examples:
      >>> Decision(0.0, 1, "bias").lr, Decision(0.0, 1, "bias").winners()
      (1.0, {'decay': 1, 'lr': None, 'lr_decay': None, 'optimizer': None})
    """

    multiplier: float
    rule: int | None
    reason: str
    lr: float | tuple[float, ...] = 1.0
    optimizer: str | None = None
    lr_rule: int | None = None
    lr_decay_rule: int | None = None
    optimizer_rule: int | None = None

    def winners(self) -> dict[str, int | None]:
        """The index of the rule that set each setting (``None``: the default)."""
        return {"decay": self.rule, "lr": self.lr_rule, "lr_decay": self.lr_decay_rule,
                "optimizer": self.optimizer_rule}

    @property
    def decay(self) -> bool:
        """Whether any weight decay applies."""
        return self.multiplier != 0.0


class Inventory(Sequence[ParamInfo]):
    """An inventory described in kinds: leaf ``i`` is ``kinds[kind_of[i]]`` at its own ``paths[i]``/``shapes[i]``.

    An adapter that classifies a stack of identical blocks once per distinct leaf returns one, so that
    ``decide`` decides once per kind. A kind's every field but ``path`` and ``shape`` is its members'
    (``shape`` of the same rank); items are built when read.

    Examples:
      >>> kind = ParamInfo(("b0", "bias"), (4,), layer="linear", role="bias")
      >>> inv = Inventory([kind], [0, 0], [("b0", "bias"), ("b1", "bias")], [(4,), (8,)])
      >>> [(str(i), i.shape, i.role) for i in inv]
      [('b0.bias', (4,), 'bias'), ('b1.bias', (8,), 'bias')]
    """

    __slots__ = ("kind_of", "kinds", "paths", "shapes")

    def __init__(self, kinds: list[ParamInfo], kind_of: list[int], paths: list[Path],
                 shapes: list[tuple[int, ...]]) -> None:
        if not len(kind_of) == len(paths) == len(shapes):
            raise ValueError(f"Inventory: {len(kind_of)} kind indices, {len(paths)} paths, {len(shapes)} shapes")
        self.kinds, self.kind_of, self.paths, self.shapes = kinds, kind_of, paths, shapes

    def __len__(self) -> int:
        return len(self.paths)

    def _at(self, i: int) -> ParamInfo:
        kind = self.kinds[self.kind_of[i]]
        path, shape = self.paths[i], self.shapes[i]
        if path == kind.path and shape == kind.shape:
            return kind
        return dataclasses.replace(kind, path=path, shape=shape)

    @overload
    def __getitem__(self, i: int) -> ParamInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[ParamInfo]: ...
    def __getitem__(self, i: int | slice) -> ParamInfo | list[ParamInfo]:
        if isinstance(i, slice):
            return [self._at(j) for j in range(*i.indices(len(self)))]
        return self._at(range(len(self))[i])

    def __iter__(self) -> Iterator[ParamInfo]:
        return map(self._at, range(len(self)))

    def __repr__(self) -> str:
        return f"Inventory({len(self)} leaves, {len(self.kinds)} kinds)"


def given_inventory(given: Sequence[ParamInfo], expected: Sequence[tuple[Path, tuple[int, ...]]], fn: str,
                    ) -> dict[Path, ParamInfo]:
    """An inventory the caller built (``describe(model, example_inputs=...)``), checked against the parameters
    it is applied to: every expected ``(path, shape)`` must be in it with that shape. The one check both
    adapters run when an entry point gets ``inventory=`` instead of describing the model again.

    Examples:
      >>> inv = [ParamInfo(("fc", "weight"), (2, 3)), ParamInfo(("fc", "bias"), (2,))]
      >>> given_inventory(inv, [(("fc", "bias"), (2,))], "groups")[("fc", "bias")].shape
      (2,)
      >>> given_inventory(inv, [(("fc", "bias"), (3,))], "groups")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      wdmask._errors.MaskError: groups: `inventory` does not describe ...: fc.bias has shape (2,) in the ...
    """
    from wdmask._errors import MaskError

    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or not all(
            isinstance(i, ParamInfo) for i in given):
        raise TypeError(f"{fn}: `inventory` must be a list of ParamInfo as `describe(...)` returns it, got "
                        f"{type(given).__name__}")
    by_path = {i.path: i for i in given}
    problems = []
    for path, shape in expected:
        info = by_path.get(path)
        if info is None:
            problems.append(f"{'.'.join(path)} is missing from the inventory")
        elif tuple(info.shape) != tuple(shape):
            problems.append(f"{'.'.join(path)} has shape {tuple(info.shape)} in the inventory but {tuple(shape)} "
                            "here")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise MaskError(f"{fn}: `inventory` does not describe these parameters: {'; '.join(problems[:3])}{more}. "
                        "Build it from the same model: `describe(model, ...)`")
    return by_path
