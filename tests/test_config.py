"""Rules files: JSON, TOML, YAML; safe loaders; clear errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- nulls, duplicate keys, bounded parsing, encodings, huge numbers (issue 21) ---

NULL_RULES = {
    "yaml_tilde": ("r.yaml", "rules:\n  - {role: ~, decay: false}\n"),
    "yaml_empty": ("r.yaml", "rules:\n  - role:\n    decay: false\n"),
    "json_null": ("r.json", '{"rules": [{"role": null, "decay": false}]}'),
    "json_list_null": ("r.json", '[{"layer": "norm", "decay": false}, {"path": "a.*", "ndim": null, "decay": true}]'),
}


@pytest.mark.parametrize("name,text", NULL_RULES.values(), ids=list(NULL_RULES))
def test_explicit_null_condition_is_refused_naming_rule_and_key(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    key = "ndim" if "ndim" in text else "role"
    index = 1 if "ndim" in text else 0
    with pytest.raises(wdmask.RuleError, match=rf"r\.(yaml|json): rules\[{index}\] .*`{key}` is null"):
        wdmask.load(path)


def test_explicit_null_via_from_dict_is_refused():
    with pytest.raises(wdmask.RuleError, match=r"rules\[0\] \{decay=False\}: `role` is null"):
        wdmask.Rules.from_dict({"rules": [{"role": None, "decay": False}]})
    with pytest.raises(wdmask.RuleError, match=r"rule \{decay=False\}: `role` is null"):
        wdmask.Rule.from_dict({"role": None, "decay": False})
    assert wdmask.Rule(role=None, layer="norm", decay=False).role is None  # Python's own default stays allowed


DUPLICATES = {
    "json": ("r.json", '{"rules": [{"layer": "norm", "decay": false, "decay": true}]}', "duplicate key 'decay'"),
    "json_top": ("r.json", '{"rules": [], "rules": [{"layer": "norm", "decay": true}]}', "duplicate key 'rules'"),
    "yaml": ("r.yaml", "rules:\n  - layer: norm\n    decay: false\n    decay: true\n",
             "duplicate key 'decay' at lines 3 and 4"),
    "yaml_flow": ("r.yaml", "rules: [{layer: norm, decay: false, decay: true}]\n", "duplicate key 'decay'"),
    "toml": ("r.toml", "[[rules]]\nlayer = 'norm'\ndecay = false\ndecay = true\n", "not valid TOML"),
}


@pytest.mark.parametrize("name,text,match", DUPLICATES.values(), ids=list(DUPLICATES))
def test_duplicate_keys_are_refused_and_check_reports_them(tmp_path, capsys, name, text, match):
    from wdmask._cli import main

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(wdmask.RuleError, match=match):
        wdmask.load(path)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "error" in out and match.split(" at ")[0] in " ".join(out.split())


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
rules:
  - {path: *i, decay: false}
"""


def test_yaml_billion_laughs_fails_fast_with_little_memory(tmp_path):
    import time
    import tracemalloc

    pytest.importorskip("yaml")  # imported before the clock starts: the bound is on parsing
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(wdmask.RuleError, match=r"laughs.yaml: YAML anchor &a at line 1: anchors and aliases are "
                                                   r"not accepted"):
            wdmask.load(path)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 5_000_000, (elapsed, peak)


def test_yaml_alias_without_anchor_expansion_is_refused_too():
    with pytest.raises(wdmask.RuleError, match="anchors and aliases are not accepted"):
        wdmask.loads("base: &b {role: bias, decay: false}\nrules:\n  - *b\n", "yaml")


def test_files_and_texts_larger_than_the_cap_are_refused_before_parsing(tmp_path):
    from wdmask._config import MAX_BYTES

    path = tmp_path / "big.json"
    path.write_text('{"rules": []}' + " " * MAX_BYTES)
    with pytest.raises(wdmask.RuleError, match=rf"big.json: larger than the {MAX_BYTES} bytes accepted"):
        wdmask.load(path)
    with pytest.raises(wdmask.RuleError, match="larger than the"):
        wdmask.loads(" " * (MAX_BYTES + 1), "yaml")


@pytest.mark.parametrize("text", [
    '{"rules": [{"layer": "' + "x" * 250 + '", "decay": false}]}',
    '{"rules": [{"path": [' + ",".join(['"a"'] * 60) + '], "role": [[[[[["bias"]]]]]], "decay": false}]}',
    '{"rules": [{"layer": "norm", "decay": false, "' + "k" * 200 + '": 1}]}',
    '{"rules": {"' + "k" * 250 + '": 1}}',
], ids=["long_value", "deep_value", "long_key", "long_rules"])
def test_error_messages_embed_truncated_values(tmp_path, capsys, text):
    from wdmask._cli import main

    path = tmp_path / "r.json"
    path.write_text(text)
    assert len(text) < 400
    with pytest.raises(wdmask.RuleError) as e:
        wdmask.load(path)
    assert len(str(e.value)) < 600, str(e.value)
    assert main(["check", str(path)]) == 1
    assert len(capsys.readouterr().out) < 800


