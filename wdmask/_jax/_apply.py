r"""Apply decisions in Optax: ``mask`` (bool pytree) and ``decay`` (masked ``add_decayed_weights`` chain).

The masks depend only on the structure of the params (paths, shapes, dtypes) and on the
model's classes: they are built once, at ``init``, as Python bools, so they are static under
``jit``/``pjit``, identical for ``params`` and ``updates``, and add zero ops to the jaxpr.
The state carries them as static pytree metadata, which is what keeps them static under
``optax.inject_hyperparams`` (whose inner factory is re-run on every ``update``).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wdmask import presets
from wdmask._engine import decide
from wdmask._errors import MaskError, check_bool, check_weight_decay
from wdmask._jax._describe import inventory_for, refuse_not_a_model, refuse_torch
from wdmask._jax._equinox import flatten_params, is_equinox
from wdmask._jax._linen import NEEDS_SAMPLE_MSG
from wdmask._jax._tree import Leaf, _unbox, first_difference, flatten, is_box, key_str
from wdmask._optional import JAX, require
from wdmask._rules import RuleLike, Rules, as_rules
from wdmask._types import ParamInfo, Path

PyTree = Any
#: A float, a scalar array (possibly traced, e.g. under ``inject_hyperparams``) or an optax schedule.
ScalarOrSchedule = Any

def _structure(tree: PyTree) -> Any:
    import jax

    return jax.tree_util.tree_structure(tree, is_leaf=is_box)


def _paths(tree: PyTree) -> list[Path]:
    import jax

    pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)
    return [tuple(key_str(k) for k in kp) for kp, _ in pairs]


def fingerprint(paths: Sequence[Path], multipliers: Sequence[float]) -> str:
    """A short, stable digest of per-leaf decisions: the same paths and multipliers give the same string in
    every process (sha256 of a canonical JSON text, never Python's salted ``hash``).

    Examples:
      >>> fingerprint([("Dense_0", "bias")], [0.0]) == fingerprint([("Dense_0", "bias")], [0.0])
      True
      >>> fingerprint([("Dense_0", "bias")], [0.0]) == fingerprint([("Dense_0", "bias")], [1.0])
      False
    """
    text = json.dumps([[list(p), float(m)] for p, m in zip(paths, multipliers, strict=True)], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _leaf_shape(x: Any) -> tuple[int, ...] | None:
    """The unboxed shape of a leaf of ``updates``/``params`` (``None`` for a leaf without one)."""
    x = _unbox(x)
    shape = getattr(x, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except TypeError:  # a symbolic dimension: not comparable statically
        return None


class MaskSpec:
    """Static per-leaf multipliers for one params structure (equal by content, so equal specs share a jit).

    ``fingerprint`` digests the decisions (paths and multipliers); it is recomputed on unpickling,
    never pickled, so a state restored in another process compares and hashes as a fresh one.
    """

    def __init__(self, treedef: Any, paths: tuple[Path, ...], multipliers: tuple[float, ...],
                 shapes: tuple[tuple[int, ...], ...] | None = None) -> None:
        self.treedef = treedef
        self.paths = paths  # full key paths as strings (a variables dict's collection kept), for error messages
        self.multipliers = multipliers
        self.shapes = shapes  # unboxed leaf shapes, compared at update (None: not recorded)
        self.fingerprint = fingerprint(paths, multipliers)

    def __reduce__(self) -> tuple[Any, ...]:
        return (MaskSpec, (self.treedef, self.paths, self.multipliers, self.shapes))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskSpec) and self.fingerprint == other.fingerprint and (
            self.multipliers == other.multipliers and self.paths == other.paths and self.shapes == other.shapes
            and self.treedef == other.treedef)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return (f"MaskSpec({len(self.multipliers)} leaves, multipliers {sorted(set(self.multipliers))}, "
                f"fingerprint {self.fingerprint})")

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
        """Raise ``MaskError`` naming the first differing path (or leaf shape) when ``tree`` is not the init
        structure."""
        if tree is None:
            return
        import jax

        try:
            raws, treedef = jax.tree_util.tree_flatten(tree, is_leaf=is_box)
        except Exception as e:
            raise MaskError(f"wdmask.decay: could not flatten `{what}`: {_short(e)}") from None
        if treedef == self.treedef:
            if self.shapes is None:
                return
            for i, (raw, want) in enumerate(zip(raws, self.shapes, strict=True)):
                got = _leaf_shape(raw)
                if got is not None and got != want:
                    raise MaskError(
                        f"wdmask.decay: `{what}` leaf {'.'.join(self.paths[i])!r} has shape {got}, but the mask was "
                        f"built at init for shape {want}: these are not the params the state was initialized "
                        "with. Re-run tx.init(params) after changing the model, and pass updates/params of that "
                        "same model")
            return
        try:
            diff = first_difference(list(self.paths), _paths(tree))
        except Exception:
            diff = f"structure {_short(treedef)} vs {_short(self.treedef)}"
        raise MaskError(
            f"wdmask.decay: `{what}` do not have the structure the mask was built for at init: {diff}. "
            f"The transform's state belongs to params with {len(self.multipliers)} leaves; re-run tx.init(params) "
            "after changing the model, and pass updates/params of that same model (same containers too)."
        )

    def changes(self, other: MaskSpec, limit: int = 5) -> str:
        """``"N leaves changed decision: a.b 0.0 -> 1.0, ..."`` from ``self`` (the state's) to ``other``."""
        if self.paths != other.paths:
            return (f"the leaves differ ({first_difference(list(self.paths), list(other.paths))})")
        changed = [(".".join(p), a, b) for p, a, b in zip(self.paths, self.multipliers, other.multipliers,
                                                          strict=True) if a != b]
        shown = ", ".join(f"{p} {a!r} -> {b!r}" for p, a, b in changed[:limit])
        more = f", ... ({len(changed) - limit} more)" if len(changed) > limit else ""
        return f"{len(changed)} {'leaf' if len(changed) == 1 else 'leaves'} changed decision: {shown}{more}"


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _spec(params: PyTree, rules: Rules, model: Any, sample: Any, strict: bool,
          flat: tuple[list[Leaf], Any] | None = None, sample_kwargs: Mapping[str, Any] | None = None,
          given: Sequence[ParamInfo] | None = None) -> MaskSpec:
    """The spec of ``params``; ``flat`` is ``flatten(params)`` when the caller has it already."""
    refuse_torch(params, "mask", "params")
    refuse_torch(model, "mask", "model")
    if params is None:
        raise MaskError("wdmask: `params` is None; pass the params pytree (or nnx.state(model, nnx.Param))")
    refuse_not_a_model(params, "mask", "params")
    if is_equinox(params) or is_equinox(model):  # the filtered params optax sees, StateIndex state not trainable
        params, flat = flatten_params(params)
    leaves, treedef = flat if flat is not None else flatten(params)
    inventory = inventory_for(params, leaves, model=model, sample=sample, sample_kwargs=sample_kwargs, given=given,
                              fn="mask")
    decisions = decide(inventory, rules, strict=strict)
    multipliers = tuple([decisions[leaf.path].multiplier if leaf.trainable else 0.0 for leaf in leaves])
    # full key paths (a variables dict's `params` kept), as `check` compares them with `_paths(tree)`
    return MaskSpec(treedef, tuple([leaf.keys for leaf in leaves]), multipliers,
                    tuple([leaf.shape for leaf in leaves]))


def _is_nnx(obj: Any) -> bool:
    flax = sys.modules.get("flax.nnx")
    return flax is not None and isinstance(obj, flax.Module)


def _is_linen(model: Any) -> bool:
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, nn.Module)


def mask(params: PyTree, rules: Rules | Iterable[RuleLike], *, model: Any = None, sample: Any = None,
         strict: bool = False, sample_kwargs: Mapping[str, Any] | None = None,
         inventory: Sequence[ParamInfo] | None = None) -> PyTree:
    r"""Bool pytree with ``params``' structure: ``True`` where the decided multiplier is non-zero.

    Leaves outside the ``params`` collection of a variables dict, non-``Param`` NNX variables and
    integer/bool leaves are ``False``. An NNX module stands for its ``nnx.state(model, nnx.Param)``
    (with ``model=`` itself): the mask of what ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` updates.
    ``nn.Partitioned``/``nnx.Param`` boxes get one bool (a prefix of the boxed tree, as
    ``optax.masked`` accepts); an ``nnx.State`` gives an
    ``nnx.State`` of bools, usable as the mask of ``nnx.Optimizer``'s pure updates.

    Args:
      params: a params pytree (dict, ``FrozenDict``, variables dict, ``nnx.State``) or an NNX module.
      rules: ordered rules (``wdmask.presets.standard``, ...); the last match wins.
      model: the linen or NNX module the params belong to: exact layer kinds instead of names.
      inventory: An inventory built already (``wdmask.describe(model, sample=x)``), used instead of describing
        again (checked against ``params``' paths and shapes); not together with ``model``/``sample``.
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
    require(*JAX, by="wdmask.mask")
    if _is_nnx(params):  # the module itself: its trainable state, the tree nnx.Optimizer(wrt=nnx.Param) updates
        from flax import nnx

        if model is not None and model is not params:
            raise TypeError("wdmask.mask: `params` is an NNX module and `model=` is another one; pass "
                            "nnx.state(model, nnx.Param) as `params`, or the module alone")
        params, model = nnx.state(params, nnx.Param), params
    return _spec(params, as_rules(rules), model, sample, strict, sample_kwargs=sample_kwargs, given=inventory).mask()


class DecayState:
    """State of ``decay``: the inner chain's state plus the static ``MaskSpec`` (pytree metadata).

    Pickles across processes (the pytree registration is redone on unpickling) and serializes with
    ``flax.serialization`` (as ``{"inner": ...}``: restored onto a target, the target's decisions are kept).
    """

    __slots__ = ("inner", "spec")

    def __init__(self, inner: Any, spec: MaskSpec) -> None:
        self.inner = inner
        self.spec = spec

    def __reduce__(self) -> tuple[Any, ...]:
        return (_decay_state, (self.inner, self.spec))

    def __repr__(self) -> str:
        return f"DecayState(inner={self.inner!r}, spec={self.spec!r})"


def _decay_state(inner: Any, spec: MaskSpec) -> DecayState:
    """Unpickling: a ``DecayState`` is a pytree node even in a process that has not called ``decay`` yet."""
    _register()
    return DecayState(inner, spec)


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
        try:
            from flax import serialization
        except ImportError:  # pragma: no cover - flax is part of the jax extra
            pass
        else:
            serialization.register_serialization_state(
                DecayState,
                lambda s: {"inner": serialization.to_state_dict(s.inner)},
                lambda target, data: DecayState(serialization.from_state_dict(target.inner, data["inner"]),
                                                target.spec),
            )
        _registered = True


#: The decisions each spec was checked against: spec -> keys of the (rules, model, sample, strict) that
#: decide it. ``update`` skips re-deciding for a state a transform with the same inputs built or checked.
_CHECKED: weakref.WeakKeyDictionary[MaskSpec, set[Any]] = weakref.WeakKeyDictionary()


def _decider_key(rules: Rules, model: Any, sample: Any, sample_kwargs: Any, strict: bool) -> Any:
    """What decides a mask, by identity of the model and of the sample's leaves (``inject_hyperparams``
    rebuilds ``decay`` on every update with the same objects)."""
    import jax

    leaves = jax.tree_util.tree_leaves((sample, sample_kwargs))
    return (rules, bool(strict), id(model), tuple(id(x) for x in leaves))


CHANGED_MSG = (
    "wdmask.decay: `state` was built under different decisions than this transform makes for these params "
    "(state fingerprint {old}, now {new}): {changes}. A state restored by pickle keeps the mask it was built "
    "with. Rebuild it under the current rules: `state = tx.init(params)`, or restore the checkpoint onto that "
    "target (flax.serialization.from_bytes(tx.init(params), data); orbax: checkpointer.restore(path, "
    "tx.init(params))), which keeps the other transforms' state"
)


def _check_products(weight_decay: ScalarOrSchedule, spec: MaskSpec) -> None:
    """``ValueError`` when a concrete weight decay times a rule's multiplier is not finite (``1e308 * 10``)."""
    if callable(weight_decay) and not hasattr(weight_decay, "shape"):
        return
    try:
        wd = float(weight_decay)
    except Exception:  # a traced value: not known until the step runs
        return
    for m in spec.distinct:
        if not math.isfinite(wd * m):
            raise ValueError(f"wdmask.decay: weight_decay {wd:g} times the rules' multiplier {m:g} is not finite; "
                             "use multipliers that keep weight_decay * multiplier a finite number")


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
    "wdmask.decay: `state` is a plain {} shaped like a restored DecayState (the optimizer state was restored "
    "from a checkpoint without a target), but its leaves do not fit this transform's state for these params "
    "({detail}). Restore it onto the structure of a fresh state: `target = tx.init(params)`, then "
    "`state = checkpointer.restore(path, target)` (orbax: `ocp.StandardCheckpointer().restore(path, target)` "
    "or `args=ocp.args.StandardRestore(target)`)"
)


