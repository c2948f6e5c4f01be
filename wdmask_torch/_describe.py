"""``describe``: a torch ``nn.Module`` -> one ``ParamInfo`` per trainable parameter.

Layer kinds come from the owning module's class (``isinstance``, subclasses included), then from a
registry users extend with ``register_norm``, then from the class names along the MRO (``_kinds``:
"Norm" anywhere, e.g. ``EvoNorm2dB0``) for custom norms that own only parameters of rank <= 1
(``source="name"``). With ``example_inputs``, one traced forward pass (``_usage``) records how each
parameter is consumed and the shared usage table decides its role (``source="graph"``); the class
still gives the layer kind where known. Paths are ``named_parameters()`` names with the wrapper
tokens of ``torch.compile``, DDP/DataParallel and FSDP removed.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from wdmask._depth import owner_index, traced_depths
from wdmask._errors import check_bool
from wdmask._kinds import kind_from_name, role_from_name
from wdmask._types import LAYER_KINDS, SOURCES, ParamInfo
from wdmask._usage import Use, note_positions, param_info

if TYPE_CHECKING:
    from wdmask_torch._usage import Trace

__all__ = ["describe", "module_kind", "register_norm", "unregister_norm", "unwrap"]

#: Name tokens wrappers insert into ``named_parameters()`` names; removed from paths.
WRAPPER_TOKENS: tuple[str, ...] = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")
_WRAPPER_RX = re.compile("|".join(map(re.escape, WRAPPER_TOKENS)))

NOT_A_MODULE_MSG = ("`model` must be a torch.nn.Module, got {type}. Pass the model itself "
                    "(e.g. `wdmask_torch.{fn}(model)`), not `model.parameters()` or a state_dict.")

# Exact classes, checked in order with isinstance (subclasses included). _InstanceNorm before _NormBase.
_TYPE_KINDS: tuple[tuple[type, str], ...] = (
    (_ConvNd, "conv"),  # Conv1-3d, ConvTranspose1-3d, LazyConv*
    (nn.Linear, "linear"),  # incl. LazyLinear and MultiheadAttention.out_proj
    (nn.Bilinear, "linear"),
    (nn.RNNBase, "linear"),  # RNN / LSTM / GRU: weight_ih_l0 ... are recurrent weight matrices
    (nn.RNNCellBase, "linear"),
    (nn.Embedding, "embedding"),
    (nn.EmbeddingBag, "embedding"),
    (_InstanceNorm, "norm.instance"),
    (_BatchNorm, "norm.batch"),  # BatchNorm1-3d, SyncBatchNorm, LazyBatchNorm*
    (_NormBase, "norm.batch"),
    (nn.LayerNorm, "norm.layer"),
    (nn.GroupNorm, "norm.group"),
    *(((nn.RMSNorm, "norm.rms"),) if hasattr(nn, "RMSNorm") else ()),  # nn.RMSNorm: torch >= 2.4
)
_MHA_ROLES: dict[str, str] = {
    "in_proj_weight": "kernel", "q_proj_weight": "kernel", "k_proj_weight": "kernel", "v_proj_weight": "kernel",
    "in_proj_bias": "bias", "bias_k": "bias", "bias_v": "bias",
}
_REGISTRY: dict[type, str] = {}


def _class_role(module: nn.Module, leaf: str) -> tuple[str, str] | None:
    """``(layer, role)`` that torch's own classes fix whatever the leaf name heuristics say."""
    if isinstance(module, nn.MultiheadAttention):
        role = _MHA_ROLES.get(leaf)
        return None if role is None else ("linear", role)
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):  # weight_ih_l0, weight_hh_l0_reverse, weight_hr_l0, bias_*
        role = "kernel" if leaf.startswith("weight_") else "bias" if leaf.startswith("bias_") else None
        return None if role is None else ("linear", role)
    if isinstance(module, nn.PReLU) and leaf == "weight":
        return "other", "gain"  # a learned slope multiplying the negative part
    return None


