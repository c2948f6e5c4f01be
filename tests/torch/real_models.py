"""Hand-built equivalents of the parameter structures of real torch models (timm, torchvision, Hugging Face,
minGPT): same module classes (or same-named custom classes), same attribute names, same parameter shapes,
tiny sizes. No downloads; forward passes exist only where a test needs a graph."""

from __future__ import annotations

import torch
from torch import nn

D = 8  # embedding width


# --------------------------------------------------------------------------- timm / torchvision building blocks


class LayerScale(nn.Module):  # timm.layers.LayerScale
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):  # timm vision_transformer.Attention: fused qkv
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)


class WindowAttention(nn.Module):  # Swin: a 2-D relative position bias table (its name says "bias")
    def __init__(self, dim: int, heads: int = 2, window: int = 2) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", torch.zeros(window**2, window**2, dtype=torch.long))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)


class Block(nn.Module):  # timm ViT block with LayerScale modules ls1/ls2
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.ls2 = LayerScale(dim)


class CaitBlock(nn.Module):  # CaiT: gains as loose parameters gamma_1/gamma_2, torch MHA (in_proj_weight)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2)
        self.gamma_1 = nn.Parameter(1e-5 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-5 * torch.ones(dim))


class ViTLike(nn.Module):  # timm VisionTransformer / DeiT-distilled with register tokens
    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D))
        self.reg_token = nn.Parameter(torch.zeros(1, 2, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, D))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, D, 4, 4)
        self.blocks = nn.Sequential(Block(D), CaitBlock(D))
        self.swin = WindowAttention(D)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def no_weight_decay(self) -> set[str]:  # what timm's VisionTransformer returns (reg_token is not in it)
        return {"pos_embed", "cls_token", "dist_token"}


class SwinLike(nn.Module):  # microsoft/Swin-Transformer: names + keywords
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, D, 4, 4)
        self.patch_embed.norm = nn.LayerNorm(D)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, D))
        self.layers = nn.ModuleList([WindowAttention(D), WindowAttention(D)])
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def no_weight_decay(self) -> set[str]:
        return {"absolute_pos_embed"}

    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}


class LayerNorm2d(nn.LayerNorm):  # timm / torchvision LayerNorm2d: an nn.LayerNorm subclass over channels
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FBLayerNorm(nn.Module):  # facebookresearch/ConvNeXt `LayerNorm`: custom class, not an nn.LayerNorm
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class CNBlock(nn.Module):  # torchvision ConvNeXt block: layer_scale (C, 1, 1)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(1e-6 * torch.ones(dim, 1, 1))
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), LayerNorm2d(dim),
                                   nn.Conv2d(dim, 4 * dim, 1), nn.GELU(), nn.Conv2d(4 * dim, dim, 1))


class TimmConvNeXtBlock(nn.Module):  # timm ConvNeXtBlock: conv_dw, channels-last norm, Mlp, gamma (C,)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))


class ConvNeXtLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, D, 4, 4), LayerNorm2d(D))
        self.stages = nn.Sequential(CNBlock(D), TimmConvNeXtBlock(D))
        self.downsample_layers = nn.Sequential(FBLayerNorm(D), nn.Conv2d(D, D, 2, 2))
        self.head = nn.Sequential(LayerNorm2d(D), nn.Flatten(), nn.Linear(D, 10))


class Affine(nn.Module):  # timm ResMLP `Affine`: a norm-free per-channel affine, 3-D alpha/beta
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones((1, 1, dim)))
        self.beta = nn.Parameter(torch.zeros((1, 1, dim)))


class ResBlock(nn.Module):  # timm ResBlock (ResMLP): ls1/ls2 loose parameters
    def __init__(self, dim: int, seq: int = 4) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = nn.Linear(seq, seq)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim)
        self.ls1 = nn.Parameter(1e-5 * torch.ones(dim))
        self.ls2 = nn.Parameter(1e-5 * torch.ones(dim))


class ResMLPLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Module()
        self.stem.proj = nn.Conv2d(3, D, 4, 4)
        self.blocks = nn.Sequential(ResBlock(D))
        self.norm = Affine(D)
        self.head = nn.Linear(D, 10)


class ScaledStdConv2d(nn.Conv2d):  # timm: weight standardization with a learned gain (C, 1, 1, 1)
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(cin, cout, k)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1))


class NormFreeBlock(nn.Module):  # timm NFNet block: skipinit gain (a 0-d parameter)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = ScaledStdConv2d(dim, dim, 1)
        self.conv2 = ScaledStdConv2d(dim, dim, 3)
        self.skipinit_gain = nn.Parameter(torch.tensor(0.0))


class NFNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ScaledStdConv2d(3, D, 3)
        self.stages = nn.Sequential(NormFreeBlock(D))
        self.head = nn.Linear(D, 10)


class BatchNormAct2d(nn.BatchNorm2d):  # timm: a BatchNorm2d that owns child modules (drop, act)
    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class BNActNet(nn.Module):  # timm ResNet-ish with fused norm+act layers
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, D, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(D)
        self.conv2 = nn.Conv2d(D, D, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(D)
        self.fc = nn.Linear(D, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


# --------------------------------------------------------------------------- Hugging Face


class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D: a Linear with its weight stored (in, out)
    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


class GPT2Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.c_attn = Conv1D(3 * dim, dim)
        self.attn.c_proj = Conv1D(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(4 * dim, dim)
        self.mlp.c_proj = Conv1D(dim, 4 * dim)


class GPT2Like(nn.Module):  # GPT2LMHeadModel: lm_head tied to transformer.wte
    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(16, D)
        self.transformer.wpe = nn.Embedding(6, D)
        self.transformer.h = nn.ModuleList([GPT2Block(D)])
        self.transformer.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, 16, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


class LlamaRMSNorm(nn.Module):  # transformers LlamaRMSNorm: weight only
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = 1e-6


class T5LayerNorm(nn.Module):  # transformers T5LayerNorm: named LayerNorm, computes an RMSNorm (no mean, no bias)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = 1e-6


class LlamaLike(nn.Module):  # LlamaForCausalLM, untied; plus a T5-style relative attention bias and norm
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(16, D)
        layer = nn.Module()
        layer.input_layernorm = LlamaRMSNorm(D)
        layer.self_attn = nn.Module()
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(layer.self_attn, n, nn.Linear(D, D, bias=False))
        layer.post_attention_layernorm = LlamaRMSNorm(D)
        layer.mlp = nn.Module()
        layer.mlp.gate_proj = nn.Linear(D, 2 * D, bias=False)
        layer.mlp.up_proj = nn.Linear(D, 2 * D, bias=False)
        layer.mlp.down_proj = nn.Linear(2 * D, D, bias=False)
        self.model.layers = nn.ModuleList([layer])
        self.model.norm = LlamaRMSNorm(D)
        self.t5 = nn.Module()
        self.t5.relative_attention_bias = nn.Embedding(32, 2)
        self.t5.layer_norm = T5LayerNorm(D)
        self.t5.scale = T5LayerNorm(D)  # an RMS-style norm whose name says nothing: HF decays it
        self.lm_head = nn.Linear(D, 16, bias=False)


class BertLike(nn.Module):  # BertModel: HF naming, a LayerNorm attribute called `LayerNorm`
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(16, D)
        self.embeddings.position_embeddings = nn.Embedding(6, D)
        self.embeddings.token_type_embeddings = nn.Embedding(2, D)
        self.embeddings.LayerNorm = nn.LayerNorm(D)
        layer = nn.Module()
        layer.attention = nn.Module()
        layer.attention.self = nn.Module()
        for n in ("query", "key", "value"):
            setattr(layer.attention.self, n, nn.Linear(D, D))
        layer.attention.output = nn.Module()
        layer.attention.output.dense = nn.Linear(D, D)
        layer.attention.output.LayerNorm = nn.LayerNorm(D)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([layer])
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(D, D)
        self.bias = nn.Parameter(torch.zeros(D))  # a loose parameter directly on the root, named bias


class FlashLike(nn.Module):  # flash-attention / mamba: a per-tensor `_no_weight_decay` declaration
    def __init__(self) -> None:
        super().__init__()
        self.mixer = nn.Module()
        self.mixer.in_proj = nn.Linear(D, 2 * D)
        self.mixer.A_log = nn.Parameter(torch.zeros(D, 4))
        self.mixer.A_log._no_weight_decay = True
        self.mixer.D = nn.Parameter(torch.ones(D))
        self.mixer.D._no_weight_decay = True
        self.pos_block = nn.Sequential(nn.Conv2d(D, D, 3, padding=1, groups=D))

    def no_weight_decay(self) -> list[str]:
        return ["pos_block"]  # a module name (XCiT/Twins style), not a parameter name


MODELS = {
    "vit": ViTLike, "swin": SwinLike, "convnext": ConvNeXtLike, "resmlp": ResMLPLike, "nfnet": NFNetLike,
    "bnact": BNActNet, "gpt2": GPT2Like, "llama": LlamaLike, "bert": BertLike, "flash": FlashLike,
}
