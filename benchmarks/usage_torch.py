"""6. Cost of roles from usage (torch): ``describe(model, example_inputs=...)`` on the meta device.

* ResNet-50 (``wdmask_torch.models.resnet50``, 224x224 input) and a GPT-2-small-like decoder (12 blocks,
  d = 768, HF-style ``Conv1D`` projections, tied ``lm_head``, 128 tokens), both built on the ``meta`` device
  with meta inputs: describe-with-graph time / one plain forward pass (eval, no grad) of the same model on
  the same inputs. Interleaved rounds, median of per-round ratios. Goal <= 1.5x (issue #22).
* A Llama-7B-like decoder (32 blocks, d = 4096, 6.7 B parameters) built under ``torch.device("meta")``:
  describe without a graph, and with a graph on 16 meta tokens. Goal < 2 s each.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import Row, fmt_time, interleaved, paired_ratio, timed

SECTION = "6 usage (torch)"


def gpt2(layers: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024) -> Any:
    import torch
    from torch import nn

    class Conv1D(nn.Module):
        def __init__(self, nf: int, nx: int) -> None:
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.empty(nx, nf))
            self.bias = nn.Parameter(torch.empty(nf))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)
            self.c_fc, self.c_proj2 = Conv1D(4 * d, d), Conv1D(d, 4 * d)
            self.heads = 12

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.c_proj2(torch.nn.functional.gelu(self.c_fc(self.ln_2(x))))

    class GPT2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
            self.h = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
            self.lm_head = nn.Linear(d, vocab, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return GPT2()


def llama(layers: int = 32, d: int = 4096, hidden: int = 11008, vocab: int = 32000) -> Any:
    import torch
    from torch import nn

    class RMSNorm(nn.Module):  # transformers LlamaRMSNorm
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))
            self.variance_epsilon = 1e-6

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            var = x.float().pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(var + self.variance_epsilon)).to(x.dtype)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(), RMSNorm()
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.gate_proj, self.up_proj = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
            self.down_proj = nn.Linear(hidden, d, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            h = self.input_layernorm(x)
            q, k, v = (p(h).view(b, t, 32, d // 32).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, d))
            h = self.post_attention_layernorm(x)
            return x + self.down_proj(torch.nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))

    class Llama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, d)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))
            self.norm = RMSNorm()
            self.lm_head = nn.Linear(d, vocab, bias=False)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.embed_tokens(idx)
            for layer in self.layers:
                x = layer(x)
            return self.lm_head(self.norm(x))

    return Llama()


def _ratio_row(label: str, model: Any, x: Any, rounds: int) -> Row:
    import torch

    import wdmask_torch

    def plain() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def described() -> None:
        wdmask_torch.describe(model, example_inputs=x)

    plain()
    described()  # warm-up
    samples = interleaved({"describe": described, "forward": plain}, rounds=rounds)
    ratio = paired_ratio(samples, "describe", "forward")
    d, f = min(samples["describe"]), min(samples["forward"])
    return Row(SECTION, f"{label}: describe with graph / one meta forward", f"{fmt_time(d)} vs {fmt_time(f)}",
               ratio, "describe / forward (meta)", "<= 1.5x", ratio <= 1.5,
               note=f"best-of-{rounds} times: {d / f:.2f}x; median of per-round ratios: {ratio:.2f}x")


def run(quick: bool = False) -> list[Row]:
    import torch

    from wdmask_torch.models import resnet50

    rounds = 5 if quick else 15
    with torch.device("meta"):
        r50 = resnet50(num_classes=1000)
        img = torch.empty(1, 3, 224, 224)
        g2 = gpt2(layers=4 if quick else 12)
        ids = torch.zeros(1, 128, dtype=torch.long)
    rows = [_ratio_row("ResNet-50", r50, img, rounds), _ratio_row(f"GPT-2 ({len(g2.h)} blocks)", g2, ids, rounds)]

    import wdmask_torch

    with torch.device("meta"):
        big = llama()
        tokens = torch.zeros(1, 16, dtype=torch.long)
    n = sum(p.numel() for p in big.parameters())
    build_note = f"{n / 1e9:.1f} B parameters, {len(list(big.parameters()))} tensors, built on meta"
    plain, _, _ = timed(lambda: wdmask_torch.describe(big), 3)
    graph, _, inv = timed(lambda: wdmask_torch.describe(big, example_inputs=tokens), 3)
    assert all(i.source == "graph" for i in inv)
    rows += [
        Row(SECTION, "Llama-7B-like: describe, no graph", fmt_time(plain), None, "absolute time", "< 2 s",
            plain < 2.0, note=build_note),
        Row(SECTION, "Llama-7B-like: describe with graph (16 meta tokens)", fmt_time(graph), None, "absolute time",
            "< 2 s", graph < 2.0),
    ]
    return rows
