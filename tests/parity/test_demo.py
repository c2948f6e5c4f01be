"""``wdmask demo`` (``run_demo``): prints the decision table and parity steps; float64 differences ~1e-16."""

import io

import pytest
from rich.console import Console

from wdmask_migrate._demo import run_demo


@pytest.mark.slow
def test_run_demo() -> None:
    import jax

    console = Console(file=io.StringIO(), width=160, record=True)
    jax.config.update("jax_enable_x64", False)
    try:
        diffs = run_demo(console, steps=2)
        assert not jax.config.jax_enable_x64  # the demo's float64 does not leak into the caller
    finally:
        jax.config.update("jax_enable_x64", True)
    text = console.export_text()
    assert len(diffs) == 2 and max(diffs) <= 1e-12
    assert "layer1.0.downsample" not in text or "layer1_0" in text
    assert "38 paired parameters, 0 decisions differ" in text
    # one row per kind of parameter, torch paths folded: the ResNet-18-style model has shortcuts in layers 2-4
    assert "layer{2..4}.0.downsample.1.weight" in text and "layer{1..4}.0.conv{1,2}.weight" in text
    # standard decays the 12 conv kernels and the fc kernel of this ResNet, nothing else
    assert "the same 13 of 38 parameters are decayed in both frameworks; after 2 steps the parameters agree to" in text
    assert "within float64 rounding" in " ".join(text.split())
