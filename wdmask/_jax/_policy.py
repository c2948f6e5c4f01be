r"""Per-parameter policy in Optax: ``partition`` (optimizer labels), ``scale_lr`` (lr multipliers) and
``muon_dimension_numbers`` (Muon's reduction/output axes), all decided at ``init`` from structure (static).

Like ``wdmask.decay``, the decisions depend on the params' structure (paths, shapes, dtypes) and the model's
classes only, so the label tree, the multipliers and the dimension numbers are Python values: they add no op
to a jitted step beyond the ones the transforms themselves do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wdmask import presets
from wdmask._contract import contract_axes
from wdmask._engine import decide
from wdmask._errors import MaskError
from wdmask._jax._describe import inventory_for, refuse_torch
from wdmask._jax._equinox import flatten_params, is_equinox
from wdmask._jax._tree import Leaf, flatten
from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import Decision, ParamInfo

__all__ = ["labels", "muon_dimension_numbers", "partition", "scale_lr"]

PyTree = Any


def decisions_of(params: PyTree, rules: Rules, *, model: Any = None, sample: Any = None, strict: bool = False,
                 sample_kwargs: Mapping[str, Any] | None = None, inventory: Sequence[ParamInfo] | None = None,
                 fn: str = "partition") -> tuple[list[Leaf], Any, list[tuple[ParamInfo, Decision] | None]]:
    """``(leaves, treedef, [(info, decision) or None per leaf])``: ``None`` for leaves that are not trainable."""
    refuse_torch(params, fn, "params")
    refuse_torch(model, fn, "model")
    if params is None:
        raise MaskError("wdmask: `params` is None; pass the params pytree (or nnx.state(model, nnx.Param))")
    flat = None
    if is_equinox(params) or is_equinox(model):
        params, flat = flatten_params(params)
    leaves, treedef = flat if flat is not None else flatten(params)
    found = list(inventory_for(params, leaves, model=model, sample=sample, sample_kwargs=sample_kwargs, fn=fn,
                               given=inventory))
    decisions = decide(found, rules, strict=strict)
    by_path = {i.path: i for i in found}
    out: list[tuple[ParamInfo, Decision] | None] = []
    for leaf in leaves:
        info = by_path.get(leaf.path)
        out.append(None if info is None or not leaf.trainable else (info, decisions[leaf.path]))
    return leaves, treedef, out


def _key(tree: PyTree) -> Any:
    leaves, treedef = flatten(tree)
    return treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves)


def labels(params: PyTree, rules: Rules | Iterable[RuleLike] | None = None, *, model: Any = None,
           sample: Any = None, default: str | None = None, strict: bool = False,
           sample_kwargs: Mapping[str, Any] | None = None, inventory: Sequence[ParamInfo] | None = None) -> PyTree:
    """The optimizer label of every leaf (a pytree of strings with ``params``' structure).

    Leaves no rule labels (and leaves outside the trainable params) get ``default``; with ``default=None`` a
    trainable leaf without a label raises ``MaskError`` naming it. ``rules`` default (``None``):
    ``wdmask.presets.muon``. ``model``/``sample``/``sample_kwargs`` or ``inventory`` as for ``wdmask.mask``.

    Examples:
      >>> import jax.numpy as jnp, wdmask
      >>> params = {"Dense_0": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}}
      >>> wdmask.labels(params, [wdmask.Rule(optimizer="adamw"), wdmask.Rule(role="kernel", optimizer="sgd")])
      {'Dense_0': {'bias': 'adamw', 'kernel': 'sgd'}}
    """
    rules = as_rules(presets.muon if rules is None else rules)
    leaves, treedef, decided = decisions_of(params, rules, model=model, sample=sample, strict=strict,
                                            sample_kwargs=sample_kwargs, inventory=inventory, fn="labels")
    out, missing = [], []
    for leaf, d in zip(leaves, decided, strict=True):
        label = d[1].optimizer if d is not None else None
        if label is None:
            label = default
            if label is None and d is not None:
                missing.append(".".join(leaf.path))
        out.append(label)
    if missing:
        raise MaskError(f"{len(missing)} parameter(s) get no optimizer label from the rules, e.g. {missing[0]!r}; add "
                        "a base rule such as Rule(optimizer='adamw') first (presets.muon has one) or pass default=")
    return treedef.unflatten(out)


def partition(rules: Rules | Iterable[RuleLike], transforms: Mapping[str, Any], *, model: Any = None,
              sample: Any = None, default: str | None = None, strict: bool = False,
              sample_kwargs: Mapping[str, Any] | None = None, inventory: Sequence[ParamInfo] | None = None) -> Any:
    """``optax.partition(transforms, labels)`` with each leaf's label decided by ``rules`` (``optimizer=``).

    The label tree is built from the params' structure at ``init`` (and looked up by structure at ``update``),
    so it is a static tree of strings: the jitted step is op for op the one of ``optax.partition`` with a
    literal label tree.

    Args:
      rules: rules that label every parameter (e.g. ``presets.standard + presets.muon``).
      transforms: label -> ``GradientTransformation``.
      model: the linen / NNX module (exact classes; with ``sample``, call order for depths).
      sample: example inputs of ``model``.
      default: label for leaves no rule labels (``None``: such a leaf raises ``MaskError``).
      strict: a rule that matches nothing, or a guessed depth, raises instead of warning.
      sample_kwargs: keyword arguments of the forward pass.
      inventory: an inventory built already (``wdmask.describe(model, sample)``), used instead of describing again
        (checked against the params' paths and shapes); not together with ``model``/``sample``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      MaskError: a leaf without a label; a label without a transform (at ``init``).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, wdmask
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
      >>> rules = [wdmask.Rule(optimizer="frozen"), wdmask.Rule(role="kernel", optimizer="sgd")]
      >>> tx = wdmask.partition(rules, {"sgd": optax.sgd(1.0), "frozen": optax.set_to_zero()})
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> updates["Dense_0"]["bias"].tolist(), updates["Dense_0"]["kernel"][0].tolist()
      ([0.0, 0.0], [-1.0, -1.0])
    """
    import optax

    rules = as_rules(rules)
    if not isinstance(transforms, Mapping):
        raise TypeError(f"`transforms` must map each optimizer label to an optax transform, got "
                        f"{type(transforms).__name__}")
    cache: dict[Any, PyTree] = {}

    def label_fn(tree: PyTree) -> PyTree:
        key = _key(tree)
        found = cache.get(key)
        if found is None:
            found = cache[key] = labels(tree, rules, model=model, sample=sample, default=default, strict=strict,
                                        sample_kwargs=sample_kwargs, inventory=inventory)
            import jax

            unknown = sorted(set(jax.tree.leaves(found)) - set(transforms))
            if unknown:
                raise MaskError(f"the rules label parameters {unknown} but `transforms` has no transform for them; "
                                f"valid labels: {sorted(transforms)}")
        return found

    return optax.partition(transforms, label_fn)


class ScaleSpec:
    """Static per-leaf lr multipliers (floats, or NumPy arrays along stacked axes); hashable by content."""

    def __init__(self, treedef: Any, scales: tuple[Any, ...]) -> None:
        self.treedef, self.scales = treedef, scales
        self._hash = hash((treedef, tuple(s if isinstance(s, float) else (s.shape, s.tobytes()) for s in scales)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScaleSpec) and self._hash == other._hash and self.treedef == other.treedef

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"ScaleSpec({len(self.scales)} leaves)"


def _scale_of(info: ParamInfo, lr: float | tuple[float, ...]) -> Any:
    """A leaf's lr multiplier: a float, or a float64 array shaped to broadcast along its stacked axis."""
    if not isinstance(lr, tuple):
        return float(lr)
    import numpy as np

    if len(set(lr)) == 1:
        return float(lr[0])
    axis = info.stacked_axes[0]
    shape = [1] * len(info.shape)
    shape[axis] = len(lr)
    return np.asarray(lr, dtype=np.float64).reshape(shape)


def lr_scales(params: PyTree, rules: Rules | Iterable[RuleLike], *, model: Any = None, sample: Any = None,
              strict: bool = False, sample_kwargs: Mapping[str, Any] | None = None,
              inventory: Sequence[ParamInfo] | None = None) -> PyTree:
    """Every leaf's learning-rate multiplier (``1.0`` for leaves outside the trainable params): floats, and
    NumPy arrays along the stacked axis for a stacked leaf with one multiplier per slice.
    ``model``/``sample``/``sample_kwargs`` or ``inventory`` as for ``wdmask.mask``."""
    _, treedef, decided = decisions_of(params, as_rules(rules), model=model, sample=sample, strict=strict,
                                       sample_kwargs=sample_kwargs, inventory=inventory, fn="lr_scales")
    return treedef.unflatten([1.0 if d is None else _scale_of(d[0], d[1].lr) for d in decided])


class ScaleState:
    """State of ``scale_lr``: nothing but the static ``ScaleSpec`` (pytree metadata)."""

    __slots__ = ("spec",)

    def __init__(self, spec: ScaleSpec) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"ScaleState({self.spec!r})"


_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        import jax

        jax.tree_util.register_pytree_node(ScaleState, lambda s: ((), s.spec), lambda spec, _: ScaleState(spec))
        _registered = True


def scale_lr(rules: Rules | Iterable[RuleLike], *, model: Any = None, sample: Any = None, strict: bool = False,
             sample_kwargs: Mapping[str, Any] | None = None, inventory: Sequence[ParamInfo] | None = None) -> Any:
    r"""Scale each leaf's update by its learning-rate multiplier $s_i$ (``lr``, ``lr_decay`` actions).

    $$u_i \leftarrow s_i \, u_i$$

    Leaves with $s_i = 1$ are left untouched (no op); a stacked leaf with one multiplier per slice
    (``presets.layer_decay`` on an ``nn.scan`` stack) is multiplied by a constant array along its stacked
    axis. Place it after the decay and before the final ``scale(-lr)``, which is where torch's per-group
    ``lr`` acts: ``chain(scale_by_adam(), decay(wd), scale_lr(rules), scale(-lr))`` is torch's AdamW with
    ``groups(model, rules, weight_decay=wd, lr=lr)``. ``model``/``sample``/``sample_kwargs`` or ``inventory``
    as for ``wdmask.decay``.

    Examples:
      >>> import jax.numpy as jnp, optax, wdmask
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
      >>> tx = wdmask.scale_lr([wdmask.Rule(role="bias", lr=0.5)])
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> updates["Dense_0"]["bias"].tolist(), updates["Dense_0"]["kernel"][0].tolist()
      ([0.5, 0.5], [1.0, 1.0])
    """
    import optax

    rules = as_rules(rules)
    _register()
    cache: dict[Any, ScaleSpec] = {}

    def init_fn(params: PyTree) -> ScaleState:
        key = _key(params)
        spec = cache.get(key)
        if spec is None:
            _, treedef, decided = decisions_of(params, rules, model=model, sample=sample, strict=strict,
                                               sample_kwargs=sample_kwargs, inventory=inventory, fn="scale_lr")
            spec = cache[key] = ScaleSpec(treedef, tuple(1.0 if d is None else _scale_of(d[0], d[1].lr)
                                                         for d in decided))
        return ScaleState(spec)

    def update_fn(updates: PyTree, state: ScaleState, params: PyTree | None = None) -> tuple[PyTree, ScaleState]:
        import jax
        import jax.numpy as jnp

        del params
        if not isinstance(state, ScaleState):
            raise MaskError(f"wdmask.scale_lr: `state` must come from this transform's init (a ScaleState), got "
                            f"{type(state).__name__}; check the order of transforms in optax.chain")
        _, treedef = flatten(updates)
        if treedef != state.spec.treedef:
            raise MaskError("wdmask.scale_lr: `updates` do not have the structure of the params given to init")
        raw = treedef.flatten_up_to(updates)
        out = []
        for u, s in zip(raw, state.spec.scales, strict=True):
            if u is None or (isinstance(s, float) and s == 1.0):
                out.append(u)
            else:  # a float, or a constant array along the stacked axis
                out.append(jax.tree.map(lambda x, s=s: x * jnp.asarray(s, x.dtype), u))
        return treedef.unflatten(out), state

    return optax.GradientTransformation(init_fn, update_fn)


def muon_dimension_numbers(model_or_params: Any, sample: Any = None, rules: Rules | Iterable[RuleLike] | None = None,
                           *, params: PyTree | None = None, label: str = "muon", strict: bool = False,
                           sample_kwargs: Mapping[str, Any] | None = None,
                           inventory: Sequence[ParamInfo] | None = None) -> PyTree:
    """A tree of ``optax.contrib.MuonDimensionNumbers`` (``None`` where the label is not ``label``) for
    ``optax.contrib.muon(..., muon_weight_dimension_numbers=...)``.

    With a model and its ``sample``, each Muon leaf's axes are read from the traced forward pass (the one
    ``describe`` does, ``ParamInfo.contract_axes``): the reduction axes are the kernel axes its contraction
    with the activations sums over (a ``dot_general``'s contracting axes, a convolution's input-feature and
    window axes) and the output axes the ones it produces, followed back through transposes, reshapes and
    slices to the leaf's own axes. Axes the forward loops or batches over are neither (Muon's batch axes): the
    stacked axis of ``nn.scan``/``nnx.vmap`` layers, an expert axis of a MoE stack. A Muon leaf contracted in
    two ways that disagree, or through an op whose axes cannot be followed, raises. Without a forward pass (a
    params pytree) the layout conventions of the layer apply: Flax ``Dense`` ``(in, out)``, ``Conv``
    ``(*window, in, out)``, torch/Equinox-style ``(out, in)``; other kernels (``DenseGeneral``, expert stacks)
    raise.

    Args:
      model_or_params: a linen / NNX / Equinox module (with ``sample``) or a params pytree.
      sample: example inputs of the module.
      rules: rules labelling the leaves (default ``None``: ``presets.muon``).
      params: the params (default: the module's own, from an abstract init).
      label: the label that means Muon.
      strict: raise instead of warning on rules matching nothing / guessed depths.
      sample_kwargs: keyword arguments of the forward pass.
      inventory: an inventory built already (``wdmask.describe(model, sample)``, whose ``contract_axes`` the
        trace filled), with ``model_or_params`` the params it describes.

    Returns:
      A pytree with the params' structure.

    Raises:
      MaskError: a leaf labelled Muon whose contraction axes are unknown.

    Examples:
      >>> import jax, jax.numpy as jnp, wdmask
      >>> params = {"embed": {"embedding": jnp.zeros((10, 4))},
      ...           "blocks_0": {"Dense_0": {"kernel": jnp.zeros((4, 4))}},
      ...           "blocks_1": {"Dense_0": {"kernel": jnp.zeros((4, 4))}}, "head": {"kernel": jnp.zeros((4, 10))}}
      >>> dims = wdmask.muon_dimension_numbers(params)
      >>> dims["blocks_0"]["Dense_0"]["kernel"], dims["head"]["kernel"]
      (MuonDimensionNumbers(reduction_axis=(0,), output_axis=(1,)), None)

      A kernel stored ``(out, in)`` and contracted as ``einsum("btd,fd->btf")``, read from the trace:

      >>> import flax.linen as nn
      >>> class Layer(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         return nn.Einsum((16, 8), "btd,fd->btf", use_bias=False, name="proj")(x)
      >>> rules = [wdmask.Rule(optimizer="adamw"), wdmask.Rule(role="kernel", optimizer="muon")]
      >>> wdmask.muon_dimension_numbers(Layer(), jnp.zeros((2, 3, 8)), rules)["proj"]["kernel"]
      MuonDimensionNumbers(reduction_axis=(1,), output_axis=(0,))
    """
    from optax.contrib import MuonDimensionNumbers

    rules = as_rules(presets.muon if rules is None else rules)
    model = None
    if inventory is None and params is None and _is_module(model_or_params):
        params, inventory = _described(model_or_params, sample, sample_kwargs)  # one describe: params and axes
        if inventory is None:  # NNX: its own params, described with the sample below
            model = model_or_params
        else:
            sample = sample_kwargs = None
    elif params is None and is_equinox(model_or_params) and (sample is not None or sample_kwargs):
        params, model = model_or_params, model_or_params  # traced with its sample, as a linen / NNX module
    elif params is None:
        params = model_or_params
    else:
        model = model_or_params
    _, treedef, decided = decisions_of(params, rules, model=model, sample=sample, strict=strict,
                                       sample_kwargs=sample_kwargs, inventory=inventory,
                                       fn="muon_dimension_numbers")
    out, unknown = [], []
    for d in decided:
        if d is None or d[1].optimizer != label:
            out.append(None)
            continue
        info = d[0]
        axes = contract_axes(info)
        if axes is None:
            unknown.append(info.dotted)
            out.append(None)
            continue
        out.append(MuonDimensionNumbers(reduction_axis=axes[0], output_axis=axes[1]))
    if unknown:
        raise MaskError(f"{len(unknown)} parameter(s) labelled {label!r} have no known contraction axes: "
                        f"{', '.join(unknown[:10])}; label them otherwise with a rule, or describe the model with "
                        "its sample")
    return treedef.unflatten(out)


def _is_module(obj: Any) -> bool:
    try:
        import flax.linen as nn
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, (nn.Module, nnx.Module))


def _described(model: Any, sample: Any, sample_kwargs: Mapping[str, Any] | None
               ) -> tuple[PyTree, list[ParamInfo] | None]:
    """The params of ``model`` and, for a linen module, its inventory from the same traces (an NNX module's own
    state and ``None``: it is described with its params)."""
    from flax import nnx

    if isinstance(model, nnx.Module):
        return nnx.state(model, nnx.Param), None
    if sample is None and not sample_kwargs:
        from wdmask._jax._linen import NEEDS_SAMPLE_MSG

        raise ValueError(NEEDS_SAMPLE_MSG)
    from wdmask._jax._linen import describe_linen_traced, trace_linen
    from wdmask._jax._tree import in_call_order

    inventory, order, variables = describe_linen_traced(model, sample, None, sample_kwargs=sample_kwargs)
    if variables is None:  # traced by names only: the model's own variables
        variables = trace_linen(model, sample, feeds_norm=False, sample_kwargs=sample_kwargs).variables
    return variables["params"], in_call_order(inventory, order) if order else inventory
