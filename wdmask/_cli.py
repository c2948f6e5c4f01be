"""The ``wdmask`` command: ``explain``, ``check``, ``demo`` (also ``python -m wdmask``).

Output goes through rich and fits the terminal (``COLUMNS``): ``explain`` and ``demo`` fold parameters decided
alike into one row each unless ``--full``. User text (paths, reasons, ``why``, error messages) is never read as
markup; wdmask's own warnings print as one ``wdmask: warning: ...`` line on stderr, other libraries' warnings
as those libraries print them. Exit codes: 0 ok, 1 a rule or decision problem, 2 a usage error, 3 the
model raised on its own sample (``EPILOG``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from wdmask import _config, _engine, _examples, presets
from wdmask._errors import MaskError, RuleError, UnclassifiedWarning, UnmatchedRuleWarning
from wdmask._optional import MissingDependencyError, install_hint
from wdmask._rules import Rules

START = time.time()  # when this module was imported: the demo's clock when /proc is not available

#: Printed under every ``--help``; each code's text is one line here, wrapped to the terminal by ``_Formatter``.
EPILOG = "\n".join([
    "exit codes:",
    "  0  ok",
    "  1  a rule or decision problem: an invalid rules file, a rule that matches nothing under --strict, a "
    "decision made on a guess under --strict",
    "  2  a usage error: an unknown option, a missing MODULE:CALLABLE, one that cannot be imported or called, or "
    "whose result is not a model wdmask can describe (None included), or a missing optional dependency",
    "  3  the model raised on its own sample: its error is printed, without a traceback",
])


class _Formatter(argparse.HelpFormatter):
    """Wraps every paragraph to the terminal (never inside a word); keeps the line breaks of a text, and
    indents an indented line's continuation under its text (the exit-code list)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for line in text.splitlines():
            body = line.lstrip(" ")
            lead = indent + " " * (len(line) - len(body))
            code, gap, rest = body.partition("  ")
            hang = lead + " " * (len(code) + len(gap)) if gap and rest and len(code) <= 3 else lead
            out.append(textwrap.fill(body, width, initial_indent=lead, subsequent_indent=hang,
                                     break_long_words=False, break_on_hyphens=False) if body else "")
        return "\n".join(out)


class UsageError(Exception):
    """A command-line mistake: printed as ``wdmask: error: ...``, exit code 2."""


class ModelError(Exception):
    """The user's model raised when run on its own sample: printed as ``wdmask: error: ...``, exit code 3."""


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _error(message: str) -> None:
    """``wdmask: error: <message>`` on stderr, the message printed verbatim (never as markup)."""
    from rich.text import Text

    _console(stderr=True).print(Text(f"wdmask: error: {message}"), soft_wrap=True)


_OWN_WARNINGS = (UnmatchedRuleWarning, UnclassifiedWarning)


@contextmanager
def _readable_warnings() -> Iterator[None]:
    """Print each of wdmask's warnings raised inside as one line ``wdmask: warning: <message>`` on stderr;
    other libraries' warnings (torch's, numpy's) are shown as Python shows them, under their own names."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            # wdmask's own warnings every time (even where a test config makes them errors); others by the filters
            warnings.simplefilter("always", UnmatchedRuleWarning)
            warnings.simplefilter("always", UnclassifiedWarning)
            yield
    finally:
        from rich.text import Text

        console = _console(stderr=True)
        seen: set[str] = set()
        for w in caught:  # outside catch_warnings: showwarning prints again instead of recording
            if not issubclass(w.category, _OWN_WARNINGS):
                warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
                continue
            text = " ".join(str(w.message).split())
            if text not in seen:
                seen.add(text)
                console.print(Text(f"wdmask: warning: {text}"), soft_wrap=True)


def _rules_from(args: argparse.Namespace) -> Rules:
    """``--preset`` (default standard), ``--rules FILE``, or both: the preset's rules first, then the file's."""
    if not args.rules:
        return presets.by_name(args.preset or "standard")
    rules = _config.load(args.rules)
    if not args.preset:
        return rules
    base = presets.by_name(args.preset)
    return Rules((*base, *rules), default=rules.default, name=f"{base.name} + {args.rules}")


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

    model, options, sample = built, {}, None
    if isinstance(built, tuple) and len(built) == 2 and not _is_params_tuple(built):
        model, sample = built
        options = {"example_inputs": sample} if _is_torch_module(model) else {"sample": sample}
    if model is None:
        raise UsageError(f"{target}() returned {'(None, sample)' if options else 'None'}; it must return the model: "
                         "a torch module, a Flax linen/NNX/Equinox model or params pytree, or (model, sample). "
                         "Did the function forget its `return`?")
    try:
        return describe_any(model, **options)
    except RuleError:
        raise
    except Exception as e:
        own = _model_error(model, sample) if options else None
        if own is not None:  # the model fails by itself on this sample: its error, not wdmask's
            raise ModelError(f"{target}(): the model raised on its own sample: {type(own).__name__}: "
                             f"{_first_lines(own)} (the sample is passed as the model's positional inputs; fix the "
                             "sample or the model)") from None
        if not isinstance(e, (TypeError, ValueError)):  # MaskError too: not a model or a params pytree
            raise
        raise UsageError(f"{target}() returned {type(built).__name__}, which wdmask cannot describe: "
                         f"{_first_lines(e)}; return a torch module, a Flax linen/NNX/Equinox model or params "
                         "pytree, or (model, sample)") from e


def _first_lines(error: BaseException, limit: int = 600) -> str:
    """An exception's message, without notes, cut to ``limit`` characters."""
    text = str(error).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _model_error(model: Any, sample: Any) -> BaseException | None:
    """What running ``model`` on ``sample`` by itself raises (abstractly for JAX models), or ``None``.

    Tells the model's own error from a failure of wdmask's tracing: only the former is reported without a
    traceback.
    """
    from wdmask._dispatch import _is_torch_module

    args = tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)
    try:
        if _is_torch_module(model):
            import copy

            import torch

            with torch.no_grad():
                copy.deepcopy(model)(*args)
            return None
        import jax
        from flax import linen as nn
        from flax import nnx

        if isinstance(model, nn.Module):
            jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), *args)
        elif isinstance(model, nnx.Module):
            graphdef, state = nnx.split(model)
            jax.eval_shape(lambda s, *a: nnx.merge(graphdef, s)(*a), state, *args)
        elif callable(model):  # an Equinox model
            jax.eval_shape(model, *args)
    except Exception as e:
        return e
    return None


