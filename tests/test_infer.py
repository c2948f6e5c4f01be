"""The neutral rule search on hand-made inventories: exact, short, silent, with the reference as a field."""

import dataclasses
import warnings

import pytest

from wdmask import ParamInfo, Rules, decide
from wdmask._infer import Inferred, infer_inventory


def scanned_inventory() -> list[ParamInfo]:
    """Dense -> scan(LayerNorm + Dense) x3 -> LayerNorm -> Dense, as a linen describe gives it."""
    def p(path, shape, layer, role, stacked=0):
        return ParamInfo(tuple(path.split(".")), shape, layer=layer, role=role, stacked=stacked)

    return [p("Dense_0.kernel", (5, 4), "linear", "kernel"), p("Dense_0.bias", (4,), "linear", "bias"),
            p("layers.LayerNorm_0.scale", (3, 4), "norm.layer", "scale", 1),
            p("layers.LayerNorm_0.bias", (3, 4), "norm.layer", "bias", 1),
            p("layers.Dense_0.kernel", (3, 4, 4), "linear", "kernel", 1),
            p("layers.Dense_0.bias", (3, 4), "linear", "bias", 1),
            p("LayerNorm_0.scale", (4,), "norm.layer", "scale"), p("LayerNorm_0.bias", (4,), "norm.layer", "bias"),
            p("Dense_1.kernel", (4, 2), "linear", "kernel"), p("Dense_1.bias", (2,), "linear", "bias")]


def multipliers(infos, rules) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {i.dotted: d.multiplier for i, d in zip(infos, decide(infos, rules).values(), strict=True)}


def test_array_ndim_mask_on_a_scanned_stack_needs_the_stack_as_an_exception() -> None:
    infos = scanned_inventory()
    wd = 3e-4
    actual = {i.path: wd if len(i.shape) > 1 else 0.0 for i in infos}  # `x.ndim > 1` on whole arrays
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the search probes rules: it must not warn
        result = infer_inventory(infos, actual)
    assert result.weight_decay == wd and result.rules.name == "inferred"
    assert result.rules.to_dict() == {"rules": [{"ndim": "<=1", "decay": False}, {"path": "layers.**", "decay": True}]}
    assert multipliers(infos, result.rules) == {i.dotted: 1.0 if len(i.shape) > 1 else 0.0 for i in infos}


def test_multipliers_no_decay_and_only_which() -> None:
    infos = scanned_inventory()
    actual = {i.path: {"kernel": 1e-4, "bias": 5e-5}.get(i.role, 0.0) for i in infos}
    result = infer_inventory(infos, actual)
    assert result.weight_decay == 5e-5  # the most common non-zero decay: 5 biases vs 3 kernels
    got = multipliers(infos, result.rules)
    assert {i.dotted: got[i.dotted] * result.weight_decay for i in infos} == pytest.approx(
        {i.dotted: actual[i.path] for i in infos}, rel=1e-12, abs=0)
    which = infer_inventory(infos, actual, ratios=False)  # bool-mask input: zero vs non-zero only
    assert which.weight_decay is None
    assert multipliers(infos, which.rules) == {i.dotted: 0.0 if i.role == "scale" else 1.0 for i in infos}
    none = infer_inventory(infos, {i.path: 0.0 for i in infos})
    assert none == Inferred(Rules([], default=0.0), None) and none.rules.default == 0.0


def test_unclassified_leaves_and_silence() -> None:
    infos = [ParamInfo(("w",), (4, 4), layer="linear", role="kernel"), ParamInfo(("b",), (4,), layer="linear",
                                                                                  role="bias"),
             ParamInfo(("mystery",), (4,)), ParamInfo(("other",), (4, 4))]
    actual = {i.path: 0.0 if i.role == "bias" else 1.0 for i in infos}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = infer_inventory(infos, actual)  # the final check would warn about `mystery` if not silenced
    assert result.rules.to_dict() == {"rules": [{"role": "bias", "decay": False}]}
    assert multipliers(infos, result.rules) == {"w": 1.0, "b": 0.0, "mystery": 1.0, "other": 1.0}


def test_inferred_is_a_frozen_record_and_bad_input() -> None:
    result = Inferred(Rules([{"role": "bias", "decay": False}], name="inferred"), 1e-4)
    assert repr(result) == "Inferred(rules=Rules(inferred: [{role='bias', decay=False}]), weight_decay=0.0001)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.weight_decay = 1.0  # type: ignore[misc]
    infos = scanned_inventory()
    with pytest.raises(ValueError, match="covers none of the 10 parameters"):
        infer_inventory(infos, {})
    with pytest.raises(ValueError, match=r"finite and >= 0, got \[\('Dense_0.kernel', -1.0\)\]"):
        infer_inventory(infos, {infos[0].path: -1.0})
