r"""An Equinox model (``eqx.Module``) -> inventory, and its params in the form optax sees them.

Equinox is optional and never imported here: a model is recognised through
``sys.modules.get("equinox")`` (an ``eqx.Module`` exists only if equinox was imported).

* **Owners**: every ``eqx.Module`` reachable from the model, found by walking its pytree; a
  leaf's owner is the innermost module on its key path (``layers.0.weight`` is owned by
  ``layers.0``). Key paths are ``jax.tree_util``'s (``GetAttrKey``/``SequenceKey``), as strings.
* **Kinds** from the exact ``equinox.nn`` classes along the MRO (user subclasses included), then
  the user class name (a class called ``...Norm`` is a norm, ``wdmask._kinds``).
* **Roles** from a per-class table (``Linear.weight`` -> kernel, ``PReLU.negative_slope`` ->
  gain, ``LSTMCell.weight_hh`` -> kernel), else the leaf name.
* **Trainable leaves** are what ``eqx.filter(model, eqx.is_inexact_array)`` keeps (and, in a model
  built abstractly with ``eqx.filter_eval_shape``, the ``jax.ShapeDtypeStruct`` of each), minus the
  initial state held by ``eqx.nn.StateIndex`` (BatchNorm running statistics before
  ``eqx.nn.make_with_state``): those are state, never decayed. Non-array leaves (an
  ``axis_name`` string, an activation function) are skipped.
* **Masks** have exactly the structure of ``eqx.filter(model, eqx.is_inexact_array)``: the same
  Module types with Python bools where arrays are and ``None`` elsewhere, which is what
  ``optax.masked`` / ``optax.adamw(mask=...)`` need for the usual
  ``opt.init(eqx.filter(model, eqx.is_inexact_array))``.
* **stacked**: a layer built with ``eqx.filter_vmap`` holds arrays with extra leading axes; the
  layer's own attributes (``in_features``, ``kernel_size``, ``shape``) give the per-layer rank.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from wdmask._errors import MaskError
from wdmask._jax._plain import extra_tables
from wdmask._jax._tree import Leaf, PyTree, first_difference, flatten, key_str, owner_of
from wdmask._kinds import kind_from_name, role_from_name
from wdmask._types import ParamInfo, Path
from wdmask._usage import param_info

__all__ = ["describe_equinox", "flatten_params", "is_equinox", "trainable"]

# Exact classes (attributes of ``equinox.nn``), looked up along the MRO.
_EQX_KINDS: dict[str, str] = {
    "SpectralNorm": "other", "WeightNorm": "other",  # wrappers: their own leaves are not a norm's gain/shift
    "Conv": "conv", "ConvTranspose": "conv",  # Conv1d/2d/3d and ConvTranspose1d/2d/3d subclass these
    "Linear": "linear", "LSTMCell": "linear", "GRUCell": "linear",
    "Embedding": "embedding",
    "BatchNorm": "norm.batch", "LayerNorm": "norm.layer", "GroupNorm": "norm.group", "RMSNorm": "norm.rms",
    "PReLU": "other",
}
# Roles of the leaves of exact classes, when the leaf name alone would not tell.
_EQX_ROLES: dict[str, dict[str, str]] = {
    "Linear": {"weight": "kernel", "bias": "bias"},
    "Conv": {"weight": "kernel", "bias": "bias"},
    "ConvTranspose": {"weight": "kernel", "bias": "bias"},
    "LSTMCell": {"weight_ih": "kernel", "weight_hh": "kernel", "bias": "bias"},
    "GRUCell": {"weight_ih": "kernel", "weight_hh": "kernel", "bias": "bias", "bias_n": "bias"},
    "Embedding": {"weight": "embedding"},
    "PReLU": {"negative_slope": "gain"},
    "WeightNorm": {"g": "gain"},
}


def _eqx() -> Any:
    return sys.modules.get("equinox")


def is_equinox(obj: Any) -> bool:
    """Whether ``obj`` is an ``eqx.Module`` instance (without importing equinox).

    Examples:
      >>> is_equinox({"w": 1})
      False
    """
    eqx = _eqx()
    return eqx is not None and isinstance(obj, eqx.Module) and not isinstance(obj, type)


def is_param(x: Any) -> bool:
    """``eqx.is_inexact_array``, or the abstract leaf of one: a ``jax.ShapeDtypeStruct`` of an inexact dtype (a
    model built with ``eqx.filter_eval_shape``); shapes and dtypes are all describing and masking need.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> is_param(jnp.ones(2)), is_param(jax.ShapeDtypeStruct((2,), jnp.float32)), is_param(jnp.ones(2, int))
      (True, True, False)
    """
    import jax
    import numpy as np

    if isinstance(x, jax.ShapeDtypeStruct):
        return bool(np.issubdtype(x.dtype, np.inexact))
    return bool(_eqx().is_inexact_array(x))


def trainable(tree: PyTree) -> PyTree:
    """``eqx.filter(tree, is_param)``: what optax sees of an Equinox model, concrete or abstract (idempotent)."""
    return _eqx().filter(tree, is_param)


def _exact_base(cls: type) -> type | None:
    """The first class along the MRO that ``equinox.nn`` exports under its own name and knows."""
    import equinox.nn as enn

    for base in cls.__mro__:
        if base.__name__ in _EQX_KINDS and getattr(enn, base.__name__, None) is base:
            return base
    return None


def _kind(cls: type) -> tuple[str, str]:
    """``(kind, exact base name or "")`` of a module class."""
    base = _exact_base(cls)
    if base is not None:
        return _EQX_KINDS[base.__name__], base.__name__
    return kind_from_name(cls.__name__) or "other", ""


def module_type(cls: type) -> str:
    """``"equinox.nn.Linear"`` for public ``equinox.nn`` classes, else module + qualname."""
    import equinox.nn as enn

    if cls.__module__.startswith("equinox.") and getattr(enn, cls.__name__, None) is cls:
        return f"equinox.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _layer_ndim(base: str, kind: str, role: str, module: Any) -> int | None:
    """Per-layer rank of a leaf from the layer's attributes (``None``: not told)."""
    if base in ("Conv", "ConvTranspose"):
        n = getattr(module, "num_spatial_dims", None)
        if isinstance(n, int):
            return {"kernel": n + 2, "bias": n + 1}.get(role)  # equinox conv biases are (out, 1, ..., 1)
        return None
    if base in ("Linear", "LSTMCell", "GRUCell"):
        return {"kernel": 2, "bias": 1}.get(role)
    if base == "Embedding":
        return 2
    if base in ("LayerNorm", "RMSNorm"):
        shape = getattr(module, "shape", None)
        if isinstance(shape, int):
            return 1
        return len(shape) if isinstance(shape, tuple) else None
    if base in ("BatchNorm", "GroupNorm"):
        return 1
    return None