def register_norm(cls: type[nn.Module], kind: str = "norm.layer") -> type[nn.Module]:
    """Declare that modules of class ``cls`` (and its subclasses) are norm layers of ``kind``.

    Their ``weight``/``scale``/``gamma`` parameters get role ``scale`` and ``bias``/``beta`` role
    ``bias``. Usable as a class decorator.

    Args:
      cls: A ``nn.Module`` subclass.
      kind: One of ``norm.batch``, ``norm.layer``, ``norm.group``, ``norm.instance``, ``norm.rms``.

    Returns:
      ``cls`` unchanged.

    Raises:
      TypeError: ``cls`` is not an ``nn.Module`` subclass.
      ValueError: ``kind`` is not a norm kind.

    Examples:
      >>> class ScaleOnly(nn.Module):
      ...     def __init__(self):
      ...         super().__init__()
      ...         self.g = nn.Parameter(torch.ones(4))
      >>> _ = register_norm(ScaleOnly, "norm.rms")
      >>> [(i.dotted, i.layer, i.role) for i in describe(nn.Sequential(ScaleOnly()))]
      [('0.g', 'norm.rms', 'scale')]
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_norm: `cls` must be an nn.Module subclass, got {cls!r:.200}")
    norms = [k for k in LAYER_KINDS if k.startswith("norm.")]
    if kind not in norms:
        raise ValueError(f"register_norm: `kind` {kind!r:.100} is not a norm kind; valid: {', '.join(norms)}")
    _REGISTRY[cls] = kind
    return cls


def unregister_norm(cls: type[nn.Module]) -> None:
    """Undo ``register_norm(cls)``: describe classifies ``cls`` by its class and name again.

    Raises:
      TypeError: ``cls`` is not an ``nn.Module`` subclass.
      KeyError: ``cls`` was not registered; the message lists the registered classes.

    Examples:
      >>> class Gain(nn.Module):
      ...     def __init__(self):
      ...         super().__init__()
      ...         self.g = nn.Parameter(torch.ones(4))
      >>> _ = register_norm(Gain, "norm.rms"); unregister_norm(Gain)
      >>> [(i.layer, i.role) for i in describe(nn.Sequential(Gain()))]
      [('other', 'other')]
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"unregister_norm: `cls` must be an nn.Module subclass, got {cls!r:.200}")
    if cls not in _REGISTRY:
        known = ", ".join(c.__qualname__ for c in _REGISTRY) or "none"
        raise KeyError(f"unregister_norm: {cls!r} is not registered (registered: {known})")
    del _REGISTRY[cls]


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, shortened to a public package path when it is exported there.

    Examples:
      >>> qualified_name(nn.BatchNorm2d), qualified_name(nn.MultiheadAttention)
      ('torch.nn.BatchNorm2d', 'torch.nn.MultiheadAttention')
    """
    module = cls.__module__
    parts = module.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        if any(p.startswith("_") for p in parts[:i]) or prefix not in sys.modules:
            continue
        if getattr(sys.modules[prefix], cls.__name__, None) is cls and "." not in cls.__qualname__:
            return f"{prefix}.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def module_kind(module: nn.Module, memo: _Memo | None = None) -> tuple[str, str] | None:
    """``(kind, source)`` of a module that owns parameters, or ``None`` when unknown.

    Registered classes first, then torch classes by ``isinstance``, then custom norm classes
    by name (a class named like ``LayerNorm2d``/``FooNorm`` owning only parameters of rank <= 1).

    Examples:
      >>> module_kind(nn.SyncBatchNorm(4)), module_kind(nn.ReLU())
      (('norm.batch', 'type'), None)
    """
    kind = memo.class_kind(type(module)) if memo is not None else class_kind(type(module))
    if kind is not None:
        return kind, "type"
    name = type(module).__name__
    if name == "Conv1D" and "weight" in module._parameters:
        return "linear", "name"  # Hugging Face GPT-2 Conv1D: a Linear with its weight stored (in, out)
    by_name = memo.norm_by_name(type(module)) if memo is not None else norm_by_name(type(module))
    if by_name is not None:
        own = list(module.parameters(recurse=False))
        if own and all(_rank(p) <= 1 for p in own):
            if by_name == "norm.layer" and _rms_style(module):
                return "norm.rms", "name"
            return by_name, "name"
    return None


def norm_by_name(cls: type) -> str | None:
    """Norm kind suggested by the name of ``cls`` or of a base class (``class MyNorm(EvoNorm2dB0)``).

    Examples:
      >>> class EvoNorm2dB0(nn.Module): pass
      >>> class Fp32Variant(EvoNorm2dB0): pass
      >>> norm_by_name(Fp32Variant), norm_by_name(nn.ReLU)
      ('norm.layer', None)
    """
    for base in cls.__mro__:
        if base in (nn.Module, object):
            break
        kind = kind_from_name(base.__name__)
        if kind is not None and kind.startswith("norm."):
            return kind
    return None


def class_kind(cls: type) -> str | None:
    """Layer kind of a module class: registered classes (along the MRO), then torch classes (subclasses included)."""
    for base in cls.__mro__:
        if base in _REGISTRY:
            return _REGISTRY[base]
    for base, kind in _TYPE_KINDS:
        if issubclass(cls, base):
            return kind
    return None


class _Memo:
    """Caches for one ``describe`` call: what depends only on a module's class, and roles from names."""

    def __init__(self) -> None:
        self.class_kind = functools.cache(class_kind)
        self.norm_by_name = functools.cache(norm_by_name)
        self.qualified_name = functools.cache(qualified_name)
        self.role = functools.cache(role_from_name)
        self.dtype_name = functools.cache(_dtype_name)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _rms_style(module: nn.Module) -> bool:
    """A custom ``*LayerNorm`` that is an RMSNorm in disguise (HF ``T5LayerNorm``: a ``weight``, a
    ``variance_epsilon`` and no ``bias`` attribute at all); a LayerNorm built with ``bias=False``
    keeps a ``bias`` attribute (``None``) and stays ``norm.layer``."""
    return (set(module._parameters) == {"weight"} and hasattr(module, "variance_epsilon")
            and not hasattr(module, "bias"))


