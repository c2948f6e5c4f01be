"""Small Flax models shared by the JAX adapter tests (explicit names where names cannot tell the kind)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

PAD = ((1, 1), (1, 1))


class BasicBlock(nn.Module):
    """torchvision-style block: conv1/bn1/conv2/bn2 and a `downsample` (conv, bn)."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        s = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), s, padding=PAD, use_bias=False, name="conv1")(x)
        y = nn.relu(nn.BatchNorm(use_running_average=False, name="bn1")(y))
        y = nn.Conv(self.features, (3, 3), padding=PAD, use_bias=False, name="conv2")(y)
        y = nn.BatchNorm(use_running_average=False, name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = Downsample(self.features, self.strides, name="downsample")(x)
        return nn.relu(y + x)


class Downsample(nn.Module):
    features: int
    strides: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False, name="conv")(x)
        return nn.BatchNorm(use_running_average=False, name="bn")(x)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), padding=PAD, use_bias=False, name="conv1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=False, name="bn1")(x))
        x = BasicBlock(4, name="layer1_0")(x)
        x = BasicBlock(8, strides=2, name="layer2_0")(x)
        return nn.Dense(3, name="fc")(x.mean(axis=(1, 2)))


RESNET_SAMPLE = jnp.ones((2, 8, 8, 3), jnp.float32)


class Block(nn.Module):
    """Pre-norm transformer block (scan body: (carry, xs) -> (carry, ys))."""

    @nn.compact
    def __call__(self, x, _):
        h = nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(nn.LayerNorm(name="ln1")(x))
        x = x + h
        h = nn.Dense(8, name="fc2")(nn.gelu(nn.Dense(16, name="fc1")(nn.RMSNorm(name="ln2")(x))))
        return x + h, None


class Transformer(nn.Module):
    layers: int = 2

    @nn.compact
    def __call__(self, tokens):
        wte = nn.Embed(32, 8, name="wte")
        x = wte(tokens)
        scanned = nn.scan(nn.remat(Block), variable_axes={"params": 0}, split_rngs={"params": True},
                          length=self.layers)
        x, _ = scanned(name="layers")(x, None)
        return wte.attend(nn.LayerNorm(name="ln_f")(x))


TOKENS = jnp.zeros((2, 5), jnp.int32)


class Auto(nn.Module):
    """Auto-named layers only (BatchNorm_0, Conv_0, Dense_0, ...), one boxed (nn.Partitioned) kernel."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(10, 4)(tokens)
        x = nn.Conv(4, (3,))(x)
        x = nn.BatchNorm(use_running_average=False)(x)
        x = nn.Dense(4, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model")))(x)
        x = nn.LayerNorm()(x)
        x = nn.GroupNorm(num_groups=2)(x)
        x = nn.remat(nn.Dense)(4)(x)
        x = nn.RMSNorm()(x)
        return nn.Dense(2)(x)


class NBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding=PAD, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=PAD, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
        self.downsample = nnx.data(None)
        if stride != 1 or cin != cout:
            self.downsample = nnx.Sequential(nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs),
                                             nnx.BatchNorm(cout, rngs=rngs))

    def __call__(self, x):
        y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
        return nnx.relu(y + (x if self.downsample is None else self.downsample(x)))


class NResNet(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 4, (3, 3), padding=PAD, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.blocks = nnx.List([NBlock(4, 4, 1, rngs=rngs), NBlock(4, 8, 2, rngs=rngs)])
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(axis=(1, 2)))


def fill(tree, seed: int = 0):
    """Concrete arrays for an abstract tree, from numpy (no XLA compile: random init compiles slowly on CPU)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def one(s):
        if jnp.issubdtype(s.dtype, jnp.floating):
            return jnp.asarray((0.5 + rng.random(s.shape)).astype(s.dtype))
        return jnp.zeros(s.shape, s.dtype)

    return jax.tree.map(one, tree)


def init(model, sample, seed: int = 0):
    """Linen variables with the model's structure (boxes kept), filled by ``fill``."""
    import jax

    return fill(jax.eval_shape(model.init, jax.random.key(seed), sample), seed)


def nnx_model(make, seed: int = 0):
    """An NNX model built abstractly, then filled by ``fill``."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    return nnx.merge(graphdef, fill(state, seed))
