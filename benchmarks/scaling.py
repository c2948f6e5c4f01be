"""4. Build cost: describe + decide for 1k, 10k and 100k parameters (torch) and leaves (pytree); describing
real-size models without a graph.

* torch: ``wdmask_torch.groups(model, presets.standard)`` (describe, decide, bucket) on a
  ``Linear + LayerNorm`` stack built on the ``meta`` device (no storage; describe runs no forward);
* JAX: ``wdmask.mask(params, presets.standard)`` on a nested dict of ``jax.ShapeDtypeStruct``
  leaves with Flax auto-names (``Block_i/Dense_0/kernel``, ``LayerNorm_0/scale``, ...).

At every size, wdmask and the simplest correct hand-written code doing the same job on the same model are
timed in interleaved rounds (collector off; median of per-round ratios):

* torch: one pass over ``model.named_parameters()`` appending each tensor to a no-decay list when
  ``p.ndim <= 1`` and to a decay list otherwise (timm ``param_groups_weight_decay``'s split), then the two
  group dicts;
* JAX: ``jax.tree_util.tree_map_with_path(lambda path, x: x.ndim > 1, params)`` (a bool mask; correct for
  this tree: kernels are the only 2-D leaves).

Rows: the absolute time at the largest size; each 10x step's growth, judged against the hand-written code's
growth in the same rounds (on this machine the floor itself, one Python pass, takes 12-18x for 10x: a bigger
working set is slower per item, so a bare "10x size <= 11x time" fails code that is linear by
construction); and the ratio to the floor at the largest size (goals: ``wdmask.mask`` ≤ 4x, torch ``groups()``
≤ 8x), with the collector off (the goal's measure) and on (as a training script runs). When a goal is missed,
a cProfile of the middle size names the top functions by own time.

Then ``describe`` without a graph (no example inputs: classes, names and shapes only) of the largest real
models the test suite covers, at full size: torchvision-style ResNet-50, GPT-2 small and a Llama-7B-like
decoder on the ``meta`` device; the Flax ResNet-50's params (abstract, from ``jax.eval_shape``) and the NNX
ResNet-50 (abstract, from ``nnx.eval_shape``). Goal: < 100 ms each (best of 5).
"""

from __future__ import annotations

import cProfile
import io
import itertools
import pstats
from collections.abc import Callable
from typing import Any

from benchmarks._common import Row, fmt_time, interleaved, median, paired_ratio, pytree_stack, timed, torch_stack

SECTION = "4 scaling"


def hotspots(fn: Callable[[], Any], top: int = 6) -> str:
    """``file:function own-time-share`` of the ``top`` functions by own time in one profiled call."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    out = []
    for (file, line, name), (_, _, tottime, _, _) in rows:
        short = "/".join(file.split("/")[-2:]) if "/" in file else file
        out.append(f"{short}:{line}({name}) {100 * tottime / total:.0f}%")
    return "; ".join(out)


def _scaling_rows(label: str, unit: str, sizes: list[int], samples: dict[int, dict[str, list[float]]],
                  profile: Callable[[], str], quick: bool) -> list[Row]:
    ours = {n: median(samples[n]["wdmask"]) for n in sizes}
    hand = {n: median(samples[n]["hand"]) for n in sizes}
    ratios = {n: paired_ratio(samples[n], "wdmask", "hand") for n in sizes}
    rows = []
    largest = sizes[-1]
    goal_abs = largest >= 100_000
    abs_met = ours[largest] < 2.0 if goal_abs else None
    rows.append(Row(SECTION, f"{label}: {largest:,} {unit}", fmt_time(ours[largest]), None, "absolute time",
                    "< 2 s" if goal_abs else "report (quick)", abs_met,
                    "; ".join(f"{n:,}: {fmt_time(ours[n])} (hand-written {fmt_time(hand[n])})" for n in sizes)))
    missed = abs_met is False
    for n0, n1 in itertools.pairwise(sizes):
        growth = ratios[n1] / ratios[n0]
        met = growth <= 1.1
        missed = missed or not met
        rows.append(Row(SECTION, f"{label}: {n0:,} -> {n1:,} {unit}",
                        f"x{ours[n1] / ours[n0]:.1f} (hand-written x{hand[n1] / hand[n0]:.1f})", growth,
                        "growth vs the hand-written code's: (wdmask/hand at 10x size) / (wdmask/hand)",
                        "≤ 1.1 (linear)", met,
                        f"wdmask/hand {ratios[n0]:.2f} at {n0:,}, {ratios[n1]:.2f} at {n1:,}"))
    if missed and not quick:
        rows[-1].note += f"; profile at {sizes[1]:,}: {profile()}"
    return rows


def _by_size(sizes: list[int], build: Callable[[int], Any], ours: Callable[[Any], Any], hand: Callable[[Any], Any],
             rounds: dict[int, int]) -> tuple[dict[int, dict[str, list[float]]], dict[int, Any]]:
    """Per size: the model built, and the ``interleaved`` samples of wdmask and the hand-written code on it
    (collector off)."""
    samples, models = {}, {}
    for n in sizes:
        model = models[n] = build(n)
        ours(model)  # warm-up (imports, caches)
        samples[n] = interleaved({"wdmask": lambda m=model: ours(m), "hand": lambda m=model: hand(m)},
                                 rounds=rounds[n])
    return samples, models


def hand_split(model: Any) -> tuple[list[Any], list[Any]]:
    """The torch floor: one pass, ``ndim <= 1`` to no decay (timm's split), as two group dicts."""
    no_decay, decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay}]  # type: ignore[return-value]


