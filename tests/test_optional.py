"""A missing optional dependency is named with the exact ``pip install 'wdmask[...]'`` line, per entry point.

Each case runs in a fresh interpreter in which the dependency is made unimportable (``sys.modules[name] =
None``, what ``import`` reports as ``ModuleNotFoundError``), as in an environment that never installed it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from wdmask._optional import MissingDependencyError, require

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Calls made with the dependency missing, each a Python expression.
PARAMS = "{'Dense_0': {'kernel': np.zeros((2, 2)), 'bias': np.zeros(2)}}"
CALLS = {
    "mask": f"wdmask.mask({PARAMS}, wdmask.presets.standard)",
    "decay": "wdmask.decay(1e-4)",
    "describe": f"wdmask.describe({PARAMS})",
    "explain": f"wdmask.explain({PARAMS}, wdmask.presets.standard)",
    "lars": "wdmask.lars(0.1, 1e-4)",
    "dumps_yaml": "wdmask.dumps(wdmask.presets.standard, 'yaml')",
    "loads_yaml": "wdmask.loads('rules: []', 'yaml')",
    "import_wdmask_torch": "__import__('wdmask_torch')",
    "to_flax": "__import__('wdmask_torch').to_flax(__import__('torch').nn.Linear(2, 2), {})",
}

# (blocked modules, call, the message expected: what was called, what is missing, the pip line)
CASES = {
    "mask_without_jax": (["jax"], "mask", "wdmask.mask needs jax, which is not installed: pip install 'wdmask[jax]'"),
    "decay_without_jax": (["jax"], "decay", "wdmask.decay needs jax, which is not installed: pip install 'wdmask[jax]'"),
    "decay_without_optax": (["optax"], "decay",
                            "wdmask.decay needs optax, which is not installed: pip install 'wdmask[jax]'"),
    "describe_without_flax": (["flax"], "describe",
                              "wdmask.describe needs flax, which is not installed: pip install 'wdmask[jax]'"),
    "explain_without_jax": (["jax"], "explain",
                            "wdmask.explain needs jax, which is not installed: pip install 'wdmask[jax]'"),
    "lars_without_optax": (["optax"], "lars", "wdmask.lars needs optax, which is not installed: pip install 'wdmask[jax]'"),
    "dumps_without_yaml": (["yaml"], "dumps_yaml",
                           "wdmask.dumps(..., 'yaml') needs pyyaml, which is not installed: pip install 'wdmask[yaml]'"),
    "loads_without_yaml": (["yaml"], "loads_yaml",
                           "wdmask.loads(..., 'yaml') needs pyyaml, which is not installed: pip install 'wdmask[yaml]'"),
    "wdmask_torch_without_torch": (["torch"], "import_wdmask_torch",
                                   "import wdmask_torch needs torch, which is not installed: "
                                   "pip install 'wdmask[torch]'"),
    "to_flax_without_jax": (["jax"], "to_flax",
                            "wdmask_torch.to_flax needs jax, which is not installed: pip install 'wdmask[jax]'"),
}

_SCRIPT = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError, as when it is not installed
import numpy as np
import wdmask
try:
    {call}
    print(json.dumps({{"raised": None}}))
except ImportError as e:
    print(json.dumps({{"raised": type(e).__name__, "message": str(e), "name": e.name,
                      "is_module_not_found": isinstance(e, ModuleNotFoundError)}}))
"""


def _run(blocked: list[str], call: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(blocked=blocked, call=call)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("blocked", "call", "message"), CASES.values(), ids=list(CASES))
def test_missing_extra_is_named(blocked, call, message):
    got = _run(blocked, CALLS[call])
    assert got["raised"] == "MissingDependencyError", got
    assert got["message"] == message
    assert got["is_module_not_found"] and got["name"] == blocked[0]
    assert "==" not in got["message"]  # never a version pin of one machine


def test_a_dependency_of_an_installed_module_is_not_blamed_on_wdmask(tmp_path, monkeypatch):
    # `torch` installed but broken (its own import misses a module): the original error, not an extras hint
    (tmp_path / "fakepkg_wdmask_test").mkdir()
    (tmp_path / "fakepkg_wdmask_test" / "__init__.py").write_text("import missing_inner_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as e:
        require("fakepkg_wdmask_test", by="wdmask.test")
    assert not isinstance(e.value, MissingDependencyError) and e.value.name == "missing_inner_module_xyz"


def test_require_returns_the_modules():
    import json as json_module

    assert require("json", by="wdmask.test") == [json_module]
