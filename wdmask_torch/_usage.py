r"""Roles from usage in torch: how one forward pass consumes each parameter.

A ``TorchFunctionMode`` sees every top-level torch op of one forward pass (a fused op such as
``F.layer_norm`` or ``F.multi_head_attention_forward`` is one op: what it does inside is not
traced). It knows which tensors are parameters and keeps three kinds of tags:

* **derived** values: a parameter followed through ops that only re-express it (views, reshapes,
  ``expand``/``repeat``, dtype casts, ``clone``/``detach``, slicing, reductions, products and sums
  with constants or other parameters, ``F.normalize``/``F.interpolate``/``F.pad``, and a norm
  applied to the parameter itself: weight standardization). Indexing a parameter with a tensor is
  a *gather*: the value stays derived and remembers whether the index came from the inputs;
* **data**: anything computed from the example inputs (activations, token ids);
* **positions**: integer tensors computed by ``cumsum`` from the inputs (RoBERTa / OPT position ids
  counted along an attention mask); ``arange``, buffers and other constants carry no tag at all.

The first op that combines a derived value with activations (or consumes it as an operand) is
recorded, per parameter, as a ``wdmask._usage.Use``; ``wdmask._usage.classify`` (the one table both
frameworks share) turns the uses into a layer kind and a role:

=====================================================  =========================================
op (argument)                                          usage
=====================================================  =========================================
``F.linear``/``conv*``/``bilinear`` weight, matmul,    ``contract`` (hint ``conv`` for convs)
mm, bmm, einsum (a summed index), ``addmm`` matrices,
``F.multi_head_attention_forward`` projections,
the matrices of ``_VF.lstm/gru/rnn_*`` flat weights
``F.linear``/``conv`` input, MHA query/key/value,      ``concat`` (a learned token, latent, probe)
``cat``/``stack``/``where`` with activations
``F.embedding`` table, a gathered value               ``gather_data`` (index from the inputs) or
                                                       ``gather_pos`` (arange, buffer, positions)
a value added to activations                           ``add``, or ``gather_pos`` when the
                                                       parameter has >= 2 non-singleton axes (a
                                                       (1, L, D) table added whole) or was gathered
                                                       by a constant index (a relative bias table)
bias slots (linear, conv, ``addmm``, MHA, RNN          ``add``
vectors), ``maximum``/``clamp`` with activations
a value multiplied or divided with activations,        ``mul``
``F.prelu`` weight, the affine of a norm applied to
a parameter (a weight-standardization gain)
fused norm weight / bias                               ``norm_scale`` / ``norm_shift`` (hint from
                                                       the op: ``F.batch_norm`` -> ``norm.batch``)
exp, log, softplus, sigmoid, tanh, softmax, ... of     ``elementwise``
the parameter itself (no activation involved)
any other op                                           no evidence (class / name evidence stays)
=====================================================  =========================================

A parameter no op consumed has the usage ``unused`` and keeps its class/name evidence.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from wdmask._usage import Use
from wdmask_torch._feeds_norm import NEUTRAL_OPS, VIEW_OPS, _op_name, _Tracker, run

__all__ = ["Trace", "trace"]

DATA, POSITION = 1, 2  # taints of non-parameter tensors
_NO_GATHER, _GATHER_DATA, _GATHER_POS = 0, 1, 2

# ----------------------------------------------------------------------------------- op categories (by name)
#: Re-expressions of their first argument: the other tensor arguments are templates (``view_as``, ``to``).
DERIVE_OPS = VIEW_OPS | frozenset({
    "expand", "expand_as", "repeat", "tile", "broadcast_to", "to", "type", "type_as", "float", "half", "double",
    "bfloat16", "clone", "detach", "data", "narrow", "select", "chunk", "split", "unbind", "tensor_split",
    "split_with_sizes", "flip", "roll", "rot90", "tril", "triu", "diag", "diagonal", "diag_embed", "sum", "mean",
    "norm", "linalg_vector_norm", "interpolate", "pad", "normalize", "as_strided", "unfold", "neg", "negative",
    "__neg__", "__pos__", "positive", "real", "repeat_interleave", "__get__", "requires_grad_", "cpu", "cuda",
})
#: Products with activations: the parameter scales them (``x * g``, ``x / temperature``).
MUL_OPS = frozenset({"mul", "__mul__", "__rmul__", "multiply", "div", "divide", "true_divide", "__truediv__",
                     "__rtruediv__", "__div__", "__rdiv__", "__imul__", "__itruediv__", "mul_", "div_"})
#: Sums with activations: the parameter shifts them.
ADD_OPS = frozenset({"add", "__add__", "__radd__", "sub", "subtract", "__sub__", "__rsub__", "rsub", "__iadd__",
                     "__isub__", "add_", "sub_"})
#: Joins with activations (learned tokens, latents, probes).
CONCAT_OPS = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack",
                        "where"})
#: Nonlinear elementwise functions: of a parameter alone ``elementwise``; with activations (a learned
#: threshold such as ``maximum(x, tau)``) ``add``.
ELEMENTWISE_OPS = frozenset({
    "exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "sigmoid", "logsigmoid", "softplus", "tanh", "sqrt",
    "rsqrt", "abs", "absolute", "clamp", "clip", "clamp_min", "clamp_max", "relu", "gelu", "silu", "elu", "softmax",
    "log_softmax", "reciprocal", "square", "pow", "__pow__", "__rpow__", "sin", "cos", "erf", "sign", "maximum",
    "minimum", "fmax", "fmin", "max", "min", "hardtanh", "leaky_relu", "softsign", "tanhshrink",
})
#: Contractions of every tensor argument.
MATMUL_OPS = frozenset({"matmul", "mm", "bmm", "mv", "dot", "vdot", "inner", "tensordot", "chain_matmul",
                        "linalg_multi_dot", "multi_dot", "__matmul__", "__rmatmul__", "kron", "outer", "ger"})
#: ``op(input, mat1, mat2)``: the input is added, the matrices contracted.
ADDMM_OPS = frozenset({"addmm", "addbmm", "baddbmm", "addmv", "addr", "addmm_", "baddbmm_"})
#: Gathers: ``(name -> position of the index argument)``.
GATHER_OPS = {"__getitem__": 1, "index_select": 2, "gather": 2, "take": 1, "take_along_dim": 1}
#: Recurrent ops whose flat weight list holds matrices (contracted) and vectors (added).
RNN_OPS = frozenset({"lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell",
                     "rnn_relu_cell"})

# Argument roles of fused ops: ``(position, keyword, what)``.
_ACT, _CONTRACT, _CONV, _ADD, _MUL, _TABLE, _SCALE, _SHIFT = "act", "contract", "conv", "add", "mul", "table", \
    "scale", "shift"
_LINEAR_SPEC = ((0, "input", _ACT), (1, "weight", _CONTRACT), (2, "bias", _ADD))
_CONV_SPEC = ((0, "input", _ACT), (1, "weight", _CONV), (2, "bias", _ADD))
_MHA_SPEC = ((0, "query", _ACT), (1, "key", _ACT), (2, "value", _ACT), (5, "in_proj_weight", _CONTRACT),
             (6, "in_proj_bias", _ADD), (7, "bias_k", _ADD), (8, "bias_v", _ADD), (11, "out_proj_weight", _CONTRACT),
             (12, "out_proj_bias", _ADD), (18, "q_proj_weight", _CONTRACT), (19, "k_proj_weight", _CONTRACT),
             (20, "v_proj_weight", _CONTRACT))
_NATIVE_MHA_SPEC = ((0, "query", _ACT), (1, "key", _ACT), (2, "value", _ACT), (5, "qkv_weight", _CONTRACT),
                    (6, "qkv_bias", _ADD), (7, "proj_weight", _CONTRACT), (8, "proj_bias", _ADD))


@dataclasses.dataclass(frozen=True)
class _Fused:
    """A fused op: argument roles, the layer kind it implies, and its normalized input (norm ops)."""

    spec: tuple[tuple[int, str, str], ...]
    hint: str = ""
    norm_input: bool = False


def _norm(weight: int, bias: int | None, hint: str) -> _Fused:
    spec = [(0, "input", _ACT), (weight, "weight", _SCALE)]
    if bias is not None:
        spec.append((bias, "bias", _SHIFT))
    return _Fused(tuple(spec), hint, norm_input=True)


def _fused_table() -> dict[Any, _Fused]:
    conv = {getattr(torch, n): _Fused(_CONV_SPEC, "conv") for n in (
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")}
    table: dict[Any, _Fused] = {
        F.linear: _Fused(_LINEAR_SPEC, "linear"),
        torch.bilinear: _Fused(((0, "input1", _ACT), (1, "input2", _ACT), (2, "weight", _CONTRACT),
                                (3, "bias", _ADD)), "linear"),
        F.bilinear: _Fused(((0, "input1", _ACT), (1, "input2", _ACT), (2, "weight", _CONTRACT),
                            (3, "bias", _ADD)), "linear"),
        F.embedding: _Fused(((1, "weight", _TABLE),), "embedding"),
        F.embedding_bag: _Fused(((1, "weight", _TABLE),), "embedding"),
        F.prelu: _Fused(((0, "input", _ACT), (1, "weight", _MUL))),
        F.multi_head_attention_forward: _Fused(_MHA_SPEC, "linear"),
        F.layer_norm: _norm(2, 3, "norm.layer"),
        torch.layer_norm: _norm(2, 3, "norm.layer"),
        F.group_norm: _norm(2, 3, "norm.group"),
        torch.group_norm: _norm(2, 3, "norm.group"),
        F.batch_norm: _norm(3, 4, "norm.batch"),
        torch.batch_norm: _norm(1, 2, "norm.batch"),
        F.instance_norm: _norm(3, 4, "norm.instance"),
        torch.instance_norm: _norm(1, 2, "norm.instance"),
        **conv,
    }
    for name in ("rms_norm",):
        for owner in (F, torch):
            fn = getattr(owner, name, None)
            if fn is not None:
                table[fn] = _norm(2, None, "norm.rms")
    native = getattr(torch, "_native_multi_head_attention", None)
    if native is not None:
        table[native] = _Fused(_NATIVE_MHA_SPEC, "linear")
    return table


_FUSED = _fused_table()
_NEUTRAL, _DERIVE, _MULCAT, _ADDCAT, _CONCAT, _ELEMENTWISE, _MATMUL, _ADDMM, _GATHER, _RNN, _EINSUM, _FUSEDCAT, \
    _CUMSUM, _OTHER = range(14)


def _category(func: Callable[..., Any]) -> tuple[int, Any, str]:
    """``(category, detail, name)`` of a torch function, computed once per function object."""
    name = _op_name(func)
    try:
        fused = _FUSED.get(func)
    except TypeError:  # an unhashable callable
        fused = None
    if fused is not None:
        return _FUSEDCAT, fused, name
    if name in NEUTRAL_OPS:
        return _NEUTRAL, None, name
    if name in GATHER_OPS:
        return _GATHER, GATHER_OPS[name], name
    for names, cat in ((DERIVE_OPS, _DERIVE), (MUL_OPS, _MULCAT), (ADD_OPS, _ADDCAT), (CONCAT_OPS, _CONCAT),
                       (ELEMENTWISE_OPS, _ELEMENTWISE), (MATMUL_OPS, _MATMUL), (ADDMM_OPS, _ADDMM),
                       (RNN_OPS, _RNN)):
        if name in names:
            return cat, None, name
    if name == "einsum":
        return _EINSUM, None, name
    if name in ("cumsum", "cumsum_"):
        return _CUMSUM, None, name
    return _OTHER, None, name


# ----------------------------------------------------------------------------------- helpers


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors in an argument: itself, or inside (nested) lists / tuples / dict values."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _arg(args: Sequence[Any], kwargs: dict[str, Any], pos: int, key: str) -> Any:
    return args[pos] if pos < len(args) else kwargs.get(key)


def einsum_contracted(equation: str, n: int) -> list[bool]:
    """Per operand of ``torch.einsum(equation, ...)``: is one of its indices summed over?

    Example:
      >>> einsum_contracted("bd,d->bd", 2), einsum_contracted("ecd,edh->ech", 2), einsum_contracted("ij,jk", 2)
      ([False, False], [True, True], [True, True])
    """
    eq = equation.replace(" ", "").replace("...", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:
        counts = Counter("".join(terms))
        rhs = "".join(c for c in sorted(counts) if counts[c] == 1)
    out = [any(c not in rhs for c in term) for term in terms]
    return (out + [True] * n)[:n]


@dataclasses.dataclass(frozen=True)
class _Derived:
    origins: tuple[int, ...]
    gather: int = _NO_GATHER


@dataclasses.dataclass
class Trace:
    """What one traced forward pass found: each parameter's uses (by ``id`` of the tensor) and the
    producers' ``feeds_norm``."""

    uses: dict[int, tuple[Use, ...]]
    touched: set[int]
    feeds: dict[nn.Module, bool | None]


