"""The cross-framework conformance catalogue (issues 22 and 23): small forward patterns, what each parameter gets.

Every case is one forward pattern written in torch AND Flax linen (and Equinox where the structure differs: modules
holding raw arrays, no batch axis). For each LOGICAL parameter it states, by hand from the one-resolver specification
(issue 22; DESIGN.md "One resolver": op families, facts, the resolve table) and the principle behind
``presets.standard`` (decay what the forward pass contracts with activations and token tables; nothing that is only
added, multiplied elementwise, inserted into the sequence or passed through elementwise functions):

* ``layer``, ``role``: what ``ParamInfo`` must say;
* ``usage``: ``ParamInfo.usage`` (distinct usages in ``wdmask._usage.USAGES`` priority order);
* ``feeds_norm``: every consumer of the producer's output reaches a normalization through shape-only ops and the
  producer's own bias (set on the kernel and the bias of that producer, a raw kernel of ``F.linear``/``einsum``/
  ``matmul`` included); ``False`` for every other parameter of a traced model: the graph was seen and nothing of it
  feeds a norm (``None`` is "no graph", which no case here is);
* ``standard`` / ``scale_invariant``: whether ``presets.standard`` / ``presets.standard_scale_invariant`` decay it.

Nothing here is computed by wdmask: the expectations are the specification a rewrite must meet. Where the spec read
literally gives something else, the case says ``SPEC:`` with the literal answer and why the catalogue differs.

Layer kinds follow ``wdmask._usage.classify``: an exact class keeps its kind (``nn.Linear`` -> ``linear``); a raw
parameter takes the op's hint (``conv`` for a convolution, ``norm.batch`` for ``F.batch_norm``) or the usage's
default (``contract`` -> ``linear``, ``norm_scale`` -> ``norm.layer``, ``add``/``mul`` -> ``other``). So the model
classes here have neutral names (no "Norm", "Conv", "Dense", "Linear", "Embed"): a class name that says a kind is
evidence too (``norm_class_by_name`` is the one case about that).

Sizes are tiny (``B=2, T=4, D=8``), JAX samples are numpy arrays (traced abstractly), Equinox models are built from
``eqx.filter_eval_shape`` with numpy-drawn arrays (no sampler compiles).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

__all__ = ["CASES", "Case", "Expect", "Twin", "catalogue_markdown"]

B, T, D, OUT = 2, 4, 8, 4  # batch, sequence, features, output features / channels
C, S = 3, 5  # image channels, image side
V, L = 11, 6  # vocabulary, position table length (>= T + 2 for the offset position ids)
H, E, K, N, R, NH, NS = 6, 3, 3, 2, 2, 2, 4  # rnn hidden, experts, window, latents, registers, heads, SSM state
EPS = 1e-5


# --------------------------------------------------------------------------- the case record


@dataclasses.dataclass(frozen=True)
class Expect:
    """What one logical parameter must get, in every framework."""

    layer: str
    role: str
    usage: tuple[str, ...]
    feeds_norm: bool | None
    standard: bool  # decayed by presets.standard
    scale_invariant: bool  # decayed by presets.standard_scale_invariant

    def row(self) -> tuple[str, str, tuple[str, ...], bool | None, bool, bool]:
        return (self.layer, self.role, self.usage, self.feeds_norm, self.standard, self.scale_invariant)


def X(layer: str, role: str, usage: str, feeds_norm: bool | None, standard: bool,
      scale_invariant: bool) -> Expect:
    """One expectation row; ``usage`` is space-separated (``"gather_data contract"``)."""
    return Expect(layer, role, tuple(usage.split()), feeds_norm, standard, scale_invariant)


@dataclasses.dataclass(frozen=True)
class Twin:
    """One framework's version of a case: ``build() -> (model, sample)`` and where each logical parameter lives.

    ``sample`` is torch ``example_inputs`` or the JAX ``sample`` (a tuple of positional arguments). ``paths`` maps a
    logical name to the framework's dotted path, or to several (a torch fused ``in_proj_weight`` is three linen
    kernels); a logical name not in ``paths`` is its own path.
    """

    build: Callable[[], tuple[Any, Any]]
    paths: Mapping[str, str | tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def paths_of(self, logical: str) -> tuple[str, ...]:
        p = self.paths.get(logical, logical)
        return (p,) if isinstance(p, str) else tuple(p)


@dataclasses.dataclass(frozen=True)
class Case:
    """A forward pattern, its expectations per logical parameter, and its twins."""

    pattern: str
    expect: Mapping[str, Expect]
    torch: Twin
    linen: Twin
    equinox: Twin | None = None
    note: str = ""  # structural differences between the twins, or where the literal spec differs


# --------------------------------------------------------------------------- helpers


def _tp(*shape: int) -> tnn.Parameter:
    """A raw torch parameter."""
    return tnn.Parameter(torch.ones(shape))


def _lp(module: nn.Module, name: str, *shape: int) -> jax.Array:
    """A raw linen parameter (float32 also when another test of the process enabled x64)."""
    return module.param(name, nn.initializers.ones, shape, jnp.float32)


def _eqx(make: Callable[[jax.Array], eqx.Module]) -> eqx.Module:
    """``make(key)`` with its arrays drawn by numpy: shapes from ``eqx.filter_eval_shape``, nothing compiled."""
    rng = np.random.default_rng(0)

    def draw(s: Any) -> Any:
        if not isinstance(s, jax.ShapeDtypeStruct):
            return s
        if not jnp.issubdtype(s.dtype, jnp.inexact):
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(rng.uniform(-0.5, 0.5, s.shape).astype(np.float32))  # float32 under x64 too

    return jax.tree_util.tree_map(draw, eqx.filter_eval_shape(make, jax.random.key(0)))


# Inputs: torch NCHW / linen NHWC images; token ids that are NOT an arange along the sequence (they would read as
# position ids, issue 23); position ids that are.
def t_seq() -> torch.Tensor:
    return torch.zeros(B, T, D)


def j_seq(batch: int = B) -> np.ndarray:
    return np.zeros((batch, T, D), np.float32)


def t_img(c: int = C) -> torch.Tensor:
    return torch.zeros(B, c, S, S)


def j_img(c: int = C) -> np.ndarray:
    return np.zeros((B, S, S, c), np.float32)


_IDS = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
_POS = np.broadcast_to(np.arange(T), (B, T))


def t_ids() -> torch.Tensor:
    return torch.tensor(_IDS)


def j_ids() -> np.ndarray:
    return _IDS.astype(np.int32)


# ============================================================================ 1. layers: Linear / Conv / norms

# --- dense: a plain Linear / Dense with a bias


class TPlain(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = tnn.Linear(D, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class LPlain(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(OUT, name="fc")(x)


class EPlain(eqx.Module):
    fc: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        self.fc = eqx.nn.Linear(D, OUT, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.vmap(self.fc)(x)


# --- conv: a plain Conv2d / nn.Conv with a bias (Equinox's conv bias is (out, 1, 1): still one non-singleton axis)


class TSpatial(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cv = tnn.Conv2d(C, OUT, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv(x)


class LSpatial(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(OUT, (3, 3), name="cv")(x)


class ESpatial(eqx.Module):
    cv: eqx.nn.Conv2d

    def __init__(self, key: jax.Array) -> None:
        self.cv = eqx.nn.Conv2d(C, OUT, 3, padding=1, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.cv(x)


# --- conv -> BN, conv -> relu -> BN, conv used twice, conv -> BN and a skip, conv + raw bias -> BN


class TCvBn(tnn.Module):
    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.relu = relu
        self.cv = tnn.Conv2d(C, OUT, 3, padding=1)
        self.bn = tnn.BatchNorm2d(OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.cv(x)
        return self.bn(F.relu(h) if self.relu else h)


class LCvBn(nn.Module):
    relu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(OUT, (3, 3), name="cv")(x)
        return nn.BatchNorm(use_running_average=True, name="bn")(nn.relu(h) if self.relu else h)


class TCvTwice(tnn.Module):  # bn(cv(x)) then cv again, returned: the second call escapes
    def __init__(self) -> None:
        super().__init__()
        self.cv = tnn.Conv2d(OUT, OUT, 3, padding=1)
        self.bn = tnn.BatchNorm2d(OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv(self.bn(self.cv(x)))


class LCvTwice(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cv = nn.Conv(OUT, (3, 3), name="cv")
        return cv(nn.BatchNorm(use_running_average=True, name="bn")(cv(x)))


class TCvTwiceBn(tnn.Module):  # both calls of the shared conv go into a BN
    def __init__(self) -> None:
        super().__init__()
        self.cv = tnn.Conv2d(OUT, OUT, 3, padding=1)
        self.bn1 = tnn.BatchNorm2d(OUT)
        self.bn2 = tnn.BatchNorm2d(OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.cv(F.relu(self.bn1(self.cv(x)))))


class LCvTwiceBn(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cv = nn.Conv(OUT, (3, 3), name="cv")
        h = nn.relu(nn.BatchNorm(use_running_average=True, name="bn1")(cv(x)))
        return nn.BatchNorm(use_running_average=True, name="bn2")(cv(h))


class TCvBnSkip(tnn.Module):  # the conv output goes into the BN AND is added to its result: escapes
    def __init__(self) -> None:
        super().__init__()
        self.cv = tnn.Conv2d(C, OUT, 3, padding=1)
        self.bn = tnn.BatchNorm2d(OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv(x)
        return self.bn(y) + y


class LCvBnSkip(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Conv(OUT, (3, 3), name="cv")(x)
        return nn.BatchNorm(use_running_average=True, name="bn")(y) + y


class TCvRawBiasBn(tnn.Module):  # a bias-free conv plus its own raw bias, then BN: the bias is on the path
    def __init__(self) -> None:
        super().__init__()
        self.cv = tnn.Conv2d(C, OUT, 3, padding=1, bias=False)
        self.b = _tp(OUT)
        self.bn = tnn.BatchNorm2d(OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.cv(x) + self.b.view(1, -1, 1, 1))


class LCvRawBiasBn(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(OUT, (3, 3), use_bias=False, name="cv")(x) + _lp(self, "b", OUT)
        return nn.BatchNorm(use_running_average=True, name="bn")(h)


# --- Linear -> LayerNorm, through a reshape, after a residual add; Linear -> RMSNorm


class TFcLn(tnn.Module):
    def __init__(self, mode: str = "plain") -> None:
        super().__init__()
        self.mode = mode
        self.fc = tnn.Linear(D, 2 * D if mode == "reshape" else D)
        self.ln = tnn.LayerNorm(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.mode == "reshape":
            h = h.reshape(x.shape[0], x.shape[1], 2, D)
        elif self.mode == "residual":
            h = x + h
        return self.ln(h)


class LFcLn(nn.Module):
    mode: str = "plain"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(2 * D if self.mode == "reshape" else D, name="fc")(x)
        if self.mode == "reshape":
            h = h.reshape(x.shape[0], x.shape[1], 2, D)
        elif self.mode == "residual":
            h = x + h
        return nn.LayerNorm(name="ln")(h)


class EFcLn(eqx.Module):
    fc: eqx.nn.Linear
    ln: eqx.nn.LayerNorm

    def __init__(self, key: jax.Array) -> None:
        self.fc = eqx.nn.Linear(D, D, key=key)
        self.ln = eqx.nn.LayerNorm(D)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.vmap(lambda v: self.ln(self.fc(v)))(x)


class TFcRms(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = tnn.Linear(D, D, bias=False)
        self.rms = tnn.RMSNorm(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rms(self.fc(x))


class LFcRms(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.RMSNorm(name="rms")(nn.Dense(D, use_bias=False, name="fc")(x))


# --- conv -> GroupNorm, conv -> InstanceNorm (fused norm ops with their own layer kinds)


class TCvGn(tnn.Module):
    def __init__(self, inst: bool = False) -> None:
        super().__init__()
        self.cv = tnn.Conv2d(C, OUT, 3, padding=1, bias=False)
        self.nm = tnn.InstanceNorm2d(OUT, affine=True) if inst else tnn.GroupNorm(2, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nm(self.cv(x))


class LCvGn(nn.Module):
    inst: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(OUT, (3, 3), use_bias=False, name="cv")(x)
        return (nn.InstanceNorm(name="nm") if self.inst else nn.GroupNorm(num_groups=2, name="nm"))(h)


# --- F.layer_norm on raw parameters (torch) / the LayerNorm module (linen)


class TFunctionalLn(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g = _tp(D)
        self.b = _tp(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (D,), self.g, self.b)


class LFunctionalLn(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.LayerNorm(name="ln")(x)


# --- a user norm class whose NAME says RMSNorm (class evidence: the layer kind), computed by hand


class TRMSNorm(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = _tp(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


class TNamedHolder(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.nm = TRMSNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nm(x)


class LRMSNorm(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + EPS) * _lp(self, "weight", D)


class LNamedHolder(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return LRMSNorm(name="nm")(x)


# ============================================================================ 2. kernels through reparametrizations


class TReparam(tnn.Module):
    """``kind``: exp | weight_norm | low_rank | concat | masked (all through F.linear / matmul)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "exp":
            self.w = _tp(OUT, D)
        elif kind == "weight_norm":
            self.v, self.g = _tp(OUT, D), _tp(OUT, 1)
        elif kind == "low_rank":
            self.A, self.B = _tp(D, 2), _tp(2, OUT)
        elif kind == "concat":
            self.w1, self.w2 = _tp(OUT, D), _tp(OUT, D)
        else:
            self.w = _tp(OUT, D)
            self.register_buffer("mask", torch.tril(torch.ones(OUT, D)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "exp":
            return F.linear(x, torch.exp(self.w))
        if self.kind == "weight_norm":
            return F.linear(x, self.g * self.v / self.v.norm(dim=1, keepdim=True))
        if self.kind == "low_rank":
            return x @ (self.A @ self.B)
        if self.kind == "concat":
            return F.linear(x, torch.cat([self.w1, self.w2], 0))
        return F.linear(x, self.w * self.mask)


_MASK = np.tril(np.ones((OUT, D), np.float32)).T


class LReparam(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "exp":
            return x @ jnp.exp(_lp(self, "w", D, OUT))
        if self.kind == "weight_norm":
            v, g = _lp(self, "v", D, OUT), _lp(self, "g", 1, OUT)
            return x @ (g * v / jnp.linalg.norm(v, axis=0, keepdims=True))
        if self.kind == "low_rank":
            return x @ (_lp(self, "A", D, 2) @ _lp(self, "B", 2, OUT))
        if self.kind == "concat":
            return x @ jnp.concatenate([_lp(self, "w1", D, OUT), _lp(self, "w2", D, OUT)], 1)
        return x @ (_lp(self, "w", D, OUT) * _MASK)


class TStdKernel(tnn.Module):
    """Weight standardization: by hand ((w - mean) / std), or by F.batch_norm with a gain (timm ScaledStdConv2d)."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        self.w = _tp(OUT, C, 3, 3)
        if fused:
            self.gain = _tp(OUT, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            w = F.batch_norm(self.w.reshape(1, OUT, -1), None, None, weight=(self.gain * (C * 9) ** -0.5).view(-1),
                             training=True, momentum=0.0, eps=1e-6).reshape_as(self.w)
        else:
            wm = self.w - self.w.mean(dim=(1, 2, 3), keepdim=True)
            w = wm / torch.sqrt(wm.pow(2).mean(dim=(1, 2, 3), keepdim=True) + EPS)
        return F.conv2d(x, w, padding=1)


class LStdKernel(nn.Module):
    fused: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = _lp(self, "w", 3, 3, C, OUT)
        wm = w - w.mean((0, 1, 2), keepdims=True)
        w = wm / jnp.sqrt((wm * wm).mean((0, 1, 2), keepdims=True) + EPS)
        if self.fused:  # the batch_norm affine weight, written by hand (JAX has no fused norm op)
            w = w * (_lp(self, "gain", 1, 1, 1, OUT) * (C * 9) ** -0.5)
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


# ============================================================================ 3. norms written by hand


class THandStats(tnn.Module):
    """``style``: mean_var_rsqrt (LayerNorm), rms_rsqrt (RMSNorm), rms_div_sqrt, sigma (``(x - mu) / sigma``)."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.g = _tp(D)
        if style in ("mean_var_rsqrt", "sigma"):
            self.b = _tp(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "rms_rsqrt":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.g
        if self.style == "rms_div_sqrt":
            return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.g
        mu = x.mean(-1, keepdim=True)
        if self.style == "mean_var_rsqrt":
            var = (x - mu).pow(2).mean(-1, keepdim=True)
            return (x - mu) * torch.rsqrt(var + EPS) * self.g + self.b
        sigma = (x.var(-1, keepdim=True, unbiased=False) + EPS).sqrt()
        return (x - mu) / sigma * self.g + self.b


class LHandStats(nn.Module):
    style: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        g = _lp(self, "g", D)
        if self.style == "rms_rsqrt":
            return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + EPS) * g
        if self.style == "rms_div_sqrt":
            return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + EPS) * g
        b = _lp(self, "b", D)
        mu = x.mean(-1, keepdims=True)
        if self.style == "mean_var_rsqrt":
            var = ((x - mu) ** 2).mean(-1, keepdims=True)
            return (x - mu) * jax.lax.rsqrt(var + EPS) * g + b
        return (x - mu) / jnp.sqrt(jnp.var(x, -1, keepdims=True) + EPS) * g + b


# --- FilterResponseNorm: x * rsqrt(mean(x^2 over HW)), g * x + b, max(., tau); the issue-22 pair


class TFrn(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g, self.b, self.tau = _tp(C), _tp(C), _tp(C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + EPS)
        x = x * self.g.view(1, -1, 1, 1) + self.b.view(1, -1, 1, 1)
        return torch.maximum(x, self.tau.view(1, -1, 1, 1))


class LFrn(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x * jax.lax.rsqrt(jnp.mean(x * x, (1, 2), keepdims=True) + EPS)
        return jnp.maximum(x * _lp(self, "g", C) + _lp(self, "b", C), _lp(self, "tau", C))


class TExpMax(tnn.Module):  # issue 22: torch.maximum(F.linear(x, torch.exp(w)), tau)
    def __init__(self) -> None:
        super().__init__()
        self.w, self.tau = _tp(OUT, D), _tp(OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(F.linear(x, torch.exp(self.w)), self.tau)


class LExpMax(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.maximum(x @ jnp.exp(_lp(self, "w", D, OUT)), _lp(self, "tau", OUT))


# ============================================================================ 4. gains, layer scale, temperature


class TGained(tnn.Module):
    """``kind``: gain (x * g) | used_twice ((x + p) * p) | exp_scale (x * exp(s)) | einsum_broadcast."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "exp_scale":
            self.s = _tp()
        else:
            self.g = _tp(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "gain":
            return x * self.g
        if self.kind == "used_twice":
            return (x + self.g) * self.g
        if self.kind == "exp_scale":
            return x * self.s.exp()
        return torch.einsum("btd,d->btd", x, self.g)


class LGained(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "exp_scale":
            return x * jnp.exp(_lp(self, "s"))
        g = _lp(self, "g", D)
        if self.kind == "gain":
            return x * g
        if self.kind == "used_twice":
            return (x + g) * g
        return jnp.einsum("btd,d->btd", x, g)


class EGained(eqx.Module):  # a raw array field
    g: jax.Array

    def __init__(self, key: jax.Array) -> None:
        self.g = jnp.ones(D)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.g


class TScaled(tnn.Module):
    """``kind``: layer_scale (x + gamma * fc(x)) | temperature (fc(x) / t)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = tnn.Linear(D, D)
        self.gamma = _tp(D) if kind == "layer_scale" else _tp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer_scale":
            return x + self.gamma * self.fc(x)
        return self.fc(x) / self.gamma


class LScaled(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(D, name="fc")(x)
        if self.kind == "layer_scale":
            return x + _lp(self, "gamma", D) * h
        return h / _lp(self, "gamma")


class EScaled(eqx.Module):
    fc: eqx.nn.Linear
    gamma: jax.Array

    def __init__(self, key: jax.Array) -> None:
        self.fc = eqx.nn.Linear(D, D, key=key)
        self.gamma = jnp.ones(D)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.gamma * jax.vmap(self.fc)(x)


class TSlope(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = tnn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


class LSlope(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.PReLU(name="act")(x)


# ============================================================================ 5. position tables


class TPositions(tnn.Module):
    """``kind``: whole ((1, T, D) added) | sliced ((1, L, D)[:, :T] added)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.pos = _tp(1, T if kind == "whole" else L, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.pos if self.kind == "whole" else self.pos[:, : x.shape[1]])


class LPositions(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pos = _lp(self, "pos", 1, T if self.kind == "whole" else L, D)
        return x + (pos if self.kind == "whole" else pos[:, : x.shape[1]])


class EPositions(eqx.Module):  # no batch axis: a (T, D) table added to a (T, D) example
    pos: jax.Array

    def __init__(self, key: jax.Array) -> None:
        self.pos = jnp.ones((T, D))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.pos


class TTables(tnn.Module):
    """``kind``: tokens (wte(ids)) | arange (wte(ids) + wpe(arange(T))) | ids_input (wte(ids) + wpe(position_ids))."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.wte = tnn.Embedding(V, D)
        if kind != "tokens":
            self.wpe = tnn.Embedding(L, D)

    def forward(self, ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.wte(ids)
        if self.kind == "arange":
            return h + self.wpe(torch.arange(ids.shape[1]))
        if self.kind == "ids_input":
            return h + self.wpe(position_ids)
        return h


class LTables(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, ids: jax.Array, position_ids: jax.Array | None = None) -> jax.Array:
        h = nn.Embed(V, D, name="wte")(ids)
        if self.kind == "arange":
            return h + nn.Embed(L, D, name="wpe")(jnp.arange(ids.shape[1]))
        if self.kind == "ids_input":
            return h + nn.Embed(L, D, name="wpe")(position_ids)
        return h


_WINDOW = 2  # a 2x2 window: T = 4 tokens; Swin's relative position index
_coords = np.stack(np.meshgrid(np.arange(_WINDOW), np.arange(_WINDOW), indexing="ij")).reshape(2, -1)
_rel = (_coords[:, :, None] - _coords[:, None, :]).transpose(1, 2, 0) + _WINDOW - 1
_REL_INDEX = (_rel[..., 0] * (2 * _WINDOW - 1) + _rel[..., 1]).astype(np.int32)  # (T, T), a constant


class TRelBias(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = _tp((2 * _WINDOW - 1) ** 2, NH)
        self.register_buffer("index", torch.tensor(_REL_INDEX, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x @ x.transpose(-1, -2)).unsqueeze(1)  # (B, 1, T, T)
        bias = self.table[self.index.view(-1)].view(T, T, NH).permute(2, 0, 1)
        return (logits + bias.unsqueeze(0)).softmax(-1)


class LRelBias(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        logits = (x @ jnp.swapaxes(x, -1, -2))[:, None]
        bias = _lp(self, "table", (2 * _WINDOW - 1) ** 2, NH)[_REL_INDEX.reshape(-1)].reshape(T, T, NH)
        return jax.nn.softmax(logits + bias.transpose(2, 0, 1)[None], -1)


# ============================================================================ 6. tokens


class TTokens(tnn.Module):
    """``kind``: cls (concatenated) | where (mask token substituted) | setitem (x[:, 0] = tok) | scatter."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.tok = _tp(D) if kind == "setitem" else _tp(1, 1, D)

    def forward(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "cls":
            return torch.cat([self.tok.expand(x.shape[0], -1, -1), x], 1)
        if self.kind == "where":
            return torch.where(m.unsqueeze(-1), self.tok, x)
        if self.kind == "setitem":
            x = x.clone()
            x[:, 0] = self.tok
            return x
        index = torch.zeros(x.shape[0], 1, D, dtype=torch.long)
        return x.scatter(1, index, self.tok.expand(x.shape[0], 1, D))


class LTokens(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x: jax.Array, m: jax.Array | None = None) -> jax.Array:
        tok = _lp(self, "tok", *((D,) if self.kind == "setitem" else (1, 1, D)))
        if self.kind == "cls":
            return jnp.concatenate([jnp.broadcast_to(tok, (x.shape[0], 1, D)), x], 1)
        if self.kind == "where":
            return jnp.where(m[..., None], tok, x)
        if self.kind == "setitem":
            return x.at[:, 0].set(tok)
        return x.at[:, np.array([0])].set(jnp.broadcast_to(tok, (x.shape[0], 1, D)))


class ETokens(eqx.Module):  # no batch axis: (1, D) / (D,) tokens and a (T, D) example
    tok: jax.Array
    kind: str = eqx.field(static=True)

    def __init__(self, key: jax.Array, kind: str) -> None:
        self.kind = kind
        self.tok = jnp.ones((1, D) if kind == "cls" else (D,))

    def __call__(self, x: jax.Array, m: jax.Array | None = None) -> jax.Array:
        if self.kind == "cls":
            return jnp.concatenate([self.tok, x], 0)
        return jnp.where(m[:, None], self.tok, x)


class TVitTokens(tnn.Module):  # timm _pos_embed: cls + register tokens concatenated, then a (1, L, D) table added
    def __init__(self) -> None:
        super().__init__()
        self.patch = tnn.Conv2d(C, D, 2, 2)
        self.cls = _tp(1, 1, D)
        self.reg = _tp(1, R, D)
        self.pos = _tp(1, 1 + R + 4, D)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch(img).flatten(2).transpose(1, 2)
        b = x.shape[0]
        return torch.cat([self.cls.expand(b, -1, -1), self.reg.expand(b, -1, -1), x], 1) + self.pos


class LVitTokens(nn.Module):
    @nn.compact
    def __call__(self, img: jax.Array) -> jax.Array:
        x = nn.Conv(D, (2, 2), strides=2, name="patch")(img)
        x = x.reshape(x.shape[0], -1, D)
        b = x.shape[0]
        cls = jnp.broadcast_to(_lp(self, "cls", 1, 1, D), (b, 1, D))
        reg = jnp.broadcast_to(_lp(self, "reg", 1, R, D), (b, R, D))
        return jnp.concatenate([cls, reg, x], 1) + _lp(self, "pos", 1, 1 + R + 4, D)


class TProbe(tnn.Module):  # big_vision MAP head / SigLIP: a learned query attends over the sequence
    def __init__(self) -> None:
        super().__init__()
        self.probe = _tp(1, 1, D)
        self.attn = tnn.MultiheadAttention(D, NH, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.probe.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]


class LProbe(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        probe = jnp.broadcast_to(_lp(self, "probe", 1, 1, D), (x.shape[0], 1, D))
        return nn.MultiHeadDotProductAttention(num_heads=NH, qkv_features=D, name="attn")(probe, x)


class EProbe(eqx.Module):  # per example: the probe is never broadcast to a batch
    probe: jax.Array
    attn: eqx.nn.MultiheadAttention

    def __init__(self, key: jax.Array) -> None:
        self.probe = jnp.ones((1, D))
        self.attn = eqx.nn.MultiheadAttention(NH, D, use_query_bias=True, use_key_bias=True, use_value_bias=True,
                                              use_output_bias=True, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.attn(self.probe, x, x)


class TLatents(tnn.Module):  # Perceiver: latents repeated over the batch, then the cross-attention's query Linear
    def __init__(self, project_first: bool = False) -> None:
        super().__init__()
        self.project_first = project_first
        self.latents = _tp(N, D)
        self.to_q = tnn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project_first:  # the Linear before the batch: both of its operands are parameters
            q = self.to_q(self.latents).expand(x.shape[0], -1, -1)
        else:
            q = self.to_q(self.latents.expand(x.shape[0], -1, -1))
        return torch.softmax(q @ x.transpose(1, 2) / math.sqrt(D), -1) @ x


class LLatents(nn.Module):
    project_first: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        latents, to_q = _lp(self, "latents", N, D), nn.Dense(D, name="to_q")
        if self.project_first:
            q = jnp.broadcast_to(to_q(latents), (x.shape[0], N, D))
        else:
            q = to_q(jnp.broadcast_to(latents, (x.shape[0], N, D)))
        return jax.nn.softmax(q @ jnp.swapaxes(x, 1, 2) / math.sqrt(D), -1) @ x


class ELatents(eqx.Module):
    latents: jax.Array
    to_q: eqx.nn.Linear

    def __init__(self, key: jax.Array) -> None:
        self.latents = jnp.ones((N, D))
        self.to_q = eqx.nn.Linear(D, D, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        q = jax.vmap(self.to_q)(self.latents)
        return jax.nn.softmax(q @ x.T / math.sqrt(D), -1) @ x


# ============================================================================ 7. SSM, MoE, tied tables, unused


class TSsm(tnn.Module):  # Mamba's parameters: dt projection and bias, A_log as -exp(A_log) * dt, D as x * D
    def __init__(self) -> None:
        super().__init__()
        self.dt_w, self.dt_b = _tp(D, D), _tp(D)
        self.A_log, self.D = _tp(D, NS), _tp(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = F.softplus(x @ self.dt_w + self.dt_b)
        dA = torch.exp(dt.unsqueeze(-1) * -torch.exp(self.A_log))
        return dA.sum(-1) * x + x * self.D


def _ssm(x: jax.Array, dt_w: jax.Array, dt_b: jax.Array, a_log: jax.Array, d: jax.Array) -> jax.Array:
    dt = jax.nn.softplus(x @ dt_w + dt_b)
    return jnp.exp(dt[..., None] * -jnp.exp(a_log)).sum(-1) * x + x * d


class LSsm(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _ssm(x, _lp(self, "dt_w", D, D), _lp(self, "dt_b", D), _lp(self, "A_log", D, NS), _lp(self, "D", D))


class ESsm(eqx.Module):
    dt_w: jax.Array
    dt_b: jax.Array
    A_log: jax.Array
    D: jax.Array

    def __init__(self, key: jax.Array) -> None:
        self.dt_w, self.dt_b, self.A_log, self.D = jnp.ones((D, D)), jnp.ones(D), jnp.ones((D, NS)), jnp.ones(D)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _ssm(x, self.dt_w, self.dt_b, self.A_log, self.D)


class TExperts(tnn.Module):  # an (E, D, H) expert stack used by einsum, by bmm and by a batched matmul
    def __init__(self) -> None:
        super().__init__()
        self.w_einsum, self.w_bmm, self.w_matmul = _tp(E, D, H), _tp(E, D, H), _tp(E, D, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.einsum("btd,edh->bteh", x, self.w_einsum)
        flat = x.reshape(1, -1, D)
        b = torch.bmm(flat.expand(E, -1, -1), self.w_bmm)
        c = torch.matmul(flat, self.w_matmul)
        return a.sum() + b.sum() + c.sum()


class LExperts(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = jnp.einsum("btd,edh->bteh", x, _lp(self, "w_einsum", E, D, H))
        flat = x.reshape(1, -1, D)
        b = jax.lax.batch_matmul(jnp.broadcast_to(flat, (E, *flat.shape[1:])), _lp(self, "w_bmm", E, D, H))
        c = jnp.matmul(flat, _lp(self, "w_matmul", E, D, H))
        return a.sum() + b.sum() + c.sum()


class TRouted(tnn.Module):  # HF-style: the expert stack indexed by the routed expert, then contracted
    def __init__(self) -> None:
        super().__init__()
        self.router = tnn.Linear(D, E, bias=False)
        self.gate = _tp(E, D, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.router(x).argmax(-1)
        return torch.einsum("bd,bdh->bh", x, self.gate[top])


class LRouted(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        top = nn.Dense(E, use_bias=False, name="router")(x).argmax(-1)
        return jnp.einsum("bd,bdh->bh", x, _lp(self, "gate", E, D, H)[top])


class TTied(tnn.Module):  # GPT-2: the token table gathered by the ids and used by the output projection
    def __init__(self) -> None:
        super().__init__()
        self.wte = tnn.Embedding(V, D)
        self.head = tnn.Linear(D, V, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.wte(ids))


class LTied(nn.Module):
    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        emb = nn.Embed(V, D, name="wte")
        return emb.attend(emb(ids))


class ETied(eqx.Module):
    wte: eqx.nn.Embedding

    def __init__(self, key: jax.Array) -> None:
        self.wte = eqx.nn.Embedding(V, D, key=key)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jax.vmap(self.wte)(ids) @ self.wte.weight.T


class TSpare(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = tnn.Linear(D, OUT)
        self.spare = _tp(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class LSpare(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _lp(self, "spare", D)  # created, never consumed
        return nn.Dense(OUT, name="fc")(x)


class ESpare(eqx.Module):
    fc: eqx.nn.Linear
    spare: jax.Array

    def __init__(self, key: jax.Array) -> None:
        self.fc = eqx.nn.Linear(D, OUT, key=key)
        self.spare = jnp.ones(D)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.vmap(self.fc)(x)


# ============================================================================ 8. contractions spelled otherwise


class TMulSum(tnn.Module):
    """``kind``: window (RecurrentGemma Conv1D: (windows * w).sum(window) + b) | vector ((x * v).sum(-1)) |
    bilinear (einsum "bi,ij,bj->b")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "window":
            self.w, self.b = _tp(K, D), _tp(D)
        elif kind == "vector":
            self.v = _tp(D)
        else:
            self.W = _tp(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "window":
            xp = F.pad(x, (0, 0, K - 1, 0))
            windows = torch.stack([xp[:, i : i + x.shape[1]] for i in range(K)], 2)  # (B, T, K, D)
            return (windows * self.w).sum(2) + self.b
        if self.kind == "vector":
            return (x * self.v).sum(-1)
        return torch.einsum("bi,ij,bj->b", x, self.W, x)


def _windows(x: jax.Array, time_axis: int) -> jax.Array:
    pad = [(0, 0)] * x.ndim
    pad[time_axis] = (K - 1, 0)
    xp = jnp.pad(x, pad)
    n = x.shape[time_axis]
    return jnp.stack([jax.lax.slice_in_dim(xp, i, i + n, axis=time_axis) for i in range(K)], time_axis + 1)


class LMulSum(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "window":
            return (_windows(x, 1) * _lp(self, "w", K, D)).sum(2) + _lp(self, "b", D)
        if self.kind == "vector":
            return (x * _lp(self, "v", D)).sum(-1)
        return jnp.einsum("bi,ij,bj->b", x, _lp(self, "W", D, D), x)


class EMulSum(eqx.Module):
    w: jax.Array
    b: jax.Array

    def __init__(self, key: jax.Array) -> None:
        self.w, self.b = jnp.ones((K, D)), jnp.ones(D)

    def __call__(self, x: jax.Array) -> jax.Array:
        return (_windows(x, 0) * self.w).sum(1) + self.b


# ============================================================================ 9. recurrent layers


class TRecurrent(tnn.Module):
    def __init__(self, cell: str) -> None:
        super().__init__()
        self.rnn = (tnn.LSTM if cell == "lstm" else tnn.GRU)(D, H, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class LRecurrent(nn.Module):
    cell: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cell = (nn.LSTMCell if self.cell == "lstm" else nn.GRUCell)(H, name="cell")
        return nn.RNN(cell, name="rnn")(x)


# ============================================================================ the catalogue

# Path maps shared by several cases.
_FC_T = {"w": "fc.weight", "b": "fc.bias"}
_FC_L = {"w": "fc.kernel", "b": "fc.bias"}
_CV_T = {"w": "cv.weight", "b": "cv.bias"}
_CV_L = {"w": "cv.kernel", "b": "cv.bias"}
_BN_T = {"bn_scale": "bn.weight", "bn_bias": "bn.bias"}
_BN_L = {"bn_scale": "bn.scale", "bn_bias": "bn.bias"}
_LN_T = {"ln_scale": "ln.weight", "ln_bias": "ln.bias"}
_LN_L = {"ln_scale": "ln.scale", "ln_bias": "ln.bias"}
_NM_T = {"nm_scale": "nm.weight", "nm_bias": "nm.bias"}
_NM_L = {"nm_scale": "nm.scale", "nm_bias": "nm.bias"}
_TABLES_T = {"wte": "wte.weight", "wpe": "wpe.weight"}
_TABLES_L = {"wte": "wte.embedding", "wpe": "wpe.embedding"}
_MHA_T = {"qkv_w": "attn.in_proj_weight", "qkv_b": "attn.in_proj_bias", "out_w": "attn.out_proj.weight",
          "out_b": "attn.out_proj.bias"}
_MHA_L = {"qkv_w": tuple(f"attn.{p}.kernel" for p in ("query", "key", "value")),
          "qkv_b": tuple(f"attn.{p}.bias" for p in ("query", "key", "value")), "out_w": "attn.out.kernel",
          "out_b": "attn.out.bias"}
_MHA_E = {"qkv_w": tuple(f"attn.{p}_proj.weight" for p in ("query", "key", "value")),
          "qkv_b": tuple(f"attn.{p}_proj.bias" for p in ("query", "key", "value")),
          "out_w": "attn.output_proj.weight", "out_b": "attn.output_proj.bias"}

# Rows that recur (still written by hand: one row = one line of the spec).
_BN_ROWS = {"bn_scale": X("norm.batch", "scale", "norm_scale", False, False, False),
            "bn_bias": X("norm.batch", "bias", "norm_shift", False, False, False)}
_LN_ROWS = {"ln_scale": X("norm.layer", "scale", "norm_scale", False, False, False),
            "ln_bias": X("norm.layer", "bias", "norm_shift", False, False, False)}
_FC_ROWS = {"w": X("linear", "kernel", "contract", False, True, True),
            "b": X("linear", "bias", "add", False, False, False)}
_MHA_ROWS = {"probe": X("other", "token", "concat", False, False, False),
             "qkv_w": X("linear", "kernel", "contract", False, True, True),
             "qkv_b": X("linear", "bias", "add", False, False, False),
             "out_w": X("linear", "kernel", "contract", False, True, True),
             "out_b": X("linear", "bias", "add", False, False, False)}


def _t(cls: Callable[..., tnn.Module], inputs: Callable[[], Any], *args: Any,
       paths: Mapping[str, Any] | None = None) -> Twin:
    return Twin(lambda: (cls(*args), inputs()), paths or {})


def _j(cls: Callable[..., nn.Module], inputs: Callable[[], tuple[Any, ...]], paths: Mapping[str, Any] | None = None,
       **fields: Any) -> Twin:
    return Twin(lambda: (cls(**fields), inputs()), paths or {})


def _e(make: Callable[[jax.Array], eqx.Module], inputs: Callable[[], tuple[Any, ...]],
       paths: Mapping[str, Any] | None = None) -> Twin:
    return Twin(lambda: (_eqx(make), inputs()), paths or {})


def _seq_j() -> tuple[np.ndarray]:
    return (j_seq(),)


def _seq_e() -> tuple[np.ndarray]:  # one Equinox example: no batch axis
    return (np.zeros((T, D), np.float32),)


def _img_j() -> tuple[np.ndarray]:
    return (j_img(),)


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- layers
    "dense": Case(
        "Linear / Dense with a bias",
        dict(_FC_ROWS),
        _t(TPlain, t_seq, paths=_FC_T), _j(LPlain, _seq_j, _FC_L), _e(EPlain, _seq_e, _FC_T)),
    "conv": Case(
        "Conv2d / nn.Conv with a bias",
        {"w": X("conv", "kernel", "contract", False, True, True),
         "b": X("conv", "bias", "add", False, False, False)},
        _t(TSpatial, t_img, paths=_CV_T), _j(LSpatial, _img_j, _CV_L),
        _e(ESpatial, lambda: (np.zeros((C, S, S), np.float32),), _CV_T),
        note="Equinox's conv bias is (out, 1, 1): one non-singleton axis, still `add`"),
    "conv_bn": Case(
        "conv -> BatchNorm",
        {"w": X("conv", "kernel", "contract", True, True, False),
         "b": X("conv", "bias", "add", True, False, False), **_BN_ROWS},
        _t(TCvBn, t_img, paths=_CV_T | _BN_T), _j(LCvBn, _img_j, _CV_L | _BN_L)),
    "conv_relu_bn": Case(
        "conv -> relu -> BatchNorm (the relu escapes)",
        {"w": X("conv", "kernel", "contract", False, True, True),
         "b": X("conv", "bias", "add", False, False, False), **_BN_ROWS},
        _t(TCvBn, t_img, True, paths=_CV_T | _BN_T), _j(LCvBn, _img_j, _CV_L | _BN_L, relu=True)),
    "conv_shared_escape": Case(
        "one conv called twice: into a BN, then returned (one call escapes)",
        {"w": X("conv", "kernel", "contract", False, True, True),
         "b": X("conv", "bias", "add", False, False, False), **_BN_ROWS},
        _t(TCvTwice, lambda: t_img(OUT), paths=_CV_T | _BN_T),
        _j(LCvTwice, lambda: (j_img(OUT),), _CV_L | _BN_L)),
    "conv_shared_both_norm": Case(
        "one conv called twice, each call into a BN",
        {"w": X("conv", "kernel", "contract", True, True, False),
         "b": X("conv", "bias", "add", True, False, False),
         "bn1_scale": X("norm.batch", "scale", "norm_scale", False, False, False),
         "bn1_bias": X("norm.batch", "bias", "norm_shift", False, False, False),
         "bn2_scale": X("norm.batch", "scale", "norm_scale", False, False, False),
         "bn2_bias": X("norm.batch", "bias", "norm_shift", False, False, False)},
        _t(TCvTwiceBn, lambda: t_img(OUT), paths=_CV_T | {
            "bn1_scale": "bn1.weight", "bn1_bias": "bn1.bias", "bn2_scale": "bn2.weight", "bn2_bias": "bn2.bias"}),
        _j(LCvTwiceBn, lambda: (j_img(OUT),), _CV_L | {
            "bn1_scale": "bn1.scale", "bn1_bias": "bn1.bias", "bn2_scale": "bn2.scale", "bn2_bias": "bn2.bias"})),
    "conv_bn_and_skip": Case(
        "y = conv(x); bn(y) + y (the output also escapes)",
        {"w": X("conv", "kernel", "contract", False, True, True),
         "b": X("conv", "bias", "add", False, False, False), **_BN_ROWS},
        _t(TCvBnSkip, t_img, paths=_CV_T | _BN_T), _j(LCvBnSkip, _img_j, _CV_L | _BN_L)),
    "conv_raw_bias_bn": Case(
        "bias-free conv + its own raw bias -> BatchNorm (the bias is on the path)",
        {"w": X("conv", "kernel", "contract", True, True, False),
         "b": X("other", "bias", "add", True, False, False), **_BN_ROWS},
        _t(TCvRawBiasBn, t_img, paths={"w": "cv.weight"} | _BN_T),
        _j(LCvRawBiasBn, _img_j, {"w": "cv.kernel"} | _BN_L)),
    "linear_ln": Case(
        "Linear -> LayerNorm",
        {"w": X("linear", "kernel", "contract", True, True, False),
         "b": X("linear", "bias", "add", True, False, False), **_LN_ROWS},
        _t(TFcLn, t_seq, paths=_FC_T | _LN_T), _j(LFcLn, _seq_j, _FC_L | _LN_L),
        _e(EFcLn, _seq_e, _FC_T | _LN_T)),
    "linear_reshape_ln": Case(
        "Linear -> reshape -> LayerNorm (shape-only ops pass)",
        {"w": X("linear", "kernel", "contract", True, True, False),
         "b": X("linear", "bias", "add", True, False, False), **_LN_ROWS},
        _t(TFcLn, t_seq, "reshape", paths=_FC_T | _LN_T), _j(LFcLn, _seq_j, _FC_L | _LN_L, mode="reshape")),
    "linear_residual_ln": Case(
        "LayerNorm(x + Linear(x)) (the residual add escapes)",
        {**_FC_ROWS, **_LN_ROWS},
        _t(TFcLn, t_seq, "residual", paths=_FC_T | _LN_T), _j(LFcLn, _seq_j, _FC_L | _LN_L, mode="residual")),
    "linear_rms": Case(
        "bias-free Linear -> RMSNorm",
        {"w": X("linear", "kernel", "contract", True, True, False),
         "rms_scale": X("norm.rms", "scale", "norm_scale", False, False, False)},
        _t(TFcRms, t_seq, paths={"w": "fc.weight", "rms_scale": "rms.weight"}),
        _j(LFcRms, _seq_j, {"w": "fc.kernel", "rms_scale": "rms.scale"})),
    "conv_gn": Case(
        "bias-free conv -> GroupNorm",
        {"w": X("conv", "kernel", "contract", True, True, False),
         "nm_scale": X("norm.group", "scale", "norm_scale", False, False, False),
         "nm_bias": X("norm.group", "bias", "norm_shift", False, False, False)},
        _t(TCvGn, t_img, paths={"w": "cv.weight"} | _NM_T), _j(LCvGn, _img_j, {"w": "cv.kernel"} | _NM_L)),
    "conv_in": Case(
        "bias-free conv -> InstanceNorm (affine)",
        {"w": X("conv", "kernel", "contract", True, True, False),
         "nm_scale": X("norm.instance", "scale", "norm_scale", False, False, False),
         "nm_bias": X("norm.instance", "bias", "norm_shift", False, False, False)},
        _t(TCvGn, t_img, True, paths={"w": "cv.weight"} | _NM_T),
        _j(LCvGn, _img_j, {"w": "cv.kernel"} | _NM_L, inst=True)),
    "functional_layer_norm": Case(
        "F.layer_norm(x, (D,), g, b) on raw parameters (torch) / nn.LayerNorm (linen)",
        {"g": X("norm.layer", "scale", "norm_scale", False, False, False),
         "b": X("norm.layer", "bias", "norm_shift", False, False, False)},
        _t(TFunctionalLn, t_seq), _j(LFunctionalLn, _seq_j, {"g": "ln.scale", "b": "ln.bias"}),
        note="torch: a fused op on raw parameters; linen: the LayerNorm module"),
    "norm_class_by_name": Case(
        "x * rsqrt(mean(x^2)) * weight inside a user class named RMSNorm",
        {"weight": X("norm.rms", "scale", "norm_scale", False, False, False)},
        _t(TNamedHolder, t_seq, paths={"weight": "nm.weight"}),
        _j(LNamedHolder, _seq_j, {"weight": "nm.weight"}),
        note="the class name is evidence of the layer kind (norm.rms); the graph gives the role"),
    # ---------------------------------------------------------------- reparametrized kernels
    "exp_kernel": Case(
        "F.linear(x, exp(w)) / x @ exp(w)",
        {"w": X("linear", "kernel", "contract", False, True, True)},
        _t(TReparam, t_seq, "exp"), _j(LReparam, _seq_j, kind="exp")),
    "weight_norm": Case(
        "weight norm: x @ (g * v / ||v||)",
        {"v": X("linear", "kernel", "contract", False, True, True),
         "g": X("other", "gain", "mul", False, False, False)},
        _t(TReparam, t_seq, "weight_norm"), _j(LReparam, _seq_j, kind="weight_norm"),
        note="g multiplies a value normalized by its own statistics (v / ||v||): the gain of a normalization, as a "
             "norm's scale is for activations (ruling: `normalized` applies to parameter-derived operands too)"),
    "weight_std": Case(
        "weight standardization by hand: conv(x, (w - mean(w)) / std(w))",
        {"w": X("conv", "kernel", "contract", False, True, True)},
        _t(TStdKernel, t_img, False), _j(LStdKernel, _img_j, fused=False)),
    "weight_std_fused_gain": Case(
        "ScaledStdConv2d: conv(x, F.batch_norm(w, weight=gain * scale)) (torch) / by hand (linen)",
        {"w": X("conv", "kernel", "contract", False, True, True),
         "gain": X("other", "gain", "mul", False, False, False)},
        _t(TStdKernel, t_img, True), _j(LStdKernel, _img_j, fused=True),
        note="the gain is the affine of a normalization of a parameter (fused F.batch_norm weight, or a product "
             "with a standardized kernel): a gain, as weight norm's g and tests/torch/test_usage.py 'misc' say"),
    "low_rank": Case(
        "low rank: x @ (A @ B)",
        {"A": X("linear", "kernel", "contract", False, True, True),
         "B": X("linear", "kernel", "contract", False, True, True)},
        _t(TReparam, t_seq, "low_rank"), _j(LReparam, _seq_j, kind="low_rank")),
    "concat_kernel": Case(
        "a kernel built by concatenating parameters: x @ cat([w1, w2])",
        {"w1": X("linear", "kernel", "contract", False, True, True),
         "w2": X("linear", "kernel", "contract", False, True, True)},
        _t(TReparam, t_seq, "concat"), _j(LReparam, _seq_j, kind="concat")),
    "masked_kernel": Case(
        "a masked kernel: x @ (W * mask), the mask a constant/buffer",
        {"w": X("linear", "kernel", "contract", False, True, True)},
        _t(TReparam, t_seq, "masked"), _j(LReparam, _seq_j, kind="masked")),
    # ---------------------------------------------------------------- norms by hand
    "ln_by_hand": Case(
        "LayerNorm by hand: (x - mu) * rsqrt(var + eps) * g + b",
        {"g": X("norm.layer", "scale", "norm_scale", False, False, False),
         "b": X("norm.layer", "bias", "norm_shift", False, False, False)},
        _t(THandStats, t_seq, "mean_var_rsqrt"), _j(LHandStats, _seq_j, style="mean_var_rsqrt")),
    "rms_by_hand_rsqrt": Case(
        "RMSNorm by hand: x * rsqrt(mean(x^2) + eps) * g",
        {"g": X("norm.layer", "scale", "norm_scale", False, False, False)},
        _t(THandStats, t_seq, "rms_rsqrt"), _j(LHandStats, _seq_j, style="rms_rsqrt"),
        note="no class says RMS: the graph's norm_scale defaults to norm.layer"),
    "rms_by_hand_div_sqrt": Case(
        "RMSNorm by hand: x / sqrt(mean(x^2) + eps) * g",
        {"g": X("norm.layer", "scale", "norm_scale", False, False, False)},
        _t(THandStats, t_seq, "rms_div_sqrt"), _j(LHandStats, _seq_j, style="rms_div_sqrt")),
    "ln_by_sigma": Case(
        "LayerNorm by hand: (x - mu) / sigma * g + b",
        {"g": X("norm.layer", "scale", "norm_scale", False, False, False),
         "b": X("norm.layer", "bias", "norm_shift", False, False, False)},
        _t(THandStats, t_seq, "sigma"), _j(LHandStats, _seq_j, style="sigma")),
    "frn": Case(
        "FilterResponseNorm: max(g * x * rsqrt(mean_HW(x^2)) + b, tau)",
        {"g": X("norm.layer", "scale", "norm_scale", False, False, False),
         "b": X("norm.layer", "bias", "norm_shift", False, False, False),
         "tau": X("other", "bias", "add", False, False, False)},
        _t(TFrn, t_img), _j(LFrn, _img_j),
        note="tau: compare -> add, a learned threshold; no class names the norm, so its layer is `other`"),
    "issue22_pair": Case(
        "maximum(linear(x, exp(w)), tau)",
        {"w": X("linear", "kernel", "contract", False, True, True),
         "tau": X("other", "bias", "add", False, False, False)},
        _t(TExpMax, t_seq), _j(LExpMax, _seq_j)),
    # ---------------------------------------------------------------- gains
    "gain": Case(
        "a gain: x * g",
        {"g": X("other", "gain", "mul", False, False, False)},
        _t(TGained, t_seq, "gain"), _j(LGained, _seq_j, kind="gain"), _e(EGained, _seq_e)),
    "layer_scale": Case(
        "layer scale: x + gamma * fc(x)",
        {**_FC_ROWS, "gamma": X("other", "gain", "mul", False, False, False)},
        _t(TScaled, t_seq, "layer_scale", paths=_FC_T), _j(LScaled, _seq_j, _FC_L, kind="layer_scale"),
        _e(EScaled, _seq_e, _FC_T)),
    "temperature": Case(
        "a temperature: fc(x) / t, t a scalar",
        {**_FC_ROWS, "t": X("other", "gain", "mul", False, False, False)},
        _t(TScaled, t_seq, "temperature", paths=_FC_T | {"t": "gamma"}),
        _j(LScaled, _seq_j, _FC_L | {"t": "gamma"}, kind="temperature")),
    "logit_scale_exp": Case(
        "CLIP's logit scale: x * exp(s)",
        {"s": X("other", "elementwise", "elementwise", False, False, False)},
        _t(TGained, t_seq, "exp_scale"), _j(LGained, _seq_j, kind="exp_scale")),
    "prelu": Case(
        "PReLU slope",
        {"slope": X("other", "gain", "mul", False, False, False)},
        _t(TSlope, t_seq, paths={"slope": "act.weight"}), _j(LSlope, _seq_j, {"slope": "act.negative_slope"}),
        note="torch: F.prelu (one fused op); linen: where(x >= 0, x, slope * x)"),
    "used_twice": Case(
        "one parameter added and multiplied: (x + p) * p",
        {"g": X("other", "gain", "mul add", False, False, False)},
        _t(TGained, t_seq, "used_twice"), _j(LGained, _seq_j, kind="used_twice")),
    "einsum_broadcast": Case(
        'an einsum that only broadcasts: einsum("btd,d->btd", x, g)',
        {"g": X("other", "gain", "mul", False, False, False)},
        _t(TGained, t_seq, "einsum_broadcast"), _j(LGained, _seq_j, kind="einsum_broadcast")),
    # ---------------------------------------------------------------- positions
    "pos_added_whole": Case(
        "a (1, T, D) position table added whole",
        {"pos": X("other", "position", "gather_pos", False, False, False)},
        _t(TPositions, t_seq, "whole"), _j(LPositions, _seq_j, kind="whole"), _e(EPositions, _seq_e),
        note="Equinox: a (T, D) table added to one (T, D) example"),
    "pos_sliced": Case(
        "a (1, L, D) position table sliced [:, :T] and added",
        {"pos": X("other", "position", "gather_pos", False, False, False)},
        _t(TPositions, t_seq, "sliced"), _j(LPositions, _seq_j, kind="sliced")),
    "token_embedding": Case(
        "a token table gathered by token ids",
        {"wte": X("embedding", "embedding", "gather_data", False, True, True)},
        _t(TTables, t_ids, "tokens", paths={"wte": "wte.weight"}),
        _j(LTables, lambda: (j_ids(),), {"wte": "wte.embedding"}, kind="tokens")),
    "pos_gather_arange": Case(
        "wte(ids) + wpe(arange(T))",
        {"wte": X("embedding", "embedding", "gather_data", False, True, True),
         "wpe": X("embedding", "position", "gather_pos", False, False, False)},
        _t(TTables, t_ids, "arange", paths=_TABLES_T), _j(LTables, lambda: (j_ids(),), _TABLES_L, kind="arange")),
    "pos_ids_input": Case(
        "wte(ids) + wpe(position_ids), position_ids = arange(T) per row passed as an INPUT (issue 23)",
        {"wte": X("embedding", "embedding", "gather_data", False, True, True),
         "wpe": X("embedding", "position", "gather_pos", False, False, False)},
        Twin(lambda: (TTables("ids_input"), (t_ids(), torch.tensor(_POS))), _TABLES_T),
        Twin(lambda: (LTables(kind="ids_input"), (j_ids(), _POS.astype(np.int32))), _TABLES_L)),
    "pos_ids_input_offset": Case(
        "as pos_ids_input with position_ids = arange(T) + 2 per row (a cache offset)",
        {"wte": X("embedding", "embedding", "gather_data", False, True, True),
         "wpe": X("embedding", "position", "gather_pos", False, False, False)},
        Twin(lambda: (TTables("ids_input"), (t_ids(), torch.tensor(_POS + 2))), _TABLES_T),
        Twin(lambda: (LTables(kind="ids_input"), (j_ids(), (_POS + 2).astype(np.int32))), _TABLES_L)),
    "rel_pos_bias": Case(
        "a relative position bias table gathered by a constant index, added to attention logits",
        {"table": X("other", "position", "gather_pos", False, False, False)},
        _t(TRelBias, t_seq), _j(LRelBias, _seq_j),
        note="torch: the index is a buffer; linen: a numpy constant"),
    # ---------------------------------------------------------------- tokens
    "cls_concat": Case(
        "a cls token broadcast to the batch and concatenated",
        {"tok": X("other", "token", "concat", False, False, False)},
        _t(TTokens, t_seq, "cls"), _j(LTokens, _seq_j, kind="cls"),
        Twin(lambda: (_eqx(lambda k: ETokens(k, "cls")), _seq_e()))),
    "vit_tokens": Case(
        "ViT: patch conv, cls + register tokens concatenated, a (1, L, D) table added",
        {"patch_w": X("conv", "kernel", "contract", False, True, True),
         "patch_b": X("conv", "bias", "add", False, False, False),
         "cls": X("other", "token", "concat", False, False, False),
         "reg": X("other", "token", "concat", False, False, False),
         "pos": X("other", "position", "gather_pos", False, False, False)},
        Twin(lambda: (TVitTokens(), torch.zeros(B, C, 4, 4)), {"patch_w": "patch.weight", "patch_b": "patch.bias"}),
        Twin(lambda: (LVitTokens(), (np.zeros((B, 4, 4, C), np.float32),)),
             {"patch_w": "patch.kernel", "patch_b": "patch.bias"})),
    "mask_token_where": Case(
        "a mask token substituted with where(mask, tok, x)",
        {"tok": X("other", "token", "concat", False, False, False)},
        Twin(lambda: (TTokens("where"), (t_seq(), torch.zeros(B, T, dtype=torch.bool)))),
        Twin(lambda: (LTokens(kind="where"), (j_seq(), np.zeros((B, T), bool)))),
        Twin(lambda: (_eqx(lambda k: ETokens(k, "where")), (*_seq_e(), np.zeros(T, bool))))),
    "token_setitem": Case(
        "a token written in place: x[:, 0] = tok (torch index_put) / x.at[:, 0].set(tok)",
        {"tok": X("other", "token", "concat", False, False, False)},
        _t(TTokens, t_seq, "setitem"), _j(LTokens, _seq_j, kind="setitem")),
    "token_scatter": Case(
        "a token scattered: x.scatter(1, index, tok) / x.at[:, index].set(tok)",
        {"tok": X("other", "token", "concat", False, False, False)},
        _t(TTokens, t_seq, "scatter"), _j(LTokens, _seq_j, kind="scatter")),
    "probe_mha_b2": Case(
        "a learned probe as the query of MultiheadAttention / MultiHeadDotProductAttention, batch 2",
        dict(_MHA_ROWS),
        _t(TProbe, t_seq, paths=_MHA_T), _j(LProbe, _seq_j, _MHA_L), _e(EProbe, _seq_e, _MHA_E),
        note="twins differ: torch has one fused in_proj (3D, D), linen three DenseGeneral kernels (D, heads, "
             "head_dim) with (heads, head_dim) biases, Equinox four Linears. Equinox has no batch axis: the probe "
             "meets query_proj before any activation. SPEC: literally, parameter-only operands FOLLOW, so the probe "
             "and the query weight/bias all become `contract` there (the batch-1 failure of issue 23 without a "
             "batch to enlarge); right: the input side of a slotted op (Linear/Dense/MHA) is a token, its kernel a "
             "kernel"),
    "probe_mha_b1": Case(
        "as probe_mha_b2 with a batch of ONE (issue 23: no answer may depend on the batch size)",
        dict(_MHA_ROWS),
        Twin(lambda: (TProbe(), torch.zeros(1, T, D)), _MHA_T), Twin(lambda: (LProbe(), (j_seq(1),)), _MHA_L)),
    "latents_dense": Case(
        "Perceiver latents broadcast to the batch, then a Linear (the cross-attention query)",
        {"latents": X("other", "token", "concat", False, False, False),
         "w": X("linear", "kernel", "contract", False, True, True),
         "b": X("linear", "bias", "add", False, False, False)},
        _t(TLatents, t_seq, paths={"w": "to_q.weight", "b": "to_q.bias"}),
        _j(LLatents, _seq_j, {"w": "to_q.kernel", "b": "to_q.bias"}),
        _e(ELatents, _seq_e, {"w": "to_q.weight", "b": "to_q.bias"}),
        note="SPEC: as probe_mha_b2 for Equinox (no batch axis): literal FOLLOW gives latents, w and b all `contract` "
             "(see latents_project_first)"),
    "latents_project_first": Case(
        "Perceiver latents through the query Linear BEFORE being expanded to the batch: to_q(latents).expand(b)",
        {"latents": X("other", "token", "concat", False, False, False),
         "w": X("linear", "kernel", "contract", False, True, True),
         "b": X("linear", "bias", "add", False, False, False)},
        _t(TLatents, t_seq, True, paths={"w": "to_q.weight", "b": "to_q.bias"}),
        _j(LLatents, _seq_j, {"w": "to_q.kernel", "b": "to_q.bias"}, project_first=True),
        note="SPEC: literally, both operands of the Linear are parameters (FOLLOW), and q then meets the input in "
             "a matmul: latents, w and b all `contract`; right: the Linear's input slot holds a token"),
    "latents_dense_b1": Case(
        "as latents_dense with a batch of ONE",
        {"latents": X("other", "token", "concat", False, False, False),
         "w": X("linear", "kernel", "contract", False, True, True),
         "b": X("linear", "bias", "add", False, False, False)},
        Twin(lambda: (TLatents(), torch.zeros(1, T, D)), {"w": "to_q.weight", "b": "to_q.bias"}),
        Twin(lambda: (LLatents(), (j_seq(1),)), {"w": "to_q.kernel", "b": "to_q.bias"})),
    # ---------------------------------------------------------------- SSM, MoE, tied, unused
    "ssm": Case(
        "Mamba: softplus(x @ dt_w + dt_b), exp(dt * -exp(A_log)), x * D",
        {"dt_w": X("linear", "kernel", "contract", False, True, True),
         "dt_b": X("other", "bias", "add", False, False, False),
         "A_log": X("other", "elementwise", "elementwise", False, False, False),
         "D": X("other", "gain", "mul", False, False, False)},
        _t(TSsm, t_seq), _j(LSsm, _seq_j), _e(ESsm, _seq_e)),
    "moe_experts": Case(
        "an (E, D, H) expert stack used by einsum, bmm and a batched matmul",
        {"w_einsum": X("linear", "kernel", "contract", False, True, True),
         "w_bmm": X("linear", "kernel", "contract", False, True, True),
         "w_matmul": X("linear", "kernel", "contract", False, True, True)},
        _t(TExperts, t_seq), _j(LExperts, _seq_j)),
    "moe_routed_gather": Case(
        "an expert stack indexed by the routed expert (argmax of a router), then contracted",
        {"router_w": X("linear", "kernel", "contract", False, True, True),
         "gate": X("linear", "kernel", "contract", False, True, True)},
        _t(TRouted, lambda: torch.zeros(B, D), paths={"router_w": "router.weight"}),
        _j(LRouted, lambda: (np.zeros((B, D), np.float32),), {"router_w": "router.kernel"}),
        note="SPEC: literally `gather of p by data -> gather_data` (an embedding table, role embedding); right: the "
             "gathered slice is the kernel of a contraction (kernel, contract). Same decisions either way"),
    "tied_table": Case(
        "a tied table: gathered by token ids and used by the output projection",
        {"wte": X("embedding", "embedding", "gather_data contract", False, True, True)},
        _t(TTied, t_ids, paths={"wte": "wte.weight"}), _j(LTied, lambda: (j_ids(),), {"wte": "wte.embedding"}),
        Twin(lambda: (_eqx(ETied), (j_ids()[0],)), {"wte": "wte.weight"}),
        note="torch: head.weight is the same tensor (listed once, as wte.weight); linen: Embed.attend"),
    "unused": Case(
        "a parameter no op consumes, next to a used Linear",
        {**_FC_ROWS, "spare": X("other", "other", "unused", False, True, True)},
        _t(TSpare, t_seq, paths=_FC_T), _j(LSpare, _seq_j, _FC_L), _e(ESpare, _seq_e, _FC_T),
        note="no evidence: layer/role stay what class and name say (nothing here), decayed by the default"),
    # ---------------------------------------------------------------- contractions spelled otherwise
    "temporal_conv_mul_sum": Case(
        "RecurrentGemma Conv1D: (windows * w).sum(window_axis) + b (issue 23)",
        {"w": X("linear", "kernel", "contract", False, True, True),
         "b": X("other", "bias", "add", False, False, False)},
        _t(TMulSum, t_seq, "window"), _j(LMulSum, _seq_j, kind="window"), _e(EMulSum, _seq_e),
        note="a contraction spelled mul + reduce gives no conv hint: the contract default, linear"),
    "mul_sum_vector": Case(
        "(x * v).sum(-1): a dot product with a vector",
        {"v": X("linear", "kernel", "contract", False, True, True)},
        _t(TMulSum, t_seq, "vector"), _j(LMulSum, _seq_j, kind="vector")),
    "einsum_bilinear": Case(
        'a bilinear form: einsum("bi,ij,bj->b", x, W, x)',
        {"W": X("linear", "kernel", "contract", False, True, True)},
        _t(TMulSum, lambda: torch.zeros(B, D), "bilinear"),
        _j(LMulSum, lambda: (np.zeros((B, D), np.float32),), kind="bilinear")),
    # ---------------------------------------------------------------- recurrent
    "lstm": Case(
        "an LSTM layer: torch nn.LSTM / flax nn.RNN(nn.LSTMCell)",
        {"w_ih": X("linear", "kernel", "contract", False, True, True),
         "w_hh": X("linear", "kernel", "contract", False, True, True),
         "b": X("linear", "bias", "add", False, False, False)},
        _t(TRecurrent, t_seq, "lstm", paths={"w_ih": "rnn.weight_ih_l0", "w_hh": "rnn.weight_hh_l0",
                                              "b": ("rnn.bias_ih_l0", "rnn.bias_hh_l0")}),
        _j(LRecurrent, _seq_j, {"w_ih": tuple(f"cell.i{g}.kernel" for g in "ifgo"),
                                "w_hh": tuple(f"cell.h{g}.kernel" for g in "ifgo"),
                                "b": tuple(f"cell.h{g}.bias" for g in "ifgo")}, cell="lstm"),
        note="twins differ: torch fuses the 4 gates (4H, D) with two biases (ih, hh); flax has 8 Dense, biases "
             "on the hidden ones only"),
    "gru": Case(
        "a GRU layer: torch nn.GRU / flax nn.RNN(nn.GRUCell)",
        {"w_ih": X("linear", "kernel", "contract", False, True, True),
         "w_hh": X("linear", "kernel", "contract", False, True, True),
         "b": X("linear", "bias", "add", False, False, False)},
        _t(TRecurrent, t_seq, "gru", paths={"w_ih": "rnn.weight_ih_l0", "w_hh": "rnn.weight_hh_l0",
                                             "b": ("rnn.bias_ih_l0", "rnn.bias_hh_l0")}),
        _j(LRecurrent, _seq_j, {"w_ih": tuple(f"cell.i{g}.kernel" for g in "rzn"),
                                "w_hh": tuple(f"cell.h{g}.kernel" for g in "rzn"),
                                "b": (*(f"cell.i{g}.bias" for g in "rzn"), "cell.hn.bias")}, cell="gru"),
        note="twins differ: torch fuses the 3 gates (3H, D) with two biases; flax has 6 Dense, biases on ir, iz, "
             "in and hn"),
}


# --------------------------------------------------------------------------- the docs table



def catalogue_markdown(cases: Mapping[str, Case] | None = None) -> str:
    """The catalogue as Markdown: per case its pattern, then a small table of what each parameter gets.

    Narrow tables (the docs page must not scroll sideways): *decayed* reads
    ``standard / standard_scale_invariant``.

    Args:
      cases: the cases to render; the whole ``CASES`` by default.

    Returns:
      Markdown: for each case a bold id with its pattern, and one table row per logical parameter.

    Examples:
      >>> print(catalogue_markdown({"gain": CASES["gain"]}))  # doctest: +NORMALIZE_WHITESPACE
      **gain**: a gain: x * g
      <BLANKLINE>
      | parameter | layer, role | usage | feeds norm | decayed |
      |---|---|---|---|---|
      | `g` | other, gain | mul | no | no / no |
    """
    yes_no = {True: "yes", False: "no", None: "?"}
    blocks = []
    for name, case in (CASES if cases is None else cases).items():
        lines = [f"**{name}**: {case.pattern}", "", "| parameter | layer, role | usage | feeds norm | decayed |",
                 "|---|---|---|---|---|"]
        for logical, want in case.expect.items():
            lines.append("| " + " | ".join([
                f"`{logical}`", f"{want.layer}, {want.role}", " ".join(want.usage), yes_no[want.feeds_norm],
                f"{yes_no[want.standard]} / {yes_no[want.scale_invariant]}"]) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
