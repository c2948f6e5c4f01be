"""The probing forward pass of torch describe: ``run`` one forward under a ``TorchFunctionMode`` tracker.

``run`` runs the model in eval mode under ``torch.no_grad()`` with the tracker (the usage and feeds_norm mode of
``_usage``); nothing observable changes (modes, parameters, buffers, RNG states: see ``wdmask_torch._snapshot``)
and every hook is removed afterwards, also when the forward pass raises. Norm modules get a
forward pre-hook: a followed producer output entering one has *reached* a norm (what that means is decided
in ``wdmask._usage.feeds_step``); ops inside a norm module are not consumers of its input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils.weak import WeakIdKeyDictionary

from wdmask_torch._snapshot import untouched

#: Ops whose output is a view/reshape of their first argument: a tag passes through them.
VIEW_OPS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "T", "mT", "flatten",
    "unflatten", "squeeze", "unsqueeze", "contiguous", "movedim", "moveaxis", "swapaxes", "swapdims",
})
#: Metadata queries: neither a use nor a view.
NEUTRAL_OPS = frozenset({
    "shape", "size", "dim", "ndim", "ndimension", "numel", "nelement", "dtype", "device", "is_contiguous",
    "stride", "_version", "requires_grad", "layout", "is_floating_point", "is_complex", "element_size",
    "storage_offset", "data_ptr", "__len__", "is_cuda", "is_cpu", "is_meta", "names", "grad_fn", "is_leaf",
    "is_sparse", "is_quantized", "is_nested", "itemsize",
})


@dataclasses.dataclass
class _Call:
    """One call of a producer module: did its output reach a norm, did it escape elsewhere."""

    module: nn.Module
    reached: bool = False
    escaped: bool = False


def _op_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property such as Tensor.shape / Tensor.mT
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


class _Tracker(TorchFunctionMode):
    """Tags of followed producer outputs (``tag``/``lookup``); subclasses decide what each op does with them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> (call, _version at tagging)
        self.calls: list[_Call] = []
        self.in_norm = 0

    def tag(self, tensor: Any, call: _Call) -> None:
        if isinstance(tensor, torch.Tensor):
            self.tags[tensor] = (call, tensor._version)

    def lookup(self, tensor: Any) -> tuple[_Call, bool] | None:
        """``(call, fresh)`` of a tagged tensor; ``fresh`` is False after an in-place change."""
        if not isinstance(tensor, torch.Tensor) or tensor not in self.tags:
            return None
        call, version = self.tags[tensor]
        return call, tensor._version == version

    def escape_all(self, values: Any) -> None:
        for leaf in pytree.tree_leaves(values):
            found = self.lookup(leaf)
            if found is not None:
                found[0].escaped = True


def _split(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    return (example_inputs,), {}


@contextlib.contextmanager
def _eager(model: nn.Module) -> Iterator[None]:
    """Run nested ``torch.compile``d submodules eagerly (no compilation for one probing pass)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None and any(isinstance(m, eval_frame.OptimizedModule) for m in model.modules()):
        set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6; before: dynamo's disable flag
        with set_stance("force_eager") if set_stance else torch._dynamo.config.patch(disable=True):
            yield
    else:
        yield


def run(model: nn.Module, example_inputs: Any, tracker: _Tracker, *, producers: Sequence[nn.Module],
        norms: Sequence[nn.Module], before: Callable[[], None] | None = None,
        order: list[str] | None = None) -> dict[nn.Module, bool | None]:
    """One probing forward pass of ``model`` under ``tracker``; returns the producers' ``feeds_norm``.

    ``before`` runs inside the pass's context (no grad, eval, ``untouched``) right before the forward,
    once the hooks are in place (usage tracing registers the parameters and inputs there). ``order``: a list
    this pass fills with the ``named_modules()`` name of each module when its ``forward`` first runs (the
    call order depths are read from; ``""`` for the root).
    """
    producer_set = list(dict.fromkeys(producers))
    mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]

    def on_output(module: nn.Module, _args: Any, output: Any) -> None:
        call = _Call(module)
        tracker.calls.append(call)
        tracker.tag(output, call)

    def on_mha(module: nn.MultiheadAttention, _args: Any, output: Any) -> None:  # never calls out_proj.forward
        call = _Call(module.out_proj)
        tracker.calls.append(call)
        tracker.tag(output[0] if isinstance(output, tuple) else output, call)

    def before_norm(_module: nn.Module, args: Any, kwargs: Any) -> None:
        if not tracker.in_norm:
            first, rest = (args[0], (args[1:], kwargs)) if args else (next(iter(kwargs.values()), None), ((), {}))
            found = tracker.lookup(first)
            if found is not None:
                if found[1]:
                    found[0].reached = True
                else:
                    found[0].escaped = True
            tracker.escape_all(rest)
        tracker.in_norm += 1

    def after_norm(*_: Any) -> None:
        tracker.in_norm -= 1

    handles = []
    args, kwargs = _split(example_inputs)
    with untouched(model):
        try:
            if order is not None:
                entered: set[int] = set()

                def entry_hook(name: str) -> Callable[..., None]:
                    def hook(module: nn.Module, _args: Any) -> None:
                        if id(module) not in entered:
                            entered.add(id(module))
                            order.append(name)
                    return hook

                for name, m in model.named_modules():
                    handles.append(m.register_forward_pre_hook(entry_hook(name)))
            for m in producer_set:
                handles.append(m.register_forward_hook(on_output))
            for m in mha if producer_set else ():
                handles.append(m.register_forward_hook(on_mha))
            for m in dict.fromkeys(norms):
                handles.append(m.register_forward_pre_hook(before_norm, with_kwargs=True))
                handles.append(m.register_forward_hook(after_norm, always_call=True))
            # Out of the caller's inference mode: the tags read `_version`, which inference tensors lack.
            with torch.inference_mode(False), torch.no_grad(), _eager(model):
                if before is not None:
                    before()
                with tracker:
                    try:
                        output = model(*args, **kwargs)
                    except Exception as e:
                        e.add_note("wdmask_torch: raised while running the model on `example_inputs` to trace "
                                   "usage and detect feeds_norm")
                        raise
                    tracker.escape_all(output)
        finally:
            for h in handles:
                h.remove()
    result: dict[nn.Module, bool | None] = {m: None for m in producer_set}
    for call in tracker.calls:
        if call.module not in result:
            continue
        ok = call.reached and not call.escaped
        result[call.module] = ok if result[call.module] is None else bool(result[call.module]) and ok
    return result
