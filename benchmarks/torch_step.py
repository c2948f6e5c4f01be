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

Per-parameter policy (issue #24 item 6: "torch steps with wdmask's groups within 1.05 of the same groups written
by hand"), on a GPT-2-style decoder (``usage_torch.gpt2``: HF ``Conv1D`` projections, tied head; 6 blocks,
d = 384 (12 heads); 2 blocks, d = 192 with ``--quick``):

* ``standard + layer_decay(0.8)``, AdamW (foreach): ``wdmask_torch.groups(..., weight_decay=, lr=)`` against the
  same (weight decay, lr) groups written by hand from names as MAE's ``param_groups_lrd`` does;
* ``standard + muon``: ``wdmask_torch.optimizers`` (Muon for the blocks' matrices, AdamW for the rest, one
  ``Optimizers`` stepping both) against a hand-built ``torch.optim.Muon`` + ``torch.optim.AdamW`` pair stepped
  one after the other. Both layouts are checked to give every parameter the same settings before timing.

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
    return rows + policy_rows(quick)


GPT_BLOCKS = 6


def _hand_layer_decay(model: Any, wd: float, lr: float, decay: float) -> list[dict[str, Any]]:
    """MAE-style ``param_groups_lrd`` for GPT names, by hand: layer id 0 for the embeddings, ``i + 1`` for
    ``h.i``, ``n + 1`` after; no decay for 1-D tensors and the position table; ``lr = lr * decay ** (n + 1 - id)``."""
    n = len(model.h)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        layer = 0 if name.startswith(("wte", "wpe")) else int(name.split(".")[1]) + 1 if name.startswith("h.") \
            else n + 1
        decayed = p.ndim >= 2 and name != "wpe.weight"
        g = groups.setdefault((layer, decayed), {"params": [], "weight_decay": wd if decayed else 0.0,
                                                 "lr": lr * decay ** (n + 1 - layer)})
        g["params"].append(p)
    return list(groups.values())


def _hand_muon(model: Any, wd: float, lr: float) -> list[Any]:
    """Muon for the 2-D matrices inside the blocks, AdamW for the rest (decay only on the token table)."""
    import torch

    named = list(model.named_parameters())
    hidden = [p for n, p in named if n.startswith("h.") and p.ndim == 2]
    decayed = [p for n, p in named if n == "wte.weight"]
    rest = [p for n, p in named if not (n.startswith("h.") and p.ndim == 2) and n != "wte.weight"]
    return [torch.optim.Muon([{"params": hidden, "weight_decay": wd}], lr=lr),
            torch.optim.AdamW([{"params": rest, "weight_decay": 0.0}, {"params": decayed, "weight_decay": wd}],
                              lr=lr, foreach=True)]


def _settings(optimizers: list[Any]) -> dict[int, tuple[str, float, float]]:
    return {id(p): (type(o).__name__, g["weight_decay"], g["lr"]) for o in optimizers for g in o.param_groups
            for p in g["params"]}


def policy_rows(quick: bool) -> list[Row]:
    """Steps with wdmask's policy groups vs the same groups written by hand (GPT-2-style decoder)."""
    import torch

    import wdmask_torch
    from benchmarks.usage_torch import gpt2
    from wdmask import presets

    rounds, reps = (5, 1) if quick else (20, 2)
    torch.manual_seed(0)
    model = gpt2(layers=2 if quick else GPT_BLOCKS, d=192 if quick else 384, vocab=4096, ctx=128)
    ids = torch.zeros(2, 16, dtype=torch.long)
    params = list(model.parameters())
    for p in params:
        torch.nn.init.normal_(p, std=0.02)
        p.grad = torch.randn_like(p) * 1e-3
    n = len(params)
    wd, lr = 0.1, 1e-3
    ld = wdmask_torch.groups(model, presets.standard + presets.layer_decay(0.8), weight_decay=wd, lr=lr,
                             example_inputs=ids)
    cases = {
        "standard + layer_decay(0.8), AdamW foreach": (
            [torch.optim.AdamW(ld, lr=lr, foreach=True)],
            [torch.optim.AdamW(_hand_layer_decay(model, wd, lr, 0.8), lr=lr, foreach=True)]),
        "standard + muon, Muon + AdamW": (
            list(wdmask_torch.optimizers(model, presets.standard + presets.muon, {
                "muon": lambda g: torch.optim.Muon(g, lr=lr),
                "adamw": lambda g: torch.optim.AdamW(g, lr=lr, foreach=True)},
                weight_decay=wd, lr=lr, example_inputs=ids).optimizers.values()),
            _hand_muon(model, wd, lr)),
    }
    rows = []
    for label, (ours, hand) in cases.items():
        if _settings(ours) != _settings(hand):
            raise AssertionError(f"{label}: wdmask's groups and the hand-written ones differ")

        def step(opts: list[Any] = ours) -> None:
            for o in opts:
                o.step()

        def step_hand(opts: list[Any] = hand) -> None:
            for o in opts:
                o.step()

        for _ in range(2):  # allocate state, warm up
            step(), step_hand()
        samples = interleaved({"wdmask": step, "hand": step_hand}, rounds=rounds, reps=reps)
        ratio = paired_ratio(samples, "wdmask", "hand")
        groups = sum(len(o.param_groups) for o in ours)
        rows.append(Row(SECTION, f"GPT-2-style ({len(model.h)} blocks, {n} tensors), {label}: vs same groups by hand",
                        fmt_time(median(samples["wdmask"])), ratio, "wdmask / hand-written groups", "≤ 1.05",
                        ratio <= 1.05, f"{groups} groups in {len(ours)} optimizer(s); step wdmask / hand = "
                                       f"{fmt_time(median(samples['wdmask']))} / {fmt_time(median(samples['hand']))}"))
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
