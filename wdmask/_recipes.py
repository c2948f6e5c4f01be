r"""LARS and LAMB with rule-derived masks: excluded leaves get neither weight decay nor trust-ratio scaling.

Common practice (You et al. 2017/2019; the BERT LAMB and SimCLR LARS code) excludes BatchNorm/LayerNorm
parameters and biases from *both* weight decay and the layer-wise trust ratio. These recipes pass the
mask ``wdmask.mask(params, rules)`` (``True``: decayed) to optax as a callable, so it is rebuilt from the
structure only (static under ``jit``) at ``init`` and ``update``. optax is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wdmask import presets
from wdmask._errors import check_bool, check_number, check_weight_decay
from wdmask._optional import JAX, require
from wdmask._rules import RuleLike, Rules, as_rules

__all__ = ["lamb", "lars"]

PyTree = Any
ScalarOrSchedule = Any  # float, scalar array or optax schedule
GradientTransformation = Any  # optax.GradientTransformation


def _mask_fn(rules: Rules | Iterable[RuleLike], model: Any, sample: Any, fn: str) -> Callable[[PyTree], PyTree]:
    """``params -> bool pytree`` (decided multiplier != 0), cached per structure; refuses fractional multipliers."""
    rules = as_rules(rules)  # the same validation and messages as wdmask.mask / wdmask.decay
    values = {r.multiplier_value for r in rules} | {rules.default}
    odd = sorted(v for v in values if v not in (0.0, 1.0))
    if odd:
        raise ValueError(f"wdmask.{fn}: rules give weight-decay multiplier(s) {', '.join(f'{v:g}' for v in odd)}; "
                         f"{fn.upper()} takes a bool mask (decay or not). Use multipliers 0/1, or build the chain "
                         "yourself with wdmask.decay(weight_decay, rules) in place of add_decayed_weights")
    cache: dict[Any, PyTree] = {}

    def mask(tree: PyTree) -> PyTree:
        import jax

        from wdmask._jax._apply import mask as decide_mask

        leaves, treedef = jax.tree_util.tree_flatten(tree)
        key = (treedef, tuple((getattr(x, "shape", None), str(getattr(x, "dtype", ""))) for x in leaves))
        if key not in cache:
            cache[key] = decide_mask(tree, rules, model=model, sample=sample)
        return cache[key]

    return mask


def lars(learning_rate: ScalarOrSchedule, weight_decay: ScalarOrSchedule,
         rules: Rules | Iterable[RuleLike] | None = None, *, model: Any = None, sample: Any = None,
         momentum: float = 0.9, trust_coefficient: float = 0.001, eps: float = 0.0,
         nesterov: bool = False) -> GradientTransformation:
    r"""``optax.lars`` whose weight decay *and* trust ratio apply only where ``rules`` decide decay.

    With $m_i \in \{0, 1\}$ the decided mask of leaf $i$:

    $$
    u_i = g_i + m_i \lambda \theta_i, \qquad
    u_i \leftarrow m_i \, \frac{c\,\lVert\theta_i\rVert}{\lVert u_i\rVert + \epsilon}\, u_i + (1 - m_i)\, u_i,
    \qquad b_i \leftarrow \mu b_i - \eta u_i
    $$

    i.e. ``optax.lars(..., weight_decay_mask=mask, trust_ratio_mask=mask)`` with
    ``mask = lambda p: wdmask.mask(p, rules, model=model, sample=sample)``.

    Args:
      learning_rate: $\eta$, a float or an optax schedule.
      weight_decay: $\lambda$, a finite float >= 0 (or a scalar array, or an optax schedule).
      rules: ordered rules (default ``None``: ``presets.standard``, no decay and no trust ratio for norm
        params and biases).
        Multipliers must be 0 or 1.
      model: the linen or NNX module the params belong to (exact layer kinds, as in ``wdmask.mask``).
      sample: example inputs of a linen ``model``.
      momentum: as in ``optax.lars``.
      trust_coefficient: as in ``optax.lars``.
      eps: as in ``optax.lars``.
      nesterov: as in ``optax.lars``.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: a rule multiplier other than 0 or 1; a NaN, infinite or out-of-range hyperparameter
        (negative ``learning_rate``/``weight_decay``/``eps``, ``b1``/``b2`` outside [0, 1), ...).
      TypeError: a hyperparameter that is not a real number (a bool, a str, a torch tensor, ...) or
        schedule (``learning_rate``, ``weight_decay``); a flag that is not a bool.

    Examples:
      >>> import jax.numpy as jnp, wdmask
      >>> params = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
      >>> tx = wdmask.lars(0.1, 1e-4)
      >>> grads = {"Dense_0": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))}}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> round(float(updates["Dense_0"]["bias"][0]), 6)  # excluded: plain momentum SGD, -η g
      -0.1
    """
    require(*JAX, by="wdmask.lars")
    rules = presets.standard if rules is None else rules
    import optax

    where = "wdmask.lars: "
    check_number(learning_rate, "learning_rate", schedule=True, torch_ok=False, where=where)
    check_weight_decay(weight_decay, where=where, torch_ok=False)
    check_number(momentum, "momentum", torch_ok=False, where=where)
    check_number(trust_coefficient, "trust_coefficient", low_open=True, torch_ok=False, where=where)
    check_number(eps, "eps", torch_ok=False, where=where)
    check_bool(nesterov, "nesterov", where=where)
    mask = _mask_fn(rules, model, sample, "lars")
    return optax.lars(learning_rate, weight_decay, weight_decay_mask=mask, trust_coefficient=trust_coefficient,
                      eps=eps, trust_ratio_mask=mask, momentum=momentum, nesterov=nesterov)


def lamb(learning_rate: ScalarOrSchedule, weight_decay: ScalarOrSchedule,
         rules: Rules | Iterable[RuleLike] | None = None, *, model: Any = None, sample: Any = None,
         b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, eps_root: float = 0.0,
         exclude_from_trust_ratio: bool = True) -> GradientTransformation:
    r"""LAMB whose weight decay (and, by default, trust ratio) apply only where ``rules`` decide decay.

    $$
    u_i = \text{adam}(g)_i + m_i \lambda \theta_i, \qquad
    u_i \leftarrow m_i \, \frac{\lVert\theta_i\rVert}{\lVert u_i\rVert}\, u_i + (1 - m_i)\, u_i, \qquad
    \theta_i \leftarrow \theta_i - \eta u_i
    $$

    ``optax.lamb(mask=)`` masks only the decay and applies the trust ratio to every leaf; excluding
    norm parameters and biases from layer adaptation too (the BERT LAMB default:
    ``exclude_from_layer_adaptation = exclude_from_weight_decay``) needs the chain
    ``scale_by_adam, add_decayed_weights(λ, mask), masked(scale_by_trust_ratio(), mask),
    scale_by_learning_rate(η)``, which is what this returns. ``exclude_from_trust_ratio=False`` returns
    exactly ``optax.lamb(..., mask=mask)``.

    Args:
      learning_rate: $\eta$, a float or an optax schedule.
      weight_decay: $\lambda$, a finite float >= 0 (or a scalar array, or an optax schedule).
      rules: ordered rules (default ``None``: ``presets.standard``); multipliers must be 0 or 1.
      model: the linen or NNX module the params belong to.
      sample: example inputs of a linen ``model``.
      b1: as in ``optax.lamb``.
      b2: as in ``optax.lamb``.
      eps: as in ``optax.lamb``.
      eps_root: as in ``optax.lamb``.
      exclude_from_trust_ratio: leaves without decay also skip the trust ratio.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: a rule multiplier other than 0 or 1; a NaN, infinite or out-of-range hyperparameter
        (negative ``learning_rate``/``weight_decay``/``eps``, ``b1``/``b2`` outside [0, 1), ...).
      TypeError: a hyperparameter that is not a real number (a bool, a str, a torch tensor, ...) or
        schedule (``learning_rate``, ``weight_decay``); a flag that is not a bool.

    Examples:
      >>> import jax.numpy as jnp, wdmask
      >>> params = {"LayerNorm_0": {"bias": jnp.ones(2), "scale": jnp.ones(2)}}
      >>> tx = wdmask.lamb(1e-3, 1e-2)
      >>> grads = {"LayerNorm_0": {"bias": jnp.ones(2), "scale": jnp.ones(2)}}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> round(float(updates["LayerNorm_0"]["scale"][0]), 6)  # plain Adam step, no trust ratio
      -0.001
    """
    require(*JAX, by="wdmask.lamb")
    rules = presets.standard if rules is None else rules
    import optax

    where = "wdmask.lamb: "
    check_number(learning_rate, "learning_rate", schedule=True, torch_ok=False, where=where)
    check_weight_decay(weight_decay, where=where, torch_ok=False)
    for name, value in (("b1", b1), ("b2", b2)):
        check_number(value, name, high=1.0, high_open=True, torch_ok=False, where=where)
    check_number(eps, "eps", torch_ok=False, where=where)
    check_number(eps_root, "eps_root", torch_ok=False, where=where)
    check_bool(exclude_from_trust_ratio, "exclude_from_trust_ratio", where=where)
    mask = _mask_fn(rules, model, sample, "lamb")
    if not exclude_from_trust_ratio:
        return optax.lamb(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay,
                          mask=mask)
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.masked(optax.scale_by_trust_ratio(), mask),
        optax.scale_by_learning_rate(learning_rate),
    )
