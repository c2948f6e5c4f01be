r"""Optax transforms with torch's exact update math where optax's differs (importable without torch).

``wdmask_torch.to_optax`` builds its chains from optax built-ins and these: SGD with ``dampening``
(``trace_dampened``), Adam/AdamW ``amsgrad`` (``scale_by_torch_amsgrad``), Adagrad
(``scale_by_torch_adagrad``), RAdam (``scale_by_torch_radam``), NAdam (``scale_by_torch_nadam``), Muon
(``scale_by_torch_muon``: bfloat16 Newton-Schulz as torch runs it).
jax and optax are imported inside the functions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "scale_by_torch_adagrad", "scale_by_torch_amsgrad", "scale_by_torch_muon", "scale_by_torch_nadam",
    "scale_by_torch_radam", "torch_newton_schulz", "trace_dampened",
]

GradientTransformation = Any  # optax.GradientTransformation (optax is imported lazily)
PyTree = Any



class TraceDampenedState(NamedTuple):
    """State of ``trace_dampened``."""

    count: Any  # int32 scalar: updates so far
    trace: PyTree


def trace_dampened(momentum: float, dampening: float, nesterov: bool = False) -> GradientTransformation:
    r"""torch's SGD momentum buffer with ``dampening`` (``optax.trace`` has none).

    $$
    b_1 = g_1, \qquad b_t = \mu b_{t-1} + (1 - d)\, g_t \;(t > 1), \qquad
    u_t = g_t + \mu b_t \text{ (nesterov) else } b_t
    $$

    The first step copies the gradient undamped, as torch does; with ``d = 0`` this is ``optax.trace``.

    Args:
      momentum: $\mu$.
      dampening: $d$.
      nesterov: return $g_t + \mu b_t$.

    Returns:
      An ``optax.GradientTransformation``.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = trace_dampened(0.9, 0.5)
      >>> g = {"w": jnp.ones(1)}
      >>> u1, s = tx.update(g, tx.init(g)); u2, s = tx.update(g, s)
      >>> round(float(u1["w"][0]), 4), round(float(u2["w"][0]), 4)
      (1.0, 1.4)
    """
    import jax
    import jax.numpy as jnp
    import optax

    def init_fn(params: PyTree) -> TraceDampenedState:
        return TraceDampenedState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

    def update_fn(updates: PyTree, state: TraceDampenedState, params: PyTree = None) -> tuple[PyTree, Any]:
        del params
        first = state.count == 0
        trace = jax.tree.map(lambda g, b: jnp.where(first, g, momentum * b + (1 - dampening) * g),
                             updates, state.trace)
        out = jax.tree.map(lambda g, b: g + momentum * b, updates, trace) if nesterov else trace
        return out, TraceDampenedState(optax.safe_increment(state.count), trace)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAmsgradState(NamedTuple):
    """State of ``scale_by_torch_amsgrad``."""

    count: Any
    mu: PyTree
    nu: PyTree
    nu_max: PyTree


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    r"""torch's Adam/AdamW ``amsgrad=True`` preconditioner.

    $$
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
    \hat v_t = \max(\hat v_{t-1}, v_t), \quad
    u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}
    $$

    torch keeps the maximum of the *raw* second moment and divides by the *current* bias
    correction; ``optax.scale_by_amsgrad`` keeps the maximum of the bias-corrected one (or,
    with ``bias_correction_nu=False``, never divides by $\sqrt{1-\beta_2^t}$), so
    neither matches torch.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_torch_amsgrad()
      >>> g = {"w": jnp.array([2.0])}
      >>> u, _ = tx.update(g, tx.init(g))  # m̂ = 2, √v̂ = 2
      >>> round(float(u["w"][0]), 4)
      1.0
    """
    import jax
    import jax.numpy as jnp
    import optax

    def init_fn(params: PyTree) -> TorchAmsgradState:
        zeros = optax.tree.zeros_like(params)
        return TorchAmsgradState(jnp.zeros([], jnp.int32), zeros, zeros, zeros)

    def update_fn(updates: PyTree, state: TorchAmsgradState, params: PyTree = None) -> tuple[PyTree, Any]:
        del params
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        bc1, bc2 = 1 - b1**count, 1 - b2**count
        out = jax.tree.map(lambda m, v: (m / bc1.astype(m.dtype)) / (jnp.sqrt(v) / jnp.sqrt(bc2).astype(v.dtype) + eps),
                           mu, nu_max)
        return out, TorchAmsgradState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAdagradState(NamedTuple):
    """State of ``scale_by_torch_adagrad``."""

    count: Any
    sum: PyTree


def scale_by_torch_adagrad(lr_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                           eps: float = 1e-10) -> GradientTransformation:
    r"""torch's Adagrad preconditioner, including ``lr_decay``.

    $$
    s_t = s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value}, \quad
    u_t = \frac{g_t}{(\sqrt{s_t} + \epsilon)\,(1 + (t-1)\,\text{lr\_decay})}
    $$

    ``optax.scale_by_rss`` computes $g / \sqrt{s_t + \epsilon}$ (eps inside the root, no
    ``lr_decay``), hence this transform. Follow it with ``scale_by_learning_rate(η)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_torch_adagrad(lr_decay=1.0, eps=0.0)
      >>> g = {"w": jnp.array([3.0])}
      >>> u1, s = tx.update(g, tx.init(g)); u2, _ = tx.update(g, s)
      >>> round(float(u1["w"][0]), 4), round(float(u2["w"][0]), 4)  # 3/3, then 3/√18/2
      (1.0, 0.3536)
    """
    import jax
    import jax.numpy as jnp
    import optax

    def init_fn(params: PyTree) -> TorchAdagradState:
        return TorchAdagradState(jnp.zeros([], jnp.int32), optax.tree.full_like(params, initial_accumulator_value))

    def update_fn(updates: PyTree, state: TorchAdagradState, params: PyTree = None) -> tuple[PyTree, Any]:
        del params
        count = optax.safe_increment(state.count)
        acc = jax.tree.map(lambda s, g: s + g * g, state.sum, updates)
        decay = 1 + (count - 1) * lr_decay
        out = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps) / jnp.asarray(decay, g.dtype), updates, acc)
        return out, TorchAdagradState(count, acc)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAdamState(NamedTuple):
    """State of ``scale_by_torch_radam``."""

    count: Any
    mu: PyTree
    nu: PyTree


def scale_by_torch_radam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    r"""torch's RAdam preconditioner (Liu et al. 2019).

    $$
    \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
    $$

    $$
    u_t = \hat m_t \, r_t \, \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} \text{ if } \rho_t > 5
    \text{ else } \hat m_t
    $$

    torch adds $\epsilon$ to $\sqrt{v_t}$ (raw second moment); ``optax.scale_by_radam``
    adds it to $\sqrt{\hat v_t}$ (bias-corrected), hence this transform.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_torch_radam()
      >>> g = {"w": jnp.array([2.0])}
      >>> u, _ = tx.update(g, tx.init(g))  # rho_1 = 1 <= 5: the bias-corrected momentum
      >>> round(float(u["w"][0]), 4)
      2.0
    """
    import jax
    import jax.numpy as jnp
    import optax

    rho_inf = 2 / (1 - b2) - 1

    def init_fn(params: PyTree) -> TorchAdamState:
        zeros = optax.tree.zeros_like(params)
        return TorchAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates: PyTree, state: TorchAdamState, params: PyTree = None) -> tuple[PyTree, Any]:
        del params
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        t = count.astype(jnp.result_type(float))
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        rho = rho_inf - 2 * t * b2**t / bc2
        rect = jnp.sqrt(jnp.maximum((rho - 4) * (rho - 2), 0.0) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        rectify = rho > 5.0

        def one(m: Any, v: Any) -> Any:
            m_hat = m / bc1.astype(m.dtype)
            adaptive = m_hat * (jnp.sqrt(bc2).astype(v.dtype) / (jnp.sqrt(v) + eps)) * rect.astype(v.dtype)
            return jnp.where(rectify, adaptive, m_hat)

        return jax.tree.map(one, mu, nu), TorchAdamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchNadamState(NamedTuple):
    """State of ``scale_by_torch_nadam``."""

    count: Any
    mu_product: Any
    mu: PyTree
    nu: PyTree


def scale_by_torch_nadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3, *,
                         mu_product_dtype: Any = None) -> GradientTransformation:
    r"""torch's NAdam preconditioner (Dozat 2016) with its momentum-decay schedule.

    $$
    \mu_t = \beta_1 \bigl(1 - \tfrac12\, 0.96^{t\psi}\bigr), \quad \Pi_t = \prod_{i \le t} \mu_i, \quad
    d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon
    $$

    $$u_t = \frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t} + \frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m_t}{d_t}$$

    ``optax.scale_by_nadam``/``nadamw`` use a constant $\beta_1$ (no $\psi$ schedule, no
    $\Pi_t$), hence this transform.

    Args:
      b1, b2, eps: as torch's ``betas`` and ``eps``.
      momentum_decay: $\psi$.
      mu_product_dtype: dtype of $\Pi_t$. torch keeps it in its scalar dtype: float32 unless
        ``torch.get_default_dtype()`` is float64 (then float64), even for float64 params;
        ``to_optax`` passes the dtype torch will use. ``None``: jax's default float.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_torch_nadam()
      >>> g = {"w": jnp.array([2.0])}
      >>> u, _ = tx.update(g, tx.init(g))  # (1-μ1)/(1-μ1)·g/2 + μ2/(1-μ1μ2)·m/2, m = 0.1·g
      >>> round(float(u["w"][0]), 3)
      1.056
    """
    import jax
    import jax.numpy as jnp
    import optax

    def init_fn(params: PyTree) -> TorchNadamState:
        zeros = optax.tree.zeros_like(params)
        return TorchNadamState(jnp.zeros([], jnp.int32), jnp.ones([], mu_product_dtype or jnp.result_type(float)),
                               zeros, zeros)

    def update_fn(updates: PyTree, state: TorchNadamState, params: PyTree = None) -> tuple[PyTree, Any]:
        del params
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.result_type(float))
        mu_t = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        product = (state.mu_product * mu_t.astype(state.mu_product.dtype)).astype(state.mu_product.dtype)
        wide = product.astype(t.dtype)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        bc2 = 1 - b2**t
        c_grad = (1.0 - mu_t) / (1.0 - wide)
        c_mom = mu_next / (1.0 - wide * mu_next)

        def one(g: Any, m: Any, v: Any) -> Any:
            denom = jnp.sqrt(v / bc2.astype(v.dtype)) + eps
            return c_grad.astype(g.dtype) * g / denom + c_mom.astype(m.dtype) * m / denom

        return jax.tree.map(one, updates, mu, nu), TorchNadamState(count, product, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchMuonState(NamedTuple):
    """State of ``scale_by_torch_muon``."""

    momentum: PyTree  # torch's ``momentum_buffer``, in the leaf's own layout


#: torch.optim.Muon's defaults (``torch/optim/_muon.py``).
TORCH_MUON_NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
TORCH_MUON_EPS = 1e-7


def _torch_lerp(start: Any, end: Any, weight: float) -> Any:
    """``torch.lerp`` with a Python ``weight``, as its CPU kernel computes it (two formulas around 0.5)."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _round_bf16(x: Any) -> Any:
    """float32 -> the nearest bfloat16 value (ties to even), kept in float32.

    Integer operations on the bits, so that XLA cannot keep the value in float32 instead (under ``jit`` it may
    skip a bfloat16 round trip: "excess precision").
    """
    import jax.numpy as jnp
    from jax import lax

    bits = lax.bitcast_convert_type(x, jnp.uint32)
    bits = (bits + jnp.uint32(0x7FFF) + ((bits >> 16) & jnp.uint32(1))) & jnp.uint32(0xFFFF0000)
    return lax.bitcast_convert_type(bits, jnp.float32)


