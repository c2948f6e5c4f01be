"""The conformance catalogue run against both adapters (issues 22 and 23).

Each case of ``tests/conformance/catalogue.py`` is described in torch (``wdmask_torch.describe(model,
example_inputs=...)``), Flax linen (``wdmask.describe(model, sample=...)``) and, where it has a twin, Equinox; every
parameter must get the hand-written ``(layer, role, usage, feeds_norm, standard, scale_invariant)`` and the twins must
agree with each other. The expectations are the specification of the one-resolver rewrite: on the code before it,
many of these fail by design (nothing is marked xfail).
"""

from __future__ import annotations

import functools
import inspect
import pathlib
import re
import warnings
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import pytest
from torch import nn as tnn

import wdmask
import wdmask_torch
from tests.conformance import catalogue
from tests.conformance.catalogue import CASES, Case, Twin
from wdmask import presets

Row = tuple[Any, ...]  # (layer, role, usage, feeds_norm, decayed by standard, by standard_scale_invariant)
UNMAPPED = "?"  # the logical name of a described parameter no case path names


def _twin(case: Case, framework: str) -> Twin:
    twin = getattr(case, "linen" if framework == "linen_given" else framework)
    assert twin is not None
    return twin


@functools.cache
def observed(name: str, framework: str) -> dict[tuple[str, str], Row]:
    """``{(logical, path): row}`` as the adapter describes the case's twin (once per process)."""
    case = CASES[name]
    twin = _twin(case, framework)
    model, sample = twin.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unclassified leaves are part of what is checked, not noise
        if framework == "torch":
            inventory = wdmask_torch.describe(model, example_inputs=sample)
        elif framework == "linen_given":  # the params given: one trace of apply on them, no init
            params = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), *sample)["params"]
            inventory = wdmask.describe(model, sample=sample, params=params)
        else:
            inventory = wdmask.describe(model, sample=sample)
        standard = wdmask.decide(inventory, presets.standard)
        scale_invariant = wdmask.decide(inventory, presets.standard_scale_invariant)
    owner = {path: logical for logical in case.expect for path in twin.paths_of(logical)}
    return {(owner.get(i.dotted, UNMAPPED), i.dotted): (i.layer, i.role, i.usage, i.feeds_norm,
                                                        standard[i.path].decay, scale_invariant[i.path].decay)
            for i in inventory}


def expected(name: str, framework: str) -> dict[tuple[str, str], Row]:
    case = CASES[name]
    twin = _twin(case, framework)
    return {(logical, path): want.row() for logical, want in case.expect.items() for path in twin.paths_of(logical)}


def by_logical(rows: dict[tuple[str, str], Row]) -> dict[str, list[Row]]:
    """The distinct rows of each logical parameter (a fused torch tensor vs three linen kernels compare equal)."""
    out: dict[str, set[Row]] = {}
    for (logical, _), row in rows.items():
        out.setdefault(logical, set()).add(row)
    return {k: sorted(v, key=repr) for k, v in sorted(out.items())}


EQUINOX = [name for name, case in CASES.items() if case.equinox is not None]


@pytest.mark.parametrize("name", list(CASES))
def test_torch(name: str) -> None:
    assert observed(name, "torch") == expected(name, "torch")


@pytest.mark.parametrize("name", list(CASES))
def test_linen(name: str) -> None:
    assert observed(name, "linen") == expected(name, "linen")


@pytest.mark.parametrize("name", list(CASES))
def test_linen_with_its_params(name: str) -> None:
    """Described with its params (``mask(params, model=, sample=)`` does): one trace of ``apply``, same answers."""
    assert observed(name, "linen_given") == expected(name, "linen")


#: Known gaps, each a strict xfail (it fails the run the day it passes). None today: a Linear whose output goes
#: into `eqx.nn.LayerNorm` is seen to feed a norm from the jaxpr's source info.
EQUINOX_GAPS: dict[str, str] = {}