def _rank(p: torch.Tensor) -> int:
    return 99 if isinstance(p, nn.parameter.UninitializedParameter) else p.dim()


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``torch.compile`` / ``DataParallel`` / ``DistributedDataParallel`` / FSDP1 root wrappers.

    Raises:
      TypeError: ``model`` is not an ``nn.Module``.

    Examples:
      >>> net = nn.Linear(2, 2)
      >>> unwrap(nn.DataParallel(net)) is net
      True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(NOT_A_MODULE_MSG.format(type=type(model).__name__, fn="unwrap"))
    while True:
        inner = _wrapped(model)
        if inner is None:
            return model
        model = inner


def _wrapped(model: nn.Module) -> nn.Module | None:
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module  # type: ignore[no-any-return]
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        return model._orig_mod  # type: ignore[no-any-return]
    fsdp = sys.modules.get("torch.distributed.fsdp.fully_sharded_data_parallel")
    if fsdp is not None and isinstance(model, fsdp.FullyShardedDataParallel):
        return model.module
    return None


def canonical_path(name: str) -> tuple[str, ...]:
    """A ``named_parameters()`` name as a path, wrapper tokens removed (never a plain ``module``).

    Examples:
      >>> canonical_path("0._orig_mod.layer1._fsdp_wrapped_module.weight")
      ('0', 'layer1', 'weight')
    """
    return tuple(canonical_name(name).split("."))


def canonical_name(name: str) -> str:
    """``canonical_path`` joined with dots; ``name`` itself when it holds no wrapper token."""
    if _WRAPPER_RX.search(name) is None:
        return name
    return ".".join(t for t in name.split(".") if t not in WRAPPER_TOKENS)


