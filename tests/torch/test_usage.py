"""Roles from usage (issue 16, torch): small faithful equivalents of real model families.

For every family the expectations are written from the principle behind ``presets.standard``
(decay what the forward pass contracts with activations and token-embedding tables; nothing that is
only added, multiplied elementwise, concatenated or passed through elementwise functions), never
read back from the code under test:

* with ``example_inputs``: the graph-derived ``(layer, role)``, ``source == "graph"`` and the
  ``standard`` decision of each parameter;
* without: every leaf the class/name heuristics cannot classify is named in an ``UnclassifiedWarning``.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdmask
import wdmask_torch
from wdmask import presets

D = 8

# --------------------------------------------------------------------------- custom norms (timm / fairseq / HF)


def instance_std(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x.float().var(dim=(2, 3), unbiased=False, keepdim=True).add(eps).sqrt().to(x.dtype).expand(x.shape)


class EvoNorm2dB0(nn.Module):  # timm.layers.evo_norm.EvoNorm2dB0 (eval branch: running_var)
    def __init__(self, c: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.v = nn.Parameter(torch.ones(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v_shape = (1, -1, 1, 1)
        left = self.running_var.add(self.eps).sqrt_().to(x.dtype).view(v_shape).expand_as(x)
        v = self.v.to(x.dtype).view(v_shape)
        right = x * v + instance_std(x, self.eps)
        x = x / left.max(right)
        return x * self.weight.to(x.dtype).view(v_shape) + self.bias.to(x.dtype).view(v_shape)


class FilterResponseNormTlu2d(nn.Module):  # timm.layers.filter_response_norm: weight, bias, tau (a threshold)
    def __init__(self, c: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.tau = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v_shape = (1, -1, 1, 1)
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(nu2 + self.eps)
        x = x * self.weight.view(v_shape).to(dtype=x.dtype) + self.bias.view(v_shape).to(dtype=x.dtype)
        return torch.maximum(x, self.tau.reshape(v_shape).to(dtype=x.dtype))


class FRN(nn.Module):  # an FRN written with 4-D parameters and names the heuristics do not know
    def __init__(self, c: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, c, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.t = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + 1e-6)
        return torch.max(self.g * x + self.b, self.t)


class LayerNormFp32(nn.LayerNorm):  # open_clip / fairseq: a LayerNorm computed in float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, D, 3, padding=1)
        self.evo = EvoNorm2dB0(D)
        self.frn = FilterResponseNormTlu2d(D)
        self.frn4 = FRN(D)
        self.ln = LayerNormFp32(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.frn4(self.frn(self.evo(self.conv(x))))
        return self.ln(x.mean((2, 3)))


# --------------------------------------------------------------------------- layer scales, tokens, latents, probes


class CaiTLikeBlock(nn.Module):  # freely named layer scales (DINOv2-style gamma1, BEiT-3 lambda1)
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.fc = nn.Linear(D, D)
        self.gamma1 = nn.Parameter(1e-5 * torch.ones(D))
        self.lambda1 = nn.Parameter(1e-5 * torch.ones(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.fc(self.norm(x)) * self.gamma1
        return x + self.lambda1 * self.fc(x)


class TokenViT(nn.Module):  # timm VisionTransformer._pos_embed: tokens expanded and concatenated, pos added whole
    def __init__(self, n_patches: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, D, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D))
        self.reg_tokens = nn.Parameter(torch.zeros(1, 2, D))
        self.embeddings = nn.Parameter(torch.zeros(1, n_patches + 4, D))  # a position table with a vague name
        self.block = CaiTLikeBlock()
        self.head = nn.Linear(D, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        b = x.shape[0]
        to_cat = [self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1),
                  self.reg_tokens.expand(b, -1, -1)]
        x = torch.cat([*to_cat, x], dim=1) + self.embeddings
        return self.head(self.block(x)[:, 0])


class PerceiverLike(nn.Module):  # latents fed to a Linear as activations; an attention-pooling probe
    def __init__(self) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(3, D))
        self.to_q = nn.Linear(D, D, bias=False)
        self.to_kv = nn.Linear(D, 2 * D, bias=False)
        self.probe = nn.Parameter(torch.randn(1, 1, D))
        self.pool = nn.MultiheadAttention(D, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.to_q(self.latents).expand(x.shape[0], -1, -1)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        h = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D), dim=-1) @ v
        probe = self.probe.expand(x.shape[0], -1, -1)
        return self.pool(probe, h, h, need_weights=False)[0]


# --------------------------------------------------------------------------- positions


class GPT2Pos(nn.Module):  # HF GPT-2: wte gathered by the token ids, wpe by arange(T); tied lm_head
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(16, D)
        self.wpe = nn.Embedding(6, D)
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, 16, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device).unsqueeze(0)
        return self.lm_head(self.ln_f(self.wte(idx) + self.wpe(pos)))


class RobertaPos(nn.Module):  # HF RoBERTa create_position_ids_from_input_ids: positions counted along a mask
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(16, D, padding_idx=1)
        self.position_embeddings = nn.Embedding(12, D, padding_idx=1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids.ne(1).int()
        position_ids = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1
        return self.word_embeddings(input_ids) + self.position_embeddings(position_ids)


class SwinAttention(nn.Module):  # Swin WindowAttention: a bias table gathered by a buffer index
    def __init__(self, window: int = 2, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


# --------------------------------------------------------------------------- recurrent, state space, MoE, CLIP, misc


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(D, D, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(2 * D, D, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.lstm(x)[0])[0]


class MambaLike(nn.Module):  # mamba_simple.Mamba, sequential reference scan: A_log, D, dt_bias
    def __init__(self, d_state: int = 4) -> None:
        super().__init__()
        self.in_proj = nn.Linear(D, 2 * D, bias=False)
        self.x_proj = nn.Linear(D, 1 + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(1, D, bias=False)
        self.dt_bias = nn.Parameter(torch.zeros(D))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(D, 1))
        self.D = nn.Parameter(torch.ones(D))
        self.out_proj = nn.Linear(D, D, bias=False)
        self.d_state = d_state

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        A = -torch.exp(self.A_log.float())
        dt, B, C = self.x_proj(x).split([1, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt) + self.dt_bias)
        dA = torch.exp(torch.einsum("bld,dn->bldn", dt, A))
        state = torch.einsum("bld,bln,bld->bldn", dt, B, x)
        y = torch.einsum("bldn,bln->bld", dA * state, C)
        y = y + x * self.D
        return self.out_proj(y * F.silu(z))


class MoE(nn.Module):  # expert stacks used through bmm and einsum; a router Linear
    def __init__(self, experts: int = 3) -> None:
        super().__init__()
        self.router = nn.Linear(D, experts, bias=False)
        self.w_in = nn.Parameter(torch.randn(experts, D, 2 * D))
        self.w_out = nn.Parameter(torch.randn(experts, 2 * D, D))
        self.gate_up = nn.Parameter(torch.randn(experts, 2 * D, D))  # HF-style: indexed by the routed expert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.w_in.shape[0]
        weights = self.router(x).softmax(-1)
        h = torch.bmm(x.unsqueeze(0).expand(e, -1, -1), self.w_in)
        y = torch.einsum("etf,efd->etd", F.gelu(h), self.w_out)
        top = weights.argmax(-1)
        routed = F.linear(x, self.gate_up[top[0]])
        return (y * weights.t().unsqueeze(-1)).sum(0) + routed[:, :D]


class ClipLike(nn.Module):  # CLIP: logit_scale used as logit_scale.exp()
    def __init__(self) -> None:
        super().__init__()
        self.visual = nn.Linear(D, D)
        self.text = nn.Linear(D, D)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.act = nn.PReLU()

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        i = F.normalize(self.act(self.visual(image)), dim=-1)
        t = F.normalize(self.text(text), dim=-1)
        return self.logit_scale.exp() * i @ t.t()


class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D
    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


class StdConv(nn.Conv2d):  # timm ScaledStdConv2d: weight standardized by F.batch_norm with a gain
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1))
        self.scale = (cin * 9) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


class Misc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = Conv1D(2 * D, D)
        self.std = StdConv(3, D)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return self.c_fc(x).sum() + self.std(img).sum()


# --------------------------------------------------------------------------- expectations (from the principle)

IMG = torch.zeros(2, 3, 8, 8)
SEQ = torch.zeros(2, 5, D)
IDS = torch.tensor([[3, 4, 5, 1], [6, 7, 1, 1]])

# path: (layer, role, decayed by standard)
FAMILIES = {
    "norms": (NormNet, IMG, {
        "conv.weight": ("conv", "kernel", True),
        "conv.bias": ("conv", "bias", False),
        "evo.weight": ("norm.layer", "scale", False),  # class name has "Norm": its products are its scale
        "evo.bias": ("norm.layer", "bias", False),
        "evo.v": ("norm.layer", "scale", False),
        "frn.weight": ("norm.layer", "scale", False),
        "frn.bias": ("norm.layer", "bias", False),
        "frn.tau": ("norm.layer", "bias", False),  # a learned threshold: a shift
        "frn4.g": ("norm.layer", "scale", False),  # 4-D, unknown names: the graph sees x * rsqrt(mean(x^2))
        "frn4.b": ("norm.layer", "bias", False),  # (a hand-written normalization), as JAX does
        "frn4.t": ("other", "bias", False),
        "ln.weight": ("norm.layer", "scale", False),
        "ln.bias": ("norm.layer", "bias", False),
    }),
    "tokens": (TokenViT, IMG, {
        "patch.weight": ("conv", "kernel", True),
        "patch.bias": ("conv", "bias", False),
        "cls_token": ("other", "token", False),
        "dist_token": ("other", "token", False),
        "reg_tokens": ("other", "token", False),
        "embeddings": ("other", "position", False),  # (1, L, D) added whole
        "block.norm.weight": ("norm.layer", "scale", False),
        "block.norm.bias": ("norm.layer", "bias", False),
        "block.fc.weight": ("linear", "kernel", True),
        "block.fc.bias": ("linear", "bias", False),
        "block.gamma1": ("other", "gain", False),
        "block.lambda1": ("other", "gain", False),
        "head.weight": ("linear", "kernel", True),
        "head.bias": ("linear", "bias", False),
    }),
    "perceiver": (PerceiverLike, SEQ, {
        "latents": ("other", "token", False),  # the *input* of a Linear: activations, not a kernel
        "to_q.weight": ("linear", "kernel", True),
        "to_kv.weight": ("linear", "kernel", True),
        "probe": ("other", "token", False),  # the query of an attention pool
        "pool.in_proj_weight": ("linear", "kernel", True),
        "pool.in_proj_bias": ("linear", "bias", False),
        "pool.out_proj.weight": ("linear", "kernel", True),
        "pool.out_proj.bias": ("linear", "bias", False),
    }),
    "gpt2_positions": (GPT2Pos, IDS, {
        "wte.weight": ("embedding", "embedding", True),  # gathered by token ids and contracted by lm_head
        "wpe.weight": ("embedding", "position", False),  # gathered by arange(T)
        "ln_f.weight": ("norm.layer", "scale", False),
        "ln_f.bias": ("norm.layer", "bias", False),
    }),
    "roberta_positions": (RobertaPos, IDS, {
        "word_embeddings.weight": ("embedding", "embedding", True),
        "position_embeddings.weight": ("embedding", "position", False),  # ids counted along the mask
    }),
    "swin": (SwinAttention, torch.zeros(2, 4, D), {
        "relative_position_bias_table": ("other", "position", False),  # gathered by a buffer index, added
        "qkv.weight": ("linear", "kernel", True),
        "qkv.bias": ("linear", "bias", False),
        "proj.weight": ("linear", "kernel", True),
        "proj.bias": ("linear", "bias", False),
    }),
    "recurrent": (Recurrent, SEQ, {
        **{f"lstm.{w}_{k}_l{i}{r}": ("linear", "kernel" if w == "weight" else "bias", w == "weight")
           for i in range(2) for r in ("", "_reverse") for w in ("weight", "bias") for k in ("ih", "hh")},
        **{f"gru.{w}_{k}_l0": ("linear", "kernel" if w == "weight" else "bias", w == "weight")
           for w in ("weight", "bias") for k in ("ih", "hh")},
    }),
    "mamba": (MambaLike, SEQ, {
        "dt_bias": ("other", "bias", False),
        "A_log": ("other", "elementwise", False),  # -exp(A_log): never meets activations itself
        "D": ("other", "gain", False),  # x * D
        "in_proj.weight": ("linear", "kernel", True),
        "x_proj.weight": ("linear", "kernel", True),
        "dt_proj.weight": ("linear", "kernel", True),
        "out_proj.weight": ("linear", "kernel", True),
    }),
    "moe": (MoE, torch.zeros(4, D), {
        "w_in": ("linear", "kernel", True),  # bmm
        "w_out": ("linear", "kernel", True),  # einsum over f
        "gate_up": ("linear", "kernel", True),  # rows picked by the routed expert, then F.linear: contracted
        "router.weight": ("linear", "kernel", True),
    }),
    "clip": (ClipLike, (torch.zeros(2, D), torch.zeros(3, D)), {
        "logit_scale": ("other", "elementwise", False),
        "visual.weight": ("linear", "kernel", True),
        "visual.bias": ("linear", "bias", False),
        "text.weight": ("linear", "kernel", True),
        "text.bias": ("linear", "bias", False),
        "act.weight": ("other", "gain", False),  # PReLU slope
    }),
    "misc": (Misc, (SEQ, IMG), {
        "c_fc.weight": ("linear", "kernel", True),  # torch.addmm(bias, x, weight)
        "c_fc.bias": ("linear", "bias", False),
        "std.weight": ("conv", "kernel", True),  # standardized by F.batch_norm, still the conv's kernel
        "std.bias": ("conv", "bias", False),
        "std.gain": ("conv", "gain", False),  # the affine weight of that batch_norm: a gain
    }),
}

# Without a graph: the leaves neither class nor name heuristics classify (the warning must name each).
UNCLASSIFIED = {
    "norms": {"frn4.g", "frn4.b", "frn4.t"},  # the others: "Norm" in their class names
    "tokens": {"embeddings", "block.gamma1", "block.lambda1"},
    "perceiver": {"latents", "probe"},
    "gpt2_positions": set(),
    "roberta_positions": set(),
    "swin": set(),
    "recurrent": set(),
    "mamba": {"A_log", "D"},
    "moe": {"w_in", "w_out", "gate_up"},
    "clip": set(),  # logit_scale is a gain by name, PReLU weight by class
    "misc": set(),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_graph_roles_and_standard_decisions(family: str) -> None:
    build, x, expected = FAMILIES[family]
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("error", wdmask.UnclassifiedWarning)  # the graph leaves nothing unclassified
        inv = wdmask_torch.describe(model, example_inputs=x)
        decisions = wdmask.decide(inv, presets.standard)
    got = {i.dotted: (i.layer, i.role, decisions[i.path].decay) for i in inv}
    assert got == expected
    assert all(i.source == "graph" and i.usage for i in inv)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_without_graph_every_guess_is_named(family: str) -> None:
    build, _, _ = FAMILIES[family]
    inv = wdmask_torch.describe(build())
    assert {i.dotted for i in inv if i.unclassified} == UNCLASSIFIED[family]
    if UNCLASSIFIED[family]:
        with pytest.warns(wdmask.UnclassifiedWarning) as record:
            wdmask.decide(inv, presets.standard)
        message = str(record[0].message)
        for name in UNCLASSIFIED[family]:
            assert re.search(rf"(: |, ){re.escape(name)}(,| and|\.)", message), name
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", wdmask.UnclassifiedWarning)
            wdmask.decide(inv, presets.standard)


def test_groups_take_example_inputs() -> None:
    model = MambaLike()
    groups = wdmask_torch.groups(model, presets.standard, weight_decay=0.1, example_inputs=SEQ)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert no_decay == {"dt_bias", "A_log", "D"}


def test_meta_device_trace_keeps_parameters_on_meta() -> None:
    with torch.device("meta"):
        model = TokenViT()
        x = torch.empty(2, 3, 8, 8)
    inv = wdmask_torch.describe(model, example_inputs=x)
    assert all(p.is_meta for p in model.parameters())
    decisions = wdmask.decide(inv, presets.standard)
    assert {i.dotted: (i.layer, i.role, decisions[i.path].decay) for i in inv} == FAMILIES["tokens"][2]
    assert not torch.overrides._is_torch_function_mode_enabled()


def test_tied_embedding_used_by_gather_and_linear_is_one_embedding_leaf() -> None:
    inv = wdmask_torch.describe(GPT2Pos(), example_inputs=IDS)
    wte = next(i for i in inv if i.dotted == "wte.weight")
    assert (wte.usage, wte.aliases) == (("gather_data", "contract"), ("lm_head.weight",))


def test_token_type_table_indexed_by_a_constant_buffer_is_a_position_table() -> None:
    class BertEmb(nn.Module):  # HF BertEmbeddings without token_type_ids: a zeros buffer indexes the table
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(16, D)
            self.token_type_embeddings = nn.Embedding(2, D)
            self.register_buffer("token_type_ids", torch.zeros(1, 6, dtype=torch.long))

        def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            if token_type_ids is None:
                token_type_ids = self.token_type_ids[:, : ids.shape[1]].expand(ids.shape[0], -1)
            return self.word_embeddings(ids) + self.token_type_embeddings(token_type_ids)

    roles = {i.dotted: i.role for i in wdmask_torch.describe(BertEmb(), example_inputs=IDS)}
    assert roles["token_type_embeddings.weight"] == "position"  # a constant index: one learned vector per slot
    given = {i.dotted: i.role for i in wdmask_torch.describe(
        BertEmb(), example_inputs={"ids": IDS, "token_type_ids": torch.zeros_like(IDS)})}
    assert given["token_type_embeddings.weight"] == "embedding"  # indexed by an input: a token table


def test_unused_parameter_keeps_class_and_name_evidence() -> None:
    class Partial(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(D, D)
            self.spare = nn.Linear(D, D)
            self.spare_gain = nn.Parameter(torch.ones(D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    inv = {i.dotted: i for i in wdmask_torch.describe(Partial(), example_inputs=torch.zeros(1, D))}
    assert (inv["spare.weight"].layer, inv["spare.weight"].role, inv["spare.weight"].source) == (
        "linear", "kernel", "type")
    assert inv["spare.weight"].usage == ("unused",) and inv["used.weight"].usage == ("contract",)
    assert inv["spare_gain"].role == "gain" and inv["spare_gain"].source != "graph"


def test_opaque_op_gives_no_evidence_and_stays_unclassified() -> None:
    class Opaque(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(D, D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cdist(x, self.w)  # not an op the tracer classifies

    inv = wdmask_torch.describe(Opaque(), example_inputs=torch.zeros(2, D))
    assert [(i.layer, i.role, i.source) for i in inv] == [("other", "other", "shape")]
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"decayed by the rules' default: w\."):
        wdmask.decide(inv, presets.standard)


def test_einsum_elementwise_product_is_a_gain_not_a_kernel() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(D))
            self.proj = nn.Parameter(torch.ones(D, D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bd,d->bd", torch.einsum("bi,io->bo", x, self.proj), self.scale)

    roles = {i.dotted: i.role for i in wdmask_torch.describe(Scaled(), example_inputs=torch.zeros(2, D))}
    assert roles == {"scale": "gain", "proj": "kernel"}


# --------------------------------------------------------------------------- one resolver (issues 22, 23)


def _graph(model: nn.Module, inputs: object) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {i.dotted: (i.layer, i.role, i.usage) for i in wdmask_torch.describe(model, example_inputs=inputs)}


def test_reparametrized_kernel_and_threshold_agree_with_jax() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(D, D))
            self.tau = nn.Parameter(torch.zeros(D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.maximum(F.linear(x, torch.exp(self.w)), self.tau)

    # exp(w) is still the linear map applied to x; tau is a learned threshold: a shift (the JAX twin says the same)
    assert _graph(Net(), SEQ) == {"w": ("linear", "kernel", ("contract",)), "tau": ("other", "bias", ("add",))}


def test_multiply_then_sum_over_the_parameter_axis_is_a_contraction() -> None:
    class Conv1DLike(nn.Module):  # RecurrentGemma's Conv1D: (x * w).sum(window axis)
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, D))
            self.g = nn.Parameter(torch.zeros(D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, window, D)
            return (x * self.w).sum(2) * self.g

    got = _graph(Conv1DLike(), torch.zeros(2, 5, 3, D))
    assert got == {"w": ("linear", "kernel", ("contract",)), "g": ("other", "gain", ("mul",))}


class _PositionsAsInput(nn.Module):  # HF-style: position_ids computed by the caller and passed in
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, D)
        self.wpe = nn.Embedding(16, D)

    def forward(self, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.wte(ids) + self.wpe(position_ids)


def test_position_ids_passed_as_an_input_are_positions() -> None:
    ids = torch.tensor([[3, 9, 4, 1], [7, 7, 2, 0]])
    positions = torch.arange(4).expand(2, 4) + torch.tensor([[0], [2]])  # per-row offsets (left padding)
    with pytest.warns(UserWarning, match=r"example_inputs\['position_ids'\] as position ids"):
        inv = wdmask_torch.describe(_PositionsAsInput(), example_inputs={"ids": ids, "position_ids": positions})
    got = {i.dotted: (i.role, i.usage) for i in inv}
    assert got == {"wte.weight": ("embedding", ("gather_data",)), "wpe.weight": ("position", ("gather_pos",))}


def test_abstract_integer_inputs_make_the_table_reading_a_guess() -> None:
    model = _PositionsAsInput().to("meta")
    ids = torch.zeros(2, 4, dtype=torch.long, device="meta")
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"wpe\.weight.*abstract integer input"):
        wdmask_torch.describe(model, example_inputs=(ids, ids))


def test_batch_of_one_gives_the_answers_of_a_batch_of_two() -> None:
    class MapHead(nn.Module):  # big_vision's MAP head: a learned probe queried against the tokens
        def __init__(self) -> None:
            super().__init__()
            self.probe = nn.Parameter(torch.zeros(1, 1, D))
            self.mha = nn.MultiheadAttention(D, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            probe = self.probe.expand(x.shape[0], -1, -1)
            return self.mha(probe, x, x, need_weights=False)[0]

    one, two = _graph(MapHead(), torch.zeros(1, 5, D)), _graph(MapHead(), torch.zeros(2, 5, D))
    assert one == two
    assert one["probe"] == ("other", "token", ("concat",))
