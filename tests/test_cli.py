"""The ``wdmask`` command."""

import subprocess
import sys

from wdmask._cli import main


def test_explain_prints_decisions(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["explain", "--preset", "standard"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.bn1.weight" in out and "14 parameters: 9 no decay, 5 x multiplier 1" in out


def test_explain_other_example_and_preset(capsys):
    assert main(["explain", "--example", "transformer", "--preset", "nanogpt"]) == 0
    assert "no decay" in capsys.readouterr().out


def test_check_valid_and_invalid_files(tmp_path, capsys):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[[rules]]\nlayer = 'norm'\ndecay = false\n")
    bad.write_text("[[rules]]\nlayer = 'norm'\n")
    assert main(["check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["check", str(good), str(bad)]) == 1
    assert "no action" in capsys.readouterr().out


def test_rules_file_error_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["explain", "--rules", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "wdmask._cli", "check", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "files" in out.stdout
