"""Reference PyTorch ResNets with torchvision-style names; their Flax twins live in ``wdmask.models``.

``resnet18`` (BasicBlock) and ``resnet50`` (Bottleneck) take a ``width`` (channels of the stem and of
``layer1``), ``layers`` (blocks per stage) and ``num_classes``, so tests can build narrow, shallow
copies. Names follow torchvision: ``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``
(conv) / ``.1`` (BatchNorm), ``fc``. A ``small_input`` stem (3x3 stride-1 conv, no max-pool) suits
CIFAR-sized images; the default is torchvision's 7x7 stride-2 conv followed by a 3x3 stride-2 max-pool.

Examples:
  >>> import torch
  >>> model = resnet18(num_classes=10, width=8, layers=(1, 1, 1, 1))
  >>> model(torch.zeros(2, 3, 32, 32)).shape
  torch.Size([2, 10])
  >>> [n for n, _ in model.named_parameters()][:4]
  ['conv1.weight', 'bn1.weight', 'bn1.bias', 'layer1.0.conv1.weight']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]


def _bn(channels: int) -> nn.BatchNorm2d:
    # torch momentum 0.1 == flax momentum 0.9; eps 1e-5 on both sides.
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm, identity or 1x1-conv+BN shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                _bn(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision v1.5), 1x1 expand by 4; BatchNorm after each (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = _bn(out_planes)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                                            _bn(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """Stem, four stages of ``block`` (widths ``width * 2**i``, stride 2 from stage 2), global average pool, ``fc``.

    Args:
      block: ``BasicBlock`` or ``Bottleneck``.
      layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-50.
      num_classes: outputs of ``fc``.
      width: channels of the stem and of the first stage (64 in torchvision).
      small_input: 3x3 stride-1 stem without max-pool (CIFAR-style) instead of 7x7 stride-2 + max-pool.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int = 10,
                 width: int = 64, *, small_input: bool = False) -> None:
        super().__init__()
        if len(layers) < 1 or any(n < 1 for n in layers):
            raise ValueError(f"`layers` must be a non-empty sequence of block counts >= 1, got {tuple(layers)!r}")
        self.small_input = small_input
        if small_input:
            self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2), *,
             small_input: bool = False) -> ResNet:
    """ResNet-18-style model (BasicBlock).

    Examples:
      >>> sum(p.numel() for p in resnet18(num_classes=1000).parameters())  # torchvision resnet18: 11689512
      11689512
    """
    return ResNet(BasicBlock, layers, num_classes, width, small_input=small_input)


def resnet50(num_classes: int = 10, width: int = 64, layers: Sequence[int] = (3, 4, 6, 3), *,
             small_input: bool = False) -> ResNet:
    """ResNet-50-style model (Bottleneck, stride on the 3x3 conv).

    Examples:
      >>> sum(p.numel() for p in resnet50(num_classes=1000).parameters())  # torchvision resnet50: 25557032
      25557032
    """
    return ResNet(Bottleneck, layers, num_classes, width, small_input=small_input)