def _round_bf16_f64(x: Any) -> Any:
    """float64 -> the nearest bfloat16 value in one rounding (as torch's ``Tensor.bfloat16()``), in float32."""
    import jax.numpy as jnp
    from jax import lax

    bits = lax.bitcast_convert_type(x, jnp.uint64)
    bits = (bits + jnp.uint64((1 << 44) - 1) + ((bits >> 45) & jnp.uint64(1))) & ~jnp.uint64((1 << 45) - 1)
    return lax.bitcast_convert_type(bits, jnp.float64).astype(jnp.float32)


def torch_newton_schulz(matrix: Any, ns_coefficients: tuple[float, float, float] = TORCH_MUON_NS_COEFFICIENTS,
                        ns_steps: int = 5, eps: float = TORCH_MUON_EPS) -> Any:
    """torch's ``_zeropower_via_newtonschulz`` of a 2-D ``matrix`` in torch's layout (out, in), in bfloat16.

    Rounded to bfloat16, transposed when taller than wide, divided by its Frobenius norm (at least ``eps``),
    then ``ns_steps`` of ``X <- a X + (b A + c A A) X`` with ``A = X X^T``: every product accumulates in float32
    and every ``addmm`` is one float32 multiply-add (emulated in float64: needs ``jax_enable_x64``) rounded to
    bfloat16, as torch's CPU kernels compute it. The bfloat16 roundings are done on the bits, so ``jit`` keeps
    them: bit for bit with torch on the matrices measured (up to 32 x 32); long dot products may still round
    differently where the accumulation order differs. Returns bfloat16.

    Examples:
      >>> import jax.numpy as jnp
      >>> torch_newton_schulz(jnp.eye(2, dtype=jnp.float32)).dtype
      dtype(bfloat16)
    """
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    f32, f64 = jnp.float32, jnp.float64
    a, b, c = (float(np.float32(v)) for v in ns_coefficients)  # torch's scalars for float32 accumulators
    x = _round_bf16_f64(matrix) if matrix.dtype == f64 else _round_bf16(matrix.astype(f32))
    tall = matrix.shape[0] > matrix.shape[1]
    if tall:
        x = x.T
    norm = _round_bf16(jnp.sqrt(jnp.sum(x * x)))
    x = _round_bf16(x / jnp.maximum(norm, _round_bf16(jnp.asarray(eps, f32))))
    hi = lax.Precision.HIGHEST
    for _ in range(ns_steps):
        gram = _round_bf16(jnp.matmul(x, x.T, precision=hi))
        gg = jnp.matmul(gram, gram, precision=hi)
        update = _round_bf16((b * gram.astype(f64) + c * gg.astype(f64)).astype(f32))
        ux = jnp.matmul(update, x, precision=hi)
        x = _round_bf16((a * x.astype(f64) + ux.astype(f64)).astype(f32))
    return (x.T if tall else x).astype(jnp.bfloat16)


