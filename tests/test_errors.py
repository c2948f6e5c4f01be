"""Every bad rule raises RuleError naming the rule (index and text) and what is valid."""

import pytest

import wdmask
from wdmask import Rule, Rules

# (rules data, regex the message must match). Each message must name the rule as rules[i] {...}.
BAD_RULES = {
    "unknown_key": ([{"layr": "norm", "decay": False}], r"rules\[0\] \{'layr'.*unknown key 'layr'.*Did you mean 'layer'"),
    "unknown_key_second": ([{"layer": "norm", "decay": False}, {"roles": "bias", "decay": False}],
                           r"rules\[1\].*unknown key 'roles'.*Did you mean 'role'"),
    "unknown_kind": ([{"layer": "norm.batchh", "decay": False}],
                     r"rules\[0\] \{layer='norm.batchh', decay=False\} `layer`: unknown kind 'norm.batchh'; valid: "
                     r"conv, linear.*Did you mean 'norm.batch'"),
    "unknown_kind_in_list": ([{"layer": ["conv", "lienar"], "decay": True}], r"unknown kind 'lienar'.*'linear'"),
    "kind_glob_matching_nothing": ([{"layer": "pool*", "decay": False}], r"`layer`: unknown kind 'pool\*'"),
    "unknown_role": ([{"role": "weight", "decay": False}], r"`role`: unknown role 'weight'; valid: kernel, bias"),
    "unknown_role_typo": ([{"role": "baias", "decay": False}], r"Did you mean 'bias'"),
    "bad_regex": ([{"regex": "(*.bias", "decay": False}], r"rules\[0\].*`regex`: bad regular expression"),
    "empty_regex": ([{"regex": "", "decay": False}], r"`regex`: must be a non-empty string"),
    "regex_not_str": ([{"regex": 3, "decay": False}], r"`regex`: must be a non-empty string"),
    "ndim_bad_op": ([{"ndim": "<<1", "decay": False}], r"`ndim`: must be an int >= 0 or a comparison"),
    "ndim_word": ([{"ndim": "one", "decay": False}], r"`ndim`: must be an int"),
    "ndim_negative": ([{"ndim": -1, "decay": False}], r"`ndim`: .* got -1"),
    "ndim_float": ([{"ndim": 1.5, "decay": False}], r"`ndim`: .* got 1.5"),
    "ndim_bool": ([{"ndim": True, "decay": False}], r"`ndim`: .* got True"),
    "multiplier_nan": ([{"layer": "norm", "multiplier": float("nan")}], r"`multiplier`: must be a finite number >= 0"),
    "multiplier_inf": ([{"layer": "norm", "multiplier": float("inf")}], r"`multiplier`: must be a finite"),
    "multiplier_negative": ([{"layer": "norm", "multiplier": -0.5}], r"`multiplier`: .* got -0.5"),
    "multiplier_string": ([{"layer": "norm", "multiplier": "0.5"}], r"`multiplier`: .* got '0.5'"),
    "multiplier_bool": ([{"layer": "norm", "multiplier": True}], r"`multiplier`: .* got True"),
    "both_actions": ([{"layer": "norm", "decay": False, "multiplier": 0.0}], r"either `decay` or `multiplier`, not both"),
    "no_action": ([{"layer": "norm"}], r"rules\[0\] \{layer='norm'\}: no action; add decay"),
    "empty_rule": ([{}], r"rules\[0\] \{\}: empty rule"),
    "decay_not_bool": ([{"layer": "norm", "decay": "no"}], r"`decay`: must be true or false, got 'no'"),
    "decay_int": ([{"layer": "norm", "decay": 0}], r"`decay`: must be true or false, got 0"),
    "feeds_norm_not_bool": ([{"feeds_norm": "yes", "decay": False}], r"`feeds_norm`: must be true or false"),
    "path_empty": ([{"path": "", "decay": False}], r"`path`: must be a non-empty string"),
    "path_empty_segment": ([{"path": "layer1..bias", "decay": False}], r"`path`: 'layer1..bias' has an empty segment"),
    "path_not_str": ([{"path": 5, "decay": False}], r"`path`: must be a non-empty string or list"),
    "path_empty_list": ([{"path": [], "decay": False}], r"`path`: must be a non-empty"),
    "module_type_not_str": ([{"module_type": 1, "decay": False}], r"`module_type`: must be a non-empty"),
    "layer_empty_list": ([{"layer": [], "decay": False}], r"`layer`: must be a non-empty"),
    "declared_unknown": ([{"declared": "yes", "decay": False}], r"`declared`: unknown declaration 'yes'; valid: no_decay"),
    "why_not_str": ([{"layer": "norm", "decay": False, "why": 1}], r"`why`: must be a string"),
    "optional_not_bool": ([{"layer": "norm", "decay": False, "optional": "y"}], r"`optional`: must be true or false"),
    "path_unclosed_bracket": ([{"path": "**.bias[", "decay": False}], r"`path`: bad glob '\*\*\.bias\[': unclosed '\[' in segment 'bias\['.*write \[\[\] for a literal"),
    "path_unclosed_set_across_dot": ([{"path": "a[.]b", "decay": False}], r"`path`: bad glob 'a\[\.\]b': unclosed '\['.*cannot span a dot"),
    "path_stray_bracket": ([{"path": "layer1]", "decay": False}], r"`path`: bad glob 'layer1\]': stray '\]'"),
    "path_bad_in_list": ([{"path": ["**.bias", "x.[!"], "decay": False}], r"`path`: bad glob 'x\.\[!': unclosed"),
    "rule_not_dict": ([3], r"rules\[0\]: must be a Rule or a dict, got int"),
    "rule_is_string": (["layer=norm"], r"rules\[0\]: must be a Rule or a dict, got str"),
}


