"""Bundled example inventories (what ``describe`` yields for two small models), for the CLI and docs."""

from __future__ import annotations

from wdmask._types import ParamInfo


def _layer(prefix: str, kind: str, shapes: dict[str, tuple[int, ...]], module_type: str,
           feeds_norm: bool | None = None) -> list[ParamInfo]:
    roles = {"weight": "scale" if kind.startswith("norm.") else ("embedding" if kind == "embedding" else "kernel"),
             "bias": "bias"}
    return [ParamInfo((*prefix.split("."), leaf), shape, layer=kind, role=roles[leaf], module_type=module_type,
                      source="type", feeds_norm=feeds_norm if kind in ("conv", "linear") else None)
            for leaf, shape in shapes.items()]


def resnet() -> list[ParamInfo]:
    """A ResNet stem, one BasicBlock with a downsample shortcut, and the classifier (torch names)."""
    inv: list[ParamInfo] = []
    conv = "torch.nn.Conv2d"
    bn = "torch.nn.BatchNorm2d"
    inv += _layer("conv1", "conv", {"weight": (16, 3, 3, 3)}, conv, True)
    inv += _layer("bn1", "norm.batch", {"weight": (16,), "bias": (16,)}, bn)
    for name, cin in (("layer1.0.conv1", 16), ("layer1.0.conv2", 32)):
        inv += _layer(name, "conv", {"weight": (32, cin, 3, 3)}, conv, True)
        inv += _layer(name.replace("conv", "bn"), "norm.batch", {"weight": (32,), "bias": (32,)}, bn)
    inv += _layer("layer1.0.downsample.0", "conv", {"weight": (32, 16, 1, 1)}, conv, True)
    inv += _layer("layer1.0.downsample.1", "norm.batch", {"weight": (32,), "bias": (32,)}, bn)
    inv += _layer("fc", "linear", {"weight": (10, 32), "bias": (10,)}, "torch.nn.Linear", False)
    return inv


def transformer() -> list[ParamInfo]:
    """A one-block pre-norm Transformer with tied embeddings (torch names)."""
    inv: list[ParamInfo] = []
    inv += _layer("tok_emb", "embedding", {"weight": (100, 32)}, "torch.nn.Embedding")
    inv += _layer("blocks.0.ln1", "norm.layer", {"weight": (32,), "bias": (32,)}, "torch.nn.LayerNorm")
    inv += _layer("blocks.0.attn.qkv", "linear", {"weight": (96, 32), "bias": (96,)}, "torch.nn.Linear", False)
    inv += _layer("blocks.0.attn.proj", "linear", {"weight": (32, 32), "bias": (32,)}, "torch.nn.Linear", False)
    inv += _layer("blocks.0.ln2", "norm.rms", {"weight": (32,)}, "torch.nn.RMSNorm")
    inv += _layer("blocks.0.mlp.fc1", "linear", {"weight": (128, 32), "bias": (128,)}, "torch.nn.Linear", False)
    inv += _layer("blocks.0.mlp.fc2", "linear", {"weight": (32, 128), "bias": (32,)}, "torch.nn.Linear", False)
    inv += _layer("ln_f", "norm.layer", {"weight": (32,), "bias": (32,)}, "torch.nn.LayerNorm")
    return inv


EXAMPLES = {"resnet": resnet, "transformer": transformer}
