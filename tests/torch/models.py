"""Small models for the torch adapter tests (torchvision-style ResNet, a Transformer, a ConvNeXt block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout, tiny widths: stem, two stages, fc."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int] = (1, 1),
                 num_classes: int = 5) -> None:
        super().__init__()
        self.inplanes = 8
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 8, layers[0], 1)
        self.layer2 = self._make_layer(block, 16, layers[1], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], c: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != c * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, c * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(c * block.expansion))
        layers = [block(self.inplanes, c, stride, downsample)]
        self.inplanes = c * block.expansion
        layers += [block(self.inplanes, c) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TransformerBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.RMSNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """GPT-like: token embedding tied to the output Linear, learned positions, pre-norm blocks."""

    def __init__(self, vocab: int = 11, d: int = 8, heads: int = 2, n: int = 2, ctx: int = 6) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, ctx, d))
        self.blocks = nn.ModuleList(TransformerBlock(d, heads) for _ in range(n))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos[:, : idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class LayerNorm2d(nn.Module):
    """ConvNeXt's LayerNorm (channels first or last), a user class (not an nn.LayerNorm subclass)."""

    def __init__(self, c: int, eps: float = 1e-6, data_format: str = "channels_first") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps
        self.data_format = data_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv -> permute -> LayerNorm -> pwconv1 -> GELU -> pwconv2 -> layer scale -> permute back."""

    def __init__(self, c: int = 8, custom_norm: bool = False) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = LayerNorm2d(c, data_format="channels_last") if custom_norm else nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    """Stem (conv -> LayerNorm2d), a block with a custom channels-last norm, downsample (LayerNorm2d -> conv),
    a block with nn.LayerNorm, head."""

    def __init__(self, c: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 2, 2), LayerNorm2d(c))
        self.stage1 = ConvNeXtBlock(c, custom_norm=True)
        self.down = nn.Sequential(LayerNorm2d(c), nn.Conv2d(c, 2 * c, 2, 2))
        self.stage2 = ConvNeXtBlock(2 * c)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def resnet(block: str = "basic", **kwargs: object) -> ResNet:
    return ResNet(BasicBlock if block == "basic" else Bottleneck, **kwargs)  # type: ignore[arg-type]


def substring_groups(model: nn.Module, wd: float) -> list[dict]:
    """The common hand-made grouping: 'bn' or 'bias' in the name -> no decay."""
    no = [p for n, p in model.named_parameters() if "bn" in n or "bias" in n]
    yes = [p for n, p in model.named_parameters() if not ("bn" in n or "bias" in n)]
    return [{"params": yes, "weight_decay": wd}, {"params": no, "weight_decay": 0.0}]


# Random module trees for property tests: a spec is nested lists of [leaf kind, width] or ["seq", children].
LEAVES = ("linear", "conv", "bn", "ln", "emb", "rms", "custom_norm", "frozen", "loose", "tied", "alias", "mha")


def random_spec(rng: object, depth: int = 0) -> list:
    """A random tree spec from ``rng`` (a ``random.Random``; hypothesis ``st.randoms()`` works too)."""
    out: list = []
    for _ in range(rng.randint(1, 4)):  # type: ignore[attr-defined]
        if depth < 2 and rng.random() < 0.3:  # type: ignore[attr-defined]
            out.append(["seq", random_spec(rng, depth + 1)])
        else:
            out.append([rng.choice(LEAVES), rng.randint(1, 3) * 2])  # type: ignore[attr-defined]
    return out


class Loose(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))
        self.w = nn.Parameter(torch.ones(d, d))


class Tied(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.a = nn.Linear(d, d)
        self.b = nn.Linear(d, d)
        self.b.weight = self.a.weight


_LEAF_BUILDERS = {
    "linear": lambda d: nn.Linear(d, d), "conv": lambda d: nn.Conv2d(d, d, 1), "bn": lambda d: nn.BatchNorm2d(d),
    "ln": lambda d: nn.LayerNorm(d), "emb": lambda d: nn.Embedding(d, d), "rms": lambda d: nn.RMSNorm(d),
    "custom_norm": lambda d: LayerNorm2d(d), "frozen": lambda d: nn.Linear(d, d).requires_grad_(False),
    "loose": lambda d: Loose(d), "tied": lambda d: Tied(d), "mha": lambda d: nn.MultiheadAttention(d, 2),
}


def build(spec: list) -> nn.Module:
    """The module tree a spec describes (parameter values are irrelevant to grouping)."""
    seq = nn.Sequential()
    for kind, arg in spec:
        if kind == "seq":
            seq.append(build(arg))
        elif kind == "alias":  # the previous module registered again under a second name
            seq.append(seq[-1] if len(seq) else nn.Linear(arg, 1))
        else:
            seq.append(_LEAF_BUILDERS[kind](arg))
    return seq