def _restored_without_target(state: Any) -> bool:
    """A DecayState flattened by a checkpointer: ``{"inner": ...}`` or a bare 1-tuple/list (no namedtuple)."""
    if isinstance(state, Mapping):
        return len(state) == 1 and str(next(iter(state))) == "inner"
    return isinstance(state, (tuple, list)) and not hasattr(state, "_fields") and len(state) == 1


def _adopt(state: Any, fresh: DecayState) -> DecayState:
    """A state restored without a target, on ``fresh``'s structure (as a restore onto ``tx.init(params)``
    would give): its leaves (step counts of a schedule; none for a constant) must fit ``fresh``'s."""
    import jax

    got = jax.tree_util.tree_leaves(state)
    want, treedef = jax.tree_util.tree_flatten(fresh)
    shapes = [tuple(getattr(x, "shape", ())) for x in got]
    if len(got) != len(want) or shapes != [tuple(getattr(x, "shape", ())) for x in want]:
        raise MaskError(RESTORED_MSG.format(type(state).__name__, detail=f"{len(got)} leaves of shapes "
                                            f"{_short(shapes, 80)}, expected {len(want)}"))
    return jax.tree_util.tree_unflatten(treedef, got)  # type: ignore[no-any-return]


def decay(weight_decay: ScalarOrSchedule, rules: Rules | Iterable[RuleLike] | None = None, *,
          model: Any = None, sample: Any = None, strict: bool = False,
          sample_kwargs: Mapping[str, Any] | None = None, inventory: Sequence[ParamInfo] | None = None) -> Any:
    r"""Add weight decay scaled per leaf by the multiplier ``rules`` decide.

    $$u_i \leftarrow g_i + \lambda_t \, m_i \, \theta_i$$

    Built as one ``optax.add_decayed_weights(weight_decay * m, mask_m)`` per distinct non-zero
    multiplier ``m`` (a schedule is scaled as ``t -> m * schedule(t)``); with one multiplier the
    update is exactly ``optax.masked(optax.add_decayed_weights(weight_decay), mask)``, op for op.
    The masks are decided at ``init`` from the params' structure (paths, shapes, dtypes) and the
    model's classes, and kept as static metadata of the state with a fingerprint of the decisions
    (never an array: the compiled step is the literal-mask one). ``update`` checks that ``updates``
    and ``params`` have that structure and those leaf shapes, and that the state's decisions are the
    ones this transform makes (a state pickled under other rules is refused; restored onto a target
    ``tx.init(params)``, or without one, it takes this transform's decisions).

    Args:
      weight_decay: $\lambda_t$: a float, a scalar array (``inject_hyperparams`` passes one)
        or an optax schedule.
      rules: ordered rules; the last match wins; unmatched leaves get ``rules.default`` (1). Default
        (``None``): ``wdmask.presets.standard``.
      model: the linen or NNX module the params belong to (exact layer kinds).
      sample: example inputs of ``model`` (linen: required; NNX: optional): roles from usage, ``feeds_norm``.
      inventory: An inventory built already (``wdmask.describe(model, sample=x)``), used instead of describing
        again (checked against ``params``' paths and shapes); not together with ``model``/``sample``.
      strict: a rule that matches nothing raises ``RuleError`` at ``init`` instead of warning.
      sample_kwargs: keyword arguments of the model's forward pass (``{"train": False}``).

    Returns:
      An ``optax.GradientTransformation``; chain it before the optimizer's scaling
      (``optax.chain(wdmask.decay(1e-4), optax.sgd(0.1))``) or use it as the decay of AdamW
      (``optax.chain(optax.scale_by_adam(), wdmask.decay(1e-2), optax.scale(-lr))``).

    Raises:
      RuleError: invalid rules.
      MaskError: at ``update``, ``updates``/``params`` whose structure or leaf shapes differ from
        ``init``'s (naming the first differing leaf), or a state built under other decisions (naming
        the leaves that changed).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, wdmask
      >>> params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
      >>> tx = optax.chain(wdmask.decay(0.5, wdmask.presets.standard), optax.sgd(1.0))
      >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
      >>> updates["Dense_0"]["bias"].tolist(), updates["Dense_0"]["kernel"][0].tolist()
      ([-0.0, -0.0], [-0.5, -0.5])
    """
    require(*JAX, by="wdmask.decay")
    rules = presets.standard if rules is None else rules
    import optax

    rules = as_rules(rules)
    check_weight_decay(weight_decay, where="wdmask.decay: ", torch_ok=False)
    check_bool(strict, "strict", where="wdmask.decay: ")
    refuse_torch(model, "decay", "model")
    if model is not None and sample is None and not sample_kwargs and _is_linen(model):
        raise ValueError(NEEDS_SAMPLE_MSG)
    _register()
    cache: dict[Any, MaskSpec] = {}

    def own_spec(tree: PyTree) -> MaskSpec:
        """The spec this transform decides for ``tree``'s structure (once per structure)."""
        leaves, treedef = flatten(tree)
        key = (treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves))
        spec = cache.get(key)
        if spec is None:
            spec = cache[key] = _spec(tree, rules, model, sample, strict, (leaves, treedef), sample_kwargs,
                                      given=inventory)
        return spec

    def init_fn(params: PyTree) -> DecayState:
        refuse_torch(params, "decay", "params")
        spec = own_spec(params)
        _check_products(weight_decay, spec)
        _CHECKED.setdefault(spec, set()).add(_decider_key(rules, model, sample, sample_kwargs, strict))
        return DecayState(_inner(weight_decay, spec).init(params), spec)

    def checked(state: DecayState, tree: PyTree) -> None:
        """Raise ``MaskError`` when ``state`` was built under other decisions than this transform's for ``tree``."""
        key = _decider_key(rules, model, sample, sample_kwargs, strict)
        seen = _CHECKED.get(state.spec)
        if seen is not None and key in seen:
            return
        own = own_spec(tree)
        if own.fingerprint != state.spec.fingerprint or own.multipliers != state.spec.multipliers:
            raise MaskError(CHANGED_MSG.format(old=state.spec.fingerprint, new=own.fingerprint,
                                               changes=state.spec.changes(own)))
        _CHECKED.setdefault(state.spec, set()).add(key)

    def update_fn(updates: PyTree, state: DecayState, params: PyTree | None = None) -> tuple[PyTree, DecayState]:
        tree = params if params is not None else updates
        if not isinstance(state, DecayState):
            if not _restored_without_target(state):
                raise MaskError(f"wdmask.decay: `state` must come from this transform's init (a DecayState), got "
                                f"{type(state).__name__}; check the order of transforms in optax.chain")
            spec = own_spec(tree)
            state = _adopt(state, DecayState(_inner(weight_decay, spec).init(tree), spec))
        spec = state.spec
        spec.check(updates, "updates")
        spec.check(params, "params")
        checked(state, tree)
        new_updates, inner = _inner(weight_decay, spec).update(updates, state.inner, params)
        return new_updates, DecayState(inner, spec)

    return optax.GradientTransformation(init_fn, update_fn)
