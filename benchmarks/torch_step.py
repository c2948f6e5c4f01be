"""2. torch ``optimizer.step()`` overhead: wdmask groups vs one single group vs one group per parameter.

Models: (a) the ResNet-50 of ``wdmask_torch.models`` (161 tensors; width 32, i.e. ~5.9M parameters, so
CPU steps stay short) and (b) a stack of 1,250 ``Linear(32, 32) + LayerNorm(32)`` blocks (5,000
tensors). Optimizers: SGD (momentum 0.9) and AdamW, each with ``foreach=True`` and ``fused=True``.
Layouts, sharing the same parameter tensors and gradients (each optimizer has its own state):

* ``wdmask``: ``wdmask_torch.groups(model, presets.standard, weight_decay=wd)`` (2 groups);
* ``single``: one group with every parameter (the floor: one multi-tensor call per step);
* ``per-param``: one group per parameter, as config-driven trainers (mmengine ``paramwise_cfg``) build;
* ``two groups``: plain torch, no wdmask: the 1-D tensors (no decay) then the rest, i.e. the split wdmask builds
  for these models; ``two groups, same wd``: that split with one weight decay for both. torch's foreach and
  fused steps run once per param group (``_init_group`` and one multi-tensor/fused call each), so
  ``two groups / single`` is the floor of any two-group layout, wdmask or not; ``wdmask / two groups`` is
  what wdmask adds on top (nothing: the same groups).

Runs in a subprocess with ``GLIBC_TUNABLES`` set (see ``_common.GLIBC_TUNABLES``) and a fixed
number of torch threads; ratios are medians of per-round ratios over interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import GLIBC_TUNABLES, Row, fmt_time, interleaved, median, paired_ratio, set_torch_threads

SECTION = "2 torch step"


def models(quick: bool) -> dict[str, Any]:
    import torch

    from benchmarks._common import torch_stack
    from wdmask_torch.models import resnet50

    torch.manual_seed(0)
    return {
        "(a) ResNet-50": lambda: resnet50(num_classes=1000, width=16 if quick else 32),
        f"(b) {2 if quick else 5}k small": lambda: torch_stack(2000 if quick else 5000, 32),
    }


def optimizers() -> dict[str, tuple[Any, dict[str, Any], float]]:
    import torch

    return {"SGD momentum": (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}, 1e-4),
            "AdamW": (torch.optim.AdamW, {"lr": 1e-4}, 1e-2)}


def layouts(model: Any, wd: float) -> dict[str, list[dict[str, Any]]]:
    import wdmask_torch
    from wdmask import presets

    params = [p for p in model.parameters() if p.requires_grad]
    low = [p for p in params if p.ndim <= 1]
    high = [p for p in params if p.ndim > 1]
    return {
        "wdmask": wdmask_torch.groups(model, presets.standard, weight_decay=wd),
        "single": [{"params": params, "weight_decay": wd}],
        "per-param": [{"params": [p], "weight_decay": wd} for p in params],
        # plain torch, no wdmask: the same two groups as wdmask builds for these models (1-D tensors = norm
        # params and biases first, with no decay), and the same split with one weight decay for both groups
        "two groups": [{"params": low, "weight_decay": 0.0}, {"params": high, "weight_decay": wd}],
        "two groups, same wd": [{"params": low, "weight_decay": wd}, {"params": high, "weight_decay": wd}],
    }


def measure(quick: bool, threads: int) -> list[Row]:
    import torch

    set_torch_threads(threads)
    rounds, reps = (5, 1) if quick else (20, 2)
    rows = []
    for model_name, make in models(quick).items():
        model = make()
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        n = len(params)
        for opt_name, (cls, kw, wd) in optimizers().items():
            for impl in ("foreach", "fused"):
                opts = {k: cls(g, **kw, **{impl: True}) for k, g in layouts(model, wd).items()}
                for o in opts.values():  # allocate state, warm up
                    o.step()
                    o.step()
                n_groups = len(opts["wdmask"].param_groups)
                samples = interleaved({k: o.step for k, o in opts.items()}, rounds=rounds, reps=reps)
                vs_single = paired_ratio(samples, "wdmask", "single")
                speedup = paired_ratio(samples, "per-param", "wdmask")
                times = " / ".join(fmt_time(median(samples[k])) for k in ("wdmask", "single", "per-param"))
                label = f"{model_name} ({n} tensors), {opt_name}, {impl}"
                note = f"{n_groups} wdmask groups; step wdmask / single / per-param = {times}"
                rows.append(Row(SECTION, f"{label}: vs single group", fmt_time(median(samples["wdmask"])),
                                vs_single, "wdmask / single group", "≤ 1.05", vs_single <= 1.05, note))
                if model_name.startswith("(b)"):
                    rows.append(Row(SECTION, f"{label}: vs per-param groups", fmt_time(median(samples["per-param"])),
                                    speedup, "per-param / wdmask", "≥ 3", speedup >= 3.0))
                    floor = paired_ratio(samples, "two groups", "single")
                    same = paired_ratio(samples, "two groups, same wd", "single")
                    rows.append(Row(SECTION, f"{label}: plain torch, 2 groups vs 1", fmt_time(median(samples[
                        "two groups"])), floor, "plain 2 groups / single group", "report (floor of any 2 groups)",
                        None, f"same split, one weight decay for both groups: {same:.3f}"))
                    own = paired_ratio(samples, "wdmask", "two groups")
                    rows.append(Row(SECTION, f"{label}: wdmask vs plain 2 groups", fmt_time(median(samples[
                        "wdmask"])), own, "wdmask / plain 2 groups", "≤ 1.05", own <= 1.05))
                else:
                    rows.append(Row(SECTION, f"{label}: vs per-param groups", fmt_time(median(samples["per-param"])),
                                    speedup, "per-param / wdmask", "report", None))
                del opts
        del model, params
    return rows


def run(quick: bool = False, threads: int = 1) -> list[Row]:
    """Run ``measure`` in a subprocess with ``GLIBC_TUNABLES`` set; the child prints JSON rows."""
    env = dict(os.environ, GLIBC_TUNABLES=GLIBC_TUNABLES)
    cmd = [sys.executable, "-m", "benchmarks.torch_step", "--child", "--threads", str(threads)]
    if quick:
        cmd.append("--quick")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"torch step subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return [Row(**r) for r in data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help="measure in this process and print JSON rows")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        if os.environ.get("GLIBC_TUNABLES") != GLIBC_TUNABLES:
            print("warning: GLIBC_TUNABLES is not set as the benchmark expects", file=sys.stderr)
        rows = measure(args.quick, args.threads)
        print(json.dumps([r.as_dict() for r in rows]))
    else:
        for r in run(args.quick, args.threads):
            print(r)


if __name__ == "__main__":
    main()