class _UsageTracker(_Tracker):
    """The feeds_norm tracker plus usage recording, in one ``TorchFunctionMode``."""

    def __init__(self, params: Sequence[torch.Tensor], follow_feeds: bool) -> None:
        super().__init__()
        self.params = list(params)
        self.follow_feeds = follow_feeds
        self.derived: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.taint: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.uses: list[set[Use]] = [set() for _ in self.params]
        self.touched: set[int] = set()
        self.categories: dict[Any, tuple[int, Any, str]] = {}

    def start(self, inputs: Any) -> None:
        for i, p in enumerate(self.params):
            self.derived[p] = _Derived((i,))
        for t in _tensors(inputs):
            if t not in self.derived:
                self.taint[t] = DATA

    # --------------------------------------------------------------------------- recording
    def _nonsingleton(self, i: int) -> int:
        return sum(d != 1 for d in self.params[i].shape)

    def record(self, d: _Derived, usage: str, hint: str = "") -> None:
        """Record ``usage`` for every origin of derived value ``d``, resolving gathers and whole tables."""
        for i in d.origins:
            self.touched.add(i)
            u = usage
            if usage != "contract":
                if d.gather == _GATHER_DATA:
                    u, hint = "gather_data", ""
                elif d.gather == _GATHER_POS and usage == "add":
                    u = "gather_pos"
                elif usage == "add" and self._nonsingleton(i) >= 2:
                    u = "gather_pos"
            self.uses[i].add(Use(u, hint))

    def opaque(self, ds: Iterable[_Derived]) -> None:
        for d in ds:
            self.touched.update(d.origins)

    def tag_data(self, result: Any, taint: int = DATA) -> None:
        for t in _tensors(result):
            if t not in self.derived:
                self.taint[t] = DATA if taint == DATA or t.dtype.is_floating_point else POSITION

    def tag_derived(self, result: Any, d: _Derived) -> None:
        for t in _tensors(result):
            self.derived[t] = d

    def taint_of(self, tensors: Iterable[torch.Tensor]) -> int:
        found = 0
        for t in tensors:
            v = self.taint.get(t)
            if v == POSITION:
                return POSITION
            if v:
                found = DATA
        return found

    # --------------------------------------------------------------------------- the mode
    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        try:
            cat, detail, name = self.categories[func]
        except (KeyError, TypeError):
            cat, detail, name = _category(func)
            try:
                self.categories[func] = (cat, detail, name)
            except TypeError:
                pass
        if cat == _NEUTRAL:
            return func(*args, **kwargs)
        leaves = list(_tensors(args))
        if kwargs:
            leaves += _tensors(kwargs)
        feeds = self.follow_feeds and len(self.tags) and not self.in_norm
        source = self.lookup(args[0]) if feeds and args else None
        result = func(*args, **kwargs)
        if feeds:
            self.feeds_after(name, source, leaves, args, result)
        if leaves:
            self.usage_after(cat, detail, name, args, kwargs, leaves, result)
        return result

    def feeds_after(self, name: str, source: Any, leaves: list[torch.Tensor], args: Any, result: Any) -> None:
        """The feeds_norm rule of ``_Tracker``: tags pass through view ops only; any other use escapes."""
        if source is not None and name in VIEW_OPS and source[1] and not any(
                self.lookup(t) for t in leaves if t is not args[0]):
            self.tag(result, source[0])
            return
        for t in leaves:
            found = self.lookup(t)
            if found is not None:
                found[0].escaped = True

    def usage_after(self, cat: int, detail: Any, name: str, args: Any, kwargs: dict[str, Any],
                    leaves: list[torch.Tensor], result: Any) -> None:
        derived = self.derived
        ds = [(t, d) for t in leaves if (d := derived.get(t)) is not None]
        if not ds:
            taint = self.taint_of(leaves)
            if taint:
                self.tag_data(result, POSITION if cat == _CUMSUM else taint)
            return
        others = [t for t in leaves if t not in derived]
        taint = self.taint_of(others)
        if cat == _DERIVE:
            first = derived.get(args[0]) if args and isinstance(args[0], torch.Tensor) else None
            if first is not None:
                self.tag_derived(result, first)
            else:  # a parameter as a template (``x.type_as(p)``, ``x.expand_as(p)``)
                taint = self.taint_of(leaves[:1])
                if taint:
                    self.tag_data(result, taint)
            return
        if cat == _GATHER:
            self.gather(detail, args, kwargs, result)
            return
        if cat in (_MULCAT, _ADDCAT, _CONCAT):
            if not taint:  # parameters combined with constants / each other: still a re-expression
                self.tag_derived(result, self.union([d for _, d in ds]))
                return
            usage = {_MULCAT: "mul", _ADDCAT: "add", _CONCAT: "concat"}[cat]
            for _, d in ds:
                self.record(d, usage)
        elif cat == _ELEMENTWISE:
            for _, d in ds:
                self.record(d, "add" if taint else "elementwise")
            if not taint:
                return  # a function of parameters only: a constant from here on
        elif cat == _MATMUL:
            for _, d in ds:
                self.record(d, "contract", "linear")
        elif cat == _ADDMM:
            bias = derived.get(args[0]) if args and isinstance(args[0], torch.Tensor) else None
            if bias is not None:
                self.record(bias, "add")
            for a in args[1:3]:
                d = derived.get(a) if isinstance(a, torch.Tensor) else None
                if d is not None:
                    self.record(d, "contract", "linear")
        elif cat == _RNN:
            for t, d in ds:
                self.record(d, "contract" if t.dim() >= 2 else "add", "linear")
        elif cat == _EINSUM:
            self.einsum(args, ds, taint)
        elif cat == _FUSEDCAT:
            if self.fused(detail, args, kwargs, ds, result):
                return
        else:
            self.opaque(d for _, d in ds)
        self.tag_data(result)

    def union(self, ds: Sequence[_Derived]) -> _Derived:
        origins = tuple(dict.fromkeys(i for d in ds for i in d.origins))
        return _Derived(origins, max(d.gather for d in ds))

    def gather(self, index_pos: int, args: Any, kwargs: dict[str, Any], result: Any) -> None:
        table = self.derived.get(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        if table is None:  # a parameter used as an index: no evidence
            self.opaque(d for t in _tensors((args[1:], kwargs)) if (d := self.derived.get(t)) is not None)
            self.tag_data(result, self.taint_of(_tensors(args[:1])) or DATA)
            return
        index = _arg(args, kwargs, index_pos, "index")
        index_tensors = list(_tensors(index))
        if index_tensors:
            gather = _GATHER_DATA if self.taint_of(index_tensors) == DATA else _GATHER_POS
        elif isinstance(index, list) or (isinstance(index, tuple) and any(isinstance(i, list) for i in index)):
            gather = _GATHER_POS  # a list of constant ints
        else:
            gather = table.gather  # slices / ints / None: a view
        self.tag_derived(result, _Derived(table.origins, max(gather, table.gather)))

    def einsum(self, args: Any, ds: list[tuple[torch.Tensor, _Derived]], taint: int) -> None:
        if not args or not isinstance(args[0], str):
            for _, d in ds:
                self.record(d, "contract", "linear")
            return
        operands = list(args[1:])
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        contracted = einsum_contracted(args[0], len(operands))
        for op, summed in zip(operands, contracted, strict=False):
            d = self.derived.get(op) if isinstance(op, torch.Tensor) else None
            if d is not None:
                self.record(d, "contract" if summed else "mul", "linear" if summed else "")

    def fused(self, op: _Fused, args: Any, kwargs: dict[str, Any], ds: list[tuple[torch.Tensor, _Derived]],
              result: Any) -> bool:
        """Record a fused op's parameter arguments; True when its output is itself a derived value
        (a norm applied to a parameter: weight standardization)."""
        derived = self.derived
        seen: set[int] = set()
        standardized = None
        if op.norm_input:
            x = _arg(args, kwargs, 0, "input")
            standardized = derived.get(x) if isinstance(x, torch.Tensor) else None
            if standardized is not None and self.taint_of(_tensors((args, kwargs))):
                standardized = None
        table_index = None
        for pos, key, what in op.spec:
            value = _arg(args, kwargs, pos, key)
            for t in _tensors(value):
                seen.add(id(t))
                d = derived.get(t)
                if d is None:
                    continue
                if what == _ACT:
                    if standardized is None:
                        self.record(d, "concat")
                elif what in (_CONTRACT, _CONV):
                    self.record(d, "contract", op.hint)
                elif what == _ADD:
                    self.record(d, "add")
                elif what == _MUL:
                    self.record(d, "mul")
                elif what in (_SCALE, _SHIFT):
                    if standardized is not None:  # the affine of a normalized parameter: its gain / shift
                        self.record(d, "mul" if what == _SCALE else "add")
                    else:
                        self.record(d, "norm_scale" if what == _SCALE else "norm_shift", op.hint)
                elif what == _TABLE:
                    if table_index is None:
                        idx = _arg(args, kwargs, 0, "input")
                        table_index = self.taint_of(_tensors(idx))
                    hint = op.hint
                    self.record(dataclasses.replace(d, gather=_NO_GATHER),
                                "gather_data" if table_index == DATA else "gather_pos", hint)
        self.opaque(d for t, d in ds if id(t) not in seen)
        if standardized is not None:
            self.tag_derived(result, standardized)
            return True
        return False


def trace(model: nn.Module, example_inputs: Any, *, params: Sequence[torch.Tensor],
          producers: Sequence[nn.Module] = (), norms: Sequence[nn.Module] = ()) -> Trace:
    """Run ``model`` once on ``example_inputs``, recording how each of ``params`` is used (and feeds_norm).

    Runs like ``detect_feeds_norm`` (eval, no grad, forked RNG, hooks removed and flags restored in
    ``finally``); on a meta-device model with meta inputs no parameter memory is touched.

    Args:
      model: The unwrapped module.
      example_inputs: A tuple (positional arguments), a dict (keyword arguments) or one argument.
      params: The parameters to follow (each distinct tensor once).
      producers: Conv/linear modules whose ``feeds_norm`` is detected in the same pass.
      norms: Norm modules (feeds_norm targets).
    Returns:
      A ``Trace``: ``uses`` maps ``id(param)`` to its uses (empty for a parameter no op consumed).
    Examples:
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> t = trace(net, torch.zeros(1, 4), params=list(net.parameters()))
      >>> [sorted(u.usage for u in t.uses[id(p)]) for p in net.parameters()]
      [['contract'], ['add'], ['norm_scale'], ['norm_shift']]
    """
    tracker = _UsageTracker(params, follow_feeds=bool(producers))
    feeds = run(model, example_inputs, tracker, producers=producers, norms=norms,
                before=lambda: tracker.start(example_inputs))
    uses = {id(p): tuple(sorted(tracker.uses[i])) for i, p in enumerate(tracker.params)}
    touched = {id(tracker.params[i]) for i in tracker.touched}
    return Trace(uses, touched, feeds)