def check_model(model: Any, fn: str) -> nn.Module:
    """The unwrapped model, or a ``TypeError`` that says what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(NOT_A_MODULE_MSG.format(type=type(model).__name__, fn=fn))
    return unwrap(model)


class Declared:
    """What a model declares about weight decay, read once from the (unwrapped) root module.

    * ``model.no_weight_decay()`` (timm): each entry is a parameter name, an ``fnmatch`` pattern (as
      timm's ``param_groups_weight_decay`` matches it), or a module name whose parameters it covers
      (``"pos_block"`` -> ``pos_block.0.proj.weight``; timm itself only matches names/patterns);
    * ``model.no_weight_decay_keywords()`` (Swin/Microsoft repos): substrings of parameter names;
    * a tensor attribute ``_no_weight_decay = True`` (flash-attention / mamba convention).
    """

    def __init__(self, model: nn.Module) -> None:
        self.names: set[str] = set()
        self.patterns: list[str] = []
        self.keywords: list[str] = []
        fn = getattr(model, "no_weight_decay", None)
        if callable(fn):
            entries = [str(n) for n in fn()]
            self.names = set(entries)
            self.patterns = [n for n in entries if any(c in n for c in "*?[")]
        fn = getattr(model, "no_weight_decay_keywords", None)
        if callable(fn):
            self.keywords = [str(k) for k in fn() if str(k)]

    def any_of(self, names: Iterable[str], p: torch.Tensor) -> bool:
        """Whether tensor ``p``, or any of its dotted ``names``, is declared no-decay."""
        if getattr(p, "_no_weight_decay", False) is True:
            return True
        if not (self.names or self.keywords):  # patterns are a subset of names
            return False
        return any(self._named(dotted) for dotted in names)

    def _named(self, dotted: str) -> bool:
        if dotted in self.names or any(fnmatch.fnmatch(dotted, pat) for pat in self.patterns):
            return True
        parts = dotted.split(".")
        if any(".".join(parts[:i]) in self.names for i in range(1, len(parts))):
            return True
        return any(k in dotted for k in self.keywords)


def _owner_info(module: nn.Module, leaf: str, owner: str, memo: _Memo) -> tuple[str, str, str, str]:
    """``(layer, role, module_type, source)`` of parameter ``leaf`` owned by ``module``, whose
    attribute name (last segment of its module path) is ``owner``."""
    module_type = memo.qualified_name(type(module))
    fixed = _class_role(module, leaf)
    if fixed is not None:
        return *fixed, module_type, "type"
    found = module_kind(module, memo)
    if found is None:
        return "other", memo.role("other", leaf, owner), module_type, "shape"
    kind, source = found
    return kind, memo.role(kind, leaf, owner), module_type, source


def _best(candidates: list[tuple[str, str, str, str]]) -> tuple[str, str, str, str]:
    """A tied parameter's owner: a known kind first, most trusted source, a norm, an embedding (a matrix tied
    between an input embedding and an output projection is an embedding table), then the first owner."""
    def key(c: tuple[str, str, str, str]) -> tuple[bool, int, bool, bool]:
        return c[0] == "other", SOURCES.index(c[3]), not c[0].startswith("norm."), c[0] != "embedding"

    return min(candidates, key=key)


def iter_params(model: nn.Module, *, include_frozen: bool,
                graph: Trace | None = None,
                ) -> Iterator[tuple[str, nn.Parameter, ParamInfo]]:
    """``(name, tensor, info)`` for each parameter of the unwrapped ``model`` in ``named_parameters()`` order.

    With a ``graph`` (a traced forward pass), a parameter the pass used gets its role (and, where the
    class says nothing, its layer kind) from ``wdmask._usage.classify`` and ``source="graph"``.
    """
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    called = {canonical_path(n) if n else (): k for k, n in enumerate(graph.order)} if graph is not None else None
    names: dict[int, list[str]] = {}  # every dotted name of each tensor, first (canonical) first
    tensors: dict[int, tuple[str, nn.Parameter]] = {}  # first name (as `named_parameters()` gives it) and tensor
    for mname, module in model.named_modules(remove_duplicate=False):
        for leaf, p in module._parameters.items():
            if p is not None:
                key = id(p)
                name = f"{mname}.{leaf}" if mname else leaf
                if key in owners:
                    owners[key].append((module, leaf))
                    names[key].append(canonical_name(name))
                else:
                    owners[key] = [(module, leaf)]
                    names[key] = [canonical_name(name)]
                    tensors[key] = (name, p)
    declared_by = Declared(model)
    memo = _Memo()
    owner_cache: dict[tuple[type, str, str], tuple[str, str, str, str]] = {}
    # The first occurrence of each tensor in this walk is where `named_parameters()` yields it, under the name
    # seen there (its module walk is this one with repeated subtrees left out, and it skips tensors already
    # seen): one walk gives both, unless the model overrides how torch lists its parameters.
    if _lists_like_torch(model):
        order: Iterable[tuple[str, nn.Parameter]] = tensors.values()
    else:
        order = model.named_parameters()
    parameter = nn.Parameter
    uninitialized = nn.parameter.UninitializedParameter
    for name, p in order:
        if not (p.requires_grad or include_frozen):
            continue
        dotted = canonical_name(name)
        if type(p) is not parameter and isinstance(p, uninitialized):
            raise ValueError(
                f"parameter {dotted!r} of lazy module {type(_owner(owners, p)).__name__} is not initialized yet; "
                "run one forward pass first (e.g. `model(example_input)`), or pass `example_inputs=` so describe "
                "runs it")
        key = id(p)
        all_names = names[key]
        mine = owners[key]
        if len(mine) == 1:
            module, leaf = mine[0]
            cls = type(module)
            owner = all_names[0].rpartition(".")[0].rpartition(".")[2]
            cached = owner_cache.get((cls, leaf, owner))
            if cached is None:
                cached = _owner_info(module, leaf, owner, memo)
                if memo.class_kind(cls) is not None:  # then the answer depends only on (class, leaf, owner)
                    owner_cache[(cls, leaf, owner)] = cached
            layer, role, module_type, source = cached
            aliases: tuple[str, ...] = ()
        else:
            candidates = [_owner_info(m, leaf, n.split(".")[-2] if n.count(".") else "", memo)
                          for (m, leaf), n in zip(mine, all_names, strict=True)]
            layer, role, module_type, source = _best(candidates)
            aliases = tuple(dict.fromkeys(n for n in all_names if n != dotted))
        uses = None
        if graph is not None:
            uses = graph.uses.get(key, ()) or ((Use("unused"),) if key not in graph.touched else ())
        feeds_norm = None if graph is None else graph.feeds.get(key, False)
        declared = "no_decay" if declared_by.any_of((dotted, *all_names), p) else ""
        path = tuple(dotted.split("."))
        info = param_info(path, tuple(p.shape), memo.dtype_name(p.dtype), layer=layer, role=role, source=source,
                          feeds_norm=feeds_norm, module_type=module_type, declared=declared, aliases=aliases,
                          uses=uses, call_index=owner_index(path, called) if called is not None else None)
        yield name, p, info


def _lists_like_torch(model: nn.Module) -> bool:
    """Whether ``model.named_parameters()`` is torch's own (so ``iter_params`` may derive it from its module walk)."""
    cls = type(model)
    return (cls.named_parameters is nn.Module.named_parameters and cls._named_members is nn.Module._named_members
            and cls.named_modules is nn.Module.named_modules)


