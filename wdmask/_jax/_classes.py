"""Module classes -> layer kinds and per-layer ranks, shared by the linen, NNX and plain-tree describers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from wdmask._kinds import is_auto_name, kind_from_name

# Prefixes linen lifted transforms put in front of a wrapped class's auto-name (``CheckpointDense_0``).
_LIFT_PREFIXES = ("Checkpoint", "Remat", "Scan", "Vmap", "Jit", "MapVariables", "Map")
_LIFT_RX = re.compile(rf"^(?:{'|'.join(_LIFT_PREFIXES)})+(?=[A-Z])")
_ATTENTION_CHILDREN = frozenset({"query", "key", "value", "out", "qkv"})



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
    if "General" in general or "Einsum" in general or owner_name in _ATTENTION_CHILDREN:
        return None  # per-axis features (heads, head_dim): the rank is not the layer's
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


# Exact classes, looked up along the MRO (so subclasses count); names are attributes of flax.linen.
LINEN_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",  # wrappers: their own leaves are not a norm's gain/shift
    "Conv": "conv", "ConvTranspose": "conv", "ConvLocal": "conv",
    "Dense": "linear", "DenseGeneral": "linear", "Einsum": "linear", "Fp8Einsum": "linear",
    "Embed": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group",
    "InstanceNorm": "norm.instance", "RMSNorm": "norm.rms",
}
#: The same for flax.nnx classes.
NNX_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",
    "Conv": "conv", "ConvTranspose": "conv",
    "Linear": "linear", "LinearGeneral": "linear", "Einsum": "linear", "LoRALinear": "linear",
    "Embed": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group",
    "InstanceNorm": "norm.instance", "RMSNorm": "norm.rms",
}
