"""Shared machinery of the parity tests: twin models, optimizer table, a lock-step trainer, the diff."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

import wdmask
import wdmask_torch
from wdmask import models as flax_models
from wdmask._jax._order import flax_inventory
from wdmask._pair import flax_axes, pair
from wdmask_migrate._port import to_flax
from wdmask_torch import models as torch_models

LR, WD, MOMENTUM = 0.02, 5e-4, 0.9
ADAM, ADAM_LR = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}, 2e-3

#: name -> (torch optimizer from param groups, optax chain from a ``wdmask.decay`` transform).
OPTIMIZERS: dict[str, tuple[Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
                            Callable[[optax.GradientTransformation], optax.GradientTransformation]]] = {
    "sgd": (lambda g: torch.optim.SGD(g, lr=LR),
            lambda d: optax.chain(d, optax.sgd(LR))),
    "momentum": (lambda g: torch.optim.SGD(g, lr=LR, momentum=MOMENTUM),
                 lambda d: optax.chain(d, optax.sgd(LR, momentum=MOMENTUM))),
    "nesterov": (lambda g: torch.optim.SGD(g, lr=LR, momentum=MOMENTUM, nesterov=True),
                 lambda d: optax.chain(d, optax.sgd(LR, momentum=MOMENTUM, nesterov=True))),
    # torch Adam(weight_decay): coupled L2 added to the gradient before the moments.
    "adam_l2": (lambda g: torch.optim.Adam(g, lr=ADAM_LR, betas=(ADAM["b1"], ADAM["b2"]), eps=ADAM["eps"]),
                lambda d: optax.chain(d, optax.scale_by_adam(**ADAM), optax.scale(-ADAM_LR))),
    # torch AdamW: θ ← θ − ηλθ, then the Adam step; optax.adamw's order: scale_by_adam, decay, scale(−η).
    "adamw": (lambda g: torch.optim.AdamW(g, lr=ADAM_LR, betas=(ADAM["b1"], ADAM["b2"]), eps=ADAM["eps"]),
              lambda d: optax.chain(optax.scale_by_adam(**ADAM), d, optax.scale(-ADAM_LR))),
}

#: name -> (torch builder, linen builder) with the same arguments.
ARCHS = {
    "resnet18": (torch_models.resnet18, flax_models.resnet18, {"width": 8, "layers": (1, 1, 1, 1)}),
    "resnet50": (torch_models.resnet50, flax_models.resnet50, {"width": 4, "layers": (1, 2, 1, 1)}),
    # the default run's parity model: the same structure (stem, four stages, downsample shortcuts), half the width
    "resnet18_tiny": (torch_models.resnet18, flax_models.resnet18, {"width": 4, "layers": (1, 1, 1, 1)}),
}
BATCH, SIZE, CLASSES = 8, 16, 10


def batches(n: int, dtype: str, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (NCHW images, labels) batches."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(dtype), rng.integers(0, CLASSES, BATCH))
            for _ in range(n)]


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@dataclasses.dataclass
class Twins:
    """A torch model and its linen twin with ported weights; ``pairs`` matches their leaves in call order."""

    torch_model: torch.nn.Module
    flax_model: Any
    variables: dict[str, Any]
    sample: jax.Array
    example: torch.Tensor
    pairs: list[tuple[wdmask.ParamInfo, wdmask.ParamInfo]]


def twins(arch: str, dtype: str = "float64", seed: int = 0) -> Twins:
    """Both models, ``dtype`` on both sides, torch initialisation ported to Flax; a fresh torch copy per call."""
    base = _twins(arch, dtype, seed)
    return dataclasses.replace(base, torch_model=copy.deepcopy(base.torch_model))  # Flax arrays are immutable


@functools.cache
def _twins(arch: str, dtype: str, seed: int) -> Twins:
    """Built once per session: the build traces the Flax model twice (shapes, port order), ~1-2 s a call."""
    make_torch, make_flax, kw = ARCHS[arch]
    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    torch_model = make_torch(num_classes=CLASSES, small_input=True, **kw).to(tdtype).train()
    flax_model = make_flax(num_classes=CLASSES, small_input=True, param_dtype=getattr(jnp, dtype), **kw)
    sample = jnp.zeros((2, SIZE, SIZE, 3), dtype)
    example = torch.zeros(2, 3, SIZE, SIZE, dtype=tdtype)
    shapes = jax.eval_shape(flax_model.init, jax.random.key(0), sample)
    variables = to_flax(torch_model, shapes, flax_model=flax_model, sample=sample)
    pairs = pair(wdmask_torch.describe(torch_model), flax_inventory(flax_model, sample=sample))
    return Twins(torch_model, flax_model, variables, sample, example, pairs)


class BNCounter:
    """Records elements per channel ``n`` of each torch BatchNorm's input (for the n/(n-1) variance factor)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.n: dict[str, int] = {}
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in model.named_modules()
                        if isinstance(m, torch.nn.BatchNorm2d)]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self.n[name] = args[0].numel() // args[0].shape[1]
        return hook


