"""Hypothesis properties of the rule engine."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import wdmask
from wdmask import ParamInfo, Rule, Rules
from wdmask._types import LAYER_KINDS, ROLES

segments = st.sampled_from(["layer1", "layer2", "0", "1", "conv1", "bn1", "fc", "attn", "ln"])
leaf_names = st.sampled_from(["weight", "bias", "scale", "kernel", "embedding"])


@st.composite
def inventories(draw):
    n = draw(st.integers(1, 25))
    seen: dict[tuple[str, ...], ParamInfo] = {}
    for _ in range(n):
        path = (*draw(st.lists(segments, min_size=0, max_size=3)), draw(leaf_names))
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=4)))
        seen[path] = ParamInfo(path, shape, layer=draw(st.sampled_from(LAYER_KINDS)), role=draw(st.sampled_from(ROLES)),
                               stacked=draw(st.integers(0, min(1, len(shape)))),
                               feeds_norm=draw(st.sampled_from([None, True, False])),
                               dtype=draw(st.sampled_from(["float32", "float64", "int32"])))
    return list(seen.values())


@st.composite
def rules(draw):
    out = []
    for _ in range(draw(st.integers(0, 6))):
        conds = draw(st.fixed_dictionaries({}, optional={
            "path": st.sampled_from(["**.bias", "layer1.**", "*.weight", "fc.*", "**"]),
            "layer": st.sampled_from(["norm", "conv", "linear", "norm.batch", "other", "embedding"]),
            "role": st.sampled_from(list(ROLES)),
            "ndim": st.sampled_from([0, 1, 2, "<=1", ">=2", "!=4"]),
            "feeds_norm": st.booleans(),
        }))
        action = draw(st.one_of(st.fixed_dictionaries({"decay": st.booleans()}),
                                st.fixed_dictionaries({"multiplier": st.sampled_from([0.0, 0.5, 1.0, 2.0])})))
        out.append(Rule(**conds, **action, optional=True))
    return Rules(out, default=draw(st.sampled_from([0.0, 1.0])))


@settings(max_examples=200, deadline=None)
@given(inventories(), rules())
def test_every_leaf_gets_exactly_one_decision(inv, rs):
    decisions = wdmask.decide(inv, rs)
    assert list(decisions) == [i.path for i in inv]
    for info in inv:
        d = decisions[info.path]
        assert math.isfinite(d.multiplier) and d.multiplier >= 0
        matching = [k for k, r in enumerate(rs) if r.matches(info)]
        if not info.is_float:
            assert d.multiplier == 0.0
        elif matching:  # independent re-statement of "last match wins"
            assert d.rule == matching[-1] and d.multiplier == rs[matching[-1]].multiplier_value
        else:
            assert d.rule is None and d.multiplier == rs.default


@settings(max_examples=150, deadline=None)
@given(inventories(), rules())
def test_appending_a_rule_that_matches_nothing_changes_nothing(inv, rs):
    never = Rule(path="no_such_module.**", decay=False, optional=True)
    before = {p: d.multiplier for p, d in wdmask.decide(inv, rs).items()}
    after = {p: d.multiplier for p, d in wdmask.decide(inv, rs + never).items()}
    assert before == after


@settings(max_examples=150, deadline=None)
@given(rules())
def test_dict_round_trip(rs):
    assert Rules.from_dict(rs.to_dict()) == rs
    for fmt in ("json", "toml", "yaml"):
        assert wdmask.loads(wdmask.dumps(rs, fmt), fmt) == rs


@settings(max_examples=150, deadline=None)
@given(inventories(), rules(), st.randoms())
def test_decisions_do_not_depend_on_inventory_order(inv, rs, rnd):
    shuffled = list(inv)
    rnd.shuffle(shuffled)
    assert wdmask.decide(inv, rs) == wdmask.decide(shuffled, rs)
