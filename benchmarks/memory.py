"""5. Memory: groups hold the model's own tensors; the mask and ``decay`` add no device buffers.

* torch: every tensor in ``wdmask_torch.groups(resnet50)`` and in the optimizer built from it is
  the model's parameter object itself (``is``, same ``data_ptr``), each exactly once.
* JAX: ``len(jax.live_arrays())`` (after ``gc.collect()``) before and after building
  ``tx = wdmask.decay(...)`` and ``state = tx.init(params)``. What the transform's own state must
  hold is nothing: its state is ``MaskedState(inner_state=EmptyState())`` plus the static mask
  spec (Python bools as pytree metadata), exactly as ``optax.masked(add_decayed_weights, mask)``.
  Counted the same way with ``optax.sgd(momentum=0.9)`` chained after it: the delta is one
  momentum buffer per leaf, equal to the hand-written chain's. ``wdmask.mask`` returns Python bools.
"""

from __future__ import annotations

import gc
from typing import Any

from benchmarks._common import Row

SECTION = "5 memory"


def torch_identity(quick: bool) -> Row:
    import torch

    import wdmask_torch
    from wdmask import presets
    from wdmask_torch.models import resnet50

    model = resnet50(num_classes=1000, width=8 if quick else 64)
    named = dict(model.named_parameters())
    groups = wdmask_torch.groups(model, presets.standard, weight_decay=1e-4)
    by_id = {id(p): n for n, p in named.items()}
    in_groups = [(by_id.get(id(p)), p) for g in groups for p in g["params"]]
    same = sum(1 for n, p in in_groups if n is not None and p is named[n] and p.data_ptr() == named[n].data_ptr())
    opt = torch.optim.SGD(groups, lr=0.1)
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    ok = (same == len(named) == len(in_groups) and len({id(p) for p in in_opt}) == len(named)
          and all(any(p is q for q in named.values()) for p in in_opt))
    return Row(SECTION, f"torch groups hold the model's tensors (ResNet-50, {len(named)} tensors)",
               f"{same}/{len(named)} same object", None, "identity (`is`, data_ptr)", "all identical, once", ok,
               f"{len(groups)} groups; 0 bytes copied")


def _live() -> tuple[int, int]:
    import jax

    gc.collect()
    arrays = jax.live_arrays()
    return len(arrays), sum(a.nbytes for a in arrays)


def jax_buffers(quick: bool) -> list[Row]:
    import jax
    import jax.numpy as jnp
    import optax

    import wdmask
    from wdmask import models, presets

    layers = (1, 1, 1, 1) if quick else (2, 2, 2, 2)
    model = models.resnet18(num_classes=10, width=8, layers=layers, small_input=True)
    x = jnp.zeros((2, 16, 16, 3), jnp.float32)
    params = model.init(jax.random.key(0), x)["params"]
    n_leaves = len(jax.tree.leaves(params))
    literal = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)

    def delta(build: Any) -> tuple[int, int, Any]:
        n0, b0 = _live()
        kept = build()
        n1, b1 = _live()
        return n1 - n0, b1 - b0, kept

    d_mask, _, m = delta(lambda: wdmask.mask(params, presets.standard, model=model, sample=(x,)))
    bools = all(type(v) is bool for v in jax.tree.leaves(m))
    d_decay, bytes_decay, _ = delta(lambda: wdmask.decay(1e-4, presets.standard, model=model, sample=(x,))
                                    .init(params))
    d_hand, _, _ = delta(lambda: optax.masked(optax.add_decayed_weights(1e-4), literal).init(params))
    d_chain, bytes_chain, _ = delta(lambda: optax.chain(
        wdmask.decay(1e-4, presets.standard, model=model, sample=(x,)), optax.sgd(0.1, momentum=0.9)).init(params))
    d_hand_chain, bytes_hand_chain, _ = delta(lambda: optax.chain(
        optax.masked(optax.add_decayed_weights(1e-4), literal), optax.sgd(0.1, momentum=0.9)).init(params))
    return [
        Row(SECTION, f"jax: live arrays added by wdmask.mask + decay(...).init (ResNet-18-style, {n_leaves} leaves)",
            f"mask +{d_mask}, decay +{d_decay} ({bytes_decay} B); hand-written +{d_hand}", None,
            "jax.live_arrays() delta", "0 (state holds no arrays)", d_mask == 0 and d_decay == 0 and bools,
            f"mask leaves are Python bools: {bools}"),
        Row(SECTION, "jax: + sgd(momentum) chain, wdmask vs hand-written",
            f"+{d_chain} ({bytes_chain:,} B) vs +{d_hand_chain} ({bytes_hand_chain:,} B)", None,
            "jax.live_arrays() delta", f"equal (= {n_leaves} momentum buffers)",
            d_chain == d_hand_chain == n_leaves and bytes_chain == bytes_hand_chain),
    ]


def run(quick: bool = False) -> list[Row]:
    return [torch_identity(quick), *jax_buffers(quick)]
