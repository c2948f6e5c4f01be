"""The ``wdmask`` command: ``explain``, ``check``, ``demo``.

Output goes through rich, but user text (paths, reasons, ``why``, error messages) is never read as
markup; warnings print as one ``wdmask: warning: ...`` line on stderr. Exit codes: 0 ok, 1 a rule or
decision problem, 2 a usage error (see ``EPILOG``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from wdmask import _config, _engine, _examples, presets
from wdmask._errors import MaskError, RuleError, UnclassifiedWarning, UnmatchedRuleWarning
from wdmask._rules import Rules

START = time.time()  # when this module was imported: the demo's clock when /proc is not available

EPILOG = """\
exit codes:
  0  ok
  1  a rule or decision problem: an invalid rules file, a rule that matches nothing under --strict,
     a decision made on a guess under --strict
  2  a usage error: unknown option, a MODULE:CALLABLE that cannot be imported or called, or whose
     result is not a model wdmask can describe
"""


class UsageError(Exception):
    """A command-line mistake: printed as ``wdmask: error: ...``, exit code 2."""


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _error(message: str) -> None:
    """``wdmask: error: <message>`` on stderr, the message printed verbatim (never as markup)."""
    from rich.text import Text

    _console(stderr=True).print(Text(f"wdmask: error: {message}"), soft_wrap=True)


@contextmanager
def _readable_warnings() -> Iterator[None]:
    """Print each warning raised inside as one line ``wdmask: warning: <message>`` on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        # wdmask's own warnings every time (even where a test config makes them errors); others by the usual filters
        warnings.simplefilter("always", UnmatchedRuleWarning)
        warnings.simplefilter("always", UnclassifiedWarning)
        try:
            yield
        finally:
            from rich.text import Text

            console = _console(stderr=True)
            seen: set[str] = set()
            for w in caught:
                text = " ".join(str(w.message).split())
                if text not in seen:
                    seen.add(text)
                    console.print(Text(f"wdmask: warning: {text}"), soft_wrap=True)


def _rules_from(args: argparse.Namespace) -> Rules:
    return _config.load(args.rules) if args.rules else presets.by_name(args.preset)


def load_target(target: str) -> Any:
    """Import ``MODULE:CALLABLE`` (from the current directory first, as ``uvicorn app:make`` does) and call it.

    Raises:
      UsageError: the target is malformed, cannot be imported, is not callable, or its call raised.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"MODULE:CALLABLE expected, got {target!r}; e.g. `wdmask explain mymodels:make_model` "
                         "with a function make_model() in mymodels.py that returns the model")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import module {module_name!r} of {target!r}: {e}; run wdmask from the directory "
                         "that holds it, or put that directory on PYTHONPATH") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r} (from {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{target!r} is not callable (it is of type {type(obj).__name__}); it must be a function "
                         "(or class) that takes no arguments and returns the model")
    try:
        return obj()
    except Exception as e:
        raise UsageError(f"calling {target}() raised {type(e).__name__}: {e}\n"
                         + "".join(traceback.format_exception(e)).rstrip()) from e


def describe_target(built: Any, target: str) -> list[Any]:
    """The inventory of what a target returned: a model, a params pytree, or a ``(model, sample)`` pair."""
    from wdmask._dispatch import _is_torch_module, describe_any

    model, options = built, {}
    if isinstance(built, tuple) and len(built) == 2 and not _is_params_tuple(built):
        model, sample = built
        options = {"example_inputs": sample} if _is_torch_module(model) else {"sample": sample}
    try:
        return describe_any(model, **options)
    except RuleError:
        raise
    except (TypeError, ValueError) as e:  # MaskError too: not a model or a params pytree
        raise UsageError(f"{target}() returned {type(built).__name__}, which wdmask cannot describe: {e}; return a "
                         "torch module, a Flax linen/NNX/Equinox model or params pytree, or (model, sample)") from e


def _is_params_tuple(obj: tuple[Any, ...]) -> bool:
    """A pair that is itself a pytree of arrays (not ``(model, sample)``): both halves are dicts."""
    return all(isinstance(o, dict) for o in obj)


def _explain(args: argparse.Namespace) -> int:
    if args.target and args.example:
        raise UsageError("give either MODULE:CALLABLE or --example, not both")
    rules = _rules_from(args)
    if args.target:
        inventory = describe_target(load_target(args.target), args.target)
    else:
        inventory = _examples.EXAMPLES[args.example or "resnet"]()
    _console().print(_engine.explain_inventory(inventory, rules, strict=args.strict))
    return 0


def _check(args: argparse.Namespace) -> int:
    from rich.text import Text

    console = _console()
    failed = 0
    for path in args.files:
        try:
            rules = _config.load(path)
        except RuleError as e:
            console.print(Text.assemble(("error", "red"), f" {e}"), soft_wrap=True)
            failed += 1
            continue
        console.print(Text.assemble(("ok", "green"), f" {path}: {len(rules)} rule(s)"), soft_wrap=True)
        if args.example:
            console.print(_engine.explain_inventory(_examples.EXAMPLES[args.example](), rules))
    return 1 if failed else 0


def process_start() -> float:
    """Wall-clock time (``time.time()``) at which this process started; ``START`` where /proc is missing."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22: start time in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return START


