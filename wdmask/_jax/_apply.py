r"""Apply decisions in Optax: ``mask`` (bool pytree) and ``decay`` (masked ``add_decayed_weights`` chain).

The masks depend only on the structure of the params (paths, shapes, dtypes) and on the
model's classes: they are built once, at ``init``, as Python bools, so they are static under
``jit``/``pjit``, identical for ``params`` and ``updates``, and add zero ops to the jaxpr.
The state carries them as static pytree metadata, which is what keeps them static under
``optax.inject_hyperparams`` (whose inner factory is re-run on every ``update``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from wdmask import presets
from wdmask._engine import decide
from wdmask._errors import MaskError, check_weight_decay
from wdmask._gc import builds_inventory
from wdmask._jax._describe import describe, describe_flattened, refuse_torch
from wdmask._jax._equinox import flatten_params, is_equinox
from wdmask._jax._linen import NEEDS_SAMPLE_MSG
from wdmask._jax._tree import Leaf, _box_test, _flax_boxes, first_difference, flatten, key_str
from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import ParamInfo, Path

PyTree = Any
#: A float, a scalar array (possibly traced, e.g. under ``inject_hyperparams``) or an optax schedule.
ScalarOrSchedule = Any

def _is_box() -> Callable[[Any], bool] | None:
    """The ``is_leaf`` test ``flatten`` uses (boxes as leaves), so treedefs and paths agree with it."""
    boxes = _flax_boxes()
    return _box_test(boxes) if boxes else None


def _structure(tree: PyTree) -> Any:
    import jax

    return jax.tree_util.tree_structure(tree, is_leaf=_is_box())


def _paths(tree: PyTree) -> list[Path]:
    import jax

    pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box())
    return [tuple(key_str(k) for k in kp) for kp, _ in pairs]


class MaskSpec:
    """Static per-leaf multipliers for one params structure (hashable by content, so equal specs share a jit)."""

    def __init__(self, treedef: Any, paths: tuple[Path, ...], multipliers: tuple[float, ...]) -> None:
        self.treedef = treedef
        self.paths = paths  # full key paths as strings (a variables dict's collection kept), for error messages
        self.multipliers = multipliers
        self._hash = hash((treedef, multipliers))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskSpec) and self._hash == other._hash and (
            self.treedef == other.treedef and self.multipliers == other.multipliers)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"MaskSpec({len(self.multipliers)} leaves, multipliers {sorted(set(self.multipliers))})"

    @property
    def distinct(self) -> tuple[float, ...]:
        """Distinct non-zero multipliers, ascending."""
        return tuple(sorted({m for m in self.multipliers if m != 0.0}))

    def mask(self, multiplier: float | None = None) -> PyTree:
        """Bool pytree: leaves with this multiplier (``None``: any non-zero one)."""
        if multiplier is None:
            bools = [m != 0.0 for m in self.multipliers]
        else:
            bools = [m == multiplier for m in self.multipliers]
        return self.treedef.unflatten(bools)

    def check(self, tree: PyTree, what: str) -> None:
        """Raise ``MaskError`` naming the first differing path when ``tree`` is not the init structure."""
        if tree is None:
            return
        try:
            treedef = _structure(tree)
        except Exception as e:
            raise MaskError(f"wdmask.decay: could not flatten `{what}`: {e}") from None
        if treedef == self.treedef:
            return
        try:
            diff = first_difference(list(self.paths), _paths(tree))
        except Exception:
            diff = f"structure {treedef} vs {self.treedef}"
        raise MaskError(
            f"wdmask.decay: `{what}` do not have the structure the mask was built for at init: {diff}. "
            f"The transform's state belongs to params with {len(self.multipliers)} leaves; re-run tx.init(params) "
            "after changing the model, and pass updates/params of that same model (same containers too)."
        )


@builds_inventory
def _spec(params: PyTree, rules: Rules, model: Any, sample: Any, strict: bool,
          flat: tuple[list[Leaf], Any] | None = None, sample_kwargs: Mapping[str, Any] | None = None) -> MaskSpec:
    """The spec of ``params``; ``flat`` is ``flatten(params)`` when the caller has it already."""
    refuse_torch(params, "mask", "params")
    refuse_torch(model, "mask", "model")
    if params is None:
        raise MaskError("wdmask: `params` is None; pass the params pytree (or nnx.state(model, nnx.Param))")
    if is_equinox(params) or is_equinox(model):  # the filtered params optax sees, StateIndex state not trainable
        params, flat = flatten_params(params)
    leaves, treedef = flat if flat is not None else flatten(params)
    inventory: Sequence[ParamInfo]
    if model is not None:
        inventory = describe(model, sample, params=params, sample_kwargs=sample_kwargs)
    else:
        if sample is not None or sample_kwargs:
            raise TypeError("wdmask: `sample`/`sample_kwargs` go with `model=` (a linen or NNX module); pass "
                            "model=... as well")
        inventory = describe_flattened(params, leaves)
    decisions = decide(inventory, rules, strict=strict)
    multipliers = tuple([decisions[leaf.path].multiplier if leaf.trainable else 0.0 for leaf in leaves])
    # full key paths (a variables dict's `params` kept), as `check` compares them with `_paths(tree)`
    return MaskSpec(treedef, tuple([leaf.keys for leaf in leaves]), multipliers)


def _is_linen(model: Any) -> bool:
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, nn.Module)


@builds_inventory
def mask(params: PyTree, rules: Rules | Iterable[RuleLike], *, model: Any = None, sample: Any = None,
         strict: bool = False, sample_kwargs: Mapping[str, Any] | None = None) -> PyTree:
    r"""Bool pytree with ``params``' structure: ``True`` where the decided multiplier is non-zero.

    Leaves outside the ``params`` collection of a variables dict, non-``Param`` NNX variables and
    integer/bool leaves are ``False``. ``nn.Partitioned``/``nnx.Param`` boxes get one bool (a
    prefix of the boxed tree, as ``optax.masked`` accepts); an ``nnx.State`` gives an
    ``nnx.State`` of bools, usable as the mask of ``nnx.Optimizer``'s pure updates.

    Args:
      params: a params pytree (dict, ``FrozenDict``, variables dict, ``nnx.State``).
      rules: ordered rules (``wdmask.presets.standard``, ...); the last match wins.
      model: the linen or NNX module the params belong to: exact layer kinds instead of names.
      sample: example inputs of ``model`` (linen: required; NNX: optional): enables roles from usage and
        ``feeds_norm``; non-array leaves are static Python values.
      strict: a rule that matches nothing raises ``RuleError`` instead of warning.
      sample_kwargs: keyword arguments of the model's forward pass (``{"train": False}``).
    Returns:
      A pytree of Python bools.
    Raises:
      RuleError: invalid rules, or (``strict``) a rule matching nothing.
      MaskError: ``params`` do not belong to ``model``.
    Examples:
      >>> import jax.numpy as jnp, wdmask
      >>> params = {"Dense_0": {"bias": jnp.zeros(2), "kernel": jnp.zeros((2, 2))}}
      >>> wdmask.mask(params, wdmask.presets.standard)
      {'Dense_0': {'bias': False, 'kernel': True}}
    """
    return _spec(params, as_rules(rules), model, sample, strict, sample_kwargs=sample_kwargs).mask()


class DecayState:
    """State of ``decay``: the inner chain's state plus the static ``MaskSpec`` (pytree metadata)."""

    __slots__ = ("inner", "spec")

    def __init__(self, inner: Any, spec: MaskSpec) -> None:
        self.inner = inner
        self.spec = spec

    def __repr__(self) -> str:
        return f"DecayState(inner={self.inner!r}, spec={self.spec!r})"


