"""Small linen models for policy tests: a MaxText-style scanned decoder (DenseGeneral kernels, params stacked on
axis 1), and a pre-norm transformer in scanned and unscanned form with the same maths."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

V, D, H, L = 16, 8, 2, 3


class MlpBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.DenseGeneral(4 * D, name="wi")(x), approximate=False)
        return nn.DenseGeneral(D, name="wo")(h)


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        q = nn.DenseGeneral((H, D // H), name="query")(x)
        k = nn.DenseGeneral((H, D // H), name="key")(x)
        v = nn.DenseGeneral((H, D // H), name="value")(x)
        att = nn.softmax(jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(D // H), axis=-1)
        return nn.DenseGeneral(D, axis=(-2, -1), name="out")(jnp.einsum("bhts,bshd->bthd", att, v))


class DecoderLayer(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        x = x + Attention(name="self_attention")(nn.RMSNorm(name="pre_self_attention_layer_norm")(x))
        x = x + MlpBlock(name="mlp")(nn.RMSNorm(name="post_self_attention_layer_norm")(x))
        return x, None


class Decoder(nn.Module):
    """MaxText ``Decoder`` with ``scan_layers=True`` and ``param_scan_axis=1``."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(V, D, name="token_embedder")(tokens)
        stack = nn.scan(DecoderLayer, variable_axes={"params": 1}, split_rngs={"params": True},
                        in_axes=nn.broadcast, length=L, metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack(name="layers")(x, None)
        x = nn.RMSNorm(name="decoder_norm")(x)
        return nn.DenseGeneral(V, name="logits_dense")(x)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _=None):
        y = nn.LayerNorm(name="ln1")(x)
        x = x + nn.Dense(D, name="proj")(nn.gelu(nn.Dense(2 * D, name="fc")(y), approximate=False))
        return x, None


class Stack(nn.Module):
    """Embed -> L blocks -> LayerNorm -> Dense head; ``scan`` stacks the blocks on axis 0."""

    scan: bool = False

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(V, D, name="embed")(tokens)
        if self.scan:
            x, _ = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=L)(
                name="blocks")(x, None)
        else:
            for i in range(L):
                x, _ = Block(name=f"blocks_{i}")(x)
        return nn.Dense(V, name="head")(nn.LayerNorm(name="norm")(x))
