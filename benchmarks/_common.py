"""Shared pieces of the benchmarks: result rows, interleaved timing, synthetic models."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

#: Keeps glibc from returning freed pages to the OS (and re-faulting them on the next step): without it,
#: CPU AdamW timings are dominated by page faults. Set for the torch-step subprocess.
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"


@dataclass
class Row:
    """One line of the results table.

    ``ratio`` is a dimensionless figure whose meaning ``against`` states (e.g. ``wdmask / single group``
    step time, or ``per-param / wdmask`` speed-up); ``met`` is ``None`` where there is no goal.
    """

    section: str
    measurement: str
    value: str
    ratio: float | None = None
    against: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def interleaved(fns: dict[str, Callable[[], Any]], *, rounds: int, reps: int = 1,
                collector: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` samples each, taken in rotating order (A B C, B C A, ...).

    Each sample is the mean over ``reps`` back-to-back calls; the garbage collector is off while timing
    (``collector=True``: on, as a program runs, after a full collection before each sample).
    Rotating the order puts every contender in every slot, so a slow drift of the (shared, noisy)
    machine hits all of them alike; compare with ``paired_ratio`` (median of per-round ratios).
    """
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(names)
            for k in names[shift:] + names[:shift]:
                fn = fns[k]
                if collector:
                    gc.collect()
                    gc.enable()
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                out[k].append((time.perf_counter() - t) / reps)
                gc.disable()
    finally:
        if was_enabled:
            gc.enable()
    return out


def paired_ratio(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``time(a) / time(b)`` measured in the same round."""
    return median([x / y for x, y in zip(samples[a], samples[b], strict=True)])


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """``(min, median)`` wall time of ``repeats`` calls (gc collected before each, off during) and the last result.

    For deterministic CPU-bound work on a shared machine the minimum is the least disturbed estimate.
    """
    times = []
    result = None
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        finally:
            gc.enable()
    return min(times), median(times), result


def torch_stack(n_tensors: int, d: int, device: str | None = None) -> Any:
    """A deep stack of ``n_tensors // 4`` small ``Linear(d, d) + LayerNorm(d)`` blocks (4 tensors each).

    The shape of a large transformer's parameter list: thousands of small tensors, half of them
    norm scales/shifts and biases (no decay under ``presets.standard``), a quarter kernels.
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(d, d)
            self.ln = nn.LayerNorm(d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.ln(self.fc(x))

    with torch.device(device or "cpu"):
        return nn.Sequential(*[Block() for _ in range(n_tensors // 4)])


def pytree_stack(n_leaves: int, d: int = 8) -> dict[str, Any]:
    """Nested-dict params of ``n_leaves // 4`` Flax-auto-named blocks, ``jax.ShapeDtypeStruct`` leaves."""
    import jax
    import jax.numpy as jnp

    def sds(*shape: int) -> Any:
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    return {f"Block_{i}": {"Dense_0": {"kernel": sds(d, d), "bias": sds(d)},
                           "LayerNorm_0": {"scale": sds(d), "bias": sds(d)}}
            for i in range(n_leaves // 4)}


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
