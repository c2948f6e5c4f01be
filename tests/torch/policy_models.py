"""Small torch ViT (timm/MAE names) and GPT (nanoGPT/HF names, tied head) with forward passes, for policy tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        if self.causal:
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = att.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = False, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """timm/MAE ``VisionTransformer`` names: cls_token, pos_embed, patch_embed.proj, blocks.N, norm, head."""

    def __init__(self, dim: int = 8, depth: int = 3, heads: int = 2, patch: int = 4, image: int = 8,
                 classes: int = 5, qkv_bias: bool = True) -> None:
        super().__init__()
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, n + 1, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList([Block(dim, heads, qkv_bias=qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


class GPT(nn.Module):
    """nanoGPT names: transformer.wte/wpe/h.N/ln_f, lm_head tied to wte."""

    def __init__(self, vocab: int = 16, dim: int = 8, depth: int = 2, heads: int = 2, context: int = 6,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, dim)
        self.transformer.wpe = nn.Embedding(context, dim)
        self.transformer.h = nn.ModuleList([Block(dim, heads, causal=True, qkv_bias=qkv_bias) for _ in range(depth)])
        self.transformer.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1]))
        for blk in t.h:
            x = blk(x)
        return self.lm_head(t.ln_f(x))


def mae_layer_id(name: str, num_layers: int) -> int:
    """MAE ``util/lr_decay.py`` ``get_layer_id_for_vit`` (BEiT), re-implemented from its published text."""
    if name in ["cls_token", "pos_embed"]:
        return 0
    elif name.startswith("patch_embed"):
        return 0
    elif name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    else:
        return num_layers


def mae_param_groups_lrd(model: nn.Module, weight_decay: float, no_weight_decay_list: set[str],
                         layer_decay: float) -> list[dict]:
    """MAE ``param_groups_lrd``, re-implemented: groups ``layer_{id}_{decay|no_decay}`` with ``lr_scale``."""
    num_layers = len(model.blocks) + 1
    layer_scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups: dict[str, dict] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = mae_layer_id(n, num_layers)
        name = f"layer_{layer_id}_{g_decay}"
        if name not in groups:
            groups[name] = {"lr_scale": layer_scales[layer_id], "weight_decay": this_decay, "params": []}
        groups[name]["params"].append(p)
    return list(groups.values())


def timm_param_groups_layer_decay(model: nn.Module, weight_decay: float, no_weight_decay_list: set[str],
                                  layer_decay: float, layer_of: dict[str, int], num_layers: int) -> list[dict]:
    """timm ``param_groups_layer_decay``-style groups (re-implemented): ``layer_{id}_{decay|no_decay}`` groups
    with ``lr_scale = layer_decay ** (num_layers - 1 - layer_id)``; no decay for 1-D / ``.bias`` / listed."""
    scales = [layer_decay ** (num_layers - 1 - i) for i in range(num_layers)]
    groups: dict[str, dict] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n.endswith(".bias") or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = layer_of[n]
        name = f"layer_{layer_id}_{g_decay}"
        if name not in groups:
            groups[name] = {"lr_scale": scales[layer_id], "weight_decay": this_decay, "params": []}
        groups[name]["params"].append(p)
    return list(groups.values())