def _is_params_tuple(obj: tuple[Any, ...]) -> bool:
    """A pair that is itself a pytree of arrays (not ``(model, sample)``): both halves are dicts."""
    return all(isinstance(o, dict) for o in obj)


def _explain(args: argparse.Namespace) -> int:
    if args.target and args.example:
        raise UsageError("give either MODULE:CALLABLE or --example, not both")
    if not args.target and not args.example:
        raise UsageError("wdmask explain needs a model: MODULE:CALLABLE (e.g. `wdmask explain mymodels:make_model`) "
                         f"or a bundled example (--example {{{','.join(sorted(_examples.EXAMPLES))}}})")
    rules = _rules_from(args)
    if args.target:
        inventory = describe_target(load_target(args.target), args.target)
    else:
        inventory = _examples.EXAMPLES[args.example]()
    _print_explanation(_engine.explain_inventory(inventory, rules, strict=args.strict), args.full)
    return 0


def _print_explanation(explanation: Any, full: bool) -> None:
    """One row per parameter (``full``), or one per group decided alike and a hint that ``--full`` exists."""
    from rich.text import Text

    console = _console()
    if full:
        console.print(explanation.table(console.width))
        return
    console.print(explanation.compact(console.width))
    if any(len(rows) > 1 for rows, *_ in explanation.groups()):
        console.print(Text("--full: one row per parameter, with its shape"))


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
            _print_explanation(_engine.explain_inventory(_examples.EXAMPLES[args.example](), rules), args.full)
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

    needed = ("torch", "jax", "flax", "optax")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"wdmask demo needs {', '.join(needed)} (missing: {', '.join(missing)}): "
                         f"{install_hint(*needed)}")
    run_demo(steps=args.steps, start=process_start(), full=args.full)
    return 0


def _steps(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wdmask`` command."""
    from wdmask import __version__

    fmt = _Formatter
    parser = argparse.ArgumentParser(prog="wdmask", description="Per-parameter weight decay decisions: which "
                                     "parameters of a model are decayed, by which rule, and why.",
                                     epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"wdmask {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    explain = sub.add_parser(
        "explain", epilog=EPILOG, formatter_class=fmt,
        help="explain the decision for every parameter of your model (or a bundled example)",
        description="Print, for every parameter, its layer kind, role, whether it is decayed, the winning rule "
                    "and why; parameters decided alike share a row (--full: one row per parameter).\n"
                    "MODULE:CALLABLE is imported from the current directory (like `uvicorn app:make`) and "
                    "called with no arguments; it returns a torch module, a Flax linen/NNX/Equinox model or "
                    "params pytree, or a (model, sample) pair: a linen module needs its sample inputs, and a "
                    "sample also makes feeds_norm known (torch example inputs too). torch is imported only if "
                    "the callable returns a torch module.")
    explain.add_argument("target", nargs="?", metavar="MODULE:CALLABLE",
                         help="e.g. mymodels:make_model (or give --example instead)")
    explain.add_argument("--preset", choices=presets.names, metavar="NAME",
                         help=f"a bundled rule set (default: standard); one of: {', '.join(presets.names)}; "
                              "with --rules, the file's rules are added after the preset's")
    explain.add_argument("--rules", metavar="FILE", help="a rules file (.toml, .json, .yaml)")
    explain.add_argument("--example", choices=sorted(_examples.EXAMPLES),
                         help="a bundled example model instead of MODULE:CALLABLE")
    explain.add_argument("--full", action="store_true", help="one row per parameter, with its shape")
    explain.add_argument("--strict", action="store_true",
                         help="exit 1 when a rule matches no parameter or a decision rests on a guess")
    explain.set_defaults(func=_explain)

    check = sub.add_parser("check", epilog=EPILOG, formatter_class=fmt, help="validate rules files",
                           description="Load each rules file and report ok or the first problem in it.")
    check.add_argument("files", nargs="+", metavar="FILE", help="rules files (.toml, .json, .yaml)")
    check.add_argument("--example", choices=sorted(_examples.EXAMPLES),
                       help="also explain each valid file's rules on this bundled example model")
    check.add_argument("--full", action="store_true", help="with --example: one row per parameter")
    check.set_defaults(func=_check)

    demo = sub.add_parser("demo", epilog=EPILOG, formatter_class=fmt,
                          help="torch vs Flax ResNet: the same decisions and the same training steps",
                          description="Build twin ResNets in PyTorch and Flax, show that both frameworks decide "
                                      "the same, then train both in float64 and print how far apart they are.")
    demo.add_argument("--steps", type=_steps, default=5, metavar="N", help="training steps on both sides (default 5)")
    demo.add_argument("--full", action="store_true", help="list every parameter pair, not one row per kind")
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
    except (UsageError, MissingDependencyError) as e:
        _error(str(e))
        return 2
    except ModelError as e:
        _error(str(e))
        return 3


if __name__ == "__main__":
    sys.exit(main())