_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        import jax

        jax.tree_util.register_pytree_with_keys(
            DecayState,
            lambda s: (((jax.tree_util.GetAttrKey("inner"), s.inner),), s.spec),
            lambda spec, children: DecayState(children[0], spec),
            lambda s: ((s.inner,), s.spec),
        )
        _registered = True


def _inner(weight_decay: ScalarOrSchedule, spec: MaskSpec) -> Any:
    import optax

    parts = []
    for m in spec.distinct:
        if m == 1.0:
            wd = weight_decay
        elif callable(weight_decay):
            wd = (lambda s, k: lambda count: k * s(count))(weight_decay, m)
        else:
            wd = weight_decay * m
        parts.append(optax.add_decayed_weights(wd, spec.mask(m)))
    if not parts:
        return optax.identity()
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


RESTORED_MSG = (
    "wdmask.decay: `state` is a plain {} shaped like a restored DecayState: the optimizer state was restored "
    "from a checkpoint without a target, so its static mask was lost. Restore it onto the structure of a fresh "
    "state: `target = tx.init(params)`, then `state = checkpointer.restore(path, target)` (orbax: "
    "`ocp.StandardCheckpointer().restore(path, target)` or `args=ocp.args.StandardRestore(target)`)"
)


def _restored_without_target(state: Any) -> bool:
    """A DecayState flattened by a checkpointer: ``{"inner": ...}`` or a bare 1-tuple/list (no namedtuple)."""
    if isinstance(state, Mapping):
        return len(state) == 1 and str(next(iter(state))) == "inner"
    return isinstance(state, (tuple, list)) and not hasattr(state, "_fields") and len(state) == 1


