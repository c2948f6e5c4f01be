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

from wdmask._errors import _what
from wdmask._jax._order import flax_inventory
from wdmask._optional import JAX, require
from wdmask._pair import PairError, flax_axes, pair
from wdmask._types import ParamInfo, Path
from wdmask_torch._describe import check_model, inventory

__all__ = ["from_flax", "to_flax"]

_STATS = (("running_mean", "mean"), ("running_var", "var"))
_TORCH_STAT = {f: t for t, f in _STATS}


def _torch_stat(info: ParamInfo, flax_name: str) -> str:
    """Dotted torch name of the BatchNorm buffer next to ``info`` that Flax calls ``flax_name``."""
    return ".".join((*info.path[:-1], _TORCH_STAT[flax_name]))


class _Torch:
    """The torch side of a port: paired leaves, their tensors and their BatchNorm running stats."""

    def __init__(self, model: nn.Module, variables: Any, flax_model: Any, sample: Any, fn: str,
                 sample_kwargs: Any = None) -> None:
        inner = check_model(model, fn)
        check_flax_model(flax_model, fn)
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


def _is_flax_module(obj: Any) -> bool:
    from flax import linen, nnx

    return isinstance(obj, (linen.Module, nnx.Module))


def check_flax_model(flax_model: Any, fn: str) -> None:
    """``flax_model`` is ``None`` or a Flax module (linen or NNX), else a ``TypeError`` saying what to pass."""
    if flax_model is not None and not _is_flax_module(flax_model):
        raise TypeError(f"{fn}: `flax_model` must be a flax.linen or flax.nnx Module (the model `variables` belong "
                        f"to) or None, got {_what(flax_model)}")


def check_variables(variables: Any, fn: str) -> None:
    """``variables`` are linen variables (a mapping holding ``params``) or an NNX module, else a ``TypeError``."""
    if not (_is_nnx(variables) or (isinstance(variables, Mapping) and "params" in variables)):
        raise TypeError(f"{fn}: `variables` must be linen variables {{'params': ..., 'batch_stats': ...}} or an "
                        f"NNX module, got {_what(variables)}")


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
      New variables (linen: a new dict, ``variables`` untouched) or the NNX module, updated (only once
      every leaf is found and fits: a failing call leaves it as it was).

    Raises:
      PairError: the models cannot be paired, ``variables`` lack a BatchNorm's ``batch_stats``, or a
        leaf has another shape than its torch twin.
      TypeError: ``variables``, ``flax_model`` or ``dtype`` of the wrong type.

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
    require(*JAX, by="wdmask_torch.to_flax")
    import jax.numpy as jnp
    import numpy as np

    if dtype is not None:
        try:
            floating = bool(jnp.issubdtype(jnp.dtype(dtype), jnp.floating))
        except Exception:
            floating = False
        if not floating:
            raise TypeError(f"to_flax: `dtype` must be a floating dtype (jnp.float32, 'bfloat16', np.float64, ...) or "
                            f"None, got {_what(dtype)}")

    def convert(t: torch.Tensor, axes: Sequence[int] | None) -> Any:
        arr = t.detach().cpu().numpy()
        arr = np.ascontiguousarray(arr if axes is None else arr.transpose(axes))
        return jnp.asarray(arr, dtype=dtype)

    check_model(model, "to_flax")
    check_variables(variables, "to_flax")
    side = _Torch(model, variables, flax_model, sample, "to_flax", sample_kwargs)
    if _is_nnx(variables):
        flat = _nnx_vars(variables)
        writes = []  # everything is found and converted before the first write
        for t, f in side.pairs:
            writes.append((flat[f.path], convert(side.tensors[t.path], flax_axes(t)), ".".join(f.path)))
            for buf, name in side.stats(t):
                var = _nnx_stat(flat, f, t, name)
                writes.append((var, convert(buf, None), ".".join((*f.path[:-1], name))))
        for var, value, where in writes:
            _same_shape(value.shape, getattr(var.get_value(), "shape", None), where, "to_flax")
        for var, value, _ in writes:
            var.set_value(value)
        return variables
    out: dict[str, Any] = dict(variables)
    for t, f in side.pairs:
        where = ("params", *f.path)
        new = convert(side.tensors[t.path], flax_axes(t))
        _same_shape(new.shape, getattr(_get(variables, where, "params"), "shape", None), ".".join(where), "to_flax")
        out = _set(out, where, new)
        for buf, name in side.stats(t):
            where = ("batch_stats", *f.path[:-1], name)
            new = convert(buf, None)
            _same_shape(new.shape, getattr(_get(variables, where, "batch_stats"), "shape", None), ".".join(where),
                        "to_flax")
            out = _set(out, where, new)
    return out


