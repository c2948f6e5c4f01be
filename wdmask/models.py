"""Reference Flax ResNets (linen and NNX), twins of ``wdmask_torch.models`` for parity tests and the demo.

Imports flax at the top: ``import wdmask`` does not import this module.

Layout is NHWC. Every conv pads explicitly (``((1, 1), (1, 1))`` for 3x3, ``((3, 3), (3, 3))`` for the 7x7
stem) because ``padding="SAME"`` pads a stride-2 conv asymmetrically, unlike torch ``padding=1``.
BatchNorm uses ``momentum=0.9`` (torch ``momentum=0.1``), ``epsilon=1e-5`` and the two-pass variance
(``use_fast_variance=False``), as torch does.

Naming (the torch name with its index dot written ``_`` where the framework needs it):

=========================  =========================  ==========================
torch                      linen                      NNX
=========================  =========================  ==========================
``conv1.weight``           ``conv1.kernel``           ``conv1.kernel``
``bn1.weight``             ``bn1.scale``              ``bn1.scale``
``layer1.0.conv1.weight``  ``layer1_0.conv1.kernel``  ``layer1.0.conv1.kernel``
``layer2.0.downsample.0``  ``layer2_0.downsample_0``  ``layer2.0.downsample.0``
``layer2.0.downsample.1``  ``layer2_0.downsample_1``  ``layer2.0.downsample.1``
``fc.weight``              ``fc.kernel``              ``fc.kernel``
=========================  =========================  ==========================

Linen modules switch BatchNorm with ``use_running_average`` (a field, overridable per call);
NNX modules with ``model.train()`` / ``model.eval()``.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> model = resnet18(num_classes=10, width=8, layers=(1, 1, 1, 1))
  >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
  >>> sorted(variables), list(variables["params"])[:3]  # pytree key order, not call order (see wdmask.pair)
  (['batch_stats', 'params'], ['bn1', 'conv1', 'fc'])
  >>> logits, updates = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["batch_stats"]), variables,
  ...                                  jnp.zeros((2, 32, 32, 3)))
  >>> logits.shape
  (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

__all__ = [
    "BasicBlock", "Bottleneck", "NnxBasicBlock", "NnxBottleneck", "NnxResNet", "ResNet", "nnx_resnet18",
    "nnx_resnet50", "resnet18", "resnet50",
]

Dtype = Any
_P1 = ((1, 1), (1, 1))
_P0 = ((0, 0), (0, 0))
_BN = {"momentum": 0.9, "epsilon": 1e-5, "use_fast_variance": False}


def _check_layers(layers: Sequence[int]) -> None:
    if len(layers) < 1 or any(n < 1 for n in layers):
        raise ValueError(f"`layers` must be a non-empty sequence of block counts >= 1, got {tuple(layers)!r}")


# --------------------------------------------------------------------------------------------- linen
class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm, identity or 1x1-conv+BN shortcut (``downsample_0``/``downsample_1``)."""

    planes: int
    stride: int = 1
    use_running_average: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _linen_conv(self.dtype, self.param_dtype)
        bn = _linen_bn(self.use_running_average, self.dtype, self.param_dtype)
        s = (self.stride, self.stride)
        out = nn.relu(bn("bn1")(conv(self.planes, (3, 3), s, _P1, "conv1")(x)))
        out = bn("bn2")(conv(self.planes, (3, 3), (1, 1), _P1, "conv2")(out))
        if self.stride != 1 or x.shape[-1] != self.planes * self.expansion:
            x = bn("downsample_1")(conv(self.planes * self.expansion, (1, 1), s, _P0, "downsample_0")(x))
        return nn.relu(out + x)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here), 1x1 expand by 4, BatchNorm after each; conv+BN shortcut when needed."""

    planes: int
    stride: int = 1
    use_running_average: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _linen_conv(self.dtype, self.param_dtype)
        bn = _linen_bn(self.use_running_average, self.dtype, self.param_dtype)
        s = (self.stride, self.stride)
        out_planes = self.planes * self.expansion
        out = nn.relu(bn("bn1")(conv(self.planes, (1, 1), (1, 1), _P0, "conv1")(x)))
        out = nn.relu(bn("bn2")(conv(self.planes, (3, 3), s, _P1, "conv2")(out)))
        out = bn("bn3")(conv(out_planes, (1, 1), (1, 1), _P0, "conv3")(out))
        if self.stride != 1 or x.shape[-1] != out_planes:
            x = bn("downsample_1")(conv(out_planes, (1, 1), s, _P0, "downsample_0")(x))
        return nn.relu(out + x)


def _linen_conv(dtype: Dtype | None, param_dtype: Dtype) -> Any:
    def make(features: int, kernel: tuple[int, int], strides: tuple[int, int], padding: Any, name: str) -> nn.Conv:
        return nn.Conv(features, kernel, strides=strides, padding=padding, use_bias=False, dtype=dtype,
                       param_dtype=param_dtype, name=name)
    return make


def _linen_bn(use_running_average: bool, dtype: Dtype | None, param_dtype: Dtype) -> Any:
    def make(name: str) -> nn.BatchNorm:
        return nn.BatchNorm(use_running_average=use_running_average, dtype=dtype, param_dtype=param_dtype,
                            name=name, **_BN)
    return make


class ResNet(nn.Module):
    """Linen ResNet: stem ``conv1``/``bn1``, stages ``layer{i}_{j}``, global average pool, ``fc``.

    Attributes:
      block: ``BasicBlock`` or ``Bottleneck``.
      layers: blocks per stage.
      num_classes: outputs of ``fc``.
      width: channels of the stem and of the first stage.
      small_input: 3x3 stride-1 stem without max-pool instead of 7x7 stride-2 + max-pool.
      use_running_average: BatchNorm in eval mode; ``__call__`` may override it.
    """

    block: type[BasicBlock] | type[Bottleneck]
    layers: Sequence[int]
    num_classes: int = 10
    width: int = 64
    small_input: bool = False
    use_running_average: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool | None = None) -> jax.Array:
        _check_layers(self.layers)
        ura = self.use_running_average if use_running_average is None else use_running_average
        conv = _linen_conv(self.dtype, self.param_dtype)
        if self.small_input:
            x = conv(self.width, (3, 3), (1, 1), _P1, "conv1")(x)
        else:
            x = conv(self.width, (7, 7), (2, 2), ((3, 3), (3, 3)), "conv1")(x)
        x = nn.relu(_linen_bn(ura, self.dtype, self.param_dtype)("bn1")(x))
        if not self.small_input:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_P1)
        for i, n in enumerate(self.layers):
            for j in range(n):
                x = self.block(self.width * 2**i, stride=2 if (i > 0 and j == 0) else 1, use_running_average=ura,
                               dtype=self.dtype, param_dtype=self.param_dtype, name=f"layer{i + 1}_{j}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)


def resnet18(num_classes: int = 10, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2), *,
             small_input: bool = False, use_running_average: bool = False, dtype: Dtype | None = None,
             param_dtype: Dtype = jnp.float32) -> ResNet:
    """Linen ResNet-18-style model (BasicBlock); twin of ``wdmask_torch.models.resnet18``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(resnet18(num_classes=1000).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
      >>> sum(x.size for x in jax.tree.leaves(shapes["params"]))  # torchvision resnet18: 11689512
      11689512
    """
    return ResNet(BasicBlock, tuple(layers), num_classes, width, small_input, use_running_average, dtype, param_dtype)


def resnet50(num_classes: int = 10, width: int = 64, layers: Sequence[int] = (3, 4, 6, 3), *,
             small_input: bool = False, use_running_average: bool = False, dtype: Dtype | None = None,
             param_dtype: Dtype = jnp.float32) -> ResNet:
    """Linen ResNet-50-style model (Bottleneck); twin of ``wdmask_torch.models.resnet50``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(resnet50(num_classes=1000).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
      >>> sum(x.size for x in jax.tree.leaves(shapes["params"]))  # torchvision resnet50: 25557032
      25557032
    """
    return ResNet(Bottleneck, tuple(layers), num_classes, width, small_input, use_running_average, dtype, param_dtype)


# ----------------------------------------------------------------------------------------------- NNX
def _nnx_conv(cin: int, cout: int, k: int, stride: int, pad: Any, rngs: nnx.Rngs, dtype: Dtype | None,
              param_dtype: Dtype) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=pad, use_bias=False, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs)


def _nnx_bn(c: int, rngs: nnx.Rngs, dtype: Dtype | None, param_dtype: Dtype) -> nnx.BatchNorm:
    return nnx.BatchNorm(c, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **_BN)


def _nnx_shortcut(cin: int, cout: int, stride: int, rngs: nnx.Rngs, **kw: Any) -> nnx.List | None:
    """The ``downsample`` shortcut (1x1 conv + BatchNorm) when shape changes, else ``None``."""
    if stride == 1 and cin == cout:
        return None
    return nnx.data(nnx.List([_nnx_conv(cin, cout, 1, stride, _P0, rngs, **kw), _nnx_bn(cout, rngs, **kw)]))


class NnxBasicBlock(nnx.Module):
    """NNX BasicBlock; the shortcut is ``downsample`` = ``nnx.List([conv, bn])`` or ``None``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32) -> None:
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        self.conv1 = _nnx_conv(in_planes, planes, 3, stride, _P1, rngs, **kw)
        self.bn1 = _nnx_bn(planes, rngs, **kw)
        self.conv2 = _nnx_conv(planes, planes, 3, 1, _P1, rngs, **kw)
        self.bn2 = _nnx_bn(planes, rngs, **kw)
        self.downsample = _nnx_shortcut(in_planes, planes, stride, rngs, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            x = self.downsample[1](self.downsample[0](x))
        return nnx.relu(out + x)


class NnxBottleneck(nnx.Module):
    """NNX Bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32) -> None:
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        out_planes = planes * self.expansion
        self.conv1 = _nnx_conv(in_planes, planes, 1, 1, _P0, rngs, **kw)
        self.bn1 = _nnx_bn(planes, rngs, **kw)
        self.conv2 = _nnx_conv(planes, planes, 3, stride, _P1, rngs, **kw)
        self.bn2 = _nnx_bn(planes, rngs, **kw)
        self.conv3 = _nnx_conv(planes, out_planes, 1, 1, _P0, rngs, **kw)
        self.bn3 = _nnx_bn(out_planes, rngs, **kw)
        self.downsample = _nnx_shortcut(in_planes, out_planes, stride, rngs, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            x = self.downsample[1](self.downsample[0](x))
        return nnx.relu(out + x)


class NnxResNet(nnx.Module):
    """NNX ResNet: ``conv1``, ``bn1``, ``layer{i}`` (an ``nnx.List`` of blocks), ``fc``; same arguments as torch's."""

    def __init__(self, block: type[NnxBasicBlock] | type[NnxBottleneck], layers: Sequence[int],
                 num_classes: int = 10, width: int = 64, *, small_input: bool = False, rngs: nnx.Rngs,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32) -> None:
        _check_layers(layers)
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        self.small_input = small_input
        if small_input:
            self.conv1 = _nnx_conv(3, width, 3, 1, _P1, rngs, **kw)
        else:
            self.conv1 = _nnx_conv(3, width, 7, 2, ((3, 3), (3, 3)), rngs, **kw)
        self.bn1 = _nnx_bn(width, rngs, **kw)
        in_planes = width
        self.num_stages = len(layers)
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1, rngs=rngs, **kw))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        self.fc = nnx.Linear(in_planes, num_classes, rngs=rngs, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        if not self.small_input:
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_P1)
        for i in range(self.num_stages):
            for blk in getattr(self, f"layer{i + 1}"):
                x = blk(x)
        return self.fc(jnp.mean(x, axis=(1, 2)))


def nnx_resnet18(num_classes: int = 10, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2), *,
                 small_input: bool = False, rngs: nnx.Rngs | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32) -> NnxResNet:
    """NNX ResNet-18-style model.

    Examples:
      >>> from flax import nnx
      >>> model = nnx.eval_shape(lambda: nnx_resnet18(width=8, layers=(1, 1, 1, 1)))
      >>> [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))][:3]
      ['bn1.bias', 'bn1.scale', 'conv1.kernel']
    """
    return NnxResNet(NnxBasicBlock, layers, num_classes, width, small_input=small_input,
                     rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype)


def nnx_resnet50(num_classes: int = 10, width: int = 64, layers: Sequence[int] = (3, 4, 6, 3), *,
                 small_input: bool = False, rngs: nnx.Rngs | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32) -> NnxResNet:
    """NNX ResNet-50-style model.

    Examples:
      >>> from flax import nnx
      >>> model = nnx.eval_shape(lambda: nnx_resnet50(num_classes=1000))
      >>> sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))  # torchvision resnet50: 25557032
      25557032
    """
    return NnxResNet(NnxBottleneck, layers, num_classes, width, small_input=small_input,
                     rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype)
