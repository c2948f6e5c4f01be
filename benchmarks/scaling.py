"""4. Build-time scaling: describe + decide for 1k, 10k and 100k parameters (torch) and leaves (pytree).

* torch: ``wdmask_torch.groups(model, presets.standard)`` (describe, decide, bucket) on a
  ``Linear + LayerNorm`` stack built on the ``meta`` device (no storage; describe runs no forward);
* JAX: ``wdmask.mask(params, presets.standard)`` on a nested dict of ``jax.ShapeDtypeStruct``
  leaves with Flax auto-names (``Block_i/Dense_0/kernel``, ``LayerNorm_0/scale``, ...).

Reports the best-of-N time per size and each 10x step's time ratio. When a goal is missed, a
cProfile of the middle size names the top functions by own time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable
from typing import Any

from benchmarks._common import Row, fmt_time, pytree_stack, timed, torch_stack

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
        met = r <= 12.0
        missed = missed or not met
        rows.append(Row(SECTION, f"{label}: {n0:,} -> {n1:,} {unit}", f"{fmt_time(t0)} -> {fmt_time(t1)}", r,
                        "time ratio for 10x size", "≤ 12", met))
    if missed and not quick:
        rows[-1].note = f"profile at {sizes[1]:,}: {profile()}"
    return rows


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
    return rows
