"""The ``wdmask`` command: ``explain``, ``check``, ``demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wdmask import _config, _engine, _examples, presets
from wdmask._errors import RuleError
from wdmask._rules import Rules


def _rules_from(args: argparse.Namespace) -> Rules:
    return _config.load(args.rules) if args.rules else presets.by_name(args.preset)


def _explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    inventory = _examples.EXAMPLES[args.example]()
    Console().print(_engine.explain_inventory(inventory, _rules_from(args), strict=args.strict))
    return 0


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    failed = 0
    for path in args.files:
        try:
            rules = _config.load(path)
        except RuleError as e:
            console.print(f"[red]error[/red] {e}", markup=True, highlight=False)
            failed += 1
            continue
        console.print(f"[green]ok[/green] {path}: {len(rules)} rule(s)", highlight=False)
        if args.example:
            console.print(_engine.explain_inventory(_examples.EXAMPLES[args.example](), rules))
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    import importlib.util

    from wdmask._dispatch import run_demo

    missing = [m for m in ("torch", "jax", "flax", "optax") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"wdmask demo needs torch, jax, flax and optax (missing: {', '.join(missing)}): "
                         "pip install 'wdmask[jax,torch]'")
    run_demo(steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wdmask`` command."""
    parser = argparse.ArgumentParser(prog="wdmask", description="Per-parameter weight decay decisions.")
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="explain decisions for a bundled example model")
    explain.add_argument("--preset", default="standard", choices=presets.names)
    explain.add_argument("--rules", help="a rules file (.toml, .json, .yaml); overrides --preset")
    explain.add_argument("--example", default="resnet", choices=sorted(_examples.EXAMPLES))
    explain.add_argument("--strict", action="store_true", help="fail when a rule matches nothing")
    explain.set_defaults(func=_explain)

    check = sub.add_parser("check", help="validate rules files")
    check.add_argument("files", nargs="+")
    check.add_argument("--example", choices=sorted(_examples.EXAMPLES), help="also explain on an example model")
    check.set_defaults(func=_check)

    demo = sub.add_parser("demo", help="torch vs Flax ResNet: decisions side by side and parity steps")
    demo.add_argument("--steps", type=int, default=5)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wdmask`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RuleError as e:
        print(f"wdmask: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
