"""wdmask benchmarks (issue 7): ``python -m benchmarks [--quick] [--json out.json] [--markdown RESULTS.md]``.

One module per measurement, each with ``run(quick) -> list[Row]``:

1. ``jax_step``: jitted ResNet-18 train step, ``wdmask.decay`` vs a literal-mask ``optax.masked``;
2. ``torch_step``: ``optimizer.step()``, wdmask groups vs one group vs one group per parameter;
3. ``construction``: building the optimizer, wdmask groups vs one group per parameter;
4. ``scaling``: describe + decide at 1k / 10k / 100k parameters (torch) and leaves (pytree);
5. ``memory``: groups hold the model's tensors; the mask and ``decay`` add no device buffers.

Not collected by the default ``pytest`` run (``testpaths`` are ``tests``, ``wdmask``, ``wdmask_torch``);
the non-timing invariants are regression-tested in ``tests/test_benchmark_invariants.py``.
"""
