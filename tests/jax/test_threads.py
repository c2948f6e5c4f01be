"""Describing from several threads at once gives the single-threaded results and leaves no class patched."""

from __future__ import annotations

import sys
import threading

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

import wdmask
from tests.jax.models import nnx_model


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=True)(nn.Dense(8)(x))  # Dense feeds a norm
        return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))  # Dense_1 does not


class _Nnx(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(3, 8, rngs=rngs)
        self.ln = nnx.LayerNorm(8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 8, rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.fc2(self.ln(self.fc1(x)))))


class _NnxOther(nnx.Module):  # the same NNX classes in another arrangement: shared classes, other answers
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(3, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.out = nnx.Linear(8, 8, rngs=rngs)
        self.ln = nnx.LayerNorm(8, rngs=rngs)

    def __call__(self, x):
        return self.ln(self.out(nnx.relu(self.bn(self.fc(x)))))


X = jnp.ones((2, 3))
CLASSES = (nnx.Linear, nnx.LayerNorm, nnx.BatchNorm, _Nnx, _NnxOther)


def _facts(inventory) -> list[tuple[str, str, str, bool | None]]:
    return [(i.dotted, i.layer, i.role, i.feeds_norm) for i in inventory]


def test_concurrent_describes_match_single_threaded_and_restore_every_class():
    before = {cls: cls.__dict__.get("__call__") for cls in CLASSES}
    nnx_one, nnx_other = nnx_model(lambda: _Nnx(nnx.Rngs(0))), nnx_model(lambda: _NnxOther(nnx.Rngs(0)))
    jobs = {
        "linen": lambda: wdmask.describe(_Linen(), X),
        "nnx": lambda: wdmask.describe(nnx_one, X),
        "nnx_other": lambda: wdmask.describe(nnx_other, X),
    }
    expected = {name: _facts(job()) for name, job in jobs.items()}
    # independent expectations for the facts threads are most likely to mix up: which output feeds a norm
    assert {p: f for p, _, _, f in expected["nnx"]}["fc1.kernel"] is True
    assert {p: f for p, _, _, f in expected["nnx"]}["fc2.kernel"] is False
    assert {p: f for p, _, _, f in expected["nnx_other"]}["fc.kernel"] is True
    assert {p: f for p, _, _, f in expected["nnx_other"]}["out.kernel"] is True
    assert {p: f for p, _, _, f in expected["linen"]}["Dense_0.kernel"] is True

    names = [name for name in jobs for _ in range(2)]  # two threads per model, six at once
    start = threading.Barrier(len(names))
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def run(slot: int, name: str) -> None:
        try:
            start.wait(timeout=60)
            results[slot] = [_facts(jobs[name]())]
        except BaseException as e:  # reported below, with the thread's own traceback
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, name)) for i, name in enumerate(names)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: a race shows up in every run, not one in five
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    for slot, name in enumerate(names):
        assert results[slot] == [expected[name]], name
    assert {cls: cls.__dict__.get("__call__") for cls in CLASSES} == before