@functools.partial(jax.jit, static_argnums=0)
def _grads(model: Any, params: Any, stats: Any, x: jax.Array, y: jax.Array) -> Any:
    """Gradients and new BatchNorm stats; jitted once per model config and shared by every optimizer's trainer.

    The forward/backward pass is most of the compile time; the optimizer update is compiled per trainer.
    """
    def loss_fn(params: Any) -> Any:
        logits, new = model.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    (_, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, new_stats


class Trainer:
    """Trains the twins in lock step on the same batches; ``diff`` compares every param and BN stat."""

    def __init__(self, tw: Twins, opt: str, torch_rules: Any, flax_rules: Any, *, scale_invariant: bool = False) -> None:
        self.tw = tw
        make_torch_opt, make_tx = OPTIMIZERS[opt]
        ex = tw.example if scale_invariant else None
        self.torch_opt = make_torch_opt(wdmask_torch.groups(tw.torch_model, torch_rules, weight_decay=WD,
                                                            example_inputs=ex))
        tx = make_tx(wdmask.decay(WD, flax_rules, model=tw.flax_model, sample=tw.sample))
        self.params, self.stats = tw.variables["params"], tw.variables["batch_stats"]
        self.opt_state = jax.jit(tx.init)(self.params)
        self.counter = BNCounter(tw.torch_model)
        self.rv0 = {name: m.running_var.detach().clone() for name, m in tw.torch_model.named_modules()
                    if isinstance(m, torch.nn.BatchNorm2d)}
        self.steps = 0
        model = tw.flax_model
        self.pairs = tw.pairs
        self.tensors = dict(zip([i.path for i in wdmask_torch.describe(tw.torch_model)],
                                tw.torch_model.parameters(), strict=True))

        @jax.jit
        def update(grads: Any, opt_state: Any, params: Any) -> Any:
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        def step(params: Any, stats: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
            grads, stats = _grads(model, params, stats, x, y)
            params, opt_state = update(grads, opt_state, params)
            return params, stats, opt_state

        self._step = step

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        m = self.tw.torch_model
        self.torch_opt.zero_grad()
        F.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        self.torch_opt.step()
        self.params, self.stats, self.opt_state = self._step(self.params, self.stats, self.opt_state,
                                                             jnp.asarray(nhwc(x)), jnp.asarray(y))
        self.steps += 1

    def diff(self) -> dict[str, float]:
        """Max |torch - flax| per torch param / buffer name (running_var corrected by n/(n-1))."""
        out = {}
        for t, f in self.pairs:
            tensor = self.tensors[t.path].detach().numpy()
            axes = flax_axes(t)
            want = tensor if axes is None else tensor.transpose(axes)
            out[t.dotted] = float(np.max(np.abs(np.asarray(_leaf(self.params, f.path)) - want)))
            if t.layer == "norm.batch" and t.role == "scale":
                owner = ".".join(t.path[:-1])
                mod = self.tw.torch_model.get_submodule(owner)
                flax_mean = np.asarray(_leaf(self.stats, (*f.path[:-1], "mean")))
                out[f"{owner}.running_mean"] = float(np.max(np.abs(mod.running_mean.numpy() - flax_mean)))
                # running = m^k rv0 + sum_t (1 - m) m^(k-t) var_t; torch's var_t is flax's times n/(n-1).
                flax_var = np.asarray(_leaf(self.stats, (*f.path[:-1], "var")))
                unbiased = flax_var
                if self.steps:
                    n, kept = self.counter.n[owner], (1 - mod.momentum) ** self.steps
                    rv0 = self.rv0[owner].numpy()
                    unbiased = kept * rv0 + (flax_var - kept * rv0) * n / (n - 1)
                out[f"{owner}.running_var"] = float(np.max(np.abs(mod.running_var.numpy() - unbiased)))
        return out


def _leaf(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def assert_parity(diffs: dict[str, float], tol: float, step: int) -> None:
    """Fail naming every leaf whose max |torch - flax| exceeds ``tol``, worst first."""
    bad = sorted(((d, name) for name, d in diffs.items() if not d <= tol), reverse=True)
    if bad:
        listed = ", ".join(f"{name} ({d:.3g})" for d, name in bad[:5])
        raise AssertionError(f"step {step}: {len(bad)} leaves differ by more than {tol:g}: {listed}")
