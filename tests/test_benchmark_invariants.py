"""The non-timing claims of ``benchmarks/`` (issue 7), in the default suite.

* the jitted train step with ``wdmask.decay`` has the very jaxpr of the step with a hand-written
  ``optax.masked(add_decayed_weights)`` over a literal bool pytree (zero added ops);
* ``wdmask_torch.groups(resnet50, presets.standard)`` gives 2 groups holding the model's own tensors.
"""

from __future__ import annotations

import pytest


def _train_step(model, tx):
    import jax
    import optax

    def loss_fn(params, batch_stats, x, y):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates["batch_stats"]

    def step(params, batch_stats, opt_state, x, y):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return step


def test_decay_step_jaxpr_equals_literal_mask_step():
    pytest.importorskip("flax")
    import jax
    import jax.numpy as jnp
    import optax

    import wdmask
    from wdmask import models, presets

    # one block per stage keeps every structure (stem, 4 stages, downsample shortcuts): half the tracing
    model = models.resnet18(num_classes=10, width=4, layers=(1, 1, 1, 1), small_input=True)
    x = jnp.zeros((2, 8, 8, 3), jnp.float32)
    y = jnp.zeros((2,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes suffice: nothing is compiled or run
    params, batch_stats = variables["params"], variables["batch_stats"]
    literal = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)
    assert wdmask.mask(params, presets.standard, model=model, sample=(x,)) == literal

    def jaxpr(decay):
        tx = optax.chain(decay, optax.sgd(0.1, momentum=0.9))
        opt_state = jax.eval_shape(tx.init, params)
        return str(jax.make_jaxpr(_train_step(model, tx))(params, batch_stats, opt_state, x, y))

    ours = jaxpr(wdmask.decay(5e-4, presets.standard, model=model, sample=(x,)))
    hand = jaxpr(optax.masked(optax.add_decayed_weights(5e-4), literal))
    assert ours == hand


def test_resnet50_groups_two_groups_of_the_models_tensors():
    torch = pytest.importorskip("torch")

    import wdmask_torch
    from wdmask import presets
    from wdmask_torch.models import resnet50

    with torch.device("meta"):  # no storage, no init kernels: describe runs no forward
        model = resnet50(num_classes=10, width=8)
    named = dict(model.named_parameters())
    assert len(named) == 161
    groups = wdmask_torch.groups(model, presets.standard, weight_decay=1e-4)
    assert len(groups) == 2
    assert [g["weight_decay"] for g in groups] == [0.0, 1e-4]
    by_id = {id(p): n for n, p in named.items()}
    tensors = [p for g in groups for p in g["params"]]
    assert sorted(by_id[id(p)] for p in tensors) == sorted(named)  # the model's own tensors, each once
    assert {by_id[id(p)] for p in groups[1]["params"]} == {n for n, p in named.items() if p.ndim > 1}  # conv + fc
    opt = torch.optim.SGD(groups, lr=0.1)
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [[id(p) for p in g["params"]] for g in groups]