def _owner(owners: dict[int, list[tuple[nn.Module, str]]], p: torch.Tensor) -> nn.Module:
    return owners[id(p)][0][0]


def inventory(model: Any, example_inputs: Any = None, *, include_frozen: bool = False,
              fn: str = "describe") -> list[tuple[str, nn.Parameter, ParamInfo]]:
    """``describe`` plus each parameter's original name and tensor (for building groups)."""
    from wdmask_torch._usage import trace

    check_bool(include_frozen, "include_frozen", where=f"wdmask_torch.{fn}: ")
    inner = check_model(model, fn)
    graph = None
    if example_inputs is not None:
        memo = _Memo()
        norms = [m for m in inner.modules() if (k := module_kind(m, memo)) is not None and k[0].startswith("norm.")]
        graph = trace(inner, example_inputs, params=list(inner.parameters()), norms=norms)
    # With a trace, depths come from structure and the traced call order, over every parameter (frozen ones
    # too: a block's depth does not change when it is frozen, as in MAE/timm layer ids).
    out = list(iter_params(inner, include_frozen=include_frozen or graph is not None, graph=graph))
    if graph is not None:
        infos = traced_depths([info for _, _, info in out])
        out = [(name, p, info) for (name, p, _), info in zip(out, infos, strict=True)
               if include_frozen or p.requires_grad]
        note_positions(graph.positions, [info.dotted for _, p, info in out if id(p) in graph.guessed])
    return out


def describe(model: nn.Module, example_inputs: Any = None, *, include_frozen: bool = False) -> list[ParamInfo]:
    """Describe every trainable parameter of a torch model for the rule engine.

    Args:
      model: An ``nn.Module``, possibly wrapped by ``torch.compile``, ``DataParallel``,
        ``DistributedDataParallel`` or FSDP.
      example_inputs: Optional inputs for one forward pass (a tuple is unpacked into positional
        arguments, a dict into keyword arguments, anything else is the single argument; meta tensors
        for a meta-device model). The pass records how each parameter is consumed (its role then
        comes from usage, ``source="graph"``), detects ``feeds_norm`` and orders the modules: ``depth`` is
        filled from the repeated blocks and that call order (``presets.layer_decay``, ``in_block``), so
        ``groups``/``audit``/``infer_rules`` given this inventory run nothing again. ``None``: nothing runs,
        roles come from classes and names, ``feeds_norm`` and ``depth`` are ``None``.
      include_frozen: Also describe parameters with ``requires_grad=False``.

    Returns:
      One ``ParamInfo`` per parameter in ``named_parameters()`` order; tied parameters once.

    Raises:
      TypeError: ``model`` is not an ``nn.Module``; ``include_frozen`` is not a bool.
      ValueError: a lazy module has not been initialized (run one forward pass first).

    Examples:
      >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8))
      >>> [(i.dotted, i.layer, i.role, i.feeds_norm) for i in describe(net, torch.zeros(1, 3, 8, 8))]
      [('0.weight', 'conv', 'kernel', True), ('1.weight', 'norm.batch', 'scale', False), ('1.bias', 'norm.batch', 'bias', False)]
      >>> [(i.dotted, i.source, i.usage) for i in describe(net, torch.zeros(1, 3, 8, 8))][:2]
      [('0.weight', 'graph', ('contract',)), ('1.weight', 'graph', ('norm_scale',))]
    """  # noqa: E501
    return [info for _, _, info in inventory(model, example_inputs, include_frozen=include_frozen)]
