r"""``audit`` and ``infer_rules`` for Optax: read the weight decay a transform or a mask applies, per leaf.

What is read (``_read``):

* an ``optax.GradientTransformation`` (``adamw(mask=)``, ``chain(add_decayed_weights(wd, mask), ...)``,
  ``chain(wdmask.decay(...), sgd(...))``, ``multi_transform``, ``inject_hyperparams(adamw)(...)``):
  one probe step ``tx.update(zeros, tx.init(ones), ones)`` from a fresh state on params of ones
  with ``params``' structure, in float64 (``jax.enable_x64`` locally, so ``update / param`` is read
  to ~1e-16). With a zero gradient only the decay moves a leaf, so per leaf
  $|\Delta\theta / \theta|$ is the decay it gets this step:

  - decoupled decay (``adamw``, ``chain(..., add_decayed_weights(wd, mask), scale(-lr))``) and decay
    before a linear optimizer (``chain(add_decayed_weights(wd, mask), sgd(lr))``): exactly
    $\eta\lambda m$ per leaf — which leaves *and* their ratios are revealed; the reference is
    $\eta\lambda$ (times a constant such as momentum's ``1 + mu`` under Nesterov), not
    $\lambda$ alone;
  - coupled decay before an adaptive scaling (``chain(add_decayed_weights(wd, mask), adam(lr))``):
    Adam normalizes $\lambda m \theta$ to about $\pm\eta$ whatever $m$, so *which* leaves
    are decayed is revealed, their ratios are not (pass ``ratios=False`` when the rules use
    multipliers other than 0 and 1);
* a bool mask pytree (or a prefix of one, as ``optax.masked`` accepts), or a callable
  ``params -> mask``: which leaves are decayed, never how much (``ratios=False``).

A transform whose zero-gradient first step moves parameters for other reasons (noise, lookahead
sync) is read as decaying them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wdmask import presets
from wdmask._audit import AuditReport, audit_inventory
from wdmask._errors import MaskError
from wdmask._infer import Inferred, infer_inventory, infer_policy
from wdmask._jax._describe import inventory_for
from wdmask._jax._tree import Leaf, _unbox, first_difference, flatten, is_box, key_str
from wdmask._optional import JAX, require
from wdmask._rules import RuleLike, Rules
from wdmask._types import ParamInfo, Path

__all__ = ["audit", "infer_rules"]

PyTree = Any
WHAT_MSG = ("`tx_or_mask` must be an optax.GradientTransformation, a bool mask pytree with `params`' structure "
            "(or a prefix of it, as optax.masked takes), or a callable params -> such a mask; got {what}")
#: The unit of a transform's probe reading, for reports.
MEASURE = "|update/param|"


def _what(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:200]


def _is_transform(obj: Any) -> bool:
    try:
        import optax
    except ImportError:  # pragma: no cover - optax is part of the jax extra
        optax = None
    if optax is not None and isinstance(obj, optax.GradientTransformation):
        return True
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None)) and not isinstance(
        obj, type)


#: Steps at which a transform whose learning rate or decay schedule is 0 at step 0 is read (its counts set).
PROBE_STEPS = (1, 2, 4, 16, 64, 256, 1024, 4096, 16384, 65536)


def _at_step(state: Any, step: int) -> Any:
    """``state`` with every integer scalar ``count`` (optax schedules, Adam, ``inject_hyperparams``,
    ``wdmask.decay`` with a schedule) set to ``step``: the state a schedule would see after ``step`` updates."""
    import jax
    import jax.numpy as jnp

    def at(keypath: Any, x: Any) -> Any:
        name = key_str(keypath[-1]) if keypath else ""
        if name == "count" and getattr(x, "shape", None) == () and jnp.issubdtype(getattr(x, "dtype", float),
                                                                                    jnp.integer):
            return jnp.asarray(step, x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(at, state)


def _has_counts(state: Any) -> bool:
    import jax

    return any(key_str(kp[-1]) == "count" for kp, _ in jax.tree_util.tree_flatten_with_path(state)[0] if kp)


def _probe(tx: Any, params: PyTree, leaves: list[Leaf]) -> tuple[list[float], int]:
    """``|update / param|`` per leaf of one zero-gradient step of ``tx`` on float64 params of ones, and the step.

    Read at step 0 (a fresh state); when no leaf is decayed there, at the first of ``PROBE_STEPS`` (the state's
    counts set to that step) where one is: a warmup schedule starting at 0 (learning rate or weight decay)
    reads as no decay at step 0 only. A transform that moves nothing at any of these steps, even with a
    gradient of ones (a learning rate of 0 throughout), cannot be read: ``ValueError``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    def ones(x: Any) -> Any:
        dtype = getattr(x, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
            return jnp.ones(jnp.shape(x), jnp.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else
                            jnp.float64)
        return x

    def call(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:
            raise ValueError(f"wdmask: probing `tx_or_mask` failed: tx.update(zeros, tx.init(params), params) with "
                             f"params of ones raised {type(e).__name__}: {e}"[:1500]) from e

    def moves_nothing(state: Any) -> bool:  # a gradient of ones moves no trainable leaf: a learning rate of 0
        updates, _ = call(tx.update, jax.tree.map(jnp.ones_like, probe), state, probe)
        pairs, _ = jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_box)
        return all(not leaf.trainable or not np.any(np.asarray(_unbox(raw)))
                   for leaf, (_, raw) in zip(leaves, pairs, strict=False))

    with jax.enable_x64(True):
        probe = jax.tree.map(ones, params)
        zeros = jax.tree.map(jnp.zeros_like, probe)
        fresh = call(tx.init, probe)
        values = _read_updates(call(tx.update, zeros, fresh, probe)[0], leaves)
        if any(values):
            return values, 0
        states = [(step, _at_step(fresh, step)) for step in PROBE_STEPS] if _has_counts(fresh) else []
        for step, state in states:  # a learning rate or a decay schedule that starts at 0
            later = _read_updates(call(tx.update, zeros, state, probe)[0], leaves)
            if any(later):
                return later, step
        if not all(moves_nothing(state) for state in (fresh, *(state for _, state in states))):
            return values, 0  # the transform updates, and decays nothing
    raise ValueError(
        f"wdmask: the decay of `tx_or_mask` cannot be read: it moves no parameter at step 0 nor at steps "
        f"{', '.join(map(str, PROBE_STEPS))}, even with a gradient of ones (a learning rate of 0 there, e.g. a "
        "schedule that stays 0, or a transform that never updates). Audit its mask instead: "
        "wdmask.audit(mask, params, rules)")


def _read_updates(updates: PyTree, leaves: list[Leaf]) -> list[float]:
    """``|update|`` per leaf (params are ones): one value per leaf, which must be uniform across the leaf."""
    import jax
    import numpy as np

    pairs, _ = jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_box)
    got = [tuple(key_str(k) for k in kp) for kp, _ in pairs]
    want = [leaf.keys for leaf in leaves]
    if got != want:
        raise MaskError(f"wdmask: the updates of `tx_or_mask` do not have the structure of `params`: "
                        f"{first_difference(want, got)}")
    out = []
    for leaf, (_, raw) in zip(leaves, pairs, strict=True):
        if not leaf.trainable:
            out.append(0.0)
            continue
        values = np.abs(np.asarray(_unbox(raw), dtype=np.complex128 if "complex" in leaf.dtype else np.float64))
        if values.size == 0:
            out.append(0.0)
            continue
        if not np.all(np.isfinite(values)):
            raise ValueError(f"wdmask: the probe update of {'.'.join(leaf.path)!r} is not finite "
                             f"({values.ravel()[:3].tolist()}...): an optimizer with eps=0 divides 0 by 0 on "
                             "undecayed leaves; audit it with eps > 0, or audit its mask")
        lo, hi = float(values.min()), float(values.max())
        if hi - lo > 1e-9 * hi:
            raise ValueError(f"wdmask: the probe update of {'.'.join(leaf.path)!r} is not uniform "
                             f"(|update/param| from {lo:g} to {hi:g}): `tx_or_mask` does more than weight decay "
                             "on a zero gradient, its decay cannot be read; audit its mask instead")
        out.append(float(f"{hi:.12g}"))
    return out


