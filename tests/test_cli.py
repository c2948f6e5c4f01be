"""The ``wdmask`` command: explain your own model, help and exit codes, output that fits the terminal."""

import re
import subprocess
import sys

import pytest

import wdmask
from wdmask import _examples, presets
from wdmask._cli import build_parser, main
from wdmask._engine import explain_inventory

#: A user's model file, imported by ``wdmask explain models_for_cli:<callable>``.
MODELS = '''
def torch_mlp():
    import torch
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))

def torch_with_inputs():
    import torch
    return torch_mlp(), torch.zeros(2, 3)

def linen_with_sample():
    import jax.numpy as jnp
    from flax import linen as nn
    return nn.Sequential([nn.Dense(4), nn.LayerNorm()]), jnp.zeros((1, 3))

def params():
    import numpy as np
    return {"Dense_0": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}, "LayerNorm_0": {"scale": np.ones(4)}}

def broken():
    raise RuntimeError("cannot build [red]this[/red]")

def not_a_model():
    return "resnet"

def returns_none():
    model = torch_mlp()  # forgot the return

def none_with_sample():
    import torch
    return None, torch.zeros(2, 3)

def torch_wrong_sample():
    import torch
    return torch_mlp(), torch.zeros(2, 5)

def nnx_wrong_sample():
    import jax.numpy as jnp
    from flax import nnx
    return nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.LayerNorm(4, rngs=nnx.Rngs(0))), jnp.zeros((2, 5))

CONSTANT = 3
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "models_for_cli.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    sys.modules.pop("models_for_cli", None)
    yield tmp_path
    sys.modules.pop("models_for_cli", None)


def decisions(out: str) -> dict[str, str]:
    """path -> decay column of a wide (unwrapped) explain table (path, layer, role, from, shape, decay, ...)."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    return {r[0]: r[5] for r in rows}


# Expected from the principle of `standard`: a linear/conv kernel is decayed, biases and norm parameters are not.
@pytest.mark.parametrize(("target", "expected"), [
    ("torch_mlp", {"0.weight": "yes", "0.bias": "no", "1.weight": "no", "1.bias": "no", "3.weight": "yes", "3.bias": "no"}),
    ("torch_with_inputs", {"0.weight": "yes", "0.bias": "no", "1.weight": "no", "1.bias": "no", "3.weight": "yes",
                           "3.bias": "no"}),
    ("linen_with_sample", {"layers_0.kernel": "yes", "layers_0.bias": "no", "layers_1.scale": "no", "layers_1.bias": "no"}),
    ("params", {"Dense_0.kernel": "yes", "Dense_0.bias": "no", "LayerNorm_0.scale": "no"}),
])
def test_explain_your_own_model(models, capsys, target, expected):
    assert main(["explain", f"models_for_cli:{target}"]) == 0
    assert decisions(capsys.readouterr().out) == expected


def test_sample_makes_feeds_norm_known(models, capsys):
    # standard_scale_invariant: 0.weight feeds BatchNorm1d directly; only the example inputs can show it.
    assert main(["explain", "models_for_cli:torch_with_inputs", "--preset", "standard_scale_invariant"]) == 0
    assert decisions(capsys.readouterr().out)["0.weight"] == "no"
    assert main(["explain", "models_for_cli:torch_mlp", "--preset", "standard_scale_invariant"]) == 0
    assert decisions(capsys.readouterr().out)["0.weight"] == "yes"


def test_torch_is_imported_only_for_a_torch_model(models):
    code = ("import sys; from wdmask._cli import main; rc = main(['explain', 'models_for_cli:params']); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=models,
                         env={**_env(), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "torch imported: False" in out.stdout and "LayerNorm_0.scale" in out.stdout


def _env():
    import os

    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.parametrize(("target", "message"), [
    ("models_for_cli", r"MODULE:CALLABLE expected, got 'models_for_cli'"),
    ("no_such_module_xyz:make", r"cannot import module 'no_such_module_xyz'"),
    ("models_for_cli:nope", r"module 'models_for_cli' has no attribute 'nope'"),
    ("models_for_cli:CONSTANT", r"'models_for_cli:CONSTANT' is not callable \(it is of type int\)"),
    ("models_for_cli:broken", r"calling models_for_cli:broken\(\) raised RuntimeError: cannot build \[red\]this\[/red\]"),
    ("models_for_cli:not_a_model", r"models_for_cli:not_a_model\(\) returned str, which wdmask cannot describe"),
])
def test_bad_target_is_a_usage_error(models, capsys, target, message):
    assert main(["explain", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wdmask: error: ") and re.search(message, err), err


def test_target_and_example_conflict(models, capsys):
    assert main(["explain", "models_for_cli:params", "--example", "resnet"]) == 2
    assert "either MODULE:CALLABLE or --example" in capsys.readouterr().err


def test_explain_bundled_example(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["explain", "--preset", "standard"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.bn1.weight" in out and "14 parameters: 9 no decay, 5 x multiplier 1" in out
    assert main(["explain", "--example", "transformer", "--preset", "nanogpt"]) == 0
    assert "no decay" in capsys.readouterr().out


def test_every_option_has_help_and_the_epilog_lists_exit_codes():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        for action in sub._actions:
            assert action.help, f"wdmask {name} {action.option_strings or action.dest} has no help text"
        assert re.search(r"0\s+ok.*1\s+a rule or decision problem.*2\s+a usage error", sub.epilog, re.S)
    assert re.search(r"0\s+ok", parser.epilog)


def test_check_valid_and_invalid_files(tmp_path, capsys):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[[rules]]\nlayer = 'norm'\ndecay = false\n")
    bad.write_text("[[rules]]\nlayer = 'norm'\n")
    assert main(["check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["check", str(good), str(bad)]) == 1
    assert "no action" in capsys.readouterr().out


def test_rule_problems_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["explain", "--rules", str(bad)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    unmatched = tmp_path / "unmatched.toml"
    unmatched.write_text("[[rules]]\npath = 'nothing.**'\ndecay = false\n")
    assert main(["explain", "--rules", str(unmatched), "--strict"]) == 1
    assert "matched no parameter" in capsys.readouterr().err


def test_user_text_is_not_markup(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rules]]\nlayer = 'norm'\ndecay = false\nwhy = '[red]hot[/red] norms [b]'\n")
    assert main(["explain", "--rules", str(rules)]) == 0
    assert "[red]hot[/red] norms [b]" in capsys.readouterr().out
    # an error message that contains brackets (the hint "[[rules]] tables") reaches the user whole
    bad = tmp_path / "bad.toml"
    bad.write_text("default = 1.0\n")
    assert main(["check", str(bad)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "[[rules]] tables" in _config_error(bad) and _config_error(bad) in out


def _config_error(path) -> str:
    from wdmask import _config
    from wdmask._errors import RuleError

    with pytest.raises(RuleError) as e:
        _config.load(path)
    return " ".join(str(e.value).split())


def test_warnings_print_as_one_readable_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rules]]\npath = 'nothing.**'\ndecay = false\n")
    assert main(["explain", "--rules", str(rules)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["wdmask: warning: 1 rule(s) matched no parameter: rules[0] {path='nothing.**', decay=False}"]


def _cells(out: str) -> list[list[str]]:
    """Rows of a narrow boxed table (path, layer, role, shape, decay, rule, reason: no `from` column below 100
    columns), each cell's wrapped lines joined (paths with "", prose with " ")."""
    rows: list[list[list[str]]] = []
    for line in out.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells[4]:  # the decay column is one word: a new row starts
            rows.append([[c] for c in cells])
        else:
            for parts, c in zip(rows[-1], cells, strict=True):
                parts.append(c)
    return [["".join(p[0:1] + [x for x in p[1:] if x]) if i in (0, 1, 3) else " ".join(x for x in p if x)
             for i, p in enumerate(row)] for row in rows]


@pytest.mark.parametrize("example", sorted(_examples.EXAMPLES))
@pytest.mark.parametrize("columns", [80, 60])
def test_explain_fits_the_terminal_and_drops_nothing(capsys, monkeypatch, example, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["explain", "--example", example, "--preset", "standard_scale_invariant"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= columns
    want = explain_inventory(_examples.EXAMPLES[example](), presets.standard_scale_invariant)
    got = _cells(out)
    squeeze = lambda text: "".join(text.split())  # noqa: E731  (a folded word gains a line break, nothing else)
    assert [squeeze(c[0]) for c in got] == [squeeze(r.path + "".join(f" (= {a})" for a in r.aliases)) for r in want]
    assert [squeeze(c[6]) for c in got] == [squeeze(r.reason) for r in want]
    assert [(squeeze(c[1]), squeeze(c[2]), c[4]) for c in got] == [(r.layer, r.role, "no" if r.multiplier == 0
                                                                      else "yes") for r in want]
    if columns == 80:  # wide enough that every reason wraps between words: each word is whole
        assert [c[6] for c in got] == [r.reason for r in want]


def test_str_of_an_explanation_uses_the_terminal_width(monkeypatch):
    want = explain_inventory(_examples.resnet(), presets.standard)
    for columns in (80, 132):
        monkeypatch.setenv("COLUMNS", str(columns))
        lines = str(want).splitlines()
        assert max(len(line) for line in lines) <= columns
    assert "layer1.0.downsample.1.weight" in lines[-3] + "".join(lines)  # wide enough: one line per path


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "wdmask._cli", "check", "--help"], capture_output=True, text=True,
                         env=_env())
    assert out.returncode == 0 and "FILE" in out.stdout and "exit codes" in out.stdout


def test_preset_and_rules_file_combine_preset_first(tmp_path):
    from wdmask._cli import _rules_from

    extra = tmp_path / "extra.toml"
    extra.write_text('[[rules]]\npath = "fc.**"\ndecay = false\n')
    file_rule = wdmask.Rule(path="fc.**", decay=False)

    def rules(*argv: str) -> list:
        return list(_rules_from(build_parser().parse_args(["explain", *argv])))

    assert rules("--preset", "timm", "--rules", str(extra)) == [*wdmask.presets.timm, file_rule]
    assert rules("--rules", str(extra)) == [file_rule]
    assert rules("--preset", "timm") == list(wdmask.presets.timm)
    assert rules() == list(wdmask.presets.standard)
    assert main(["explain", "--example", "resnet", "--preset", "all", "--rules", str(extra)]) == 0


@pytest.mark.parametrize("target", ["returns_none", "none_with_sample"])
def test_a_factory_returning_none_is_a_usage_error(models, capsys, target):
    assert main(["explain", f"models_for_cli:{target}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wdmask: error: models_for_cli:{target}() returned ") and "forget its `return`" in err


@pytest.mark.parametrize(("target", "message"), [
    ("torch_wrong_sample", r"RuntimeError: mat1 and mat2 shapes cannot be multiplied \(2x5 and 3x4\)"),
    ("nnx_wrong_sample", r"TypeError: dot_general requires contracting dimensions to have the same shape"),
])
def test_a_model_raising_on_its_own_sample_prints_its_error_and_exits_3(models, capsys, target, message):
    assert main(["explain", f"models_for_cli:{target}"]) == 3
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith(f"wdmask: error: models_for_cli:{target}(): the model raised on its own sample: ")
    assert re.search(message, err) and "Traceback" not in err and len(err) < 1000, err
    assert captured.out == ""
    assert "3  the model raised on its own sample" in build_parser().epilog
