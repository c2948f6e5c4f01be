"""Rule conditions, precedence and the Rules container."""

import pytest

import wdmask
from wdmask import ParamInfo, Rule, Rules

CONV = ParamInfo(("layer1", "0", "conv1", "weight"), (8, 8, 3, 3), layer="conv", role="kernel",
                 module_type="torch.nn.Conv2d", source="type", feeds_norm=True)
BN_W = ParamInfo(("layer1", "0", "bn1", "weight"), (8,), layer="norm.batch", role="scale",
                 module_type="torch.nn.BatchNorm2d", source="type")
BN_B = ParamInfo(("layer1", "0", "bn1", "bias"), (8,), layer="norm.batch", role="bias",
                 module_type="torch.nn.BatchNorm2d", source="type")
LN_SCANNED = ParamInfo(("layers", "ln1", "scale"), (4, 16), layer="norm.layer", role="scale", stacked=1)
FC_W = ParamInfo(("fc", "weight"), (10, 8), layer="linear", role="kernel", feeds_norm=False)
FC_B = ParamInfo(("fc", "bias"), (10,), layer="linear", role="bias")
EMB = ParamInfo(("tok_emb", "weight"), (100, 8), layer="embedding", role="embedding", declared="no_decay")
UNKNOWN = ParamInfo(("head", "w"), (3, 3), feeds_norm=None)
ALL = [CONV, BN_W, BN_B, LN_SCANNED, FC_W, FC_B, EMB, UNKNOWN]

# condition -> the leaves it must match (and no other)
CONDITIONS = {
    "path_glob_star": ({"path": "layer1.*.bn1.*"}, {BN_W, BN_B}),
    "path_glob_doublestar": ({"path": "**.bias"}, {BN_B, FC_B}),
    "path_star_is_one_segment": ({"path": "layer1.*.weight"}, set()),
    "path_doublestar_middle": ({"path": "layer1.**.weight"}, {CONV, BN_W}),
    "path_doublestar_end": ({"path": "layer1.**"}, {CONV, BN_W, BN_B}),
    "path_list": ({"path": ["fc.*", "head.*"]}, {FC_W, FC_B, UNKNOWN}),
    "path_charclass": ({"path": "layer1.0.[bc]*.weight"}, {CONV, BN_W}),
    "regex_fullmatch": ({"regex": r".*\.bias"}, {BN_B, FC_B}),
    "regex_not_search": ({"regex": "bias"}, set()),
    "layer_norm_any": ({"layer": "norm"}, {BN_W, BN_B, LN_SCANNED}),
    "layer_norm_glob": ({"layer": "norm.*"}, {BN_W, BN_B, LN_SCANNED}),
    "layer_exact": ({"layer": "norm.batch"}, {BN_W, BN_B}),
    "layer_list": ({"layer": ["conv", "linear"]}, {CONV, FC_W, FC_B}),
    "layer_other": ({"layer": "other"}, {UNKNOWN}),
    "role": ({"role": "bias"}, {BN_B, FC_B}),
    "role_list": ({"role": ["scale", "embedding"]}, {BN_W, LN_SCANNED, EMB}),
    "ndim_int": ({"ndim": 1}, {BN_W, BN_B, LN_SCANNED, FC_B}),
    "ndim_le1_uses_per_layer_rank": ({"ndim": "<=1"}, {BN_W, BN_B, LN_SCANNED, FC_B}),
    "ndim_ge2": ({"ndim": ">=2"}, {CONV, FC_W, EMB, UNKNOWN}),
    "ndim_gt2": ({"ndim": ">2"}, {CONV}),
    "ndim_ne1": ({"ndim": "!=1"}, {CONV, FC_W, EMB, UNKNOWN}),
    "ndim_eq_spaces": ({"ndim": " == 4 "}, {CONV}),
    "ndim_lt": ({"ndim": "<2"}, {BN_W, BN_B, LN_SCANNED, FC_B}),
    "feeds_norm_true": ({"feeds_norm": True}, {CONV}),
    "feeds_norm_false_not_unknown": ({"feeds_norm": False}, {FC_W}),
    "module_type_glob": ({"module_type": "torch.nn.BatchNorm*"}, {BN_W, BN_B}),
    "declared": ({"declared": "no_decay"}, {EMB}),
    "and_of_conditions": ({"layer": "norm", "role": "bias"}, {BN_B}),
    "and_empty_result": ({"layer": "conv", "role": "bias"}, set()),
}