def hand_mask(params: Any) -> Any:
    """The JAX floor: ``tree_map_with_path(lambda path, x: x.ndim > 1, params)``."""
    import jax

    return jax.tree_util.tree_map_with_path(lambda path, x: x.ndim > 1, params)


def floor_row(label: str, n: int, unit: str, ours: Callable[[], Any], hand: Callable[[], Any], hand_text: str,
              goal: float, rounds: int, collector: bool = False,
              samples: dict[str, list[float]] | None = None) -> Row:
    """``ours / hand`` at size ``n``: median of per-round ratios over interleaved rounds.

    ``collector=False``: the garbage collector off for both (the work itself, the goal's measure);
    ``True``: on for both, as a training script runs them. ``samples``: ``interleaved`` samples taken already
    (collector off), used instead of timing again.
    """
    if samples is None:
        samples = interleaved({"wdmask": ours, "hand": hand}, rounds=rounds, collector=collector)
    rounds = len(samples["wdmask"])
    r = paired_ratio(samples, "wdmask", "hand")
    gc_text = "GC on (as run)" if collector else "GC off"
    return Row(SECTION, f"{label}: {n:,} {unit} vs hand-written, {gc_text}",
               f"{fmt_time(median(samples['wdmask']))} vs {fmt_time(median(samples['hand']))}", r,
               f"wdmask / {hand_text}", "report" if collector else f"≤ {goal:g}", None if collector else r <= goal,
               f"median of {rounds} interleaved rounds")


def run(quick: bool = False) -> list[Row]:
    import wdmask
    import wdmask_torch
    from wdmask import presets

    sizes = [100, 1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    rounds = {100: 9, 1_000: 9, 10_000: 3 if quick else 7, 100_000: 5}

    def torch_groups(model: Any) -> Any:
        return wdmask_torch.groups(model, presets.standard)

    def jax_mask(tree: Any) -> Any:
        return wdmask.mask(tree, presets.standard)

    def torch_model(n: int) -> Any:
        return torch_stack(n, 8, device="meta")

    samples, models = _by_size(sizes, torch_model, torch_groups, hand_split, rounds)
    mid, big = models[sizes[1]], models[sizes[-1]]
    rows = _scaling_rows("torch groups (describe+decide)", "tensors", sizes, samples,
                         lambda: hotspots(lambda: torch_groups(mid)), quick)
    assert sum(len(g["params"]) for g in torch_groups(big)) == sizes[-1]
    assert [len(g["params"]) for g in hand_split(big)] == [len(g["params"]) for g in torch_groups(big)]
    rows.append(floor_row("torch groups", sizes[-1], "tensors", lambda: torch_groups(big), lambda: hand_split(big),
                          "one-pass `ndim <= 1` split of named_parameters()", 8.0, rounds=rounds[sizes[-1]],
                          samples=samples[sizes[-1]]))
    rows.append(floor_row("torch groups", sizes[-1], "tensors", lambda: torch_groups(big), lambda: hand_split(big),
                          "one-pass `ndim <= 1` split of named_parameters()", 8.0, rounds=3 if quick else 5,
                          collector=True))

    samples, trees = _by_size(sizes, pytree_stack, jax_mask, hand_mask, rounds)
    mid_tree, big_tree = trees[sizes[1]], trees[sizes[-1]]
    rows += _scaling_rows("jax mask (describe+decide)", "leaves", sizes, samples,
                          lambda: hotspots(lambda: jax_mask(mid_tree)), quick)
    assert jax_mask(big_tree) == hand_mask(big_tree)  # same answer: a fair floor
    row = floor_row("jax mask", sizes[-1], "leaves", lambda: jax_mask(big_tree), lambda: hand_mask(big_tree),
                    "tree_map_with_path(lambda path, x: x.ndim > 1)", 4.0, rounds=rounds[sizes[-1]],
                    samples=samples[sizes[-1]])
    if row.met is False and not quick:
        row.note += f"; profile at {sizes[-1]:,}: {hotspots(lambda: jax_mask(big_tree))}"
    rows.append(row)
    rows.append(floor_row("jax mask", sizes[-1], "leaves", lambda: jax_mask(big_tree), lambda: hand_mask(big_tree),
                          "tree_map_with_path(lambda path, x: x.ndim > 1)", 4.0, rounds=3 if quick else 5,
                          collector=True))
    return rows + describe_rows()


def describe_rows() -> list[Row]:
    """``describe`` without a graph of real-size models: best of 5, goal < 100 ms each."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import wdmask
    import wdmask_torch
    from benchmarks.usage_torch import gpt2, llama
    from wdmask import models as flax_models
    from wdmask_torch import models as torch_models

    with torch.device("meta"):
        torch_cases = {"torch ResNet-50": torch_models.resnet50(num_classes=1000), "torch GPT-2 small": gpt2(),
                       "torch Llama-7B-like": llama()}
    linen = flax_models.resnet50(num_classes=1000)
    params = jax.eval_shape(linen.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    nnx_model = nnx.eval_shape(lambda: flax_models.nnx_resnet50(num_classes=1000, rngs=nnx.Rngs(0)))
    cases: dict[str, Callable[[], Any]] = {name: (lambda m=m: wdmask_torch.describe(m))
                                           for name, m in torch_cases.items()}
    cases["Flax ResNet-50 params"] = lambda: wdmask.describe(params)
    cases["NNX ResNet-50 module"] = lambda: wdmask.describe(nnx_model)
    rows = []
    for name, fn in cases.items():
        best, med, inventory = timed(fn, 5)
        rows.append(Row(SECTION, f"describe, no graph: {name}", fmt_time(best), None, "absolute time (best of 5)",
                        "< 100 ms", best < 0.1, f"{len(inventory)} tensors; median {fmt_time(med)}"))
    return rows
