r"""Weight port between a torch model and its Flax twin: ``to_flax`` and ``from_flax``.

Leaves are matched with ``wdmask.pair`` (layer call order, kind, role, shape modulo layout), so the port is
generic: any pair of models whose inventories pair works, not only the bundled ResNets. Layout changes:
conv ``OIHW -> HWIO`` (``transpose(2, 3, 1, 0)``, any spatial rank), linear ``W.T``, BatchNorm
``weight -> scale``, ``running_mean/running_var -> batch_stats mean/var``. jax is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wdmask._jax._order import flax_inventory
from wdmask._pair import PairError, flax_axes, pair
from wdmask._types import ParamInfo, Path
from wdmask_torch._describe import check_model, inventory

__all__ = ["from_flax", "to_flax"]

_STATS = (("running_mean", "mean"), ("running_var", "var"))


class _Torch:
    """The torch side of a port: paired leaves, their tensors and their BatchNorm running stats."""

    def __init__(self, model: nn.Module, variables: Any, flax_model: Any, sample: Any, fn: str,
                 sample_kwargs: Any = None) -> None:
        inner = check_model(model, fn)
        rows = inventory(inner, include_frozen=True, fn=fn)
        torch_inv = [info for _, _, info in rows]
        source = variables if flax_model is None else flax_model
        self.pairs = pair(torch_inv, flax_inventory(source, sample=sample, reference=torch_inv,
                                                    sample_kwargs=sample_kwargs))
        self.tensors: dict[Path, torch.Tensor] = {info.path: p for _, p, info in rows}
        self.owners: dict[Path, nn.Module] = {
            info.path: inner.get_submodule(name.rpartition(".")[0]) for name, _, info in rows}

    def stats(self, info: ParamInfo) -> list[tuple[torch.Tensor, str]]:
        """``(buffer, flax name)`` of the BatchNorm owning ``info`` (once per layer: on its scale)."""
        if info.layer != "norm.batch" or info.role != "scale":
            return []
        module = self.owners[info.path]
        return [(getattr(module, t), f) for t, f in _STATS if isinstance(getattr(module, t, None), torch.Tensor)]


def _is_nnx(obj: Any) -> bool:
    from flax import nnx

    return isinstance(obj, nnx.Module)


def _nnx_vars(module: Any) -> dict[Path, Any]:
    from flax import nnx

    return {tuple(str(k) for k in path): var for path, var in nnx.to_flat_state(nnx.state(module))}


def _nnx_stat(flat: Mapping[Path, Any], f: ParamInfo, t: ParamInfo, name: str) -> Any:
    """The NNX BatchStat ``name`` next to Flax leaf ``f`` (twin of torch ``t``), or a ``PairError``."""
    where = (*f.path[:-1], name)
    if where not in flat:
        raise PairError(f"the NNX module has no BatchStat {'.'.join(where)!r} for torch "
                        f"{'.'.join(t.path[:-1])}.{name}")
    return flat[where]


def _get(tree: Mapping[str, Any], path: Path, where: str) -> Any:
    node: Any = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise PairError(f"`variables` have no {where} leaf {'.'.join(path)!r} (missing {key!r} at "
                            f"{'.'.join(path[:i]) or 'the root'}); pass the variables of the paired Flax model")
        node = node[key]
    return node


def _set(tree: Mapping[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of nested mappings ``tree`` with ``path`` set to ``value`` (containers copied along the path)."""
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
    return out


