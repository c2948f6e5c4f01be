"""wdmask's warnings point at the user's line (the call into wdmask), not at wdmask's or a framework's frames,
and their fixes fit the framework of the model."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import wdmask
from wdmask import Rule, UnclassifiedWarning, UnmatchedRuleWarning

UNMATCHED = wdmask.presets.standard + wdmask.Rules([Rule(path="nothing.**", decay=False)])
PARAMS = {"Dense_0": {"kernel": np.zeros((2, 2), np.float32), "bias": np.zeros(2, np.float32)}}


def _where(caught: list[warnings.WarningMessage], category: type[Warning]) -> list[tuple[str, int]]:
    return [(w.filename, w.lineno) for w in caught if issubclass(w.category, category)]


def _next_line() -> int:
    """The line after the caller's current line: where the call under test is written."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def test_mask_warns_at_the_callers_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        wdmask.mask(PARAMS, UNMATCHED)
    assert _where(caught, UnmatchedRuleWarning) == [(__file__, line)]


def test_decay_init_inside_an_optax_chain_warns_at_the_callers_line():
    import optax

    tx = optax.chain(wdmask.decay(1e-4, UNMATCHED), optax.sgd(0.1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        tx.init(PARAMS)  # optax's chain init calls wdmask's: the user's line is still this one
    assert _where(caught, UnmatchedRuleWarning) == [(__file__, line)]


def test_jax_unclassified_warning_is_at_the_callers_line_and_does_not_suggest_torch():
    params = {"block": {"thing": np.zeros((3, 3), np.float32)}}  # names that say nothing, no model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        wdmask.mask(params, wdmask.presets.standard)
    [w] = [w for w in caught if issubclass(w.category, UnclassifiedWarning)]
    assert (w.filename, w.lineno) == (__file__, line)
    message = str(w.message)
    assert "register_norm" not in message and "`model=` with `sample=`" in message


def test_torch_warnings_are_at_the_callers_line_and_suggest_register_norm():
    torch = pytest.importorskip("torch")
    import wdmask_torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.foo = torch.nn.Parameter(torch.ones(2, 2))  # no graph, no telling name: unclassified

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        wdmask_torch.groups(Net(), UNMATCHED, weight_decay=1e-4)
    assert _where(caught, UnmatchedRuleWarning) == [(__file__, line)]
    assert _where(caught, UnclassifiedWarning) == [(__file__, line)]
    [w] = [w for w in caught if issubclass(w.category, UnclassifiedWarning)]
    assert "wdmask_torch.register_norm" in str(w.message) and "`example_inputs=`" in str(w.message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        wdmask.explain(Net(), UNMATCHED)
    assert _where(caught, UnmatchedRuleWarning) == [(__file__, line)]