@pytest.mark.parametrize("conds,expected", CONDITIONS.values(), ids=list(CONDITIONS))
def test_condition_matches_exactly(conds, expected):
    rule = Rule(**conds, decay=False, optional=True)
    assert {i for i in ALL if rule.matches(i)} == expected


def test_last_match_wins():
    rules = Rules([{"layer": "norm", "decay": False}, {"path": "layer1.**", "multiplier": 0.5},
                   {"role": "bias", "decay": False}])
    got = {i.dotted: (d.multiplier, d.rule) for i, d in zip(ALL, wdmask.decide(ALL, rules).values(), strict=True)}
    assert got["layer1.0.bn1.weight"] == (0.5, 1)  # rule 1 is after rule 0
    assert got["layer1.0.bn1.bias"] == (0.0, 2)
    assert got["layers.ln1.scale"] == (0.0, 0)
    assert got["fc.weight"] == (1.0, None)
    assert got["layer1.0.conv1.weight"] == (0.5, 1)


def test_base_rule_then_exception():
    rules = Rules([{"decay": False}, {"layer": ["linear", "conv"], "role": "kernel", "decay": True}])
    decisions = wdmask.decide(ALL, rules)
    assert [i.dotted for i in ALL if decisions[i.path].decay] == ["layer1.0.conv1.weight", "fc.weight"]


def test_default_multiplier():
    rules = Rules([{"role": "kernel", "decay": True}], default=0.0)
    decisions = wdmask.decide([i for i in ALL if not i.unclassified], rules, strict=True)
    assert decisions[BN_W.path].multiplier == 0.0 and decisions[BN_W.path].rule is None
    assert decisions[CONV.path].multiplier == 1.0


def test_integer_leaves_never_decayed():
    step = ParamInfo(("counter",), (), dtype="int32")
    flag = ParamInfo(("mask",), (3, 3), dtype="bool")
    d = wdmask.decide([step, flag], wdmask.presets.all)
    assert d[step.path].multiplier == 0.0 and d[flag.path].multiplier == 0.0
    assert "never decayed" in d[step.path].reason


def test_decision_reason_uses_why_or_conditions():
    d = wdmask.decide([BN_W, CONV], Rules([Rule(layer="norm", decay=False),
                                           Rule(role="kernel", multiplier=2.0, why="kernels double")]))
    assert d[BN_W.path].reason == "layer='norm' -> no decay"
    assert d[CONV.path].reason == "kernels double"


def test_rules_is_immutable_sequence_with_add():
    base = wdmask.presets.standard
    extended = base + Rule(path="fc.*", multiplier=0.5) + [{"role": "embedding", "decay": False}]
    n = len(base)
    assert len(extended) == n + 2
    assert extended[:n] == Rules(list(base))
    assert extended[n].multiplier == 0.5 and extended[n + 1].role == "embedding"
    with pytest.raises(AttributeError):
        extended._rules = ()  # type: ignore[misc]
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        extended[0].decay = True  # type: ignore[misc]
    assert hash(Rules(list(base))) == hash(Rules(list(base)))


def test_rule_list_values_normalized_to_tuples():
    rule = Rule(layer=["conv", "linear"], decay=True)
    assert rule.layer == ("conv", "linear")
    assert rule == Rule(layer=("conv", "linear"), decay=True)
    assert rule.to_dict() == {"layer": ["conv", "linear"], "decay": True}


def test_unmatched_rule_warns_and_strict_raises():
    rules = Rules([{"layer": "embedding", "role": "bias", "decay": False}])
    with pytest.warns(wdmask.UnmatchedRuleWarning, match=r"rules\[0\] \{layer='embedding', role='bias'"):
        wdmask.decide(ALL, rules)
    with pytest.raises(wdmask.RuleError, match="matched no parameter"):
        wdmask.decide(ALL, rules, strict=True)