def test_non_utf8_files_name_the_file_and_the_encoding(tmp_path):
    text = "[[rules]]\nlayer = 'norm'\ndecay = false\nwhy = 'café ☕'\n"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(text.replace("☕", "").encode("latin-1"))
    with pytest.raises(wdmask.RuleError, match=r"latin.toml: not UTF-8 text: byte 0xe9 at offset \d+ \(line 4\).*"
                                               r"re-save the file as UTF-8"):
        wdmask.load(latin)
    utf16 = tmp_path / "utf16.toml"
    utf16.write_bytes(text.encode("utf-16"))  # with its byte-order mark
    with pytest.raises(wdmask.RuleError, match=r"utf16.toml: the file is UTF-16 encoded"):
        wdmask.load(utf16)
    bare16 = tmp_path / "bare16.json"
    bare16.write_bytes('[{"role": "bias", "decay": false}]'.encode("utf-16-le"))
    with pytest.raises(wdmask.RuleError, match=r"bare16.json: not UTF-8 text.*looks like UTF-16"):
        wdmask.load(bare16)
    bom8 = tmp_path / "bom8.toml"
    bom8.write_bytes(text.encode("utf-8-sig"))
    assert wdmask.load(bom8)[0].why == "café ☕"


HUGE = "1" + "0" * 400


@pytest.mark.parametrize("fmt,text", [
    ("toml", f"[[rules]]\nlayer = 'norm'\nmultiplier = {HUGE}\n"),
    ("json", f'[{{"layer": "norm", "multiplier": {HUGE}}}]'),
    ("yaml", f"rules:\n  - {{layer: norm, multiplier: {HUGE}}}\n"),
    ("toml", f"default = {HUGE}\nrules = []\n"),
    ("json", '[{"layer": "norm", "ndim": "<=' + "9" * 5000 + '", "decay": false}]'),
], ids=["toml_multiplier", "json_multiplier", "yaml_multiplier", "toml_default", "json_ndim"])
def test_huge_numbers_are_rule_errors_not_overflow(fmt, text):
    with pytest.raises(wdmask.RuleError, match=r"`?(multiplier|default|ndim)`?.*(finite number|int >= 0)"):
        wdmask.loads(text, fmt)


def test_dumps_refuses_what_is_not_rules():
    with pytest.raises(TypeError, match=r"dumps\(\): `rules` must be a Rules .* got NoneType None"):
        wdmask.dumps(None)
    with pytest.raises(TypeError, match="got str"):
        wdmask.dumps("standard", "toml")
    assert wdmask.loads(wdmask.dumps([{"role": "bias", "decay": False}], "toml"), "toml")[0].role == "bias"


def test_dumps_toml_writes_text_as_itself_and_refuses_lone_surrogates():
    rules = wdmask.Rules([wdmask.Rule(path="a.*", decay=False, why='😀 "q" \\ tab\there\nline é')])
    text = wdmask.dumps(rules, "toml")
    assert "😀" in text and "\\ud83d" not in text.lower()
    assert wdmask.loads(text, "toml") == rules
    with pytest.raises(wdmask.RuleError, match="lone surrogate U\\+D800"):
        wdmask.dumps(wdmask.Rules([wdmask.Rule(path="a.*", decay=False, why="\ud800")]), "toml")


@given(why=st.text(), module_type=st.text(min_size=1))
@settings(max_examples=150, deadline=None)
@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_any_unicode_round_trips_through_every_format(fmt, why, module_type):
    rules = wdmask.Rules([wdmask.Rule(path="blocks.*.ln.**", module_type=module_type, decay=False, why=why)],
                         default=0.5)
    assert wdmask.loads(wdmask.dumps(rules, fmt), fmt) == rules


# --- rules files that build on a preset (issue 25, item 4) ---

EXTRA = wdmask.Rule(path="head.**", multiplier=0.5)


@pytest.mark.parametrize("fmt,text", [
    ("toml", 'preset = "standard"\n\n[[rules]]\npath = "head.**"\nmultiplier = 0.5\n'),
    ("json", '{"preset": "standard", "rules": [{"path": "head.**", "multiplier": 0.5}]}'),
    ("yaml", "preset: standard\nrules:\n  - {path: head.**, multiplier: 0.5}\n"),
], ids=["toml", "json", "yaml"])
def test_a_rules_file_extends_a_preset(fmt, text):
    rules = wdmask.loads(text, fmt)
    assert list(rules) == [*wdmask.presets.standard, EXTRA]
    assert rules.default == wdmask.presets.standard.default
    assert wdmask.loads('preset = "timm"\n', "toml") == wdmask.presets.timm


def test_unknown_preset_lists_the_valid_ones(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('preset = "standrad"\n[[rules]]\nrole = "bias"\ndecay = false\n')
    with pytest.raises(wdmask.RuleError, match=r"r.toml: unknown preset 'standrad'; valid: standard, "
                                               r"standard_scale_invariant, all, .*Did you mean 'standard'"):
        wdmask.load(path)
    with pytest.raises(wdmask.RuleError, match="`preset` must be the name of a preset"):
        wdmask.loads('{"preset": ["standard"], "rules": []}', "json")
