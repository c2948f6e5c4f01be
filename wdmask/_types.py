"""Vocabulary shared by the rule engine and both adapters: ``ParamInfo``, ``Decision``, errors."""

from __future__ import annotations

import dataclasses
import functools

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
_LAYER_SET = frozenset(LAYER_KINDS)
_ROLE_SET = frozenset(ROLES)
#: What a model may declare about a parameter (timm ``no_weight_decay()``, ``_no_weight_decay``).
DECLARATIONS: tuple[str, ...] = ("", "no_decay")


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """What the rule engine knows about one trainable leaf.

    Example:
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

    def __post_init__(self) -> None:
        path = self.path
        try:
            dotted = ".".join(path) if isinstance(path, tuple) else None
        except TypeError:  # a part is not a str
            dotted = None
        if dotted is None:
            raise TypeError(f"ParamInfo.path must be a tuple of str, got {self.path!r}")
        d = self.__dict__
        d["dotted"] = dotted  # fills the cached property while checking the path
        if self.layer not in _LAYER_SET:
            raise ValueError(f"ParamInfo({dotted}).layer {self.layer!r}; valid: {', '.join(LAYER_KINDS)}")
        if self.role not in _ROLE_SET:
            raise ValueError(f"ParamInfo({dotted}).role {self.role!r}; valid: {', '.join(ROLES)}")
        stacked = self.stacked
        if stacked == 0 and not self.stacked_axes and type(stacked) is int:
            return  # the common case: nothing stacked, nothing more to check
        if not 0 <= stacked <= len(self.shape):
            raise ValueError(f"ParamInfo({dotted}).stacked={stacked} with shape {self.shape}")
        if self.stacked_axes:
            axes = self.stacked_axes
            if len(axes) != stacked or len(set(axes)) != len(axes) or not all(
                    isinstance(a, int) and 0 <= a < len(self.shape) for a in axes):
                raise ValueError(f"ParamInfo({dotted}).stacked_axes={axes} must be {stacked} distinct "
                                 f"axes of shape {self.shape}")
        elif stacked:
            d["stacked_axes"] = tuple(range(stacked))

    @functools.cached_property
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
    def unclassified(self) -> bool:
        """Neither the layer kind nor the role is known: rules on kind/role can only guess."""
        return self.layer == "other" and self.role == "other"

    @property
    def is_float(self) -> bool:
        """Whether the leaf is floating point (integer and bool leaves are never decayed)."""
        return "float" in self.dtype or "complex" in self.dtype

    def __str__(self) -> str:
        return self.dotted


def _fast_init(self: ParamInfo, path: Path, shape: tuple[int, ...], dtype: str = "float32", layer: str = "other",
               role: str = "other", stacked: int = 0, feeds_norm: bool | None = None, module_type: str = "",
               source: str = "shape", declared: str = "", aliases: tuple[str, ...] = (),
               stacked_axes: tuple[int, ...] = (), usage: tuple[str, ...] = ()) -> None:
    """The dataclass ``__init__`` (same signature, same checks), writing the instance dict directly.

    The generated frozen ``__init__`` sets each of the 13 fields through ``object.__setattr__``; adapters build
    one ``ParamInfo`` per leaf, so that cost dominated describing 100k-leaf models.
    """
    d = self.__dict__
    d["path"] = path
    d["shape"] = shape
    d["dtype"] = dtype
    d["layer"] = layer
    d["role"] = role
    d["stacked"] = stacked
    d["feeds_norm"] = feeds_norm
    d["module_type"] = module_type
    d["source"] = source
    d["declared"] = declared
    d["aliases"] = aliases
    d["stacked_axes"] = stacked_axes
    d["usage"] = usage
    if (type(path) is tuple and layer in _LAYER_SET and role in _ROLE_SET and type(stacked) is int and stacked == 0
            and not stacked_axes):  # the common case of __post_init__'s checks, inline
        try:
            d["dotted"] = ".".join(path)
            return
        except TypeError:
            pass  # a part is not a str: __post_init__ words the error
    self.__post_init__()


def trusted_info(path: Path, shape: tuple[int, ...], dtype: str, layer: str, role: str, stacked: int,
                 source: str, declared: str) -> ParamInfo:
    """A ``ParamInfo`` from values an adapter already checked (``path`` a tuple of str, ``layer``/``role`` from
    the vocabularies, ``0 <= stacked <= len(shape)``): the instance dict is written in one step.

    Only the name-only describe of a params pytree calls it, once per leaf of trees of 100k leaves.
    """
    info = object.__new__(ParamInfo)
    object.__setattr__(info, "__dict__", {
        "path": path, "shape": shape, "dtype": dtype, "layer": layer, "role": role, "stacked": stacked,
        "feeds_norm": None, "module_type": "", "source": source, "declared": declared, "aliases": (),
        "stacked_axes": tuple(range(stacked)) if stacked else (), "usage": (), "dotted": ".".join(path)})
    return info


assert set(trusted_info(("a",), (1,), "float32", "other", "other", 0, "shape", "").__dict__) == {
    f.name for f in dataclasses.fields(ParamInfo)} | {"dotted"}, "trusted_info must write every ParamInfo field"
_fast_init.__qualname__ = "ParamInfo.__init__"
assert tuple(f.name for f in dataclasses.fields(ParamInfo)) == _fast_init.__code__.co_varnames[1:14]
ParamInfo.__init__ = _fast_init  # type: ignore[method-assign]


@dataclasses.dataclass(frozen=True)
class Decision:
    """The engine's verdict for one leaf.

    ``multiplier`` scales the weight decay (0 = none); ``rule`` is the index of the winning rule,
    ``None`` for the rule set's default; ``reason`` says why in words.
    """

    multiplier: float
    rule: int | None
    reason: str

    @property
    def decay(self) -> bool:
        """Whether any weight decay applies."""
        return self.multiplier != 0.0