def _mask_values(mask: PyTree, params: PyTree, leaves: list[Leaf], where: str) -> list[float]:
    """1.0/0.0 per leaf of ``params`` from a bool mask (or a prefix of one)."""
    import jax
    import numpy as np

    try:
        _, mask_def = jax.tree_util.tree_flatten(mask, is_leaf=is_box)
        subtrees = mask_def.flatten_up_to(params)
    except Exception:
        mask_paths = [tuple(key_str(k) for k in kp) for kp, _ in
                      jax.tree_util.tree_flatten_with_path(mask, is_leaf=is_box)[0]]
        params_paths = [leaf.keys for leaf in leaves]
        raise MaskError(f"wdmask: {where} does not have the structure of `params` (nor a prefix of it): "
                        f"{first_difference(params_paths, mask_paths)}. Build it from these params "
                        f"(e.g. wdmask.mask(params, rules))") from None
    out: list[float] = []
    for (keypath, value), sub in zip(jax.tree_util.tree_flatten_with_path(mask, is_leaf=is_box)[0], subtrees,
                                     strict=True):
        if isinstance(value, (bool, np.bool_)) or (getattr(value, "shape", None) == () and "bool" in str(
                getattr(value, "dtype", ""))):
            flag = bool(value)
        else:
            at = ".".join(key_str(k) for k in keypath)
            if not keypath:
                raise TypeError(WHAT_MSG.format(what=_what(value)))
            raise TypeError(f"wdmask: {where} leaf {at!r} must be a bool, got {_what(value)}; a mask holds one "
                            "Python bool per params leaf")
        out += [1.0 if flag else 0.0] * len(jax.tree_util.tree_leaves(sub, is_leaf=is_box))
    if len(out) != len(leaves):  # pragma: no cover - flatten_up_to guarantees it
        raise MaskError(f"wdmask: {where} covers {len(out)} leaves, `params` has {len(leaves)}")
    return out


