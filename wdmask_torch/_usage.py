r"""Roles from usage in torch: the ``TorchFunctionMode`` that maps torch ops to families and facts.

A ``TorchFunctionMode`` sees every top-level torch op of one forward pass (a fused op such as
``F.layer_norm`` or ``F.multi_head_attention_forward`` is one op: what it does inside is not
traced). It answers two questions only -- *what is this op* (a family of ``wdmask._usage.FAMILIES``,
with argument slots for fused ops) and *what are the facts about its operands* -- and
``wdmask._usage.resolve`` (the one resolver both frameworks share) decides the use; see the table
in ``wdmask._usage``. The same mode follows each conv/linear output for ``feeds_norm``
(``wdmask._usage.feeds_step``).

What the mode keeps per tensor (weakly, by identity):

* **derived** values: the parameters each value still *is* (after ops ``resolve`` follows through),
  whether each went through a nonlinear function, and whether the value was broadcast to a batch axis;
* **data**: anything computed from the example inputs (activations, token ids) and **positions**:
  integer tensors counted by ``cumsum`` from the inputs (RoBERTa position ids) or an integer input that
  is ``arange`` along its last axis (``wdmask._usage.wdmask._usage.read_positions``); ``arange``, buffers and other
  constants carry no tag;
* whether an activation comes straight out of a contraction (a bias of that layer), and whether it was
  just normalized by its own statistics (``x * rsqrt(var + eps)``, ``x / sqrt(mean(x**2) + eps)``).
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

from wdmask._usage import FOLLOW, Facts, Use, feeds_step, feeds_verdict, follow_nonlinear, read_positions, resolve
from wdmask_torch._feeds_norm import NEUTRAL_OPS, VIEW_OPS, _op_name, _Tracker, run

__all__ = ["Trace", "trace"]

DATA, POSITION = 1, 2  # taints of non-parameter tensors

# ----------------------------------------------------------------------------------- op -> family (by name)
_SHAPE_ONLY = VIEW_OPS | frozenset({
    "expand", "expand_as", "repeat", "tile", "broadcast_to", "to", "type", "type_as", "float", "half", "double",
    "bfloat16", "clone", "detach", "data", "narrow", "select", "chunk", "split", "unbind", "tensor_split",
    "split_with_sizes", "flip", "roll", "rot90", "tril", "triu", "diag", "diagonal", "diag_embed", "interpolate",
    "pad", "as_strided", "unfold", "neg", "negative", "__neg__", "__pos__", "positive", "real", "repeat_interleave",
    "__get__", "requires_grad_", "cpu", "cuda",
})
#: Ops whose result does not depend on their argument's values (a template): neither a use nor a value.
_TEMPLATE = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
                       "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"})
_NAMES: dict[str, str] = {
    **dict.fromkeys(_SHAPE_ONLY, "shape_only"),
    **dict.fromkeys(("sum", "mean", "cumsum", "cumsum_", "nansum"), "reduce"),
    **dict.fromkeys(("mul", "__mul__", "__rmul__", "multiply", "div", "divide", "true_divide", "__truediv__",
                     "__rtruediv__", "__div__", "__rdiv__", "__imul__", "__itruediv__", "mul_", "div_"), "mul"),
    **dict.fromkeys(("add", "__add__", "__radd__", "sub", "subtract", "__sub__", "__rsub__", "rsub", "__iadd__",
                     "__isub__", "add_", "sub_"), "add"),
    **dict.fromkeys(("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack",
                     "where", "index_put", "index_put_", "scatter", "scatter_", "masked_scatter", "__setitem__",
                     "masked_scatter_"), "insert"),
    **dict.fromkeys(("maximum", "minimum", "fmax", "fmin", "max", "min", "clamp", "clip", "clamp_min",
                     "clamp_max"), "compare"),
    **dict.fromkeys((
        "exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "sigmoid", "logsigmoid", "softplus", "tanh",
        "sqrt", "rsqrt", "abs", "absolute", "relu", "gelu", "silu", "elu", "softmax", "log_softmax", "reciprocal",
        "square", "pow", "__pow__", "__rpow__", "sin", "cos", "erf", "sign", "hardtanh", "leaky_relu", "softsign",
        "tanhshrink", "norm", "linalg_vector_norm", "normalize", "var", "std"), "nonlinear"),
    **dict.fromkeys(("matmul", "mm", "bmm", "mv", "dot", "vdot", "inner", "tensordot", "chain_matmul",
                     "linalg_multi_dot", "multi_dot", "__matmul__", "__rmatmul__", "kron", "outer", "ger"),
                    "contract"),
    **dict.fromkeys(("__getitem__", "index_select", "gather", "take", "take_along_dim"), "gather"),
}
_GATHER_INDEX = {"__getitem__": 1, "index_select": 2, "gather": 2, "take": 1, "take_along_dim": 1}
_ADDMM = frozenset({"addmm", "addbmm", "baddbmm", "addmv", "addr", "addmm_", "baddbmm_"})
_RNN = frozenset({"lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"})
_REDUCES = frozenset({"sum", "mean", "nansum"})

# Argument slots of fused ops: ``(position, keyword, family, slot)``.
_IN = "input"
_INNER = "inner"  # a kernel / bias of a fused op whose output another kernel produces (MHA's in-projection)
_LINEAR_SPEC = ((0, "input", "contract", _IN), (1, "weight", "contract", "kernel"), (2, "bias", "add", "bias"))
_MHA_SPEC = ((0, "query", "contract", _IN), (1, "key", "contract", _IN), (2, "value", "contract", _IN),
             (5, "in_proj_weight", "contract", _INNER), (6, "in_proj_bias", "add", _INNER),
             (7, "bias_k", "add", _INNER), (8, "bias_v", "add", _INNER),
             (11, "out_proj_weight", "contract", "kernel"), (12, "out_proj_bias", "add", "bias"),
             (18, "q_proj_weight", "contract", _INNER), (19, "k_proj_weight", "contract", _INNER),
             (20, "v_proj_weight", "contract", _INNER))
_NATIVE_MHA_SPEC = ((0, "query", "contract", _IN), (1, "key", "contract", _IN), (2, "value", "contract", _IN),
                    (5, "qkv_weight", "contract", _INNER), (6, "qkv_bias", "add", _INNER),
                    (7, "proj_weight", "contract", "kernel"), (8, "proj_bias", "add", "bias"))
_BILINEAR_SPEC = ((0, "input1", "contract", _IN), (1, "input2", "contract", _IN),
                  (2, "weight", "contract", "kernel"), (3, "bias", "add", "bias"))


@dataclasses.dataclass(frozen=True)
class _Fused:
    """A fused op: argument slots and the layer kind it implies; ``norm``: a normalization (slot 0 its input)."""

    spec: tuple[tuple[int, str, str, str], ...]
    hint: str = ""
    norm: bool = False


def _norm(weight: int, bias: int | None, hint: str) -> _Fused:
    spec = [(0, "input", "normalize", _IN), (weight, "weight", "normalize", "scale")]
    if bias is not None:
        spec.append((bias, "bias", "normalize", "shift"))
    return _Fused(tuple(spec), hint, norm=True)


def _fused_table() -> dict[Any, _Fused]:
    conv = _Fused(tuple((p, k, f, s) for p, k, f, s in _LINEAR_SPEC), "conv")
    table: dict[Any, _Fused] = {getattr(torch, n): conv for n in (
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")}
    table.update({
        F.linear: _Fused(_LINEAR_SPEC, "linear"),
        torch.bilinear: _Fused(_BILINEAR_SPEC, "linear"),
        F.bilinear: _Fused(_BILINEAR_SPEC, "linear"),
        F.embedding: _Fused(((1, "weight", "gather", ""),), "embedding"),
        F.embedding_bag: _Fused(((1, "weight", "gather", ""),), "embedding"),
        F.prelu: _Fused(((0, "input", "mul", _IN), (1, "weight", "mul", ""))),
        F.multi_head_attention_forward: _Fused(_MHA_SPEC, "linear"),
        F.layer_norm: _norm(2, 3, "norm.layer"),
        torch.layer_norm: _norm(2, 3, "norm.layer"),
        F.group_norm: _norm(2, 3, "norm.group"),
        torch.group_norm: _norm(2, 3, "norm.group"),
        F.batch_norm: _norm(3, 4, "norm.batch"),
        torch.batch_norm: _norm(1, 2, "norm.batch"),
        F.instance_norm: _norm(3, 4, "norm.instance"),
        torch.instance_norm: _norm(1, 2, "norm.instance"),
    })
    for owner in (F, torch):
        fn = getattr(owner, "rms_norm", None)
        if fn is not None:
            table[fn] = _norm(2, None, "norm.rms")
    native = getattr(torch, "_native_multi_head_attention", None)
    if native is not None:
        table[native] = _Fused(_NATIVE_MHA_SPEC, "linear")
    return table


_FUSED = _fused_table()


def _kind(func: Callable[..., Any]) -> tuple[str, Any, str]:
    """``(kind, fused spec or None, name)`` of a torch function, computed once per function object; ``kind``
    is a family, ``"fused"``, ``"einsum"``, ``"addmm"``, ``"rnn"``, ``"neutral"`` or ``"template"``."""
    name = _op_name(func)
    try:
        fused = _FUSED.get(func)
    except TypeError:  # an unhashable callable
        fused = None
    if fused is not None:
        return "fused", fused, name
    if name in NEUTRAL_OPS:
        return "neutral", None, name
    if name in _TEMPLATE:
        return "template", None, name
    if name == "einsum":
        return "einsum", None, name
    if name in _ADDMM:
        return "addmm", None, name
    if name in _RNN:
        return "rnn", None, name
    return _NAMES.get(name, "unknown"), None, name


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

    Examples:
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


def _grows(before: torch.Size, after: Any) -> bool:
    """A broadcast to a batch: some axis of ``after`` (right-aligned) has size > 1 where ``before`` has 1 or none."""
    if not isinstance(after, torch.Tensor):
        return False
    out = tuple(after.shape)
    src = (1,) * (len(out) - len(before)) + tuple(before)
    return len(src) == len(out) and any(o > 1 and s == 1 for s, o in zip(src, out, strict=True))


@dataclasses.dataclass(frozen=True)
class _Derived:
    """A value that still *is* some parameters: ``origins`` = ``(param index, went through a nonlinearity)``."""

    origins: tuple[tuple[int, bool], ...]
    broadcast: bool = False
    gathered: bool = False


@dataclasses.dataclass
class Trace:
    """What one traced forward pass found: each parameter's uses (by ``id`` of the tensor), the
    ``feeds_norm`` of each (``id``), which example inputs were read as position ids, and the module call order."""

    uses: dict[int, tuple[Use, ...]]
    touched: set[int]
    feeds: dict[int, bool]
    positions: tuple[str, ...] = ()
    guessed: set[int] = dataclasses.field(default_factory=set)
    #: ``named_modules()`` names (``""``: the root) in the order each module's ``forward`` first ran.
    order: tuple[str, ...] = ()


@dataclasses.dataclass
class _FeedCall:
    """One call of a producer (the contraction its kernel / bias parameters make): did its output reach a norm,
    did it escape elsewhere (the norm modules' pre-hooks of ``_feeds_norm.run`` set ``reached`` too)."""

    params: set[int]
    reached: bool = False
    escaped: bool = False


@dataclasses.dataclass
class _Pending:
    """A product with activations whose use depends on whether it is then summed over one of p's axes."""

    param: int
    facts: Facts
    own: frozenset[int]


_DIVS = frozenset({"div", "divide", "true_divide", "__truediv__", "__div__", "__itruediv__", "div_"})
_BROADCASTS = frozenset({"expand", "expand_as", "repeat", "tile", "broadcast_to", "repeat_interleave"})
_CASTS = frozenset({"to", "float", "half", "double", "bfloat16", "type", "type_as"})


class _UsageTracker(_Tracker):
    """Families and facts of every op of one forward pass (usage and feeds_norm), in one ``TorchFunctionMode``."""

    def __init__(self, params: Sequence[torch.Tensor], follow_feeds: bool) -> None:
        super().__init__()
        self.params = list(params)
        self.param_ids = {id(p) for p in self.params}
        self.follow_feeds = follow_feeds
        self.derived: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.taint: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.contracted: WeakIdKeyDictionary = WeakIdKeyDictionary()  # straight out of a bias-free contraction
        self.normed: WeakIdKeyDictionary = WeakIdKeyDictionary()  # level (0: rsqrt(var)); -1: sqrt of an activation
        self.pending: dict[int, tuple[torch.Tensor, list[_Pending]]] = {}  # id(product) -> (product, pending)
        self.uses: list[set[Use]] = [set() for _ in self.params]
        self.touched: set[int] = set()
        self.guessed: set[int] = set()
        self.kinds: dict[Any, tuple[str, Any, str]] = {}
        self.positions: list[str] = []
        self.abstract_ids = False
        self.produced: list[int] = []  # params of the op being processed whose layer produces its output
        self.feed_calls: list[_FeedCall] = []
        self.gathered: set[int] = set()  # params whose rows were picked by a data index

    def start(self, inputs: Any) -> None:
        for i, p in enumerate(self.params):
            self.derived[p] = _Derived(((i, False),))
        labelled = list(_labelled(inputs))
        ints = []
        for label, t in labelled:
            if t in self.derived:
                continue
            self.taint[t] = DATA
            if not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
                ints.append((label, t))
        found, self.abstract_ids = read_positions([None if t.is_meta else t.tolist() for _, t in ints])
        for k in found:
            self.taint[ints[k][1]] = POSITION
            self.positions.append(ints[k][0])

    # --------------------------------------------------------------------------- facts
    def active(self, t: torch.Tensor) -> bool:
        """An activation: computed from the inputs, or a parameter broadcast to a batch axis."""
        if t in self.taint:
            return True
        d = self.derived.get(t)
        return d is not None and d.broadcast

    def taint_of(self, tensors: Iterable[torch.Tensor]) -> int:
        found = 0
        for t in tensors:
            v = self.taint.get(t)
            if v == POSITION:
                return POSITION
            if v:
                found = DATA
        return found

    def tag_data(self, result: Any, taint: int = DATA) -> None:
        for t in _tensors(result):
            if id(t) not in self.param_ids:
                self.taint[t] = DATA if taint == DATA or t.is_floating_point() else POSITION

    def record(self, d: _Derived, f: Facts, result: Any = None, own: frozenset[int] | None = None,
               gains: set[int] | None = None) -> list[tuple[int, bool]]:
        """Resolve ``f`` for each origin of ``d``; the origins to follow (with their nonlinear state).
        ``gains``: the origins that multiply a parameter normalized by its own statistics (``normalized``)."""
        follow = []
        for i, nonlinear in d.origins:
            facts = dataclasses.replace(f, nonlinear=nonlinear, broadcast=d.broadcast, gathered=d.gathered)
            if gains is not None:
                facts = dataclasses.replace(facts, normalized=i in gains)
            if own is not None and isinstance(result, torch.Tensor):  # decided when the product is consumed
                self.touched.add(i)
                self.pending.setdefault(id(result), (result, []))[1].append(_Pending(i, facts, own))
                continue
            use = resolve(facts)
            if use is FOLLOW:
                follow.append((i, follow_nonlinear(facts)))
                continue
            self.touched.add(i)
            if use is not None:
                self.uses[i].add(use)
                if (use.usage == "contract" and f.other_activation and f.slot != _INNER) or (
                        use.usage == "add" and f.slot == "bias"):
                    self.produced.append(i)
                if use.usage == "gather_data" and self.abstract_ids:
                    self.guessed.add(i)
        return follow

    def flush(self, name: str, args: Any, kwargs: dict[str, Any], leaves: list[torch.Tensor], result: Any) -> None:
        """Decide the pending products this op consumes (``(x * w).sum(k)`` contracts ``w``)."""
        for t in leaves:
            entry = self.pending.pop(id(t), None)
            if entry is None or entry[0] is not t:
                continue
            items = entry[1]
            if name in _CASTS and args and t is args[0] and isinstance(result, torch.Tensor):
                self.pending[id(result)] = (result, items)
                continue
            summed = False
            if name in _REDUCES and args and t is args[0]:
                dims = _arg(args, kwargs, 1, "dim")
                n = t.dim()
                axes = set(range(n)) if dims is None else {
                    x % n for x in ((dims,) if isinstance(dims, int) else dims)} if n else set()
                summed = bool(axes & items[0].own)
            for item in items:
                use = resolve(dataclasses.replace(item.facts, summed_over_p_axis=summed))
                if isinstance(use, Use):
                    self.uses[item.param].add(use)

    def verdicts(self) -> dict[int, bool]:
        """feeds_norm per parameter index: every call of the layers it is the kernel / bias of reached a norm
        and nothing else (``wdmask._usage.feeds_verdict``); False for the others."""
        calls: dict[int, list[tuple[bool, bool]]] = {}
        for call in self.feed_calls:
            for i in call.params:
                calls.setdefault(i, []).append((call.reached, call.escaped))
        return {i: bool(feeds_verdict(c)) for i, c in calls.items()}

    def finish(self) -> None:
        for i in self.gathered:
            if not self.uses[i]:  # the rows were only returned: a table all the same
                self.uses[i].add(Use("gather_data"))
                self.touched.add(i)
        for _, items in self.pending.values():
            for item in items:
                use = resolve(item.facts)
                if isinstance(use, Use):
                    self.uses[item.param].add(use)
        self.pending.clear()

    # --------------------------------------------------------------------------- the mode
    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        try:
            kind, fused, name = self.kinds[func]
        except (KeyError, TypeError):
            kind, fused, name = _kind(func)
            try:
                self.kinds[func] = (kind, fused, name)
            except TypeError:
                pass
        if kind == "neutral":
            return func(*args, **kwargs)
        leaves = list(_tensors(args))
        if kwargs:
            leaves += _tensors(kwargs)
        if kind == "gather" and not any(isinstance(x, (torch.Tensor, list)) or (
                isinstance(x, tuple) and any(isinstance(y, (torch.Tensor, list)) for y in x))
                for x in (*args[1:], *kwargs.values())):
            kind = "shape_only"  # slices / ints / None: a view
        feeds = len(self.tags) and not self.in_norm
        result = func(*args, **kwargs)
        if kind == "template" or not leaves:
            return result
        if self.pending:
            self.flush(name, args, kwargs, leaves, result)
        if feeds:
            self.feeds_after(kind, fused, args, kwargs, leaves, result)
        self.usage_after(kind, fused, name, args, kwargs, leaves, result)
        return result

    def feeds_after(self, kind: str, fused: _Fused | None, args: Any, kwargs: dict[str, Any],
                    leaves: list[torch.Tensor], result: Any) -> None:
        """Each consumer of a followed conv/linear output: ``wdmask._usage.feeds_step`` decides."""
        for t in leaves:
            found = self.lookup(t)
            if found is None:
                continue
            call, fresh = found
            first = bool(args) and t is args[0]
            if fused is not None:
                step = feeds_step("normalize", slot=_IN) if fused.norm and first else "escape"
            else:
                own_bias = kind == "add" and all(
                    u is t or (u in self.derived and not self.active(u)) for u in leaves)
                step = feeds_step(kind, own_bias=own_bias) if first or kind == "add" else "escape"
            if step == "follow" and fresh:
                if kind == "add":  # the layer's own bias, added after the contraction
                    call.params.update(i for u in leaves if (d := self.derived.get(u)) is not None
                                       for i, _ in d.origins)
                for r in _tensors(result):
                    self.tag(r, call)
            elif step == "reached" and fresh:
                call.reached = True
            else:
                call.escaped = True

    def usage_after(self, kind: str, fused: _Fused | None, name: str, args: Any, kwargs: dict[str, Any],
                    leaves: list[torch.Tensor], result: Any) -> None:
        derived = self.derived
        self.activation_facts(kind, fused, name, args, kwargs, leaves, result)
        ds = [(t, d) for t in leaves if (d := derived.get(t)) is not None]
        if not ds:
            taint = self.taint_of(leaves)
            if taint:
                self.tag_data(result, POSITION if name.startswith("cumsum") else taint)
            return
        if kind in ("shape_only", "reduce"):
            first = derived.get(args[0]) if args and isinstance(args[0], torch.Tensor) else None
            if first is None:  # a parameter as a template (``x.type_as(p)``, ``x.expand_as(p)``)
                taint = self.taint_of(leaves[:1])
                if taint:
                    self.tag_data(result, taint)
                return
            if name in _BROADCASTS and not isinstance(args[0], nn.parameter.UninitializedTensorMixin) and \
                    _grows(args[0].shape, result):
                first = dataclasses.replace(first, broadcast=True)
            for r in _tensors(result):
                if id(r) not in self.param_ids:  # an in-place op returns the parameter itself
                    derived[r] = first
            taint = self.taint_of(leaves[:1])
            if taint:  # rows gathered by a data index are activations too
                self.tag_data(result, taint)
            return
        follow: list[tuple[int, bool]] = []
        self.produced = []
        kernels = [t for pos, key, _, slot in fused.spec if slot in ("kernel", _INNER)
                   for t in _tensors(_arg(args, kwargs, pos, key))] if fused is not None else []
        for t, family, slot, extra in self.slots(kind, fused, name, args, kwargs, leaves):
            d = derived.get(t)
            if d is None:
                continue
            pool = kernels if slot == _IN and fused is not None else leaves  # an input meets the layer's kernel
            act = any(self.active(u) for u in pool if u is not t)
            facts = {"slot": slot, **extra}
            own = None
            if act and family in ("add", "mul"):
                facts["non_singleton"] = sum(s != 1 for s in t.shape)
                facts["normalized"] = any(self.normed.get(u, -1) >= 0 for u in leaves if u is not t)
                facts.setdefault("from_contraction", any(u in self.contracted for u in leaves if u is not t))
                if family == "mul" and isinstance(result, torch.Tensor):
                    n = result.dim()
                    own = frozenset(n - t.dim() + k for k, s in enumerate(t.shape) if s != 1)
            gains = self.gains(t, d, name, args, leaves) if family == "mul" and not act else None
            if family == "gather" and "index" not in facts:
                facts["index"] = "constant"
            follow += self.record(d, Facts(family, other_activation=act, **facts), result, own, gains)
        if self.produced and self.follow_feeds:  # a producer: follow its output for feeds_norm
            out = next(_tensors(result), None)
            if out is not None:
                call = _FeedCall(set(self.produced))
                self.feed_calls.append(call)
                self.tag(out, call)
        gathered = kind == "gather" or (fused is not None and fused.spec[0][2] == "gather")
        if not follow or (any(self.active(u) for u in leaves) and not gathered):
            self.tag_data(result)
            return
        if gathered and any(self.active(u) for u in leaves):  # rows picked by a data index: decided where used
            self.tag_data(result)
            d = _Derived(tuple(dict.fromkeys(follow)), gathered=True)
            self.gathered.update(i for i, _ in follow)
        else:
            d = _Derived(tuple(dict.fromkeys(follow)), any(d.broadcast for _, d in ds))
        for r in _tensors(result):
            if id(r) not in self.param_ids:
                derived[r] = d

    def slots(self, kind: str, fused: _Fused | None, name: str, args: Any, kwargs: dict[str, Any],
              leaves: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, str, str, dict[str, Any]]]:
        """``(tensor, family, slot, extra facts)`` for every tensor argument of the op."""
        if fused is not None:
            seen: set[int] = set()
            for pos, key, family, slot in fused.spec:
                extra: dict[str, Any] = {"hint": fused.hint}
                if family == "gather":
                    extra["index"] = self.index(_arg(args, kwargs, 0, "input"))
                if slot == "bias":
                    extra["from_contraction"] = True
                for t in _tensors(_arg(args, kwargs, pos, key)):
                    seen.add(id(t))
                    yield t, family, slot, extra
            for t in leaves:
                if id(t) not in seen and t in self.derived:
                    yield t, "unknown", "", {}
            return
        if kind == "einsum" and args and isinstance(args[0], str):
            operands = list(args[1:])
            if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
                operands = list(operands[0])
            for op, summed in zip(operands, einsum_contracted(args[0], len(operands)), strict=False):
                if isinstance(op, torch.Tensor):
                    yield op, ("contract" if summed else "mul"), "", {"hint": "linear" if summed else ""}
            return
        if kind == "addmm":
            for pos, t in enumerate(args[:3]):
                if isinstance(t, torch.Tensor):
                    yield t, *(("add", "bias", {"from_contraction": True}) if pos == 0 else
                               ("contract", _IN if pos == 1 else "kernel", {"hint": "linear"}))
            return
        if kind == "rnn":
            for t in leaves:
                yield t, *(("contract", _INNER, {"hint": "linear"}) if t.dim() >= 2 else
                           ("add", _INNER, {"from_contraction": True}))
            return
        if kind == "gather":
            index = self.index(_arg(args, kwargs, _GATHER_INDEX.get(name, 1), "index"))
            table = args[0] if args and isinstance(args[0], torch.Tensor) else None
            for t in leaves:
                yield t, *(("gather", "", {"index": index}) if t is table else ("unknown", "", {}))
            return
        if kind == "insert" and name == "where" and args and isinstance(args[0], torch.Tensor):
            cond = args[0]
            piecewise = cond in self.derived and not self.active(cond)  # a select on a parameter's own values
            for t in leaves:
                yield t, ("unknown" if t is cond else "nonlinear" if piecewise else "insert"), "", {}
            return
        hint = "linear" if kind == "contract" else ""
        for t in leaves:
            yield t, kind, "", {"hint": hint} if hint else {}

    def gains(self, t: torch.Tensor, d: _Derived, name: str, args: Any, leaves: list[torch.Tensor]) -> set[int]:
        """Origins of ``t`` that multiply a parameter normalized by statistics they take no part in: ``g`` in
        ``(g * v) / ||v||`` or ``g * standardized(w)`` (the normalized parameter itself is not a gain)."""
        if name in _DIVS:
            if not (args and t is args[0] and len(args) > 1 and isinstance(args[1], torch.Tensor)):
                return set()
            others = [args[1]] if self.normed.get(args[1]) is not None else []
        else:
            others = [u for u in leaves if u is not t and self.normed.get(u, -1) >= 0]
        if not others:
            return set()
        stats = {i for u in others if (o := self.derived.get(u)) is not None for i, _ in o.origins}
        return {i for i, _ in d.origins if i not in stats}

    def index(self, index: Any) -> str:
        tensors = list(_tensors(index))
        if not tensors:
            return "constant"
        taint = self.taint_of(tensors)
        return "data" if taint == DATA else "position" if taint == POSITION else "constant"

    def activation_facts(self, kind: str, fused: _Fused | None, name: str, args: Any, kwargs: dict[str, Any],
                         leaves: list[torch.Tensor], result: Any) -> None:
        """Where the op's result comes from: straight out of a contraction, normalized by its own statistics."""
        if not isinstance(result, torch.Tensor):
            return
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if kind == "shape_only" and first is not None:
            if first in self.contracted:
                self.contracted[result] = True
            if first in self.normed:
                self.normed[result] = self.normed[first]
            return
        if (kind == "contract" or kind == "einsum" or (fused is not None and fused.spec[0][2] == "contract" and
                                                        _arg(args, kwargs, 2, "bias") is None)):
            self.contracted[result] = True
            return
        acts = [t for t in leaves if t in self.taint or t in self.derived]
        if name in ("rsqrt", "rsqrt_") and acts:
            self.normed[result] = 0
        elif name in ("sqrt", "sqrt_", "norm", "linalg_vector_norm") and acts:
            self.normed[result] = -1
        elif kind in ("mul", "add") and name not in ("add", "__add__", "__radd__", "__iadd__", "add_"):
            if name in ("div", "divide", "true_divide", "__truediv__", "__div__") and len(leaves) == 2 and \
                    self.normed.get(leaves[1]) == -1 and leaves[1] is not first:
                self.normed[result] = 0
                return
            levels = [lv for t in leaves if (lv := self.normed.get(t, -1)) >= 0]
            if levels and min(levels) < 3:
                self.normed[result] = min(levels) + 1