def test_unmatched_feeds_norm_rule_hints_at_graph():
    inv = [ParamInfo(("conv", "weight"), (4, 4, 3, 3), layer="conv", role="kernel")]
    with pytest.raises(wdmask.RuleError, match="example inputs / a sample"):
        wdmask.decide(inv, Rules([{"feeds_norm": True, "decay": False}]), strict=True)


def test_shadowed_rule_still_counts_as_matching():
    rules = Rules([{"layer": "norm", "decay": False}, {"layer": "norm", "decay": True}])
    decisions = wdmask.decide(ALL[:-1], rules, strict=True)  # rule 0 matches even though it never wins
    assert decisions[BN_W.path].rule == 1


def test_unclassified_leaf_left_to_the_default_warns_and_strict_raises():
    rules = Rules([{"layer": "norm", "decay": False}])
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"1 parameter\(s\) have no known layer kind or role and were "
                      r"decayed by the rules' default: head\.w\. Fix: pass example inputs"):
        d = wdmask.decide(ALL, rules)
    assert d[UNKNOWN.path].multiplier == 1.0
    with pytest.raises(wdmask.RuleError, match=r"head\.w"):
        wdmask.decide(ALL, rules, strict=True)
    # a rule that covers the leaf by path: no guess, no warning; rules that never look at kinds: none either
    wdmask.decide(ALL, rules + Rule(path="head.w", decay=False), strict=True)
    wdmask.decide(ALL, wdmask.presets.timm, strict=True)


def test_unclassified_warning_lists_ten_then_counts():
    inv = [ParamInfo((f"p{i}",), (2, 2)) for i in range(13)]
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 3 more"):
        wdmask.decide(inv, wdmask.presets.standard)


def test_feeds_norm_rule_without_graph_warns_even_when_optional():
    inv = [ParamInfo(("conv", "weight"), (4, 4, 3, 3), layer="conv", role="kernel")]
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"rules\[5\] condition on feeds_norm, which is unknown for 1 "
                      r"conv/linear parameter\(s\).*conv\.weight"):
        wdmask.decide(inv, wdmask.presets.standard_scale_invariant)
    known = [ParamInfo(("conv", "weight"), (4, 4, 3, 3), layer="conv", role="kernel", feeds_norm=True)]
    assert wdmask.decide(known, wdmask.presets.standard_scale_invariant, strict=True)[known[0].path].multiplier == 0


def test_optional_rules_do_not_warn():
    wdmask.decide([CONV], wdmask.presets.standard, strict=True)


def test_duplicate_paths_rejected():
    with pytest.raises(wdmask.RuleError, match=r"share the path 'fc\.weight'"):
        wdmask.decide([FC_W, FC_W], wdmask.presets.standard)


def test_decide_rejects_non_paraminfo():
    with pytest.raises(TypeError, match="ParamInfo"):
        wdmask.decide([("fc", "weight")], wdmask.presets.standard)  # type: ignore[list-item]


def test_paraminfo_validates_and_formats():
    assert str(BN_W) == "layer1.0.bn1.weight" and LN_SCANNED.ndim == 1
    with pytest.raises(ValueError, match="layer 'norm'"):
        ParamInfo(("a",), (1,), layer="norm")
    with pytest.raises(ValueError, match="role 'weight'"):
        ParamInfo(("a",), (1,), role="weight")
    with pytest.raises(ValueError, match="stacked=2"):
        ParamInfo(("a",), (1,), stacked=2)
    with pytest.raises(TypeError, match="tuple of str"):
        ParamInfo("a.b", (1,))  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [{"why": "x", "layer": "nrm", "decay": False}, {"multiplier": -1}])
def test_invalid_rule_dict_is_named_by_its_index_whatever_the_key_order(data):
    with pytest.raises(wdmask.RuleError, match=r"^rules\[0\] \{"):
        Rules([data])
