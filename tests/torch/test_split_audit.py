"""A hand-made Muon/AdamW split given as a list of optimizers: audited against ``presets.standard + presets.muon``
and inferred into rules that rebuild the same split (labels: class names lower-cased)."""

from __future__ import annotations

import pytest
import torch

import wdmask_torch
from tests.torch.policy_models import GPT
from wdmask import presets

RULES = presets.standard + presets.muon
IDX = torch.randint(0, 16, (2, 6), generator=torch.Generator().manual_seed(2))
# the hidden matrices by hand: attention and MLP projections of the blocks (not the tied wte/lm_head, not wpe)
HIDDEN = {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}


def _split(model: GPT, muon_names: set[str]) -> list[torch.optim.Optimizer]:
    named = dict(model.named_parameters())
    muon = [p for n, p in named.items() if n in muon_names]
    decayed = [p for n, p in named.items() if n not in muon_names and n == "transformer.wte.weight"]
    rest = [p for n, p in named.items() if n not in muon_names and n != "transformer.wte.weight"]
    return [torch.optim.Muon(muon, lr=0.02, weight_decay=0.1),
            torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                              lr=1e-3)]


@pytest.mark.parametrize("container", [list, tuple])
@pytest.mark.parametrize("traced", [False, True], ids=["registration", "traced"])
def test_audit_a_list_of_optimizers(container, traced):
    model = GPT()
    x = IDX if traced else None
    assert wdmask_torch.audit(container(_split(model, HIDDEN)), model, RULES, example_inputs=x).ok
    # Muon wrongly given every 2-D matrix: the embedding (tied head) and the position table (decayed by Muon too)
    every_2d = {n for n, p in model.named_parameters() if p.ndim == 2}
    report = wdmask_torch.audit(container(_split(model, every_2d)), model, RULES, example_inputs=x)
    wrong = {r.path: (r.expected_optimizer, r.actual_optimizer) for r in report.mismatches}
    assert wrong == {"transformer.wte.weight": ("adamw", "muon"), "transformer.wpe.weight": ("adamw", "muon")}


def test_infer_rules_from_a_list_rebuilds_the_split():
    model = GPT()
    hand = _split(model, HIDDEN)
    inferred = wdmask_torch.infer_rules(hand, model, example_inputs=IDX)
    opts = wdmask_torch.optimizers(model, inferred.rules, {"muon": lambda g: torch.optim.Muon(g, lr=0.02),
                                                           "adamw": lambda g: torch.optim.AdamW(g, lr=1e-3)},
                                   weight_decay=inferred.weight_decay, example_inputs=IDX)

    def per_label(opts_by_label: dict) -> dict[str, set[int]]:
        return {label: {id(p) for g in o.param_groups for p in g["params"]} for label, o in opts_by_label.items()}

    def decay(optimizers: list) -> dict[int, float]:
        return {id(p): g["weight_decay"] for o in optimizers for g in o.param_groups for p in g["params"]}

    assert per_label(opts.optimizers) == per_label({"muon": hand[0], "adamw": hand[1]})
    assert decay(list(opts.optimizers.values())) == decay(hand)


def test_list_errors():
    model = GPT()
    a, b = torch.optim.AdamW(model.transformer.h.parameters()), torch.optim.AdamW(model.transformer.wte.parameters())
    with pytest.raises(ValueError, match=r"two AdamW optimizers \(items \[0\] and \[1\]\).*both would be 'adamw'.*"
                                         r"\{label: optimizer\} dict"):
        wdmask_torch.audit([a, b], model, RULES)
    with pytest.raises(ValueError, match=r"two AdamW optimizers"):
        wdmask_torch.infer_rules((a, b), model)
    with pytest.raises(TypeError, match=r"a list whose item \[0\] is Parameter; a list must hold optimizers"):
        wdmask_torch.audit(list(model.parameters()), model, RULES)
    with pytest.raises(TypeError, match=r"got tuple; pass the optimizer itself .*not an empty tuple"):
        wdmask_torch.audit((), model, RULES)