def _labelled(inputs: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(label, tensor)`` of the example inputs: ``args[0]``, ``kwargs['position_ids']``."""
    if isinstance(inputs, dict):
        for k, v in inputs.items():
            for t in _tensors(v):
                yield f"example_inputs[{k!r}]", t
    elif isinstance(inputs, tuple):
        for k, v in enumerate(inputs):
            for t in _tensors(v):
                yield f"example_inputs[{k}]", t
    else:
        for t in _tensors(inputs):
            yield "example_inputs", t


def trace(model: nn.Module, example_inputs: Any, *, params: Sequence[torch.Tensor],
          norms: Sequence[nn.Module] = ()) -> Trace:
    """Run ``model`` once on ``example_inputs``, recording how each of ``params`` is used (and feeds_norm).

    Runs with ``_feeds_norm.run`` (eval, no grad, nothing observable changed, hooks removed in
    ``finally``); on a meta-device model with meta inputs no parameter memory is touched.

    Args:
      model: The unwrapped module.
      example_inputs: A tuple (positional arguments), a dict (keyword arguments) or one argument.
      params: The parameters to follow (each distinct tensor once).
      norms: Norm modules (their inputs are normalized: feeds_norm targets).

    Returns:
      A ``Trace``: ``uses`` maps ``id(param)`` to its uses (empty for a parameter no op consumed).

    Examples:
      >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
      >>> t = trace(net, torch.zeros(1, 4), params=list(net.parameters()))
      >>> [sorted(u.usage for u in t.uses[id(p)]) for p in net.parameters()]
      [['contract'], ['add'], ['norm_scale'], ['norm_shift']]
    """
    wide = _batch_of_two(example_inputs)
    if wide is not None:
        try:
            return _trace(model, wide, params, norms)
        except Exception:  # a model that only runs on the batch it was given
            pass
    return _trace(model, example_inputs, params, norms)


def _batch_of_two(example_inputs: Any) -> Any:
    """``example_inputs`` with a batch of one repeated to two (``None`` unless every tensor has a leading 1):
    no answer may depend on the sample's batch size."""
    tensors = list(_tensors(example_inputs))
    if not tensors or not all(t.dim() and t.shape[0] == 1 for t in tensors):
        return None

    def widen(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.expand(2, *v.shape[1:]).clone() if not v.is_meta else v.new_empty((2, *v.shape[1:]))
        if isinstance(v, (list, tuple)):
            return type(v)(widen(x) for x in v)
        if isinstance(v, dict):
            return {k: widen(x) for k, x in v.items()}
        return v

    return widen(example_inputs)


def _trace(model: nn.Module, example_inputs: Any, params: Sequence[torch.Tensor], norms: Sequence[nn.Module]) -> Trace:
    tracker = _UsageTracker(params, follow_feeds=True)
    order: list[str] = []
    run(model, example_inputs, tracker, producers=(), norms=norms, before=lambda: tracker.start(example_inputs),
        order=order)
    tracker.finish()
    feeds = {id(tracker.params[i]): v for i, v in tracker.verdicts().items()}
    uses = {id(p): tuple(sorted(tracker.uses[i])) for i, p in enumerate(tracker.params)}
    touched = {id(tracker.params[i]) for i in tracker.touched}
    guessed = {id(tracker.params[i]) for i in tracker.guessed}
    return Trace(uses, touched, feeds, tuple(tracker.positions), guessed, tuple(order))