@pytest.mark.parametrize("data,match", BAD_RULES.values(), ids=list(BAD_RULES))
def test_bad_rule_raises_rule_error(data, match):
    with pytest.raises(wdmask.RuleError, match=match):
        Rules(data)


BAD_SETS = {
    "rules_is_string": ("layer=norm", r"rules data must be a dict with a `rules` list or a list of rule dicts"),
    "rules_is_dict_without_key": ({"rule": []}, r"unknown top-level key 'rule'.*Did you mean 'rules'"),
    "missing_rules_key": ({"default": 1.0}, r"missing the `rules` list"),
    "default_negative": ({"rules": [], "default": -1}, r"`default` multiplier must be a finite number >= 0"),
    "default_string": ({"rules": [], "default": "1"}, r"`default` multiplier"),
    "data_is_number": (3, r"rules data must be a dict with a `rules` list"),
}


@pytest.mark.parametrize("data,match", BAD_SETS.values(), ids=list(BAD_SETS))
def test_bad_rule_set_raises(data, match):
    with pytest.raises(wdmask.RuleError, match=match):
        Rules.from_dict(data)


TYPOS = {"layr": ({"layr": "norm", "decay": False}, "layer"), "decays": ({"role": "bias", "decays": False}, "decay"),
         "multipler": ({"layer": "norm", "multipler": 0.5}, "multiplier"), "pth": ({"pth": "**.bias", "decay": False}, "path")}


@pytest.mark.parametrize("data,fix", TYPOS.values(), ids=list(TYPOS))
def test_rule_keyword_typo_gets_the_rule_file_message(data, fix):
    with pytest.raises(wdmask.RuleError) as direct:
        Rule(**data)
    with pytest.raises(wdmask.RuleError) as from_dict:
        Rule.from_dict(data, where="Rule")
    typo = next(k for k in data if k != fix and k not in ("role", "layer", "decay"))
    assert str(direct.value) == str(from_dict.value) == (
        f"Rule {data!r}: unknown key {typo!r}; valid: path, regex, layer, role, ndim, feeds_norm, module_type, "
        f"declared, in_block, decay, multiplier, lr, lr_decay, optimizer, why, optional. Did you mean {fix!r}?")
    with pytest.raises(wdmask.RuleError, match=rf"rules\[0\] .*unknown key {typo!r}.*Did you mean {fix!r}"):
        Rules([data])


def test_good_globs_with_sets_still_match():
    info = wdmask.ParamInfo(("blocks", "3", "bias"), (4,))
    assert Rule(path="blocks.[0-9].bias", decay=False).matches(info)
    assert not Rule(path="blocks.[!3].bias", decay=False).matches(info)
    assert Rule(path="x.[[]y[]]", decay=False).matches(wdmask.ParamInfo(("x", "[y]"), (1,)))  # literal brackets
    assert Rule(path="x.[]]", decay=False).matches(wdmask.ParamInfo(("x", "]"), (1,)))


def test_direct_rule_names_itself():
    with pytest.raises(wdmask.RuleError, match=r"Rule\(role='gamma', decay=False\) `role`: unknown role 'gamma'"):
        Rule(role="gamma", decay=False)


def test_rules_constructor_rejects_string():
    with pytest.raises(wdmask.RuleError, match=r"`rules` must be a list of rules \(Rule or dict\), got str"):
        Rules("layer=norm")  # type: ignore[arg-type]


def test_add_non_rule():
    with pytest.raises(wdmask.RuleError, match="can only add Rules"):
        wdmask.presets.standard + 3  # type: ignore[operator]


def test_unknown_preset():
    with pytest.raises(wdmask.RuleError, match=r"unknown preset 'standrd'.*Did you mean 'standard'"):
        wdmask.presets.by_name("standrd")


def test_rule_and_mask_errors_are_value_errors():
    assert issubclass(wdmask.RuleError, ValueError) and issubclass(wdmask.MaskError, ValueError)


def test_error_count():
    assert len(BAD_RULES) + len(BAD_SETS) >= 30
