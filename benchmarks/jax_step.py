"""1. JAX step overhead: a jitted ResNet-18 train step with ``wdmask.decay`` vs a hand-written literal mask.

Both steps are ``optax.chain(<decay>, optax.sgd(0.1, momentum=0.9))`` on the linen ResNet-18 of
``wdmask.models`` (BasicBlock, CIFAR stem, narrow so that CPU steps take tens of milliseconds):

* wdmask: ``wdmask.decay(5e-4, presets.standard, model=model, sample=(x,))``;
* hand: ``optax.masked(optax.add_decayed_weights(5e-4), mask)`` with ``mask`` a literal bool pytree
  written by a name rule (``kernel`` -> decay), checked equal to ``wdmask.mask``.

The jaxprs must be string-equal (``jax.make_jaxpr``), the lowered StableHLO too; the step-time
ratio is the median of per-round ratios over interleaved rounds.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import Row, fmt_time, interleaved, median, paired_ratio

SECTION = "1 jax step"
WEIGHT_DECAY = 5e-4


def build(quick: bool) -> dict[str, Any]:
    """Model, data, both transforms and their states, and the (un-jitted) step functions."""
    import jax
    import jax.numpy as jnp
    import optax

    import wdmask
    from wdmask import models

    layers = (1, 1, 1, 1) if quick else (2, 2, 2, 2)
    width, batch, side = (8, 8, 16) if quick else (16, 16, 32)
    model = models.resnet18(num_classes=10, width=width, layers=layers, small_input=True)
    x = jax.random.normal(jax.random.key(1), (batch, side, side, 3), jnp.float32)
    y = jnp.arange(batch, dtype=jnp.int32) % 10
    variables = model.init(jax.random.key(0), x)
    params, batch_stats = variables["params"], variables["batch_stats"]

    literal = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)
    decided = wdmask.mask(params, wdmask.presets.standard, model=model, sample=(x,))
    if decided != literal:
        raise AssertionError("wdmask.mask(presets.standard) differs from the hand-written ResNet mask")

    tx_wdmask = optax.chain(wdmask.decay(WEIGHT_DECAY, wdmask.presets.standard, model=model, sample=(x,)),
                            optax.sgd(0.1, momentum=0.9))
    tx_hand = optax.chain(optax.masked(optax.add_decayed_weights(WEIGHT_DECAY), literal),
                          optax.sgd(0.1, momentum=0.9))
    return {"model": model, "x": x, "y": y, "params": params, "batch_stats": batch_stats, "literal": literal,
            "wdmask": (make_step(model, tx_wdmask), tx_wdmask.init(params)),
            "hand": (make_step(model, tx_hand), tx_hand.init(params)),
            "config": f"width {width}, blocks {layers}, batch {batch}x{side}x{side}x3"}


def make_step(model: Any, tx: Any) -> Any:
    """A train step: forward with batch-stat updates, cross-entropy, grads, ``tx.update``, apply."""
    import jax
    import optax

    def loss_fn(params: Any, batch_stats: Any, x: Any, y: Any) -> Any:
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates["batch_stats"]

    def step(params: Any, batch_stats: Any, opt_state: Any, x: Any, y: Any) -> Any:
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return step


def jaxprs(b: dict[str, Any]) -> tuple[str, str]:
    """``str(jax.make_jaxpr(step))`` of the wdmask step and of the hand-mask step."""
    import jax

    args = (b["params"], b["batch_stats"])
    out = []
    for key in ("wdmask", "hand"):
        step, state = b[key]
        out.append(str(jax.make_jaxpr(step)(*args, state, b["x"], b["y"])))
    return out[0], out[1]


def run(quick: bool = False) -> list[Row]:
    import jax

    b = build(quick)
    ja, jb = jaxprs(b)
    if ja != jb:
        import difflib

        diff = "\n".join(list(difflib.unified_diff(jb.splitlines(), ja.splitlines(), "hand", "wdmask", n=1))[:40])
        raise AssertionError(f"jaxprs differ:\n{diff}")
    args = (b["params"], b["batch_stats"])
    compiled, hlo = {}, {}
    for key in ("wdmask", "hand"):
        step, state = b[key]
        lowered = jax.jit(step).lower(*args, state, b["x"], b["y"])
        hlo[key] = lowered.as_text()
        fn = lowered.compile()
        compiled[key] = (lambda fn=fn, state=state: jax.block_until_ready(fn(*args, state, b["x"], b["y"])))
        compiled[key]()  # warm-up
    rounds, reps = (20, 2) if quick else (30, 3)
    samples = interleaved(compiled, rounds=rounds, reps=reps)
    ratio = paired_ratio(samples, "wdmask", "hand")
    n_lines = len(ja.splitlines())
    return [
        Row(SECTION, "jaxpr: wdmask.decay step vs literal-mask step", f"{n_lines} lines, string-equal",
            against="make_jaxpr text", goal="equal op for op", met=True,
            note=f"StableHLO {'equal' if hlo['wdmask'] == hlo['hand'] else 'DIFFERENT'}"),
        Row(SECTION, f"step time, ResNet-18 ({b['config']})",
            f"{fmt_time(median(samples['wdmask']))} vs {fmt_time(median(samples['hand']))}",
            ratio, "wdmask / literal mask", "≤ 1.02", ratio <= 1.02,
            note=f"median of {rounds} interleaved rounds x {reps} steps"),
    ]
