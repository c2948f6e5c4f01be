"""The ``wdmask`` command: explain your own model, help and exit codes, output that fits the terminal."""

import io
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


def table_rows(out: str, key: str = "decay") -> list[dict[str, list[str]]]:
    """The rows of a printed table (a header line, a rule of ─, rows until a blank or caption line): column name
    -> the cell's lines. Columns are read at the header's positions; a line with an empty ``key`` cell (one
    word, never wrapped) continues the row above (a wrapped cell, or the next path pattern of a group)."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    header = lines[rule - 1]
    names = header.split()
    starts, end = [], 0
    for n in names:  # each header word after the previous one
        starts.append(header.index(n, end))
        end = starts[-1] + len(n)
    rows: list[dict[str, list[str]]] = []
    for line in lines[rule + 1:]:
        if not line.strip() or re.match(r"\d+ parameters?:", line):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if cells[names.index(key)] or not rows:
            rows.append({n: [c] for n, c in zip(names, cells, strict=True)})
        else:
            for n, c in zip(names, cells, strict=True):
                if c:
                    rows[-1][n].append(c)
    return rows


def decisions(out: str) -> dict[str, str]:
    """path -> decay column of a ``--full`` explain table."""
    return {"".join(r["path"]): r["decay"][0] for r in table_rows(out)}


# Expected from the principle of `standard`: a linear/conv kernel is decayed, biases and norm parameters are not.
@pytest.mark.parametrize(("target", "expected"), [
    ("torch_mlp", {"0.weight": "yes", "0.bias": "no", "1.weight": "no", "1.bias": "no", "3.weight": "yes", "3.bias": "no"}),
    ("torch_with_inputs", {"0.weight": "yes", "0.bias": "no", "1.weight": "no", "1.bias": "no", "3.weight": "yes",
                           "3.bias": "no"}),
    ("linen_with_sample", {"layers_0.kernel": "yes", "layers_0.bias": "no", "layers_1.scale": "no", "layers_1.bias": "no"}),
    ("params", {"Dense_0.kernel": "yes", "Dense_0.bias": "no", "LayerNorm_0.scale": "no"}),
])
def test_explain_your_own_model(models, capsys, target, expected):
    assert main(["explain", f"models_for_cli:{target}", "--full"]) == 0
    assert decisions(capsys.readouterr().out) == expected


def test_sample_makes_feeds_norm_known(models, capsys):
    # standard_scale_invariant: 0.weight feeds BatchNorm1d directly; only the example inputs can show it.
    assert main(["explain", "models_for_cli:torch_with_inputs", "--preset", "standard_scale_invariant", "--full"]) == 0
    assert decisions(capsys.readouterr().out)["0.weight"] == "no"
    assert main(["explain", "models_for_cli:torch_mlp", "--preset", "standard_scale_invariant", "--full"]) == 0
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
    assert main(["explain", "--example", "resnet", "--full"]) == 0
    out = capsys.readouterr().out
    # the example: 4 conv kernels + the fc kernel decayed; 4 BatchNorms' weight and bias and fc.bias not
    assert "layer1.0.bn1.weight" in out and "14 parameters: 5 decayed, 9 not decayed" in out
    assert main(["explain", "--example", "transformer", "--preset", "nanogpt"]) == 0
    assert "not decayed" in capsys.readouterr().out


def test_explain_without_a_model_is_a_usage_error(capsys):
    assert main(["explain"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wdmask: error: wdmask explain needs a model") and "--example" in err
    assert main(["explain", "--preset", "timm"]) == 2


def test_compact_explain_fits_an_80x24_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["explain", "--example", "resnet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 80, out
    rows = {(r["n"][0], r["decay"][0], r["rule"][0]): r["parameters"] for r in table_rows(out)}
    # by hand: stem conv + block convs + shortcut conv; the same for each BatchNorm's weight and bias
    assert rows == {
        ("4", "yes", "-"): ["conv1.weight", "layer1.0.conv{1,2}.weight", "layer1.0.downsample.0.weight"],
        ("4", "no", "1"): ["bn1.weight", "layer1.0.bn{1,2}.weight", "layer1.0.downsample.1.weight"],
        ("4", "no", "2"): ["bn1.bias", "layer1.0.bn{1,2}.bias", "layer1.0.downsample.1.bias"],
        ("1", "yes", "-"): ["fc.weight"],
        ("1", "no", "2"): ["fc.bias"],
    }
    assert "14 parameters: 5 decayed, 9 not decayed" in out and "from 0" in out and "--full" in out


def test_reasons_say_why_a_kernel_is_decayed(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["explain", "--example", "resnet", "--full"]) == 0
    rows = {"".join(r["path"]): " ".join(r["reason"]) for r in table_rows(capsys.readouterr().out)}
    assert rows["fc.weight"] == "kernel (a linear map): decayed" and rows["conv1.weight"] == rows["fc.weight"]
    assert rows["fc.bias"] == "biases: decay is pointless"


def test_preset_and_rules_file_together(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    extra = tmp_path / "extra.toml"
    extra.write_text("[[rules]]\npath = 'fc.*'\ndecay = false\nwhy = 'head kept free'\n")
    assert main(["explain", "--example", "resnet", "--preset", "standard", "--rules", str(extra), "--full"]) == 0
    out = capsys.readouterr().out
    rows = {"".join(r["path"]): (r["decay"][0], r["rule"][0]) for r in table_rows(out)}
    # standard's 5 rules are rules 0-4, so the file's one rule is rule 5; it wins on fc.weight
    assert rows["fc.weight"] == ("no", "5") and rows["bn1.weight"] == ("no", "1") and rows["conv1.weight"][0] == "yes"
    assert f"weight decay: standard + {extra}" in out
    assert main(["explain", "--example", "resnet", "--rules", str(extra), "--full"]) == 0  # the file alone
    rows = {"".join(r["path"]): (r["decay"][0], r["rule"][0]) for r in table_rows(capsys.readouterr().out)}
    assert rows["fc.weight"] == ("no", "0") and rows["bn1.weight"] == ("yes", "-")


def test_other_libraries_warnings_keep_their_own_label(models, capsys):
    (models / "noisy_for_cli.py").write_text(
        "import warnings\nimport numpy as np\n\ndef make():\n"
        "    warnings.warn('Failed to initialize NumPy: a library talking', UserWarning)\n"
        "    return {'Dense_0': {'kernel': np.zeros((3, 4)), 'bias': np.zeros(4)}}\n")
    out = subprocess.run([sys.executable, "-m", "wdmask", "explain", "noisy_for_cli:make"], capture_output=True,
                         text=True, cwd=models, env={**_env(), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "UserWarning: Failed to initialize NumPy: a library talking" in out.stderr  # as Python shows it
    assert "wdmask: warning" not in out.stderr


def test_a_missing_extra_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    assert main(["explain", "--example", "resnet", "--rules", str(rules)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "needs pyyaml, which is not installed: pip install 'wdmask[yaml]'" in err


def test_version_and_python_dash_m():
    import wdmask

    for argv in (["-m", "wdmask", "--version"], ["-m", "wdmask._cli", "--version"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=_env())
        assert out.returncode == 0 and out.stdout.strip() == f"wdmask {wdmask.__version__}", out


@pytest.mark.parametrize("command", ["", "explain", "check", "demo"])
def test_help_wraps_at_the_terminal_width_and_never_inside_a_word(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    parser = build_parser()
    if command:
        parser = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = parser.format_help()
    assert max(len(line) for line in text.splitlines()) <= 60, text
    flat = " ".join(text.split())
    for source in (parser.description, *(a.help for a in parser._actions if a.help)):
        assert " ".join(source.split()) in flat  # every word whole: wrapping added line breaks, nothing else
    assert "2  a usage error: an unknown option," in text


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
    assert main(["explain", "--example", "resnet", "--rules", str(bad)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    unmatched = tmp_path / "unmatched.toml"
    unmatched.write_text("[[rules]]\npath = 'nothing.**'\ndecay = false\n")
    assert main(["explain", "--example", "resnet", "--rules", str(unmatched), "--strict"]) == 1
    assert "matched no parameter" in capsys.readouterr().err


def test_user_text_is_not_markup(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rules]]\nlayer = 'norm'\ndecay = false\nwhy = '[red]hot[/red] norms [b]'\n")
    assert main(["explain", "--example", "resnet", "--rules", str(rules)]) == 0
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
    assert main(["explain", "--example", "resnet", "--rules", str(rules)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["wdmask: warning: 1 rule(s) matched no parameter: rules[0] {path='nothing.**', decay=False}"]


@pytest.mark.parametrize("example", sorted(_examples.EXAMPLES))
@pytest.mark.parametrize("columns", [80, 60])
@pytest.mark.parametrize("full", [True, False], ids=["full", "compact"])
def test_explain_fits_the_terminal_and_splits_no_token(capsys, monkeypatch, example, columns, full):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["explain", "--example", example, "--preset", "standard_scale_invariant"] + ["--full"] * full) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= columns
    want = explain_inventory(_examples.EXAMPLES[example](), presets.standard_scale_invariant)
    rows = table_rows(out)
    squeeze = lambda text: "".join(text.split())  # noqa: E731  (a wrapped path gains line breaks, nothing else)
    if full:
        assert ["".join(r["path"]) for r in rows] == [r.path + "".join(f" (= {a})" for a in r.aliases) for r in want]
        assert [squeeze(" ".join(r["reason"])) for r in rows] == [squeeze(r.reason) for r in want]
        expected = [{"layer": w.layer, "role": w.role, "shape": "x".join(map(str, w.shape)), "decay": "no" if
                     w.multiplier == 0 else "yes", "rule": "-" if w.rule is None else str(w.rule)} for w in want]
    else:
        assert sum(int(r["n"][0]) for r in rows) == len(want)
        expected = [{"role": rows_[0].role, "decay": decay, "rule": rule}
                    for rows_, _, _, decay, rule, _ in want.groups()]
    # token columns: each cell is one whole line, exactly the value (never split over lines)
    for got, exp in zip(rows, expected, strict=True):
        for column, value in exp.items():
            if column in got:
                assert got[column] == [value], (column, got)
    assert "role" in rows[0] and "decay" in rows[0] and "rule" in rows[0]


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


def test_demo_table_folds_agreeing_pairs_and_lists_each_disagreement():
    from rich.console import Console

    from wdmask import ParamInfo
    from wdmask._types import Decision
    from wdmask_migrate._demo import _decisions

    def pair(i: int, leaf: str, role: str) -> tuple[ParamInfo, ParamInfo]:
        return (ParamInfo(("blocks", str(i), "fc", leaf), (2, 2), layer="linear", role=role),
                ParamInfo((f"blocks_{i}", "fc", {"weight": "kernel"}.get(leaf, leaf)), (2, 2), layer="linear",
                          role=role))

    pairs = [pair(i, leaf, role) for i in range(3) for leaf, role in (("weight", "kernel"), ("bias", "bias"))]
    t_dec = {t.path: Decision(1.0 if t.role == "kernel" else 0.0, None, "") for t, _ in pairs}
    f_dec = {f.path: Decision(1.0 if f.role == "kernel" else 0.0, None, "") for _, f in pairs}
    f_dec[pairs[5][1].path] = Decision(1.0, None, "")  # blocks_2.fc.bias decayed on the Flax side only
    console = Console(width=100, record=True, file=io.StringIO(), color_system=None)
    console.print(_decisions(pairs, t_dec, f_dec, "standard", full=False))
    rows = table_rows(console.export_text().replace("torch parameters", "torch_parameters"), key="torch")
    assert [(r["torch_parameters"], r["n"], r["torch"], r["flax"]) for r in rows] == [
        (["blocks.{0..2}.fc.weight"], ["3"], ["decay"], ["decay"]),
        (["blocks.{0,1}.fc.bias"], ["2"], ["no decay"], ["no decay"]),
        (["blocks.2.fc.bias"], ["1"], ["no decay"], ["decay"]),
    ]
    console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
    console.print(_decisions(pairs, t_dec, f_dec, "standard", full=True))
    text = console.export_text()
    assert all(t.dotted in text and f.dotted in text for t, f in pairs)