def _read(tx_or_mask: Any, params: PyTree) -> tuple[list[Leaf], dict[Path, float], bool, int]:
    """Leaves of ``params``, each trainable leaf's effective decay, whether values are magnitudes, and the step
    a transform was read at."""
    if params is None:
        raise MaskError("wdmask: `params` is None; pass the params pytree the transform or mask is for")
    leaves, _ = flatten(params)
    step = 0
    if _is_transform(tx_or_mask):
        (values, step), magnitudes = _probe(tx_or_mask, params, leaves), True
    else:
        if tx_or_mask is None or (isinstance(tx_or_mask, (str, bytes, int, float, type)) and not isinstance(
                tx_or_mask, bool)):
            raise TypeError(WHAT_MSG.format(what=_what(tx_or_mask)))
        if getattr(tx_or_mask, "__module__", "").startswith("optax"):
            raise TypeError(WHAT_MSG.format(what=_what(tx_or_mask)) + "; call the optax factory first, e.g. "
                            "optax.adamw(1e-3, weight_decay=1e-2, mask=...), not optax.adamw")
        mask, where = tx_or_mask, "`tx_or_mask` (a mask)"
        if callable(tx_or_mask):
            try:
                mask = tx_or_mask(params)
            except Exception as e:
                raise ValueError(f"wdmask: calling the mask function `tx_or_mask` on `params` raised "
                                 f"{type(e).__name__}: {e}"[:1000]) from e
            where = "the mask `tx_or_mask(params)` returned"
            if callable(mask) or mask is None:
                raise TypeError(f"wdmask: {where} is {_what(mask)}, not a bool pytree")
        values, magnitudes = _mask_values(mask, params, leaves, where), False
    actual = {leaf.path: v for leaf, v in zip(leaves, values, strict=True) if leaf.trainable}
    return leaves, actual, magnitudes, step




def _labels(tx_or_mask: Any, params: PyTree, labels: Any) -> dict[Path, str] | None:
    """Each trainable leaf's optimizer label: ``labels`` (a pytree of str like ``params``, or a callable ``params ->
    labels``, as ``optax.partition`` takes), else the labels of the outermost ``optax.partition`` /
    ``multi_transform`` in the transform (``partition_labels``); ``None`` when there are none."""
    if labels is None:
        return partition_labels(tx_or_mask, params) if _is_transform(tx_or_mask) else None
    found = _per_leaf(params, labels, "labels", "a label per leaf, as optax.partition takes")
    bad = next((v for v in found.values() if not isinstance(v, str)), None)
    if bad is not None:
        raise TypeError(f"wdmask: `labels` leaves must be str optimizer labels (e.g. 'muon', 'adamw'), got "
                        f"{_what(bad)}")
    return found