def scale_by_torch_muon(momentum: float = 0.95, nesterov: bool = True,
                        ns_coefficients: tuple[float, float, float] = TORCH_MUON_NS_COEFFICIENTS,
                        eps: float = TORCH_MUON_EPS, ns_steps: int = 5, adjust_lr_fn: str | None = None,
                        dimension_numbers: Any = None) -> GradientTransformation:
    r"""``torch.optim.Muon``'s update direction (before ``-lr``), for exact ports of torch Muon to Optax.

    $$b_t = \mathrm{lerp}(b_{t-1}, g_t, 1-\mu), \quad \tilde b_t = \mathrm{lerp}(g_t, b_t, \mu) \text{ (nesterov)
    else } b_t, \quad u_t = r \, \mathrm{NS}_{\mathrm{bf16}}(\tilde b_t)$$

    with ``r = sqrt(max(1, A/B))`` (``adjust_lr_fn`` ``None``/``"original"``) or ``0.2 sqrt(max(A, B))``
    (``"match_rms_adamw"``) for the torch shape ``(A, B) = (out, in)``. Each leaf is read as a matrix in torch's
    layout: ``dimension_numbers`` (a pytree prefix of ``optax.contrib.MuonDimensionNumbers``; default: every
    leaf a Flax kernel ``(in, out)``, reduction axis 0, output axis 1) says which axes are torch's ``in``
    (reduction) and ``out`` (output). Chain it as torch steps: ``chain(scale_by_torch_muon(...),
    add_decayed_weights(wd), scale_by_learning_rate(lr))`` is ``θ ← θ(1 - η λ) - η r NS(b̃)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_torch_muon(momentum=0.0, nesterov=False)
      >>> g = {"w": jnp.eye(2)}
      >>> u, _ = tx.update(g, tx.init(g))
      >>> u["w"].dtype == g["w"].dtype, bool(u["w"][0, 1] == 0)
      (True, True)
    """
    import math

    import jax
    import jax.numpy as jnp
    import optax

    if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
        raise ValueError(f"`adjust_lr_fn` must be None, 'original' or 'match_rms_adamw' (torch.optim.Muon), got "
                         f"{adjust_lr_fn!r}")

    def dims_tree(params: PyTree) -> PyTree:
        from optax.contrib import MuonDimensionNumbers

        if dimension_numbers is None:
            return jax.tree.map(lambda _: MuonDimensionNumbers((0,), (1,)), params)
        return dimension_numbers(params) if callable(dimension_numbers) else dimension_numbers

    def one(g: Any, buf: Any, dims: Any) -> tuple[Any, Any]:
        buf = _torch_lerp(buf, g, 1 - momentum)
        upd = _torch_lerp(g, buf, momentum) if nesterov else buf
        red, out = tuple(a % g.ndim for a in dims.reduction_axis), tuple(a % g.ndim for a in dims.output_axis)
        if len(red) + len(out) != g.ndim:
            raise ValueError(f"scale_by_torch_muon: a leaf of shape {g.shape} with dimension numbers {dims}: torch's "
                             "Muon takes 2-D matrices; every axis must be a reduction or an output axis")
        perm = (*out, *red)
        rows = math.prod(g.shape[a] for a in out)
        cols = math.prod(g.shape[a] for a in red)
        matrix = jnp.transpose(upd, perm).reshape(rows, cols)
        ortho = torch_newton_schulz(matrix, ns_coefficients, ns_steps, eps).astype(g.dtype)
        back = jnp.transpose(ortho.reshape([g.shape[a] for a in perm]), [perm.index(a) for a in range(g.ndim)])
        ratio = (math.sqrt(max(1.0, rows / cols)) if adjust_lr_fn in (None, "original")
                 else 0.2 * math.sqrt(max(rows, cols)))
        return back * ratio, buf

    def init_fn(params: PyTree) -> TorchMuonState:
        return TorchMuonState(optax.tree.zeros_like(params))

    def update_fn(updates: PyTree, state: TorchMuonState, params: PyTree = None) -> tuple[PyTree, Any]:
        del params
        dims = jax.tree.leaves(dims_tree(updates), is_leaf=lambda x: x is None or hasattr(x, "reduction_axis"))
        grads, treedef = jax.tree.flatten(updates)
        bufs = treedef.flatten_up_to(state.momentum)
        if len(dims) != len(grads) or any(d is None for d in dims):
            raise ValueError("scale_by_torch_muon: `dimension_numbers` must give every leaf it sees a "
                             "MuonDimensionNumbers (wrap Muon in optax.partition / wdmask.partition for the rest)")
        done = [one(g, b, d) for g, b, d in zip(grads, bufs, dims, strict=True)]
        return treedef.unflatten([u for u, _ in done]), TorchMuonState(treedef.unflatten([b for _, b in done]))

    return optax.GradientTransformation(init_fn, update_fn)