def decay(weight_decay: ScalarOrSchedule, rules: Rules | Iterable[RuleLike] = presets.standard, *,
          model: Any = None, sample: Any = None, strict: bool = False,
          sample_kwargs: Mapping[str, Any] | None = None) -> Any:
    r"""Add weight decay scaled per leaf by the multiplier ``rules`` decide.

    .. math:: u_i \leftarrow g_i + \lambda_t \, m_i \, \theta_i

    Built as one ``optax.add_decayed_weights(weight_decay * m, mask_m)`` per distinct non-zero
    multiplier ``m`` (a schedule is scaled as ``t -> m * schedule(t)``); with one multiplier the
    update is exactly ``optax.masked(optax.add_decayed_weights(weight_decay), mask)``, op for op.
    The masks are decided at ``init`` from the params' structure (paths, shapes, dtypes) and the
    model's classes, and kept as static metadata of the state: ``update`` checks that ``updates``
    and ``params`` have that structure and never re-decides.

    Args:
      weight_decay: :math:`\lambda_t`: a float, a scalar array (``inject_hyperparams`` passes one)
        or an optax schedule.
      rules: ordered rules; the last match wins; unmatched leaves get ``rules.default`` (1).
      model: the linen or NNX module the params belong to (exact layer kinds).
      sample: example inputs of ``model`` (linen: required; NNX: optional): roles from usage, ``feeds_norm``.
      strict: a rule that matches nothing raises ``RuleError`` at ``init`` instead of warning.
      sample_kwargs: keyword arguments of the model's forward pass (``{"train": False}``).
    Returns:
      An ``optax.GradientTransformation``; chain it before the optimizer's scaling
      (``optax.chain(wdmask.decay(1e-4), optax.sgd(0.1))``) or use it as the decay of AdamW
      (``optax.chain(optax.scale_by_adam(), wdmask.decay(1e-2), optax.scale(-lr))``).
    Raises:
      RuleError: invalid rules.
      MaskError: at ``update``, ``updates``/``params`` whose structure differs from ``init``'s,
        naming the first differing path.
    Examples:
      >>> import jax, jax.numpy as jnp, optax, wdmask
      >>> params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
      >>> tx = optax.chain(wdmask.decay(0.5, wdmask.presets.standard), optax.sgd(1.0))
      >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
      >>> updates["Dense_0"]["bias"].tolist(), updates["Dense_0"]["kernel"][0].tolist()
      ([-0.0, -0.0], [-0.5, -0.5])
    """
    import optax

    rules = as_rules(rules)
    check_weight_decay(weight_decay, where="wdmask.decay: ")
    refuse_torch(model, "decay", "model")
    if model is not None and sample is None and not sample_kwargs and _is_linen(model):
        raise ValueError(NEEDS_SAMPLE_MSG)
    _register()
    cache: dict[Any, MaskSpec] = {}

    def init_fn(params: PyTree) -> DecayState:
        refuse_torch(params, "decay", "params")
        leaves, treedef = flatten(params)
        key = (treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves))
        spec = cache.get(key)
        if spec is None:
            spec = cache[key] = _spec(params, rules, model, sample, strict, (leaves, treedef), sample_kwargs)
        return DecayState(_inner(weight_decay, spec).init(params), spec)

    def update_fn(updates: PyTree, state: DecayState, params: PyTree | None = None) -> tuple[PyTree, DecayState]:
        if not isinstance(state, DecayState):
            if _restored_without_target(state):
                raise MaskError(RESTORED_MSG.format(type(state).__name__))
            raise MaskError(f"wdmask.decay: `state` must come from this transform's init (a DecayState), got "
                            f"{type(state).__name__}; check the order of transforms in optax.chain")
        spec = state.spec
        spec.check(updates, "updates")
        spec.check(params, "params")
        new_updates, inner = _inner(weight_decay, spec).update(updates, state.inner, params)
        return new_updates, DecayState(inner, spec)

    return optax.GradientTransformation(init_fn, update_fn)

