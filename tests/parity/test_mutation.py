"""The parity check can fail: one decision flipped on one side only is caught and named."""

from __future__ import annotations

import pytest

from tests.parity._parity_utils import Trainer, assert_parity, batches, twins
from wdmask import Rule, presets


@pytest.mark.parametrize(("torch_extra", "flax_extra", "named"), [
    # Flax decays less: layer1_0.conv1.kernel loses its decay on the JAX side only.
    ([], [Rule(path="layer1_0.conv1.kernel", decay=False)], "layer1.0.conv1.weight"),
    # torch decays more: fc.bias gains decay on the torch side only.
    ([Rule(path="fc.bias", decay=True)], [], "fc.bias"),
], ids=["flax_side", "torch_side"])
def test_flipped_decision_is_caught(torch_extra: list[Rule], flax_extra: list[Rule], named: str) -> None:
    trainer = Trainer(twins("resnet18_tiny"), "momentum", presets.standard + torch_extra, presets.standard + flax_extra)
    (x, y), = batches(1, "float64")
    trainer.step(x, y)
    diffs = trainer.diff()
    # after one step only the flipped parameter moved differently (grads were computed from equal params)
    with pytest.raises(AssertionError, match=rf"step 1: 1 leaves differ by more than 1e-12: {named} \("):
        assert_parity(diffs, 1e-12, step=1)
    assert max(diffs, key=diffs.get) == named
    assert diffs[named] > 1e-9
