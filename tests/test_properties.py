"""Hypothesis properties of the rule engine."""

import dataclasses
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wdmask
from wdmask import ParamInfo, Rule, Rules
from wdmask._types import LAYER_KINDS, ROLES, Inventory

segments = st.sampled_from(["layer1", "layer2", "0", "1", "conv1", "bn1", "fc", "attn", "ln"])
leaf_names = st.sampled_from(["weight", "bias", "scale", "kernel", "embedding"])


# Example counts (60/40/40/40/100, were 200/150/150/150/200) are where hypothesis's own drawing, not the
# engine, is most of the time; the strategies are small enough that these counts still reach every rule
# condition and every layer kind, and a broken expectation fails within the first few examples.
# Strategies are built once, at import: a strategy built inside a composite is new at every draw, and
# hypothesis recomputes its properties each time (that was ~3/4 of this file's run time).
_paths = st.lists(segments, min_size=0, max_size=3)
_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)
_stacked = {0: st.just(0), 1: st.integers(0, 1)}  # stacked <= min(1, ndim)
_layers, _roles = st.sampled_from(LAYER_KINDS), st.sampled_from(ROLES)
_feeds = st.sampled_from([None, True, False])
_dtypes = st.sampled_from(["float32", "float64", "int32"])


@st.composite
def inventories(draw):
    n = draw(st.integers(1, 25))
    seen: dict[tuple[str, ...], ParamInfo] = {}
    for _ in range(n):
        path = (*draw(_paths), draw(leaf_names))
        shape = draw(_shapes)
        seen[path] = ParamInfo(path, shape, layer=draw(_layers), role=draw(_roles),
                               stacked=draw(_stacked[min(1, len(shape))]), feeds_norm=draw(_feeds),
                               dtype=draw(_dtypes))
    return list(seen.values())


_conditions = st.fixed_dictionaries({}, optional={
    "path": st.sampled_from(["**.bias", "layer1.**", "*.weight", "fc.*", "**"]),
    "layer": st.sampled_from(["norm", "conv", "linear", "norm.batch", "other", "embedding"]),
    "role": st.sampled_from(list(ROLES)),
    "ndim": st.sampled_from([0, 1, 2, "<=1", ">=2", "!=4"]),
    "feeds_norm": st.booleans(),
})
_actions = st.one_of(st.fixed_dictionaries({"decay": st.booleans()}),
                     st.fixed_dictionaries({"multiplier": st.sampled_from([0.0, 0.5, 1.0, 2.0])}))
_rule_counts, _defaults = st.integers(0, 6), st.sampled_from([0.0, 1.0])


@st.composite
def rules(draw):
    out = [Rule(**draw(_conditions), **draw(_actions), optional=True) for _ in range(draw(_rule_counts))]
    return Rules(out, default=draw(_defaults))


@settings(max_examples=60, deadline=None)
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


@settings(max_examples=40, deadline=None)
@given(inventories(), rules())
def test_appending_a_rule_that_matches_nothing_changes_nothing(inv, rs):
    never = Rule(path="no_such_module.**", decay=False, optional=True)
    before = {p: d.multiplier for p, d in wdmask.decide(inv, rs).items()}
    after = {p: d.multiplier for p, d in wdmask.decide(inv, rs + never).items()}
    assert before == after


@settings(max_examples=40, deadline=None)
@given(rules())
def test_dict_round_trip(rs):
    assert Rules.from_dict(rs.to_dict()) == rs
    for fmt in ("json", "toml", "yaml"):
        assert wdmask.loads(wdmask.dumps(rs, fmt), fmt) == rs


@settings(max_examples=40, deadline=None)
@given(inventories(), rules(), st.randoms())
def test_decisions_do_not_depend_on_inventory_order(inv, rs, rnd):
    shuffled = list(inv)
    rnd.shuffle(shuffled)
    assert wdmask.decide(inv, rs) == wdmask.decide(shuffled, rs)


_booleans = st.booleans()


def _last_match_wins(inv, rs):
    """``decide``'s multipliers and winning rules restated without any memo: every rule tried on every leaf."""
    out = {}
    for info in inv:
        matching = [k for k, r in enumerate(rs) if r.matches(info)]
        if not info.is_float:
            out[info.path] = (0.0, None)
        elif matching:
            out[info.path] = (rs[matching[-1]].multiplier_value, matching[-1])
        else:
            out[info.path] = (rs.default, None)
    return out


_kinds = st.lists(st.tuples(leaf_names, st.lists(st.integers(1, 3), max_size=3).map(tuple), _layers, _roles, _feeds,
                            st.sampled_from(["float32", "int32"]), st.sampled_from(["", "no_decay"])),
                  min_size=1, max_size=4)
_blocks = st.integers(1, 6)


