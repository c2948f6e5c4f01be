"""Run every benchmark, print one table, optionally write JSON and a Markdown fragment."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import GLIBC_TUNABLES, Row, fmt_time

MODULES = ("jax_step", "torch_step", "construction", "scaling", "memory", "usage_torch", "usage_jax")


def machine(threads: int) -> dict[str, Any]:
    import flax
    import jax
    import optax
    import torch

    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "torch": torch.__version__, "torch_threads": threads,
        "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
        "torch_step_env": f"GLIBC_TUNABLES={GLIBC_TUNABLES}",
    }


def num(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_ratio(r: Row) -> str:
    if r.ratio is None:
        return r.against
    return f"{num(r.ratio)} ({r.against})"


def fmt_met(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def table(rows: list[Row], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in ("#", "measurement", "value", "ratio", "goal", "met?"):
        t.add_column(col, overflow="fold")
    last = None
    for r in rows:
        t.add_row(r.section if r.section != last else "", r.measurement, r.value, fmt_ratio(r), r.goal,
                  fmt_met(r.met), end_section=False)
        last = r.section
    return t


def markdown(rows: list[Row], info: dict[str, Any], seconds: float, quick: bool) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [
        "## Performance",
        "",
        f"Measured with `python -m benchmarks{' --quick' if quick else ''}` (whole run {seconds / 60:.1f} min). "
        f"Machine: {info['cpus']}-core CPU, shared and noisy (load average {info['load_average'][0]:.1f} at the end "
        f"of the run), torch {info['torch']} ({info['torch_threads']} thread), jax {info['jax']}, "
        f"flax {info['flax']}, optax {info['optax']}. The torch step timings run in a subprocess with "
        f"`{info['torch_step_env']}` (else CPU AdamW is dominated by allocator page faults). Every ratio is "
        "taken within one run: step times and the section-4 build rows as the median of per-round ratios over "
        "interleaved rounds; the section-3 construction times as the best of several calls.",
        "",
        "| # | measurement | value | ratio | against | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else num(r.ratio)
        lines.append(f"| {r.section.split()[0]} | {cell(r.measurement)} | {cell(r.value)} | {ratio} | "
                     f"{cell(r.against)} | {cell(r.goal)} | {fmt_met(r.met)} |")
    notes = [r for r in rows if r.note]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {cell(r.measurement)}: {cell(r.note)}" for r in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds (~1 minute)")
    parser.add_argument("--json", type=Path, help="write rows and machine info as JSON to this file")
    parser.add_argument("--markdown", type=Path, help="write a README fragment (Markdown table) to this file")
    parser.add_argument("--only", nargs="+", choices=MODULES, help="run only these measurements")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 200)
    start = time.perf_counter()
    rows: list[Row] = []
    failures: list[str] = []
    for name in args.only or MODULES:
        mod = importlib.import_module(f"benchmarks.{name}")
        t = time.perf_counter()
        with console.status(f"running {name} ..."):
            try:
                kwargs: dict[str, Any] = {"threads": args.threads} if name == "torch_step" else {}
                if name in ("torch_step", "construction", "scaling", "usage_torch"):
                    from benchmarks._common import set_torch_threads

                    set_torch_threads(args.threads)
                got = mod.run(quick=args.quick, **kwargs)
            except Exception as e:  # report and go on: one broken measurement should not hide the others
                failures.append(f"{name}: {type(e).__name__}: {e}")
                got = [Row(mod.SECTION, f"{name} FAILED", f"{type(e).__name__}: {str(e)[:200]}", met=False)]
        console.print(f"{name}: {fmt_time(time.perf_counter() - t)}")
        rows += got
    seconds = time.perf_counter() - start
    info = machine(args.threads)
    title = (f"wdmask benchmarks{' (quick)' if args.quick else ''}: {info['cpus']}-core CPU, torch "
             f"{info['torch_threads']} thread; torch step run with GLIBC_TUNABLES set; total {fmt_time(seconds)}")
    console.print(table(rows, title))
    for r in rows:
        if r.note:
            console.print(f"[dim]- {r.measurement}: {r.note}[/dim]")
    missed = [r for r in rows if r.met is False]
    console.print(f"goals met: {sum(r.met is True for r in rows)}, missed: {len(missed)}, "
                  f"no goal: {sum(r.met is None for r in rows)}; total {fmt_time(seconds)}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "seconds": seconds, "quick": args.quick,
                                         "rows": [r.as_dict() for r in rows], "failures": failures}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(rows, info, seconds, args.quick))
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
