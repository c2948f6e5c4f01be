r"""``wdmask demo``: the same decisions and the same updates in PyTorch and JAX, side by side.

Builds the ResNet-18-style twins (``wdmask_torch.models`` / ``wdmask.models``, narrow for speed), ports the
torch weights to Flax, prints both sides' decisions under ``presets.standard``, then trains both with SGD
momentum 0.9 and ``weight_decay`` from wdmask (``wdmask_torch.groups`` / ``wdmask.decay``) in float64 on the
same batches and prints the max parameter difference after each step. ``jax_enable_x64`` is on only while the
demo runs (``jax.enable_x64`` context): the caller's setting is restored.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["run_demo"]

LR, WD, MOMENTUM, BATCH, SIZE, CLASSES = 0.02, 5e-4, 0.9, 8, 16, 10


def _verdict(multiplier: float) -> str:
    return "no decay" if multiplier == 0 else ("decay" if multiplier == 1 else f"x{multiplier:g}")


def _say(console: Any, message: str, since: float) -> None:
    from rich.text import Text

    console.print(Text(f"[{time.time() - since:5.1f}s] {message}"), highlight=False)


def run_demo(console: Any = None, steps: int = 5, start: float | None = None, full: bool = False) -> list[float]:
    r"""Print the torch/Flax decisions and ``steps`` lock-step SGD-momentum updates; return max |Δ| per step.

    Progress lines carry the seconds since ``start``; the last line states the conclusion in words and the
    true elapsed time.

    Args:
      console: a ``rich.console.Console`` (default: a new one on stdout).
      steps: training steps to run on both sides.
      start: ``time.time()`` when the command started (``wdmask demo`` passes the process start, so the time
        reported includes interpreter start-up and imports); default: now.
      full: one table row per parameter pair; default: one row per (kind, role, decisions), with the
        torch paths folded into patterns, and every pair whose decisions differ on its own row.

    Returns:
      The max absolute parameter difference between the frameworks after each step (float64: ~1e-16).
    """
    from rich.console import Console

    start = time.time() if start is None else start
    console = console if console is not None else Console()
    _say(console, "importing torch and jax ...", start)
    import jax

    with jax.enable_x64(True):
        return _run(console, steps, start, full)


def _run(console: Any, steps: int, start: float, full: bool) -> list[float]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    import torch.nn.functional as F
    from rich.text import Text

    import wdmask_torch
    from wdmask import models as flax_models
    from wdmask import presets
    from wdmask._engine import decide
    from wdmask._jax._apply import decay
    from wdmask._jax._order import flax_inventory
    from wdmask._pair import flax_axes, pair
    from wdmask_migrate._port import to_flax
    from wdmask_torch import models as torch_models

    rules = presets.standard
    _say(console, "building a ResNet-18-style model in torch and Flax, porting weights ...", start)
    kw = {"num_classes": CLASSES, "width": 8, "layers": (1, 1, 1, 1), "small_input": True}
    torch.manual_seed(0)
    tmodel = torch_models.resnet18(**kw).double().train()
    fmodel = flax_models.resnet18(**kw, param_dtype=jnp.float64)
    sample = jnp.zeros((2, SIZE, SIZE, 3), jnp.float64)
    variables = to_flax(tmodel, jax.eval_shape(fmodel.init, jax.random.key(0), sample), flax_model=fmodel,
                        sample=sample)

    _say(console, f"deciding weight decay on both sides with the {rules.name!r} preset ...", start)
    torch_inv = wdmask_torch.describe(tmodel)
    pairs = pair(torch_inv, flax_inventory(fmodel, sample=sample))
    t_dec = decide([t for t, _ in pairs], rules)
    f_dec = decide([f for _, f in pairs], rules)
    console.print(_decisions(pairs, t_dec, f_dec, rules.name, full))
    differ = sum(t_dec[t.path].multiplier != f_dec[f.path].multiplier for t, f in pairs)
    decayed = sum(t_dec[t.path].multiplier != 0 for t, _ in pairs)
    console.print(f"{len(pairs)} paired parameters, {differ} decisions differ", highlight=False)

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
    console.print(f"training both on the same batches: SGD, momentum {MOMENTUM}, lr {LR}, wd {WD:g}, fp64",
                  highlight=False)
    for i in range(1, steps + 1):
        x = rng.standard_normal((BATCH, 3, SIZE, SIZE))
        y = rng.integers(0, CLASSES, BATCH)
        if i == 1:
            _say(console, "compiling the JAX training step (the first step takes longest) ...", start)
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
        _say(console, f"step {i}/{steps}: max |torch - jax| over all parameters = {worst:.3g}", start)
    console.print(Text(_conclusion(len(pairs), differ, decayed, steps, max(out, default=0.0))))
    console.print(f"done in {time.time() - start:.1f}s (since the command started, imports included)",
                  highlight=False)
    return out


def _decisions(pairs: list[tuple[Any, Any]], t_dec: dict[Any, Any], f_dec: dict[Any, Any], name: str,
               full: bool) -> Any:
    """The decisions of both frameworks as a table: every pair (``full``), or one row per (kind, role, torch
    decision, flax decision) with the torch paths folded into patterns and a count; pairs that disagree always
    get their own row, in red."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from wdmask._report import Wrapped, collapse

    rows: dict[tuple[Any, ...], list[tuple[Any, Any]]] = {}
    for t, f in pairs:
        td, fd = t_dec[t.path].multiplier, f_dec[f.path].multiplier
        key = (t.layer, t.role, td, fd) if (td == fd and not full) else (t.path,)
        rows.setdefault(key, []).append((t, f))
    title = f"weight decay decisions ({name}), torch vs Flax linen"
    table = Table(title=Text(title), box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0),
                  title_justify="left")
    paths = ("torch path", "flax path") if full else ("torch parameters", "n")
    for col in (*paths, "kind", "role", "torch", "flax"):
        table.add_column(col, no_wrap=col not in ("torch path", "flax path", "torch parameters"),
                         justify="right" if col == "n" else "left")
    for group in rows.values():
        t, f = group[0]
        td, fd = t_dec[t.path].multiplier, f_dec[f.path].multiplier
        style = "" if td == fd else "bold red"
        if full:
            head = [Wrapped(t.dotted, style=style), Wrapped(f.dotted, style=style)]
        else:
            head = [Wrapped("\n".join(collapse([p.dotted for p, _ in group])), style=style), Text(str(len(group)))]
        table.add_row(*head, Text(t.layer), Text(t.role), Text(_verdict(td)), Text(_verdict(fd)), style=style or None)
    return table


def _conclusion(n: int, differ: int, decayed: int, steps: int, worst: float) -> str:
    """The demo's result in words.

    Examples:
      >>> print(_conclusion(38, 0, 21, 5, 2.2e-16))  # doctest: +NORMALIZE_WHITESPACE
      Conclusion: the same 21 of 38 parameters are decayed in both frameworks; after 5 steps the parameters
      agree to 2.2e-16, within float64 rounding (a wrong decay decision would move them by ~1e-6 or more).
    """
    if differ:
        same = f"{differ} of {n} parameters get a different decay decision in the two frameworks"
    else:
        same = f"the same {decayed} of {n} parameters are decayed in both frameworks"
    if worst <= 1e-12:
        agree = (f"after {steps} steps the parameters agree to {worst:.2g}, within float64 rounding (a wrong decay "
                 "decision would move them by ~1e-6 or more)")
    else:
        agree = (f"after {steps} steps the parameters differ by up to {worst:.2g}, more than float64 rounding "
                 "(~1e-16): the two trainings are not the same")
    return f"Conclusion: {same}; {agree}."
