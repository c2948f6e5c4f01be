"""The architecture, checked on the sources: one direction (core <- adapters), no import cycle.

Imports are read with ``ast`` from every module of ``wdmask`` and ``wdmask_torch``, imports inside
functions included, so a lazy import cannot hide a cycle or a wrong-way dependency.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("wdmask", "wdmask_torch", "wdmask_migrate")
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax", "equinox", "numpy")
#: Framework-neutral core modules: import no framework at all, not even lazily.
CORE = ("_types", "_errors", "_rules", "_engine", "_usage", "_kinds", "_report", "_pair", "_config", "presets",
        "_audit", "_infer", "_examples")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(base: str, name: str | None) -> str:
    """``from base import name``: the submodule ``base.name`` when it exists, else ``base``."""
    if name is not None and f"{base}.{name}" in MODULES:
        return f"{base}.{name}"
    return base


def imports(module: str) -> set[str]:
    """Every module ``module`` imports (project modules resolved; others by top-level name)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.update(_resolve(base, alias.name) for alias in node.names)
    return out


GRAPH = {m: {i for i in imports(m) if i in MODULES and i != m} for m in MODULES}


def test_the_sources_were_read():
    assert "wdmask._engine" in GRAPH and "wdmask_torch._apply" in GRAPH
    assert "wdmask._rules" in GRAPH["wdmask._engine"]  # the parser sees ordinary imports


def test_only_dispatch_imports_the_torch_adapter():
    offenders = sorted(m for m in MODULES if m.split(".")[0] == "wdmask" and m != "wdmask._dispatch"
                       and any(i.split(".")[0] == "wdmask_torch" for i in imports(m)))
    assert offenders == []


def test_only_dispatch_imports_the_cross_framework_room():
    offenders = sorted(m for m in MODULES if m.split(".")[0] == "wdmask" and m != "wdmask._dispatch"
                       and any(i.split(".")[0] == "wdmask_migrate" for i in imports(m)))
    assert offenders == []


def test_the_adapters_do_not_reach_into_each_other():
    """Migration, porting and the demo need both frameworks: they live in ``wdmask_migrate``. The torch adapter
    imports no JAX module, and names ``wdmask_migrate`` only in its ``__init__`` (public names loaded on use)."""
    jax_side = sorted(m for m in MODULES if m.startswith("wdmask_torch")
                      and any(i.startswith("wdmask._jax") for i in imports(m)))
    assert jax_side == []
    room = sorted(m for m in MODULES if m.startswith("wdmask_torch") and m != "wdmask_torch"
                  and any(i.split(".")[0] == "wdmask_migrate" for i in imports(m)))
    assert room == []
    jax_adapter = sorted(m for m in MODULES if m.startswith("wdmask._jax")
                         and any(i.split(".")[0] in ("wdmask_torch", "wdmask_migrate") for i in imports(m)))
    assert jax_adapter == []


def test_the_torch_adapter_never_imports_the_wdmask_package_itself():
    # `import wdmask` runs wdmask/__init__, which re-exports _dispatch, which imports wdmask_torch: a cycle.
    offenders = sorted(m for m in MODULES if m.startswith("wdmask_torch") and "wdmask" in imports(m))
    assert offenders == []


@pytest.mark.parametrize("name", CORE)
def test_core_module_imports_no_framework(name):
    module = f"wdmask.{name}"
    if module not in MODULES:
        pytest.skip(f"{module} does not exist")
    found = sorted(i for i in imports(module) if i.split(".")[0] in FRAMEWORKS or i.startswith("wdmask_torch")
                   or i.startswith("wdmask._jax"))
    assert found == [], f"{module} imports {found}"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            # importing a.b.c runs a and a.b first; that is not an edge of a's own making
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert cycles == []
