"""An NNX module -> inventory: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``."""

from __future__ import annotations

from typing import Any

from wdmask._errors import MaskError
from wdmask._jax._classes import _stacked_from_ndim, expected_ndim, kind_from_class, module_type_name
from wdmask._jax._linen import _owner
from wdmask._jax._stacks import box_metadata, nnx_axes
from wdmask._jax._tree import PyTree, first_difference, flatten
from wdmask._kinds import role_from_name
from wdmask._types import ParamInfo

_NNX_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",
    "Conv": "conv", "ConvTranspose": "conv",
    "Linear": "linear", "LinearGeneral": "linear", "Einsum": "linear", "LoRALinear": "linear",
    "Embed": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group",
    "InstanceNorm": "norm.instance", "RMSNorm": "norm.rms",
}



def describe_nnx(model: Any, params: PyTree | None) -> list[ParamInfo]:
    """Inventory of an NNX module: classes from ``nnx.iter_modules``, leaves from ``nnx.state(model, nnx.Param)``."""
    from flax import nnx

    owners = {tuple(str(p) for p in path): module for path, module in nnx.iter_modules(model)}
    model_leaves, _ = flatten(nnx.state(model, nnx.Param))
    if params is None:
        leaves = model_leaves
    else:
        leaves, _ = flatten(params)
        want = [leaf.path for leaf in model_leaves]
        got = [leaf.path for leaf in leaves if leaf.trainable]
        if want != got:
            raise MaskError(f"`params` do not match `model` ({type(model).__name__}): {first_difference(want, got)}; "
                            "pass nnx.state(model, nnx.Param) (or its pure form)")
    declared_paths = {leaf.path for leaf in model_leaves if leaf.declared}
    meta = box_metadata(nnx.state(model, nnx.Param))  # sharding names / param_scan_axis: which axis is stacked
    out = []
    for leaf in leaves:
        if not leaf.trainable:
            continue
        owner_path, module = _owner(leaf.path, owners)
        name = leaf.path[-1] if leaf.path else ""
        kind = kind_from_class(type(module), _NNX_KINDS, "flax.nnx")
        role = role_from_name(kind, name, owner_path[-1] if owner_path else "")
        ranked = _stacked_from_ndim(leaf.shape, expected_ndim(kind, role, module))
        axes = nnx_axes(leaf.shape, module, kind, role, ranked, meta.get(leaf.path))
        declared = "no_decay" if leaf.declared or leaf.path in declared_paths else ""
        out.append(ParamInfo(leaf.path, leaf.shape, leaf.dtype, kind, role, len(axes), None,
                             module_type_name(type(module)), "type", declared, stacked_axes=axes))
    return out