def _gap(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.xfail(reason=EQUINOX_GAPS[name], strict=True)] if name in EQUINOX_GAPS else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_gap(n)) for n in EQUINOX])
def test_equinox(name: str) -> None:
    assert observed(name, "equinox") == expected(name, "equinox")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_gap(n)) for n in CASES])
def test_twins_agree(name: str) -> None:
    """torch, linen (and Equinox) give the same rows per logical parameter, whatever the catalogue says."""
    torch_rows = by_logical(observed(name, "torch"))
    assert by_logical(observed(name, "linen")) == torch_rows
    if CASES[name].equinox is not None:
        assert by_logical(observed(name, "equinox")) == torch_rows


# --------------------------------------------------------------------------- the catalogue itself

_NO_DECAY_ROLES = {"scale", "bias", "gain", "position", "token", "elementwise"}
_USAGES = {"gather_data", "contract", "norm_scale", "norm_shift", "gather_pos", "concat", "mul", "add", "elementwise",
           "unused"}


def test_catalogue_is_large_enough_and_covers_both_frameworks() -> None:
    assert len(CASES) >= 45
    assert len(EQUINOX) >= 10
    for name, case in CASES.items():
        assert case.expect and case.pattern, name
        for twin in (case.torch, case.linen, case.equinox):
            if twin is not None:
                assert set(twin.paths) <= set(case.expect), name  # no path for a parameter the case does not expect


@pytest.mark.parametrize("name", list(CASES))
def test_expected_decisions_follow_the_presets(name: str) -> None:
    """Each row's two decisions restate the presets (written from their docs, not computed by wdmask): ``standard``
    keeps decay off every norm parameter and every bias, gain, position, token and elementwise-only parameter;
    ``standard_scale_invariant`` also off what feeds a norm. Catches a typo in a hand-written row."""
    for logical, want in CASES[name].expect.items():
        assert set(want.usage) <= _USAGES, (name, logical)
        standard = not (want.layer.startswith("norm.") or want.role in _NO_DECAY_ROLES)
        assert want.standard == standard, (name, logical)
        assert want.scale_invariant == (standard and want.feeds_norm is not True), (name, logical)
        assert want.feeds_norm is not None, (name, logical)  # every case is traced: a graph was seen


def test_model_class_names_carry_no_layer_evidence() -> None:
    """The layer kinds of the catalogue come from the graph and exact framework classes: a model class whose name
    says a kind (a "Conv" or "Norm" word) would be evidence too; only ``norm_class_by_name`` uses one on purpose."""
    on_purpose = {"TRMSNorm", "LRMSNorm"}
    says_a_kind = re.compile(r"(?i)norm|conv|dense|linear|embed")
    for cls_name, cls in inspect.getmembers(catalogue, inspect.isclass):
        if issubclass(cls, tnn.Module | nn.Module | eqx.Module) and cls.__module__ == catalogue.__name__:
            assert (says_a_kind.search(cls_name) is not None) == (cls_name in on_purpose), cls_name


def test_markdown_table_has_one_row_per_parameter() -> None:
    text = catalogue.catalogue_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(case.expect) for case in CASES.values())
    assert all(line.count(" | ") == 4 for line in rows)
    assert text.startswith("**dense**: Linear / Dense with a bias\n\n| parameter |")
    assert rows[0] == "| `w` | linear, kernel | contract | no | yes / yes |"


DOCS_PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def test_docs_page_shows_the_catalogue_as_it_is() -> None:
    """docs/conformance.md embeds ``catalogue_markdown()``; regenerate with
    ``python -c "import tests.conformance.test_conformance as t; t.write_docs_page()"``."""
    text = DOCS_PAGE.read_text()
    assert text[text.index(START) + len(START):text.index(END)].strip() == catalogue.catalogue_markdown()


def write_docs_page() -> None:
    text = DOCS_PAGE.read_text()
    head, tail = text[:text.index(START) + len(START)], text[text.index(END):]
    DOCS_PAGE.write_text(f"{head}\n{catalogue.catalogue_markdown()}\n{tail}")
