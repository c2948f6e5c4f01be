"""4. Build-time scaling: describe + decide for 1k, 10k and 100k parameters (torch) and leaves (pytree).

* torch: ``wdmask_torch.groups(model, presets.standard)`` (describe, decide, bucket) on a
  ``Linear + LayerNorm`` stack built on the ``meta`` device (no storage; describe runs no forward);
* JAX: ``wdmask.mask(params, presets.standard)`` on a nested dict of ``jax.ShapeDtypeStruct``
  leaves with Flax auto-names (``Block_i/Dense_0/kernel``, ``LayerNorm_0/scale``, ...).

Reports the best-of-N time per size, each 10x step's time ratio, and, at the largest size, the ratio to
the simplest correct hand-written code doing the same job on the same model, timed in interleaved rounds
(median of per-round ratios):

* torch: one pass over ``model.named_parameters()`` appending each tensor to a no-decay list when
  ``p.ndim <= 1`` and to a decay list otherwise (timm ``param_groups_weight_decay``'s split), then the two
  group dicts;
* JAX: ``jax.tree_util.tree_map_with_path(lambda path, x: x.ndim > 1, params)`` (a bool mask; correct for
  this tree: kernels are the only 2-D leaves).

When a goal is missed, a cProfile of the middle size names the top functions by own time.
"""

from __future__ import annotations

import cProfile
import io
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


def _scaling_rows(label: str, sizes: list[int], timings: list[float], unit: str, profile: Callable[[], str],
                  quick: bool) -> list[Row]:
    rows = []
    largest = sizes[-1]
    goal_abs = largest >= 100_000
    abs_met = timings[-1] < 2.0 if goal_abs else None
    rows.append(Row(SECTION, f"{label}: {largest:,} {unit}", fmt_time(timings[-1]), None, "absolute time",
                    "< 2 s" if goal_abs else "report (quick)", abs_met,
                    "; ".join(f"{n:,}: {fmt_time(t)}" for n, t in zip(sizes, timings, strict=True))))
    missed = abs_met is False
    for (n0, t0), (n1, t1) in zip(zip(sizes, timings, strict=True), list(zip(sizes, timings, strict=True))[1:],
                                  strict=False):
        r = t1 / t0
        met = r <= 11.0
        missed = missed or not met
        rows.append(Row(SECTION, f"{label}: {n0:,} -> {n1:,} {unit}", f"{fmt_time(t0)} -> {fmt_time(t1)}", r,
                        "time ratio for 10x size", "≤ 11", met))
    if missed and not quick:
        rows[-1].note = f"profile at {sizes[1]:,}: {profile()}"
    return rows


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
              goal: float, rounds: int, collector: bool = False) -> Row:
    """``ours / hand`` at size ``n``: median of per-round ratios over interleaved rounds.

    ``collector=False``: the garbage collector off for both (the work itself, the goal's measure);
    ``True``: on for both, as a training script runs them (wdmask pauses it during its build, the
    hand-written line does not).
    """
    samples = interleaved({"wdmask": ours, "hand": hand}, rounds=rounds, collector=collector)
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
    repeats = {100: 9, 1_000: 7, 10_000: 2 if quick else 3, 100_000: 2}

    torch_times = []
    models = {}
    for n in sizes:
        models[n] = torch_stack(n, 8, device="meta")
        if n == sizes[0]:
            wdmask_torch.groups(models[n], presets.standard)  # warm-up (imports, caches)
        t, _, groups = timed(lambda m=models[n]: wdmask_torch.groups(m, presets.standard), repeats[n])
        assert sum(len(g["params"]) for g in groups) == n
        torch_times.append(t)
    mid = models[sizes[1]]
    rows = _scaling_rows("torch groups (describe+decide)", sizes, torch_times, "tensors",
                         lambda: hotspots(lambda: wdmask_torch.groups(mid, presets.standard)), quick)
    big = models[sizes[-1]]
    assert [len(g["params"]) for g in hand_split(big)] == [len(g["params"]) for g in
                                                           wdmask_torch.groups(big, presets.standard)]
    rows.append(floor_row("torch groups", sizes[-1], "tensors", lambda: wdmask_torch.groups(big, presets.standard),
                          lambda: hand_split(big), "one-pass `ndim <= 1` split of named_parameters()", 8.0,
                          rounds=3 if quick else 5))
    rows.append(floor_row("torch groups", sizes[-1], "tensors", lambda: wdmask_torch.groups(big, presets.standard),
                          lambda: hand_split(big), "one-pass `ndim <= 1` split of named_parameters()", 8.0,
                          rounds=3 if quick else 5, collector=True))
    models.clear()

    jax_times = []
    trees = {}
    for n in sizes:
        trees[n] = pytree_stack(n)
        if n == sizes[0]:
            wdmask.mask(trees[n], presets.standard)  # warm-up
        t, _, _ = timed(lambda tree=trees[n]: wdmask.mask(tree, presets.standard), repeats[n])
        jax_times.append(t)
    mid_tree = trees[sizes[1]]
    rows += _scaling_rows("jax mask (describe+decide)", sizes, jax_times, "leaves",
                          lambda: hotspots(lambda: wdmask.mask(mid_tree, presets.standard)), quick)
    big_tree = trees[sizes[-1]]
    assert wdmask.mask(big_tree, presets.standard) == hand_mask(big_tree)  # same answer: a fair floor
    row = floor_row("jax mask", sizes[-1], "leaves", lambda: wdmask.mask(big_tree, presets.standard),
                    lambda: hand_mask(big_tree), "tree_map_with_path(lambda path, x: x.ndim > 1)", 2.0,
                    rounds=3 if quick else 5)
    if row.met is False and not quick:
        row.note += f"; profile at {sizes[-1]:,}: {hotspots(lambda: wdmask.mask(big_tree, presets.standard))}"
    rows.append(row)
    rows.append(floor_row("jax mask", sizes[-1], "leaves", lambda: wdmask.mask(big_tree, presets.standard),
                          lambda: hand_mask(big_tree), "tree_map_with_path(lambda path, x: x.ndim > 1)", 2.0,
                          rounds=3 if quick else 5, collector=True))
    return rows
