"""Cost of roles from usage on the JAX side: ``describe(model, sample)`` against the plain trace it cannot avoid.

Goal (issue 22): describing with a graph <= 1.5x the plain work, medians of per-round ratios, interleaved rounds.

* NNX and Equinox models hold their params: the floor is one plain ``jax.make_jaxpr`` of the forward pass;
  ``describe`` traces it once (abstract params) and walks the jaxpr.
* A linen module with its params (what ``mask``/``decay``/``partition`` describe): the floor is one plain
  ``make_jaxpr`` of ``model.apply``; ``describe`` traces ``apply`` once on the given params (the class
  interceptor and the usage walk on that one trace).
* A linen module alone holds no params: before any forward pass can be traced they must be made, so the floor of
  describing ``(model, sample)`` is one abstract ``model.init`` (``jax.eval_shape``) plus one plain
  ``make_jaxpr`` of ``model.apply``; ``describe`` runs exactly those two traces.

Then ``describe`` of a several-billion-parameter GPT from abstract inputs only (``jax.ShapeDtypeStruct``: nothing
is allocated). Run: ``python -m benchmarks --only usage_jax`` (rows) or ``python -m benchmarks.usage_jax``.
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

from benchmarks._common import Row, fmt_time, interleaved, paired_ratio


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


SECTION = "7 usage (JAX)"


def _rows(label: str, plain: Callable[[], Any], described: Callable[[], Any], rounds: int, floor: str,
          extra: dict[str, Callable[[], Any]] | None = None) -> list[Row]:
    plain()
    described()  # warm caches of both (flax/jax import-time work)
    fns = {"describe": described, "floor": plain, **(extra or {})}
    samples = interleaved(fns, rounds=rounds)
    ratio = paired_ratio(samples, "describe", "floor")
    d, f = min(samples["describe"]), min(samples["floor"])
    rows = [Row(SECTION, f"{label}: describe with graph / {floor}", f"{fmt_time(d)} vs {fmt_time(f)}", ratio,
                f"describe / {floor}", "<= 1.5x", ratio <= 1.5,
                note=f"best-of-{rounds} times: {d / f:.2f}x; median of per-round ratios: {ratio:.2f}x")]
    for name in extra or {}:
        r = paired_ratio(samples, "describe", name)
        rows.append(Row(SECTION, f"{label}: describe with graph / {name}", fmt_time(min(samples[name])), r,
                        f"describe / {name}", "report", None))
    return rows


def run(quick: bool = False) -> list[Row]:
    import equinox as eqx
    from flax import nnx

    import wdmask
    from wdmask import models

    rounds = 3 if quick else 9
    rows: list[Row] = []
    img = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((2, 128), jnp.int32)
    for label, model, x in (("linen ResNet-50", models.resnet50(num_classes=1000), img),
                            (f"linen GPT-2 ({4 if quick else 12} L)", GPT(layers=4 if quick else 12), ids)):
        apply_only = plain_trace(model, x)

        def init_and_apply(model: nn.Module = model, x: Any = x, apply_only: Callable[[], Any] = apply_only) -> Any:
            jax.eval_shape(model.init, jax.random.key(0), x)
            return apply_only()

        params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
        rows += _rows(f"{label} with its params", apply_only,
                      lambda model=model, x=x, params=params: wdmask.describe(model, x, params=params), rounds,
                      "make_jaxpr(apply)")
        rows += _rows(f"{label} alone", init_and_apply, lambda model=model, x=x: wdmask.describe(model, x), rounds,
                      "abstract init + make_jaxpr(apply)")
    net = nnx.eval_shape(lambda: models.nnx_resnet50(num_classes=1000, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(net)

    def nnx_plain() -> Any:
        return jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, img)

    rows += _rows("NNX ResNet-50", nnx_plain, lambda: wdmask.describe(net, img), rounds, "make_jaxpr(forward)")
    mlp = eqx.filter_eval_shape(lambda: eqx.nn.MLP(512, 512, 2048, 8, key=jax.random.key(0)))
    vec = jax.ShapeDtypeStruct((512,), jnp.float32)
    params, static = eqx.partition(mlp, lambda v: isinstance(v, (jax.Array, jax.ShapeDtypeStruct)))

    def eqx_plain() -> Any:
        return jax.make_jaxpr(lambda p, x: eqx.combine(p, static)(x))(params, vec)

    rows += _rows("Equinox MLP (8 layers)", eqx_plain, lambda: wdmask.describe(mlp, vec), rounds,
                  "make_jaxpr(forward)")
    return rows


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
