"""Cross-framework entry points: route a model to the adapter that describes it.

The only module of ``wdmask`` that imports ``wdmask_torch`` (inside functions, and only when torch
is already imported by the caller): ``explain`` and ``compare`` take models of either framework.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from wdmask._engine import explain_inventory
from wdmask._errors import short_repr
from wdmask._optional import JAX, require
from wdmask._pair import Comparison, compare_inventories
from wdmask._report import Explanation
from wdmask._rules import RuleLike, Rules
from wdmask._types import ParamInfo

__all__ = ["compare", "describe_any", "explain", "run_demo"]


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def describe_any(obj: Any, **options: Any) -> list[ParamInfo]:
    """Route to the adapter that can describe ``obj`` without importing a framework needlessly."""
    if isinstance(obj, (list, tuple)) and all(isinstance(i, ParamInfo) for i in obj):
        return list(obj)
    if _is_torch_module(obj):
        import wdmask_torch

        return wdmask_torch.describe(obj, **options)
    require(*JAX, by="wdmask.explain")
    from wdmask._jax._describe import describe

    return describe(obj, **options)


def explain(model_or_inventory: Any, rules: Rules | Iterable[RuleLike], *, strict: bool = False,
            **describe_options: Any) -> Explanation:
    """Explain the decision for every parameter, as rows that print as a table.

    Takes an inventory (a list of ``ParamInfo``), a torch ``nn.Module`` (described by
    ``wdmask_torch``), or a Flax model / params pytree (described by ``wdmask``'s JAX adapter);
    ``describe_options`` go to that adapter's ``describe`` (``example_inputs=``, ``sample=``).

    Examples:
      >>> from wdmask import ParamInfo, presets
      >>> inv = [ParamInfo(("bn", "weight"), (8,), layer="norm.batch", role="scale")]
      >>> explain(inv, presets.standard)[0].multiplier
      0.0
    """
    if model_or_inventory is None or isinstance(model_or_inventory, (bool, int, float, complex, str, bytes)):
        raise TypeError(f"wdmask.explain: `model_or_inventory` must be a model (torch, Flax linen/NNX, Equinox), a "
                        f"params pytree or a list of ParamInfo, got {type(model_or_inventory).__name__} "
                        f"{short_repr(model_or_inventory)}")
    return explain_inventory(describe_any(model_or_inventory, **describe_options), rules, strict=strict)


def compare(torch_model: Any, flax_model_or_params: Any, rules: Rules | Iterable[RuleLike], *,
            sample: Any = None, example_inputs: Any = None,
            sample_kwargs: Mapping[str, Any] | None = None) -> Comparison:
    """Every paired parameter whose weight-decay decision differs between the torch and the Flax model.

    The migration check after porting a model: describe both sides (``example_inputs`` / ``sample``
    make ``feeds_norm`` known), decide with the same ``rules``, ``pair``, and list the disagreements.
    Rules should use layer/role conditions: ``path`` globs see each framework's own names
    (``fc.weight`` vs ``fc.kernel``). A rule that matches nothing on *both* sides warns once.

    Args:
      torch_model: a ``torch.nn.Module``.
      flax_model_or_params: a linen module (with ``sample``), an NNX module, or a params pytree.
      rules: the rule set to check.
      sample: example inputs of the Flax model (NHWC for the bundled ResNets).
      example_inputs: example inputs of the torch model.
      sample_kwargs: keyword arguments of the Flax model's forward pass (``{"train": False}``).

    Returns:
      A ``Comparison``: a sequence of ``Difference`` that prints as a table; empty (``bool(report)`` is
      ``False``, ``report == []``) when both frameworks decay the same parameters by the same amount.

    Raises:
      PairError: the models do not have the same layers in the same order.

    Examples:
      >>> import jax.numpy as jnp, torch, wdmask
      >>> from flax import linen as nn
      >>> t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
      >>> f = nn.Sequential([nn.Dense(4), nn.LayerNorm()])
      >>> report = compare(t, f, wdmask.presets.standard, sample=jnp.zeros((1, 3)))
      >>> bool(report), report == []
      (False, True)
      >>> print(report)
      4 paired parameters: every decision is the same in torch and Flax (rules 'standard')
      >>> report = compare(t, f, [wdmask.Rule(path="0.weight", decay=False)], sample=jnp.zeros((1, 3)))
      >>> len(report), [str(d) for d in report]
      (1, ['torch 0.weight: no decay (rule 0) != flax layers_0.kernel: decay (default)'])
      >>> print(report.text(width=72))
                        weight decay decisions that differ
      ┏━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
      ┃ torch path ┃ torch decision    ┃ flax path       ┃ flax decision   ┃
      ┡━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
      │ 0.weight   │ no decay (rule 0) │ layers_0.kernel │ decay (default) │
      └────────────┴───────────────────┴─────────────────┴─────────────────┘
             4 paired parameters: 1 decision differs (rules 'custom')
    """
    require(*JAX, by="wdmask.compare")
    import wdmask_torch
    from wdmask._jax._order import flax_inventory

    torch_inv = wdmask_torch.describe(torch_model, example_inputs)
    flax_inv = flax_inventory(flax_model_or_params, sample=sample, reference=torch_inv, sample_kwargs=sample_kwargs)
    return compare_inventories(torch_inv, flax_inv, rules)


def run_demo(**options: Any) -> list[float]:
    """The ``wdmask demo`` (torch vs Flax ResNet); needs torch, jax, flax and optax."""
    from wdmask_migrate._demo import run_demo as demo

    return demo(**options)
