r"""``wdmask demo``: the same decisions and the same updates in PyTorch and JAX, side by side.

Builds the ResNet-18-style twins (``wdmask_torch.models`` / ``wdmask.models``, narrow for speed), ports the
torch weights to Flax, prints both sides' decisions under ``presets.standard``, then trains both with SGD
momentum 0.9 and ``weight_decay`` from wdmask (``wdmask_torch.groups`` / ``wdmask.decay``) in float64 on the
same batches and prints the max parameter difference after each step. Enables ``jax_enable_x64``.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["run_demo"]

LR, WD, MOMENTUM, BATCH, SIZE, CLASSES = 0.02, 5e-4, 0.9, 8, 16, 10


def _verdict(multiplier: float) -> str:
    return "no decay" if multiplier == 0 else ("decay" if multiplier == 1 else f"x{multiplier:g}")


def run_demo(console: Any = None, steps: int = 5) -> list[float]:
    r"""Print the torch/Flax decision table and ``steps`` lock-step SGD-momentum updates; return max |Δ| per step.

    Args:
      console: a ``rich.console.Console`` (default: a new one on stdout).
      steps: training steps to run on both sides.
    Returns:
      The max absolute parameter difference between the frameworks after each step (float64: ~1e-16).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    import torch.nn.functional as F
    from rich.console import Console
    from rich.table import Table

    import wdmask_torch
    from wdmask import models as flax_models
    from wdmask import presets
    from wdmask._engine import decide
    from wdmask._jax._apply import decay
    from wdmask._jax._order import flax_inventory
    from wdmask._pair import flax_axes, pair
    from wdmask_torch import models as torch_models
    from wdmask_torch._port import to_flax

    console = console if console is not None else Console()
    start = time.perf_counter()
    rules = presets.standard
    kw = {"num_classes": CLASSES, "width": 8, "layers": (1, 1, 1, 1), "small_input": True}
    torch.manual_seed(0)
    tmodel = torch_models.resnet18(**kw).double().train()
    fmodel = flax_models.resnet18(**kw, param_dtype=jnp.float64)
    sample = jnp.zeros((2, SIZE, SIZE, 3), jnp.float64)
    variables = to_flax(tmodel, jax.eval_shape(fmodel.init, jax.random.key(0), sample), flax_model=fmodel,
                        sample=sample)

    torch_inv = wdmask_torch.describe(tmodel)
    pairs = pair(torch_inv, flax_inventory(fmodel, sample=sample))
    t_dec = decide([t for t, _ in pairs], rules)
    f_dec = decide([f for _, f in pairs], rules)
    table = Table(title=f"weight decay decisions ({rules.name}): ResNet-18-style, torch vs Flax linen")
    for col in ("torch path", "flax path", "kind", "role", "torch", "flax"):
        table.add_column(col, overflow="fold")
    for t, f in pairs:
        td, fd = t_dec[t.path].multiplier, f_dec[f.path].multiplier
        style = None if td == fd else "bold red"
        table.add_row(t.dotted, f.dotted, t.layer, t.role, _verdict(td), _verdict(fd), style=style)
    console.print(table)
    differ = sum(t_dec[t.path].multiplier != f_dec[f.path].multiplier for t, f in pairs)
    console.print(f"{len(pairs)} paired parameters, {differ} decisions differ")

    opt = torch.optim.SGD(wdmask_torch.groups(tmodel, rules, weight_decay=WD), lr=LR, momentum=MOMENTUM)
    tx = optax.chain(decay(WD, rules, model=fmodel, sample=sample), optax.sgd(LR, momentum=MOMENTUM))
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    def loss_fn(params: Any, stats: Any, x: Any, y: Any) -> Any:
        logits, new = fmodel.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    @jax.jit
    def step(params: Any, stats: Any, opt_state: Any, x: Any, y: Any) -> Any:
        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    tensors = dict(zip([i.path for i in torch_inv], tmodel.parameters(), strict=True))
    rng = np.random.default_rng(0)
    out = []
    console.print(f"SGD momentum {MOMENTUM}, lr {LR}, weight_decay {WD}, float64, BatchNorm in training mode:")
    for i in range(1, steps + 1):
        x = rng.standard_normal((BATCH, 3, SIZE, SIZE))
        y = rng.integers(0, CLASSES, BATCH)
        opt.zero_grad()
        F.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        params, stats, opt_state = step(params, stats, opt_state, jnp.asarray(x.transpose(0, 2, 3, 1)),
                                        jnp.asarray(y))
        worst = 0.0
        for t, f in pairs:
            leaf: Any = params
            for key in f.path:
                leaf = leaf[key]
            want = tensors[t.path].detach().numpy()
            axes = flax_axes(t)
            want = want if axes is None else want.transpose(axes)
            worst = max(worst, float(np.max(np.abs(np.asarray(leaf) - want))))
        out.append(worst)
        console.print(f"  step {i}: max |torch - jax| over all parameters = {worst:.3g}")
    console.print(f"done in {time.perf_counter() - start:.1f}s")
    return out
