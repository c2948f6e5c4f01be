"""3. Optimizer construction: ``torch.optim.SGD(wdmask_torch.groups(model))`` vs one group per parameter.

Model: the ``Linear + LayerNorm`` stack of ``_common.torch_stack`` (d = 4) with 5,000 and 20,000
tensors. The wdmask time includes describe + decide + grouping + the constructor; the per-param
time is the constructor given a ready list ``[{"params": [p], "weight_decay": wd}, ...]`` (unnamed,
as mmengine builds it; named tuples are slower still). ``add_param_group`` rebuilds a set of every
earlier group's params, so per-param construction is quadratic: it is measured at 1,250, 2,500
and 5,000 tensors (best of 2) and, at 20,000, extrapolated from a least-squares fit ``t = a·n² + b·n`` to those
three points (measuring it would take minutes).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import Row, fmt_time, timed, torch_stack

SECTION = "3 construction"
WEIGHT_DECAY = 1e-4


def per_param_seconds(model: Any, n: int) -> float:
    """Seconds to construct SGD with one group per parameter, for the first ``n`` parameters of ``model``."""
    import torch

    params = [p for _, p in zip(range(n), model.parameters(), strict=False)]
    groups = [{"params": [p], "weight_decay": WEIGHT_DECAY} for p in params]
    t = time.perf_counter()
    torch.optim.SGD(groups, lr=0.1)
    return time.perf_counter() - t


def wdmask_seconds(model: Any, repeats: int) -> float:
    import torch

    import wdmask_torch
    from wdmask import presets

    seconds, _, opt = timed(lambda: torch.optim.SGD(wdmask_torch.groups(model, presets.standard), lr=0.1,
                                                   weight_decay=WEIGHT_DECAY), repeats)
    assert len(opt.param_groups) == 2
    return seconds


def fit_quadratic(ns: list[int], ts: list[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``t = a·n² + b·n`` (no constant: zero groups cost nothing)."""
    import numpy as np

    design = np.array([[n * n, n] for n in ns], dtype=float)
    (a, b), *_ = np.linalg.lstsq(design, np.array(ts, dtype=float), rcond=None)
    return float(a), float(b)


def run(quick: bool = False) -> list[Row]:
    small, large = (1000, 4000) if quick else (5000, 20000)
    repeats = 3
    model_large = torch_stack(large, 4)
    model_small = torch_stack(small, 4)
    wdmask_seconds(model_small, 1)  # warm-up (imports, caches)
    w_small = wdmask_seconds(model_small, repeats)
    w_large = wdmask_seconds(model_large, repeats)

    fit_ns = [small // 4, small // 2, small]
    fit_ts = [min(per_param_seconds(model_small, n) for _ in range(1 if quick else 2)) for n in fit_ns]
    p_small = fit_ts[-1]
    a, b = fit_quadratic(fit_ns, fit_ts)
    p_large = a * large * large + b * large
    fit_text = f"t = {a:.3g}·n² + {b:.3g}·n fitted to per-param at {', '.join(f'{n:,}' for n in fit_ns)}"
    linear = w_large / w_small
    scale = large // small
    return [
        Row(SECTION, f"{small:,} tensors: per-param / wdmask", f"{fmt_time(p_small)} vs {fmt_time(w_small)}",
            p_small / w_small, "per-param construction / wdmask groups+construction", "report", None,
            f"per-param best of {1 if quick else 2}; wdmask best of {repeats}"),
        Row(SECTION, f"{large:,} tensors: per-param / wdmask", f"{fmt_time(p_large)} (extrapolated) vs "
            f"{fmt_time(w_large)}", p_large / w_large, "per-param construction / wdmask groups+construction",
            "≥ 100", p_large / w_large >= 100, f"per-param extrapolated: {fit_text}"),
        Row(SECTION, f"wdmask linear: time({large // 1000}k) / time({small // 1000}k)",
            f"{fmt_time(w_large)} / {fmt_time(w_small)}", linear, f"{scale}x tensors",
            f"≈ {scale} (≤ {scale * 1.25:g})", linear <= scale * 1.25, f"best of {repeats}"),
    ]