def _per_leaf(params: PyTree, tree_or_fn: Any, arg: str, what: str) -> dict[Path, Any]:
    """``{path: value}`` of a pytree with ``params``' structure (boxes as leaves), or of ``tree_or_fn(params)``."""
    leaves, treedef = flatten(params)
    tree = tree_or_fn(params) if callable(tree_or_fn) else tree_or_fn
    try:
        flat = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise MaskError(f"wdmask: `{arg}` must have the structure of `params` ({what}): {str(e)[:300]}") from e
    return {leaf.path: v for leaf, v in zip(leaves, flat, strict=True) if leaf.trainable}


def _lr_of(params: PyTree, lr_scales: Any, inventory: Sequence[ParamInfo]) -> dict[Path, float | tuple[float, ...]]:
    """Each trainable leaf's lr multiplier from ``lr_scales``: a number, or for a stacked leaf one per slice (an
    array along its stacked axis, as ``wdmask.lr_scales`` gives)."""
    import numpy as np

    found = _per_leaf(params, lr_scales, "lr_scales", "an lr multiplier per leaf, as wdmask.lr_scales gives")
    out: dict[Path, float | tuple[float, ...]] = {}
    for info in inventory:
        if info.path not in found:
            continue
        try:
            a = np.asarray(found[info.path], dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"wdmask: `lr_scales` at {info.dotted}: expected a number or an array of numbers, got "
                            f"{_what(found[info.path])}") from None
        if a.size == 1:
            out[info.path] = float(a.reshape(()))
            continue
        axis = info.stacked_axes[0] if len(info.stacked_axes) == 1 else None
        if axis is None or a.ndim != len(info.shape) or a.shape[axis] != a.size or a.size != info.shape[axis]:
            raise MaskError(f"wdmask: `lr_scales` at {info.dotted}: expected a number, or one per slice along the "
                            f"stacked axis of the leaf of shape {info.shape} (stacked axes {info.stacked_axes}), got "
                            f"an array of shape {a.shape}")
        out[info.path] = tuple(float(v) for v in a.reshape(-1))
    return out


