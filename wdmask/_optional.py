"""Optional dependencies: one place that names the extra to install when an entry point needs one.

``import wdmask`` needs neither JAX nor torch; each entry point that does calls ``require`` first, so a
missing framework is reported as what the user called and the exact ``pip install`` line, not as a bare
``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The extra of ``pyproject.toml`` that installs each optional top-level module.
EXTRA = {"jax": "jax", "flax": "jax", "optax": "jax", "torch": "torch", "yaml": "yaml", "equinox": "equinox"}
#: What every JAX-side entry point imports (flax reads every model and pytree; optax builds the transforms).
JAX = ("jax", "flax", "optax")
#: The distribution a module comes from, where its name differs.
DISTRIBUTION = {"yaml": "pyyaml"}


class MissingDependencyError(ModuleNotFoundError):
    """An optional dependency an entry point needs is not installed; the message names the extra."""


def install_hint(*modules: str) -> str:
    """The ``pip install`` line that brings ``modules``.

    Examples:
      >>> install_hint("torch", "optax")
      "pip install 'wdmask[jax,torch]'"
    """
    extras = sorted({EXTRA[m.partition(".")[0]] for m in modules})
    return f"pip install 'wdmask[{','.join(extras)}]'"


def missing_message(module: str, by: str) -> str:
    """What to say when ``by`` (``"wdmask.decay"``) cannot import ``module``.

    Examples:
      >>> print(missing_message("optax", "wdmask.decay"))
      wdmask.decay needs optax, which is not installed: pip install 'wdmask[jax]'
    """
    top = module.partition(".")[0]
    name = DISTRIBUTION.get(top, top)
    return f"{by} needs {name}, which is not installed: {install_hint(top)}"


def require(*modules: str, by: str) -> list[ModuleType]:
    """Import ``modules`` in order; the first one that is not installed raises ``MissingDependencyError``.

    Only a module that is itself missing is reported so; an installed module that fails to import
    (one of *its* dependencies is missing, or it raises) propagates unchanged.

    Args:
      modules: top-level or dotted module names (``"jax"``, ``"flax.linen"``).
      by: the entry point, as the user wrote it (``"wdmask.decay"``, ``"import wdmask_torch"``).

    Returns:
      The imported modules, in order.

    Raises:
      MissingDependencyError: (an ``ImportError``) naming ``by``, the module and ``pip install 'wdmask[...]'``.

    Examples:
      >>> [m.__name__ for m in require("json", by="wdmask.example")]
      ['json']
    """
    out = []
    for module in modules:
        try:
            out.append(importlib.import_module(module))
        except ModuleNotFoundError as e:
            top = module.partition(".")[0]
            if e.name not in (top, module) or top not in EXTRA:
                raise
            raise MissingDependencyError(missing_message(module, by), name=top) from e
    return out
