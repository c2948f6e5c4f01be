"""Describing changes nothing: what one probing forward pass may touch is saved first and put back after it.

``untouched(model)`` wraps the traced forward of ``describe``/``groups``/``audit``/``infer_rules`` with
``example_inputs``:

* **one pass at a time** — a process-wide re-entrant lock (``LOCK``) is held for the whole pass, so two
  threads describing (the same model or different ones) never capture each other's mode flags or RNG
  states, and module hooks only ever fire into the trace that registered them (torch's function-mode
  stack is per thread already);
* **modes** — every module's ``training`` attribute is set to ``False`` and restored by assignment,
  never through ``train()``/``eval()``: user overrides of ``train`` may do work (loralib merges
  ``B @ A`` into the frozen weight on ``train(False)``);
* **parameters and buffers** — each is cloned before the pass; afterwards the module's ``_parameters``,
  ``_buffers`` and ``_modules`` hold the same objects as before and every tensor whose bits changed
  (observers, call counters, BatchNorm statistics of a forward that sets ``training`` itself) is copied
  back in place. The cost is one extra copy of the model's tensors while the pass runs; a meta-device model
  costs nothing. Do not describe a model another thread is training: its update would be undone;
* **RNG** — torch's CPU (and initialized CUDA) generator, NumPy's global ``RandomState`` and Python's
  ``random`` are saved before the pass and written back after it if the pass changed them (a forward may
  draw: noise layers, ``torch.rand``); an unchanged generator is never written. ``torch.random.fork_rng``
  restores unconditionally and takes no lock: two concurrent describes then rewind the generator under each
  other and leave it wherever the last one saved it. Here describes never overlap. What no design can give
  with process-wide generators: a draw *another* thread makes while a describe's forward runs is seen as a
  change of the pass and undone with it, so describe before starting threads that draw (data loaders).
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["LOCK", "untouched"]

#: Held for each probing forward pass (re-entrant: a forward may itself describe a submodule).
LOCK = threading.RLock()

_Slots = tuple[nn.Module, dict[str, Any], dict[str, Any], dict[str, Any]]


def _restorable(t: Any) -> bool:
    """A tensor whose values can be saved and compared (not meta, not a lazy module's placeholder)."""
    return (isinstance(t, torch.Tensor) and not t.is_meta
            and not isinstance(t, (nn.parameter.UninitializedParameter, nn.parameter.UninitializedBuffer)))


#: Integer dtype of each element size: tensors are compared as integers of their own width (bit for bit).
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (``-0.0`` differs from ``0.0``, a NaN equals the same NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    as_int = _BITS.get(a.element_size(), torch.uint8)
    try:
        return torch.equal(a.reshape(-1).view(as_int), b.reshape(-1).view(as_int))
    except Exception:  # quantized, sparse, a tensor subclass: not viewable as integers
        try:
            return bool(torch.equal(a, b))
        except Exception:
            return False  # cannot be compared: copied back


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        states["numpy"] = np.random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_same_state, a, b))
    if hasattr(a, "shape") and hasattr(a, "dtype"):  # a NumPy array
        return bool(getattr(a, "shape", None) == getattr(b, "shape", None) and (a == b).all())
    return bool(a == b)


def _restore_rng(saved: dict[str, Any]) -> None:
    now = _rng_states()
    if not _same_state(saved["torch"], now["torch"]):
        torch.set_rng_state(saved["torch"])
    if not _same_state(saved["random"], now["random"]):
        random.setstate(saved["random"])
    if "numpy" in saved and not _same_state(saved["numpy"], now.get("numpy")):
        sys.modules["numpy"].random.set_state(saved["numpy"])
    if "cuda" in saved and not _same_state(saved["cuda"], now.get("cuda")):
        torch.cuda.set_rng_state_all(saved["cuda"])


def _same_slots(now: dict[str, Any], before: dict[str, Any]) -> bool:
    return list(now) == list(before) and all(now[k] is v for k, v in before.items())


def _put_back(slots: list[_Slots], values: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for module, params, buffers, children in slots:
        for now, before in ((module._parameters, params), (module._buffers, buffers), (module._modules, children)):
            if not _same_slots(now, before):
                now.clear()
                now.update(before)
    for t, saved in values:
        if _same_bits(t, saved):
            continue
        with torch.no_grad(), torch.inference_mode(t.is_inference()):
            if t.shape == saved.shape and t.dtype == saved.dtype and t.device == saved.device:
                t.copy_(saved)
            else:  # resized or re-typed in place (``t.data = ...`` in the forward)
                t.data = saved


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Hold ``LOCK``, put every module of ``model`` in eval mode by assignment, and afterwards (also when
    the body raises) restore modes, parameter/buffer objects and bits, and RNG states (see the module docstring).

    Examples:
      >>> class Counter(nn.Module):
      ...     def __init__(self):
      ...         super().__init__()
      ...         self.register_buffer("calls", torch.zeros((), dtype=torch.long))
      ...     def forward(self, x):
      ...         self.calls += 1
      ...         return x * torch.rand(())
      >>> net, state = Counter().train(), torch.get_rng_state()
      >>> with untouched(net):
      ...     _ = net(torch.ones(1)); net.training
      False
      >>> int(net.calls), net.training, torch.equal(torch.get_rng_state(), state)
      (0, True, True)
    """
    with LOCK:
        modules = list(model.modules())
        flags = [(m, m.training) for m in modules]
        slots = [(m, dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in modules]
        seen: set[int] = set()
        values = []
        with torch.inference_mode(False), torch.no_grad():  # normal tensors, also under the caller's inference mode
            for _, params, buffers, _ in slots:
                for t in (*params.values(), *buffers.values()):
                    if _restorable(t) and id(t) not in seen:
                        seen.add(id(t))
                        values.append((t, t.detach().clone()))
        rng = _rng_states()
        try:
            for m in modules:
                object.__setattr__(m, "training", False)
            yield
        finally:
            try:
                _put_back(slots, values)
            finally:
                for m, training in flags:
                    object.__setattr__(m, "training", training)
                _restore_rng(rng)