def partition_labels(tx: Any, params: PyTree) -> dict[Path, str] | None:
    """The labels of the outermost ``optax.partition``/``multi_transform`` in ``tx``, read from its initial state
    (abstractly: nothing is computed): each label's inner state holds ``optax.MaskedNode`` at the leaves of the
    other labels. A label whose optimizer keeps no per-leaf state (``sgd`` without momentum) takes the leaves no
    other label claims; ``None`` when ``tx`` partitions nothing.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
      >>> tx = optax.partition({"adamw": optax.adamw(1e-3), "sgd": optax.sgd(1e-3)}, {"w": "adamw", "b": "sgd"})
      >>> partition_labels(tx, params)
      {('b',): 'sgd', ('w',): 'adamw'}
    """
    import jax
    import optax

    from wdmask._jax._usage import leaf_paths

    state = jax.eval_shape(tx.init, params)
    part = next(_states(state, optax.PartitionState), None)
    if part is None:
        return None
    target = jax.tree_util.tree_structure(params)
    paths = leaf_paths(params)
    owner: dict[int, set[str]] = {}
    for label, inner in part.inner_states.items():
        for sub in _states(inner, None, target):
            flat = jax.tree_util.tree_leaves(sub, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
            for k, v in enumerate(flat):
                if not isinstance(v, optax.MaskedNode):
                    owner.setdefault(k, set()).add(str(label))
    silent = [str(label) for label in part.inner_states if not any(str(label) in o for o in owner.values())]
    free = [k for k in range(len(paths)) if k not in owner]
    if free and len(silent) > 1:
        raise ValueError(f"wdmask: cannot tell which leaves the partition labels {silent} train (their optimizers keep "
                         "no per-leaf state); pass the labels tree given to optax.partition: labels=...")
    out = {}
    for k, path in enumerate(paths):
        got = owner.get(k) or set(silent)
        if len(got) != 1:  # pragma: no cover - optax masks each leaf out of every other label
            raise ValueError(f"wdmask: leaf {'.'.join(path)} is trained under labels {sorted(got)}")
        out[path] = next(iter(got))
    return out


def _states(obj: Any, kind: type | None, target: Any = None) -> Any:
    """The sub-states of an optax state that are ``kind`` instances, or (``kind=None``) shaped like ``params``
    (``target``: their treedef, ``optax.MaskedNode`` counting as a leaf), outermost first."""
    import jax
    import optax

    if kind is not None and isinstance(obj, kind):
        yield obj
        return
    if kind is None and isinstance(obj, (dict, tuple, list)):
        if jax.tree_util.tree_structure(obj, is_leaf=lambda x: isinstance(x, optax.MaskedNode)) == target:
            yield obj
            return
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else ()
    for child in children:
        yield from _states(child, kind, target)


def audit(tx_or_mask: Any, params: PyTree, rules: Rules | Iterable[RuleLike] | None = None, *,
          model: Any = None, sample: Any = None, ratios: bool | None = None,
          inventory: Sequence[ParamInfo] | None = None, labels: Any = None, lr_scales: Any = None,
          sample_kwargs: Mapping[str, Any] | None = None) -> AuditReport:
    r"""Where an Optax transform's (or a mask's) weight decay disagrees with ``rules``, leaf by leaf.

    A transform is read by one zero-gradient probe step from a fresh state (see the module
    docstring): per leaf $|\Delta\theta/\theta|$, e.g. $\eta\lambda$ on the leaves
    ``optax.adamw(mask=)`` decays and 0 elsewhere. As ``wdmask_torch.audit`` does, the report checks
    *which* leaves are decayed and their ratios to the reference (the most common decay of the
    multiplier-1 leaves), whatever the value. Coupled decay before Adam
    (``chain(add_decayed_weights(wd, mask), adam(lr))``) reveals which leaves, not the ratios; a
    bool mask or a mask callable only which leaves.

    Args:
      tx_or_mask: an ``optax.GradientTransformation`` (``adamw(mask=)``, ``chain(...)``,
        ``multi_transform``, ``inject_hyperparams(...)``), a bool mask pytree (or a prefix of one),
        or a callable ``params -> mask``.
      params: the params pytree the transform is applied to (its values are not used).
      rules: the rules the transform should follow (default ``None``: ``wdmask.presets.standard``).
      model: the linen or NNX module of ``params`` (exact layer kinds, scan axes).
      sample: example inputs of a linen ``model``.
      sample_kwargs: keyword arguments of the forward pass (e.g. ``{"train": False}``).
      inventory: An inventory built already (``wdmask.describe(model, sample=x)``), used instead of describing
        again (checked against ``params``' paths and shapes); not together with ``model``/``sample``.
      ratios: compare decay ratios, not only which leaves are decayed; default: ``True`` for a
        transform, ``False`` for a mask.
      labels: each leaf's optimizer label (a pytree of str like ``params`` or a callable, as ``optax.partition``
        takes); default: read from the outermost ``optax.partition``/``multi_transform`` of a transform. Audited
        when the rules set ``optimizer`` (``presets.muon``): a Muon/AdamW split made by hand.
      lr_scales: each leaf's learning-rate multiplier in the optimizer audited (a pytree like ``params`` of
        numbers, arrays along a stacked leaf's stacked axis, as ``wdmask.lr_scales`` gives; or a callable):
        audited when the rules set ``lr``/``lr_decay`` (layer-wise decay written by hand). Optax transforms do not
        expose their learning rates, so they are given, not read.

    Returns:
      An ``AuditReport``: ``report.ok``, ``report.assert_ok()``, ``print(report)``.

    Raises:
      TypeError: ``tx_or_mask`` is none of the above, or a mask leaf is not a bool.
      MaskError: a mask or the updates do not have ``params``' structure (naming the first difference).
      ValueError: the probe step failed or gave an update that is not a pure decay.

    Examples:
      >>> import jax.numpy as jnp, optax, wdmask
      >>> params = {"Dense_0": {"bias": jnp.ones(3), "kernel": jnp.ones((2, 3))},
      ...           "LayerNorm_0": {"bias": jnp.ones(3), "scale": jnp.ones(3)}}
      >>> hand_made = lambda p: {k: {n: n != "bias" for n in v} for k, v in p.items()}
      >>> report = wdmask.audit(optax.adamw(1e-3, weight_decay=1e-2, mask=hand_made), params)
      >>> [r.path for r in report.problems], report.reference
      (['LayerNorm_0.scale'], 1e-05)
    """
    require(*JAX, by="wdmask.audit")
    rules = presets.standard if rules is None else rules
    leaves, actual, magnitudes, step = _read(tx_or_mask, params)
    inventory = inventory_for(params, leaves, model=model, sample=sample, sample_kwargs=sample_kwargs,
                              given=inventory, fn="audit")
    compare = magnitudes if ratios is None else bool(ratios)
    found = _labels(tx_or_mask, params, labels)
    return audit_inventory(inventory, {p: [v] for p, v in actual.items()}, rules, ratios=compare,
                           subject="transform" if magnitudes else "mask",
                           measure=MEASURE if not step else f"{MEASURE} at step {step}",
                           actual_optimizer=None if found is None else {i.path: found.get(i.path) for i in inventory},
                           actual_lr=None if lr_scales is None else _lr_of(params, lr_scales, inventory))


def infer_rules(tx_or_mask: Any, params: PyTree, *, model: Any = None, sample: Any = None,
                ratios: bool | None = None, inventory: Sequence[ParamInfo] | None = None,
                labels: Any = None, lr_scales: Any = None, sample_kwargs: Mapping[str, Any] | None = None) -> Inferred:
    """The shortest rules reproducing which leaves an Optax transform (or a mask) decays, and how much.

    The search is ``wdmask_torch.infer_rules``' (vocabulary first, paths only when needed, exact
    by construction): ``wdmask.mask(params, result.rules, model=model, sample=sample)`` equals the
    mask. For a transform, multipliers are ratios to ``result.weight_decay``, the reference
    ``|update/param|`` of a zero-gradient step (``lr * wd`` for ``adamw``); for a mask,
    ``weight_decay`` is ``None``.

    Args:
      tx_or_mask: an ``optax.GradientTransformation``, a bool mask pytree or a callable ``params -> mask``.
      params: the params pytree.
      model: the linen or NNX module of ``params``: the rules may then use exact kinds and per-layer ndim.
      sample: example inputs of a linen ``model``.
      sample_kwargs: keyword arguments of the forward pass (e.g. ``{"train": False}``).
      inventory: An inventory built already (``wdmask.describe(model, sample=x)``), used instead of describing
        again (checked against ``params``' paths and shapes); not together with ``model``/``sample``.
      ratios: infer multipliers from decay ratios (default: ``True`` for a transform, ``False`` for a mask).
      labels: each leaf's optimizer label, as ``audit`` takes (default: read from an ``optax.partition``); the
        rules then set ``optimizer`` too, so ``wdmask.labels(params, result.rules)`` rebuilds the partition.
      lr_scales: each leaf's learning-rate multiplier, as ``audit`` takes; the rules then set ``lr_decay`` (a
        layer-wise decay) or ``lr``, so ``wdmask.lr_scales(params, result.rules)`` gives them back.

    Returns:
      ``Inferred(rules, weight_decay)``.

    Raises:
      TypeError, MaskError, ValueError: as ``audit``.

    Examples:
      >>> import jax, jax.numpy as jnp, wdmask
      >>> params = {"Dense_0": {"bias": jnp.ones(3), "kernel": jnp.ones((2, 3))},
      ...           "LayerNorm_0": {"bias": jnp.ones(3), "scale": jnp.ones(3)}}
      >>> wdmask.infer_rules(lambda p: jax.tree.map(lambda x: x.ndim > 1, p), params).rules
      Rules(inferred: [{ndim='<=1', decay=False}])
    """
    require(*JAX, by="wdmask.infer_rules")
    leaves, actual, magnitudes, _ = _read(tx_or_mask, params)
    inventory = inventory_for(params, leaves, model=model, sample=sample, sample_kwargs=sample_kwargs,
                              given=inventory, fn="infer_rules")
    inferred = infer_inventory(inventory, actual, ratios=magnitudes if ratios is None else bool(ratios))
    found = _labels(tx_or_mask, params, labels)
    lr = None if lr_scales is None else _lr_of(params, lr_scales, inventory)
    extra = infer_policy(inventory, lr, None if not found else {i.path: found.get(i.path) for i in inventory})
    if not extra:
        return inferred
    return Inferred(Rules([*inferred.rules, *extra], default=inferred.rules.default, name="inferred"),
                    inferred.weight_decay)
