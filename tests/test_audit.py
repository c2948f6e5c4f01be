"""The neutral audit core on hand-made inventories: statuses, reference, ratios, report text."""

import pytest

from wdmask import ParamInfo, presets
from wdmask._audit import AuditReport, audit_inventory, reference_weight_decay

CONV = ParamInfo(("conv", "weight"), (8, 3, 3, 3), layer="conv", role="kernel")
FC = ParamInfo(("fc", "weight"), (10, 8), layer="linear", role="kernel")
FC_B = ParamInfo(("fc", "bias"), (10,), layer="linear", role="bias")
BN = ParamInfo(("bn", "weight"), (8,), layer="norm.batch", role="scale")
INV = [CONV, FC, FC_B, BN]


def test_agreeing_optimizer_is_ok_whatever_its_weight_decay() -> None:
    for wd in (1e-4, 0.05):
        report = audit_inventory(INV, {CONV.path: [wd], FC.path: [wd], FC_B.path: [0.0], BN.path: [0.0]},
                                 presets.standard)
        report.assert_ok()
        assert report.reference == wd and report.problems == ()
        assert report.summary() == f"audit ok vs rules 'standard': 4 parameters agree (optimizer weight_decay={wd:g})"


def test_each_problem_kind() -> None:
    actual = {CONV.path: [1e-4], FC.path: [1e-4, 1e-4], BN.path: [1e-4]}  # fc.bias held by no group
    report = audit_inventory(INV, actual, presets.standard, foreign=["extra (3,)"])
    assert [(r.path, r.status) for r in report.problems] == [("fc.weight", "duplicate"), ("fc.bias", "missing"),
                                                            ("bn.weight", "mismatch")]
    assert (report.mismatches[0].path, report.missing[0].path, report.duplicates[0].count) == (
        "bn.weight", "fc.bias", 2)
    assert report.missing[0].actual is None and report.mismatches[0].reason.startswith("decayed; rules: ")
    assert not report.ok and report.foreign == ("extra (3,)",)
    text = str(report)
    assert "1 mismatched, 1 missing, 1 duplicated, 1 foreign of 4 parameters" in text
    assert "extra (3,)" in text and "held 2 times" in text
    with pytest.raises(AssertionError, match="1 mismatched"):
        report.assert_ok()
    assert not AuditReport((), None, ("x",)).ok  # foreign alone fails


def test_ratios_and_reference() -> None:
    rules = [{"role": "bias", "multiplier": 0.5}, {"layer": "norm", "decay": False}]
    good = {CONV.path: [2e-4], FC.path: [2e-4], FC_B.path: [1e-4], BN.path: [0.0]}
    assert audit_inventory(INV, good, rules).ok
    bad = audit_inventory(INV, {**good, FC_B.path: [2e-4]}, rules)
    assert [r.path for r in bad.problems] == ["fc.bias"]
    assert bad.problems[0].reason.startswith("weight_decay 0.0002 != 0.0001 (x1 instead of x0.5)")
    # only which parameters: any non-zero value agrees with any non-zero multiplier
    which = audit_inventory(INV, {**good, FC_B.path: [2e-4], CONV.path: [7.0]}, rules, ratios=False, subject="mask")
    assert which.ok and which.reference is None and "mask: which parameters are decayed" in which.summary()
    none = audit_inventory(INV, {p.path: [0.0] for p in INV}, presets.standard)
    assert none.reference is None and [r.path for r in none.problems] == ["conv.weight", "fc.weight"]
    assert all(r.reason.startswith("not decayed") for r in none.problems)


def test_reference_prefers_multiplier_one_and_the_most_common_value() -> None:
    assert reference_weight_decay([(1.0, 1e-4), (1.0, 3e-4), (1.0, 1e-4), (0.0, 5.0)]) == 1e-4
    assert reference_weight_decay([(0.5, 1e-4), (0.5, 1e-4), (2.0, 9.0)]) == 2e-4  # no x1 parameter: value / m
    assert reference_weight_decay([(1.0, 0.0), (0.0, 0.0)]) is None
