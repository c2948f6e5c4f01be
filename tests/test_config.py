"""Rules files: JSON, TOML, YAML; safe loaders; clear errors."""

import pytest

import wdmask

TOML = """
[[rules]]
layer = "norm"
decay = false

[[rules]]
path = "head.**"
multiplier = 0.5
why = "head decays at half strength"
"""


@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
def test_presets_round_trip_through_every_format(fmt):
    for name in wdmask.presets.names:
        rules = wdmask.presets.by_name(name)
        assert wdmask.loads(wdmask.dumps(rules, fmt), fmt) == rules


def test_load_toml_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(TOML)
    rules = wdmask.load(path)
    assert rules == wdmask.Rules([{"layer": "norm", "decay": False},
                                  {"path": "head.**", "multiplier": 0.5, "why": "head decays at half strength"}])


def test_load_yaml_and_json_files(tmp_path):
    (tmp_path / "r.yml").write_text("rules:\n  - {role: bias, decay: false}\ndefault: 0.5\n")
    (tmp_path / "r.json").write_text('[{"role": "bias", "decay": false}]')
    yml = wdmask.load(tmp_path / "r.yml")
    assert yml.default == 0.5 and yml[0].role == "bias"
    assert wdmask.load(tmp_path / "r.json") == wdmask.Rules([{"role": "bias", "decay": False}])


def test_yaml_is_loaded_safely():
    with pytest.raises(wdmask.RuleError, match="not valid YAML"):
        wdmask.loads("rules: !!python/object/apply:os.system ['echo hi']", "yaml")


BAD_FILES = {
    "toml_syntax": ("rules.toml", "[[rules]\nlayer = 'norm'", r"rules.toml: not valid TOML"),
    "json_syntax": ("rules.json", "[{'layer': 'norm'}]", r"rules.json: not valid JSON"),
    "bad_rule_in_file": ("rules.toml", "[[rules]]\nlayer = 'nrom'\ndecay = false\n",
                         r"rules.toml: rules\[0\] \{layer='nrom', decay=False\} `layer`: unknown kind 'nrom'"),
    "unknown_suffix": ("rules.ini", "", r"rules.ini: unknown rules file suffix '.ini'; valid: .json, .toml"),
}


@pytest.mark.parametrize("name,text,match", BAD_FILES.values(), ids=list(BAD_FILES))
def test_bad_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(wdmask.RuleError, match=match):
        wdmask.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(wdmask.RuleError, match="cannot read rules file"):
        wdmask.load(tmp_path / "nope.toml")


def test_unknown_format():
    with pytest.raises(wdmask.RuleError, match="unknown rules format 'xml'; valid: json, toml, yaml"):
        wdmask.loads("", "xml")