def _walk(model: Any) -> tuple[dict[Path, Any], list[tuple[Path, Any]]]:
    """Every module by path (pre-order) and every leaf ``(path, value)`` in ``jax.tree_util`` flatten order."""
    import jax

    eqx = _eqx()
    owners: dict[Path, Any] = {}
    leaves: list[tuple[Path, Any]] = []

    def visit(node: Any, path: Path) -> None:
        owners[path] = node
        pairs = jax.tree_util.tree_flatten_with_path(
            node, is_leaf=lambda x: x is not node and isinstance(x, eqx.Module))[0]
        for keypath, child in pairs:
            sub = (*path, *(key_str(k) for k in keypath))
            if isinstance(child, eqx.Module) and child is not node:
                visit(child, sub)
            else:
                leaves.append((sub, child))

    visit(model, ())
    return owners, leaves





def _trace(model: Any, sample: Any, sample_kwargs: Mapping[str, Any] | None = None,
           slots: Mapping[Path, str] | None = None) -> Any:
    """Usages and feeds_norm of ``model(*sample, **sample_kwargs)`` from one abstract trace
    (``wdmask._jax._usage.trace_sample``; the norm modules' inputs read from the equations' source info:
    those traced inside a norm class's ``__call__``, ``_feeds_norm.norm_codes``).

    Raises:
      MaskError: the model's own call fails on the sample (the model's error is the ``__cause__``).
    """
    import jax

    from wdmask._jax._feeds_norm import norm_codes
    from wdmask._jax._sample import Sample
    from wdmask._jax._usage import trace_sample

    eqx = _eqx()
    params, static = eqx.partition(model, is_param)
    codes = norm_codes({type(m) for m in _walk(model)[0].values()}, lambda cls: _kind(cls)[0])
    s = Sample.of(sample, sample_kwargs)

    def forward(p: PyTree, arrays: Any) -> Any:
        return s.call(eqx.combine(p, static), arrays)

    try:
        return trace_sample(forward, params, (), s, slots=slots, norm_codes=codes)
    except Exception as error:  # the model's own call failing on the sample is the model's error, named as such
        from wdmask._jax._fallback import model_failed
        from wdmask._jax._usage import abstract

        try:
            jax.eval_shape(forward, abstract(params), abstract(s.arrays))
        except Exception as own:
            raise model_failed(model, f"{type(model).__name__}(*sample, **sample_kwargs)", own) from own
        raise error


