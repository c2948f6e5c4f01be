"""The core imports neither torch nor jax (wdmask_torch never importing jax: tests/torch/test_describe.py)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module,forbidden", [("wdmask", ("torch", "jax", "flax", "optax", "equinox")),
                                              ("wdmask._jax._twins", ("torch",)),
                                              ("wdmask.presets", ("torch", "jax"))])
# wdmask_torch: tests/torch/test_describe.py::test_import_does_not_import_jax (import and a groups() call)
def test_import_does_not_load_frameworks(module, forbidden):
    code = f"import sys, {module}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import {module} loaded {out}"