@st.composite
def repeated_inventories(draw):
    """Inventories of a few leaf kinds repeated under many paths (what a deep stack of blocks gives decide's memo)."""
    kinds = draw(_kinds)
    blocks = draw(_blocks)
    return [ParamInfo((f"layer{b}", segment, name), shape, dtype, layer, role, feeds_norm=feeds, declared=declared)
            for b in range(blocks) for k, (name, shape, layer, role, feeds, dtype, declared) in enumerate(kinds)
            for segment in (f"m{k}",)]


@settings(max_examples=100, deadline=None)
@given(st.one_of(inventories(), repeated_inventories()), rules(), st.booleans(), st.data())
def test_memoized_decide_equals_last_match_wins(inv, rs, without_path_rules, data):
    extra = [Rule(declared="no_decay", decay=False), Rule(regex=r"layer\d\.m1\..*", multiplier=0.5)]
    kept = [r for r in (*rs, *extra) if not without_path_rules or (r.path is None and r.regex is None)]
    # some rules not optional, so the "matched nothing" report (computed from the memo) is checked too
    rs = Rules([dataclasses.replace(r, optional=data.draw(_booleans)) for r in kept], default=rs.default)
    want = _last_match_wins(inv, rs)
    unmatched = [k for k, r in enumerate(rs) if not r.optional and not any(r.matches(i) for i in inv)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = wdmask.decide(inv, rs)
    assert {p: (d.multiplier, d.rule) for p, d in got.items()} == want
    reported = [str(w.message) for w in caught if issubclass(w.category, wdmask.UnmatchedRuleWarning)]
    if unmatched:
        assert len(reported) == 1 and reported[0].startswith(f"{len(unmatched)} rule(s) matched no parameter")
        for k in unmatched:
            assert f"rules[{k}] " in reported[0]
    else:
        assert reported == []


def _as_kinds(inv):
    """``inv`` as an ``Inventory`` of kinds: leaves equal in every field but path and shape (of equal rank)
    share one kind, the first of them."""
    kinds, kind_of, index = [], [], {}
    for info in inv:
        fields = dataclasses.asdict(info)
        fields.pop("path")
        fields["shape"] = len(info.shape)
        key = repr(sorted(fields.items()))
        if key not in index:
            index[key] = len(kinds)
            kinds.append(info)
        kind_of.append(index[key])
    return Inventory(kinds, kind_of, [i.path for i in inv], [i.shape for i in inv])


def _decide_recorded(inv, rs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = wdmask.decide(inv, rs)
    return got, [(w.category, str(w.message)) for w in caught]


@settings(max_examples=60, deadline=None)
@given(st.one_of(inventories(), repeated_inventories()), rules(), st.data())
def test_an_inventory_of_kinds_is_decided_as_its_leaves(inv, rs, data):
    # a kind rule (unclassified leaves left to the default are reported, in leaf order), a feeds_norm rule
    # (unknown feeds_norm reported) and a path rule that tells apart leaves of one kind
    extra = [Rule(role="bias", decay=False), Rule(feeds_norm=True, decay=False), Rule(path="layer0.**", multiplier=2.0)]
    rs = Rules([dataclasses.replace(r, optional=data.draw(_booleans)) for r in (*rs, *extra)
                if data.draw(_booleans)], default=rs.default)
    grouped = _as_kinds(inv)
    assert list(grouped) == inv and len(grouped) == len(inv) and grouped[-1] == inv[-1]
    got, reports = _decide_recorded(grouped, rs)
    assert (got, reports) == _decide_recorded(inv, rs)  # the same decisions, reasons and warnings
    assert {p: (d.multiplier, d.rule) for p, d in got.items()} == _last_match_wins(inv, rs)


def test_an_inventory_of_kinds_with_a_repeated_path_is_refused():
    kind = ParamInfo(("a", "bias"), (2,), layer="linear", role="bias")
    grouped = Inventory([kind], [0, 0, 0], [("a", "bias"), ("b", "bias"), ("a", "bias")], [(2,), (2,), (3,)])
    with pytest.raises(wdmask.RuleError, match=r"two parameters share the path 'a\.bias'"):
        wdmask.decide(grouped, wdmask.presets.standard)


def test_guesses_in_an_inventory_of_kinds_are_listed_in_leaf_order():
    a, b = ParamInfo(("l0", "a"), (2,)), ParamInfo(("l0", "b"), (2, 2))  # unclassified: layer and role "other"
    grouped = Inventory([a, b], [0, 1, 0, 1], [("l0", "a"), ("l0", "b"), ("l1", "a"), ("l1", "b")], [(2,), (2, 2)] * 2)
    with pytest.warns(wdmask.UnclassifiedWarning) as caught:
        wdmask.decide(grouped, wdmask.presets.standard)
    assert "4 parameter(s) have no known layer kind or role and were decayed by the rules' default: " \
           "l0.a, l0.b, l1.a, l1.b." in str(caught[0].message)