def describe_equinox(model: Any, params: PyTree | None = None, uses: Mapping[Path, Any] | None = None, *,
                     sample: Any = None, sample_kwargs: Mapping[str, Any] | None = None) -> list[ParamInfo]:
    """Inventory of an Equinox model: one ``ParamInfo`` per trainable (inexact-array) leaf, in flatten order.

    Args:
      model: an ``eqx.Module``.
      params: the params to describe (``eqx.filter(model, eqx.is_inexact_array)`` or a model of
        the same structure); defaults to the model's own.
      uses: per-path usages from a trace (``wdmask._jax._usage.trace_usage``); merged with the
        class evidence through ``wdmask._usage.classify``.
      sample: positional arguments of ``model(...)`` (arrays are traced abstractly, other values passed
        as static Python values): one abstract trace gives every leaf's usage.
      sample_kwargs: keyword arguments of ``model(...)``, e.g. ``{"inference": True}``.

    Returns:
      A list of ``ParamInfo``.

    Raises:
      MaskError: ``params`` do not belong to ``model``.

    Examples:
      >>> import equinox as eqx, jax
      >>> lin = eqx.nn.Linear(3, 2, key=jax.random.key(0))
      >>> [(str(i), i.layer, i.role) for i in describe_equinox(lin)]
      [('weight', 'linear', 'kernel'), ('bias', 'linear', 'bias')]
    """
    eqx = _eqx()
    owners, all_leaves = _walk(model)
    state_paths = {p for p, m in owners.items() if isinstance(m, eqx.nn.StateIndex)}
    model_leaves = [(p, x) for p, x in all_leaves if is_param(x)]
    if params is not None:
        got_leaves, _ = flatten(trainable(params))
        want = [p for p, _ in model_leaves]
        got = [leaf.path for leaf in got_leaves]
        if want != got:
            raise MaskError(f"`params` do not match `model` ({type(model).__name__}): {first_difference(want, got)}; "
                            "pass eqx.filter(model, eqx.is_inexact_array) of this model")
        shapes = {leaf.path: (leaf.shape, leaf.dtype) for leaf in got_leaves}
    else:
        shapes = {p: (tuple(int(d) for d in x.shape), str(x.dtype)) for p, x in model_leaves}
    classes = {}  # path -> (owner module, kind, role, base): what the classes say, before the trace
    for path, _ in model_leaves:
        owner_path, module = owner_of(path, owners)
        if any(path[:len(s)] == s for s in state_paths):
            continue  # initial state of a stateful layer (eqx.nn.State), not a parameter
        kind, base = _kind(type(module))
        name = path[len(owner_path)] if len(path) > len(owner_path) else ""
        role = _EQX_ROLES.get(base, {}).get(name) or role_from_name(kind, name, owner_path[-1] if owner_path else "")
        classes[path] = (module, kind, role, base)
    feeds: Mapping[Path, bool] | None = None
    contract: Mapping[Path, Any] = {}
    if uses is None and (sample is not None or sample_kwargs):
        slots = {path: role for path, (_, kind, role, base) in classes.items()
                 if base and kind in ("conv", "linear") and role in ("kernel", "bias")}
        traced = _trace(model, sample, sample_kwargs, slots)
        uses, feeds, contract = traced.usage, traced.feeds_norm, traced.contract_axes
    facts = []
    for path, (module, kind, role, base) in classes.items():
        shape, dtype = shapes[path]
        ndim = _layer_ndim(base, kind, role, module)
        stacked = len(shape) - ndim if ndim is not None and len(shape) > ndim else 0
        facts.append({"path": path, "shape": shape, "dtype": dtype, "layer": kind, "role": role,
                      "stacked_axes": tuple(range(stacked)), "module_type": module_type(type(module)),
                      "source": "type" if base else "name" if kind != "other" else "shape",
                      "feeds_norm": None if feeds is None else feeds.get(path, False)})
    if uses is None:  # no graph: a second embedding table may hold positions
        for k in extra_tables(facts):
            facts[k]["role"] = "other"
    return [param_info(**f, uses=None if uses is None else uses.get(f["path"], ()),
                       contract_axes=contract.get(f["path"])) for f in facts]


def flatten_params(params: PyTree) -> tuple[PyTree, tuple[list[Leaf], Any]]:
    """``trainable(params)`` and its ``flatten``, with the initial state under ``eqx.nn.StateIndex`` not trainable.

    Takes a full model or its filtered params; the mask built on the result has the structure of
    ``eqx.filter(model, eqx.is_inexact_array)``.
    """
    eqx = _eqx()
    params = trainable(params)
    leaves, treedef = flatten(params)
    owners, _ = _walk(params)
    roots = [p for p, m in owners.items() if isinstance(m, eqx.nn.StateIndex)]
    if roots:
        leaves = [leaf._replace(trainable=False) if any(leaf.path[:len(r)] == r for r in roots) else leaf
                  for leaf in leaves]
    return params, (leaves, treedef)