def _same_shape(new: Any, old: Any, where: str, fn: str) -> None:
    """A ``PairError`` when a leaf would change shape (``old`` ``None``: a leaf without a shape, not checked)."""
    if old is not None and tuple(new) != tuple(old):
        raise PairError(f"{fn}: Flax leaf {where!r} has shape {tuple(old)} but its torch twin gives {tuple(new)} "
                        "(after the layout change); pass the variables of the paired Flax model")


def from_flax(model: nn.Module, variables: Any, *, flax_model: Any = None, sample: Any = None,
              sample_kwargs: Any = None) -> nn.Module:
    r"""Copy Flax parameters and BatchNorm stats into a torch model, in place (inverse of ``to_flax``).

    Values are cast to each torch tensor's dtype and device. Every leaf is found, checked (shape in the
    torch layout, real numbers) and converted before the first write: a failing call leaves ``model``
    bit-identical.

    Args:
      model: the torch model (updated in place).
      variables: linen variables or an NNX module.
      flax_model: the linen module, with ``sample``: leaves then follow call order (see ``to_flax``).
      sample: example inputs of ``flax_model``.
      sample_kwargs: keyword arguments of the Flax model's forward pass.

    Returns:
      ``model``.

    Raises:
      PairError: the models cannot be paired, ``variables`` lack a BatchNorm's ``batch_stats``, or a
        leaf has another shape than its torch twin.
      TypeError: ``variables`` or ``flax_model`` of the wrong type, or a leaf that does not hold real numbers.

    Examples:
      >>> import jax, jax.numpy as jnp, torch
      >>> from flax import linen as nn
      >>> t = torch.nn.Sequential(torch.nn.Linear(3, 2))
      >>> f = nn.Sequential([nn.Dense(2)])
      >>> v = {"params": {"layers_0": {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.ones(2)}}}
      >>> from_flax(t, v, flax_model=f, sample=jnp.zeros((1, 3)))[0].weight.tolist()
      [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    """
    require(*JAX, by="wdmask_torch.from_flax")
    check_model(model, "from_flax")
    check_variables(variables, "from_flax")
    side = _Torch(model, variables, flax_model, sample, "from_flax", sample_kwargs)
    plan: list[tuple[torch.Tensor, Any, Sequence[int] | None, str, str]] = []  # dst, value, axes, flax / torch name
    if _is_nnx(variables):
        flat = _nnx_vars(variables)
        for t, f in side.pairs:
            plan.append((side.tensors[t.path], flat[f.path].get_value(), flax_axes(t), ".".join(f.path), t.dotted))
            for buf, name in side.stats(t):
                plan.append((buf, _nnx_stat(flat, f, t, name).get_value(), None, ".".join((*f.path[:-1], name)),
                             _torch_stat(t, name)))
    else:
        for t, f in side.pairs:
            plan.append((side.tensors[t.path], _get(variables, ("params", *f.path), "params"), flax_axes(t),
                         ".".join(("params", *f.path)), t.dotted))
            for buf, name in side.stats(t):
                where = ("batch_stats", *f.path[:-1], name)
                plan.append((buf, _get(variables, where, "batch_stats"), None, ".".join(where),
                             _torch_stat(t, name)))
    # Every value is found, checked and converted before the first write: a failing call changes nothing.
    ready = [(dst, _to_torch(dst, value, axes, where, torch_name)) for dst, value, axes, where, torch_name in plan]
    with torch.no_grad():
        for dst, value in ready:
            dst.copy_(value)
    return model


def _to_torch(dst: torch.Tensor, value: Any, axes: Sequence[int] | None, where: str, torch_name: str) -> torch.Tensor:
    """Flax leaf ``value`` in torch layout, dtype and device of ``dst``; ``PairError``/``TypeError`` if it cannot be."""
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.kind == "V" and arr.dtype.itemsize <= 2:  # ml_dtypes bfloat16 / float8: exact in float32
        try:
            arr = arr.astype(np.float32)
        except Exception:
            pass
    complex_ok = dst.is_complex() and arr.dtype.kind == "c"
    if arr.dtype.kind not in "iuf" and not complex_ok:
        raise TypeError(f"from_flax: Flax leaf {where!r} must hold real numbers for torch {torch_name!r} "
                        f"({dst.dtype}), got dtype {arr.dtype} ({type(value).__name__})")
    expected = tuple(dst.shape) if axes is None else tuple(dst.shape[i] for i in axes)
    if arr.shape != expected:
        raise PairError(f"from_flax: Flax leaf {where!r} has shape {arr.shape}; torch {torch_name!r} "
                        f"{tuple(dst.shape)} needs {expected} in the Flax layout; pass the variables of the paired "
                        "Flax model")
    if axes is not None:
        arr = arr.transpose(np.argsort(axes))
    return torch.from_numpy(np.array(arr, copy=True)).to(dtype=dst.dtype, device=dst.device)