def to_flax(model: nn.Module, variables: Any, *, flax_model: Any = None, sample: Any = None,
            dtype: Any = None, sample_kwargs: Any = None) -> Any:
    r"""Copy a torch model's parameters and BatchNorm running stats into Flax variables.

    Args:
      model: the torch model (the source).
      variables: linen variables ``{"params": ..., "batch_stats": ...}`` (e.g. from ``model.init`` or
        ``jax.eval_shape(model.init, ...)``: only the structure is used), or an NNX module (updated in place).
      flax_model: the linen module the variables belong to, with ``sample``: leaves then follow call order.
        Without it the Flax leaves are ordered by their owner names when every owner has a torch twin
        (``layer1_0.conv1`` ~ ``layer1.0.conv1``), else by natural key order (auto-names ``Conv_0, Conv_1``).
      sample: example inputs of ``flax_model`` (or of an NNX module, to follow its call order).
      dtype: dtype of the new leaves; default: the torch tensor's (a ``.double()`` model gives float64).
      sample_kwargs: keyword arguments of the Flax model's forward pass (``{"train": False}``).
    Returns:
      New variables (linen: a new dict, ``variables`` untouched) or the NNX module, updated.
    Raises:
      PairError: the models cannot be paired, or ``variables`` lack a BatchNorm's ``batch_stats``.
    Examples:
      >>> import jax, jax.numpy as jnp, torch
      >>> from flax import linen as nn
      >>> t = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
      >>> f = nn.Sequential([nn.Conv(4, (3, 3), padding="VALID"), nn.BatchNorm(use_running_average=False)])
      >>> x = jnp.zeros((1, 8, 8, 3))
      >>> v = to_flax(t, jax.eval_shape(f.init, jax.random.key(0), x), flax_model=f, sample=x)
      >>> v["params"]["layers_0"]["kernel"].shape, float(v["batch_stats"]["layers_1"]["var"][0])
      ((3, 3, 3, 4), 1.0)
    """
    import jax.numpy as jnp
    import numpy as np

    def convert(t: torch.Tensor, axes: Sequence[int] | None) -> Any:
        arr = t.detach().cpu().numpy()
        arr = np.ascontiguousarray(arr if axes is None else arr.transpose(axes))
        return jnp.asarray(arr, dtype=dtype)

    side = _Torch(model, variables, flax_model, sample, "to_flax", sample_kwargs)
    if _is_nnx(variables):
        flat = _nnx_vars(variables)
        for t, f in side.pairs:
            flat[f.path].set_value(convert(side.tensors[t.path], flax_axes(t)))
            for buf, name in side.stats(t):
                _nnx_stat(flat, f, t, name).set_value(convert(buf, None))
        return variables
    if not (isinstance(variables, Mapping) and "params" in variables):
        raise TypeError(f"`variables` must be linen variables {{'params': ..., 'batch_stats': ...}} or an NNX "
                        f"module, got {type(variables).__name__}")
    out: dict[str, Any] = dict(variables)
    for t, f in side.pairs:
        _get(variables, ("params", *f.path), "params")
        out = _set(out, ("params", *f.path), convert(side.tensors[t.path], flax_axes(t)))
        for buf, name in side.stats(t):
            where = ("batch_stats", *f.path[:-1], name)
            _get(variables, where, "batch_stats")
            out = _set(out, where, convert(buf, None))
    return out


def from_flax(model: nn.Module, variables: Any, *, flax_model: Any = None, sample: Any = None,
              sample_kwargs: Any = None) -> nn.Module:
    r"""Copy Flax parameters and BatchNorm stats into a torch model, in place (inverse of ``to_flax``).

    Values are cast to each torch tensor's dtype and device.

    Args:
      model: the torch model (updated in place).
      variables: linen variables or an NNX module.
      flax_model: the linen module, with ``sample``: leaves then follow call order (see ``to_flax``).
      sample: example inputs of ``flax_model``.
      sample_kwargs: keyword arguments of the Flax model's forward pass.
    Returns:
      ``model``.
    Raises:
      PairError: the models cannot be paired, or ``variables`` lack a BatchNorm's ``batch_stats``.
    Examples:
      >>> import jax, jax.numpy as jnp, torch
      >>> from flax import linen as nn
      >>> t = torch.nn.Sequential(torch.nn.Linear(3, 2))
      >>> f = nn.Sequential([nn.Dense(2)])
      >>> v = {"params": {"layers_0": {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.ones(2)}}}
      >>> from_flax(t, v, flax_model=f, sample=jnp.zeros((1, 3)))[0].weight.tolist()
      [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    """
    import numpy as np

    def put(dst: torch.Tensor, value: Any, axes: Sequence[int] | None) -> None:
        arr = np.asarray(value)
        if axes is not None:
            arr = arr.transpose(np.argsort(axes))
        with torch.no_grad():
            dst.copy_(torch.from_numpy(np.array(arr, copy=True)).to(dtype=dst.dtype, device=dst.device))

    side = _Torch(model, variables, flax_model, sample, "from_flax", sample_kwargs)
    if _is_nnx(variables):
        flat = _nnx_vars(variables)
        for t, f in side.pairs:
            put(side.tensors[t.path], flat[f.path].get_value(), flax_axes(t))
            for buf, name in side.stats(t):
                put(buf, _nnx_stat(flat, f, t, name).get_value(), None)
        return model
    for t, f in side.pairs:
        put(side.tensors[t.path], _get(variables, ("params", *f.path), "params"), flax_axes(t))
        for buf, name in side.stats(t):
            put(buf, _get(variables, ("batch_stats", *f.path[:-1], name), "batch_stats"), None)
    return model