def _demo(args: argparse.Namespace) -> int:
    import importlib.util

    from wdmask._dispatch import run_demo

    missing = [m for m in ("torch", "jax", "flax", "optax") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"wdmask demo needs torch, jax, flax and optax (missing: {', '.join(missing)}): "
                         "pip install torch==2.13.0 'wdmask[jax]' (CPU torch first)")
    run_demo(steps=args.steps, start=process_start())
    return 0


def _steps(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wdmask`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="wdmask", description="Per-parameter weight decay decisions.",
                                     epilog=EPILOG, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    explain = sub.add_parser(
        "explain", epilog=EPILOG, formatter_class=fmt,
        help="explain the decision for every parameter of your model (or a bundled example)",
        description="Print, for every parameter, its layer kind, role, shape, whether it is decayed, the "
                    "winning rule and why. MODULE:CALLABLE is imported from the current directory (like "
                    "`uvicorn app:make`) and called with no arguments; it returns a torch module, a Flax "
                    "linen/NNX/Equinox model or params pytree, or a (model, sample) pair: a linen module "
                    "needs its sample inputs, and a sample also makes feeds_norm known (torch example inputs "
                    "too). torch is imported only if the callable returns a torch module.")
    explain.add_argument("target", nargs="?", metavar="MODULE:CALLABLE",
                         help="e.g. mymodels:make_model; omitted: the bundled --example")
    choice = explain.add_mutually_exclusive_group()
    choice.add_argument("--preset", default="standard", choices=presets.names, metavar="NAME",
                        help=f"a bundled rule set (default: standard); one of: {', '.join(presets.names)}")
    choice.add_argument("--rules", metavar="FILE", help="a rules file (.toml, .json, .yaml) instead of a preset")
    explain.add_argument("--example", choices=sorted(_examples.EXAMPLES),
                         help="a bundled example model instead of MODULE:CALLABLE (default: resnet)")
    explain.add_argument("--strict", action="store_true",
                         help="exit 1 when a rule matches no parameter or a decision rests on a guess")
    explain.set_defaults(func=_explain)

    check = sub.add_parser("check", epilog=EPILOG, formatter_class=fmt, help="validate rules files",
                           description="Load each rules file and report ok or the first problem in it.")
    check.add_argument("files", nargs="+", metavar="FILE", help="rules files (.toml, .json, .yaml)")
    check.add_argument("--example", choices=sorted(_examples.EXAMPLES),
                       help="also explain each valid file's rules on this bundled example model")
    check.set_defaults(func=_check)

    demo = sub.add_parser("demo", epilog=EPILOG, formatter_class=fmt,
                          help="torch vs Flax ResNet: decisions side by side and parity steps",
                          description="Build twin ResNets in PyTorch and Flax, show that both frameworks decide "
                                      "the same, then train both in float64 and print how far apart they are.")
    demo.add_argument("--steps", type=_steps, default=5, metavar="N", help="training steps on both sides (default 5)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wdmask`` console script; returns the exit code (0 ok, 1 rule problem, 2 usage)."""
    args = build_parser().parse_args(argv)
    try:
        with _readable_warnings():
            return int(args.func(args))
    except (RuleError, MaskError) as e:
        _error(str(e))
        return 1
    except UsageError as e:
        _error(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
