"""Cost of roles from usage on the JAX side: ``describe(model, sample=...)`` vs one plain abstract trace.

For a ResNet-50-like and a GPT-2-like linen model, in one run: the time of ``wdmask.describe(model, x)``
(abstract ``model.init`` with the class interceptor + one ``jax.make_jaxpr`` of ``model.apply`` with the
feeds_norm tags and the usage walk) against one plain ``jax.make_jaxpr`` of ``model.apply`` on abstract
variables (target: <= 3x); then ``describe`` of a several-billion-parameter GPT from abstract inputs
only (``jax.ShapeDtypeStruct``: nothing is allocated; target: < 2 s). Medians of ``--repeats`` runs,
interleaved. Run: ``python -m benchmarks.usage_jax [--repeats N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Block(nn.Module):
    d: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        h = nn.LayerNorm(name="ln_1")(x)
        qkv = nn.Dense(3 * d, name="c_attn")(h).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // self.heads)
        att = jnp.where(jnp.tril(jnp.ones((t, t), bool)), att, -1e9)
        y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(att, -1), v).reshape(b, t, d)
        x = x + nn.Dense(d, name="c_proj")(y)
        h = nn.LayerNorm(name="ln_2")(x)
        return x + nn.Dense(d, name="mlp_proj")(nn.gelu(nn.Dense(4 * d, name="mlp_fc")(h)))


class ScanBlock(nn.Module):
    d: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        return Block(self.d, self.heads, name="block")(x), None


class GPT(nn.Module):
    vocab: int = 50257
    ctx: int = 1024
    d: int = 768
    layers: int = 12
    heads: int = 12
    scan: bool = False  # nn.scan over the layers (how billion-parameter JAX models are usually written)

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        wte = nn.Embed(self.vocab, self.d, name="wte")
        wpe = self.param("wpe", nn.initializers.normal(0.01), (self.ctx, self.d))
        x = wte(ids) + wpe[jnp.arange(ids.shape[1])]
        if self.scan:
            stack = nn.scan(ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.layers)
            x, _ = stack(self.d, self.heads, name="h")(x, None)
        else:
            for i in range(self.layers):
                x = Block(self.d, self.heads, name=f"h_{i}")(x)
        return wte.attend(nn.LayerNorm(name="ln_f")(x))


def _median(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_trace(model: nn.Module, x: Any) -> Callable[[], Any]:
    """One ``jax.make_jaxpr`` of ``model.apply`` on abstract variables (the baseline)."""
    variables = jax.eval_shape(model.init, jax.random.key(0), x)

    def run() -> Any:
        return jax.make_jaxpr(lambda v, x: model.apply(v, x, mutable=True))(variables, x)

    return run


def compare(name: str, model: nn.Module, x: Any, repeats: int) -> tuple[float, float]:
    import wdmask

    plain = plain_trace(model, x)
    plain()
    wdmask.describe(model, x)  # warm caches of both (flax/jax import-time work)
    t_plain, t_desc = [], []
    for _ in range(repeats):
        t_plain.append(_median(plain, 1))
        t_desc.append(_median(lambda: wdmask.describe(model, x), 1))
    p, d = statistics.median(t_plain), statistics.median(t_desc)
    print(f"{name:<28} plain make_jaxpr(apply) {p * 1e3:8.1f} ms   describe {d * 1e3:8.1f} ms   ratio {d / p:5.2f}x")
    return p, d


def main() -> None:
    import wdmask
    from wdmask import models

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    img = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    compare("ResNet-50 (linen, 224px)", models.resnet50(num_classes=1000), img, args.repeats)
    ids = jax.ShapeDtypeStruct((2, 128), jnp.int32)
    compare("GPT-2 small (linen, 12 L)", GPT(), ids, args.repeats)
    for scan in (True, False):
        big = GPT(d=4096, layers=32, heads=32, ctx=2048, scan=scan)
        shapes = jax.eval_shape(big.init, jax.random.key(0), ids)
        n = sum(x.size for x in jax.tree.leaves(shapes["params"]))
        plain = plain_trace(big, ids)
        t_plain = _median(plain, max(1, args.repeats // 2))
        t = _median(lambda big=big: wdmask.describe(big, ids), max(1, args.repeats // 2))
        inv = wdmask.describe(big, ids)
        graph = sum(i.source == "graph" for i in inv)
        kind = "nn.scan" if scan else "unrolled"
        print(f"GPT {n / 1e9:.1f}B params (d=4096, 32 L, {kind:<8}) describe from abstract inputs {t:6.2f} s "
              f"(plain make_jaxpr {t_plain:5.2f} s; {graph}/{len(inv)} leaves classified from the graph)")


if __name__ == "__main__":
    main()
