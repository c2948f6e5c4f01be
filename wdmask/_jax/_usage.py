r"""Roles from usage on the JAX side: the jaxpr walk that maps primitives to families and facts.

``trace_usage(fn, params)`` / ``trace_sample`` trace ``jax.make_jaxpr`` on *abstract* params (shapes and
dtypes only: no FLOPs, no memory); the params' array leaves are the jaxpr's invars and the sample's
arrays the inputs. Each parameter is followed forward from its invar, into and out of sub-jaxprs
(``jit``/``pjit``, ``remat``, ``scan``, ``while``, ``cond``, ``custom_jvp_call``/``custom_vjp_call``). At
every equation consuming the parameter-derived value this module answers only *what is this
primitive* (``_FAMILY``, plus a few operand checks: a ``dot_general`` summing none of p's axes is a
product, a ``select_n`` on a parameter's own values is piecewise) and *what are the facts*
(``wdmask._usage.Facts``); ``wdmask._usage.resolve`` decides (the one table, in ``wdmask._usage``).
A producer's output (the kernel / bias resolved there) is then followed with
``wdmask._usage.feeds_step`` for ``feeds_norm``. The walk also carries which axes of the parameter leaf each
axis of the followed value comes from: at a contraction with the activations, the leaf axes it sums over and
the ones it produces are the parameter's ``contract_axes`` (Muon's dimension numbers); axes a loop slices or a
contraction batches over (stacked layers, experts) are neither.

Facts come from a forward flag pass over every value (``_Analysis``, per call context): **data**
(depends on the inputs), **positions** (depends only on inputs read as position ids,
``wdmask._usage.read_positions``), **activation** (data, or a parameter broadcast to a batch axis by a
``broadcast_in_dim``/``tile`` that grows an axis to a size > 1), and from short backward walks:
*normalized* (``rsqrt`` of an activation, ``x / sqrt(...)`` of one, or the input of a norm module, read
from the equations' ``source_info`` (``_feeds_norm.norm_codes``), within a few ``mul``/``div``/``sub``),
*from a contraction* (through shape-only ops),
a gather index built from ``iota``/constants (*constant*) or a loop counter (*loop*).

Limits (reported as "no evidence", never guessed): unknown primitives (``pallas_call``, FFT) that consume
a parameter together with activations. A table indexed by an abstract integer input (values unseen) is
read as a token table and reported (``UnclassifiedWarning``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from wdmask._jax._feeds_norm import UseLists, subjaxprs
from wdmask._jax._tree import PyTree, flatten, key_str
from wdmask._types import Path
from wdmask._usage import FOLLOW, Facts, Use, feeds_step, feeds_verdict, follow_nonlinear, resolve

__all__ = ["trace_usage", "usage_from_jaxpr"]

DATA, ACT, PARAM, POS = 1, 2, 4, 8  # POS: derived from an input read as position ids

# primitive -> family (``wdmask._usage.FAMILIES``); what a family means is decided in the core.
_FAMILY: dict[str, str] = {
    **dict.fromkeys((
        "reshape", "transpose", "convert_element_type", "squeeze", "expand_dims", "broadcast_in_dim", "copy",
        "copy_p", "name", "slice", "pad", "rev", "reduce_precision", "tile", "optimization_barrier",
        "sharding_constraint", "mesh_cast", "device_put", "real", "imag", "conj", "neg", "squeeze_p",
        "transpose_p"), "shape_only"),
    **dict.fromkeys(("reduce_sum", "cumsum"), "reduce"),
    **dict.fromkeys(("dot_general", "conv_general_dilated", "ragged_dot", "ragged_dot_general"), "contract"),
    **dict.fromkeys(("add", "sub", "add_any"), "add"),
    **dict.fromkeys(("mul", "div"), "mul"),
    **dict.fromkeys(("gather", "dynamic_slice"), "gather"),
    **dict.fromkeys(("concatenate", "select_n", "dynamic_update_slice", "scatter", "scatter-add", "scatter_add"),
                    "insert"),
    **dict.fromkeys(("max", "min", "clamp"), "compare"),
    **dict.fromkeys((
        "exp", "exp2", "log", "log1p", "expm1", "logistic", "tanh", "sqrt", "rsqrt", "cbrt", "abs", "sign", "sin",
        "cos", "tan", "erf", "erfc", "erf_inv", "integer_pow", "square", "reduce_max", "reduce_min", "floor",
        "ceil", "round", "lgamma", "digamma", "sinh", "cosh", "asinh", "acosh", "atanh", "asin", "acos", "atan",
        "cumlogsumexp", "cummax", "cummin", "sort", "logsumexp", "pow", "atan2", "rem", "nextafter"), "nonlinear"),
}
_SHAPE_ONLY = frozenset({
    "reshape", "transpose", "convert_element_type", "squeeze", "expand_dims", "broadcast_in_dim", "copy", "copy_p",
    "name", "reduce_precision", "sharding_constraint", "mesh_cast", "device_put",
})
_CONV = "conv_general_dilated"


def _is_var(v: Any) -> bool:
    return hasattr(v, "aval") and not hasattr(v, "val")



def _shape(v: Any) -> tuple[int, ...]:
    return tuple(getattr(getattr(v, "aval", None), "shape", ()) or ())


def _expands(eqn: Any) -> bool:
    """A ``broadcast_in_dim``/``tile`` that grows some axis to a size > 1 (a broadcast to a batch)."""
    name = eqn.primitive.name
    if name == "tile":
        return any(r > 1 for r in eqn.params.get("reps", ()))
    if name != "broadcast_in_dim":
        return False
    src = _shape(eqn.invars[0])
    dims = eqn.params.get("broadcast_dimensions", ())
    for axis, size in enumerate(eqn.params.get("shape", ())):
        if size <= 1:
            continue
        if axis not in dims or src[dims.index(axis)] == 1:
            return True
    return False


class _Links:
    """How each sub-jaxpr's invars/outvars map to an equation's (the call structure), built once."""

    @staticmethod
    def inputs(eqn: Any) -> list[tuple[Any, list[tuple[int, int]]]]:
        """``[(sub_jaxpr, [(eqn_in_index, sub_in_index), ...]), ...]`` for the equation's sub-jaxprs."""
        name = eqn.primitive.name
        n = len(eqn.invars)
        if name == "while":
            cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
            body = eqn.params["body_jaxpr"].jaxpr
            cond = eqn.params["cond_jaxpr"].jaxpr
            carry = n - cn - bn
            body_map = [(cn + i, i) for i in range(bn)] + [(cn + bn + i, bn + i) for i in range(carry)]
            cond_map = [(i, i) for i in range(cn)] + [(cn + bn + i, cn + i) for i in range(carry)]
            return [(body, body_map), (cond, cond_map)]
        out = []
        for sub in subjaxprs(eqn):
            offset = n - len(sub.invars)  # 0 for jit/remat/scan/custom_*, 1 for cond's index
            if offset < 0:
                continue
            out.append((sub, [(offset + i, i) for i in range(len(sub.invars))]))
        return out

    @staticmethod
    def outputs(eqn: Any, sub: Any) -> list[tuple[int, int]]:
        """``[(sub_out_index, eqn_out_index)]``: which sub-jaxpr outputs become which equation outputs."""
        name = eqn.primitive.name
        if name == "while":
            if sub is eqn.params["body_jaxpr"].jaxpr:
                return [(i, i) for i in range(len(eqn.outvars))]
            return []
        if len(sub.outvars) == len(eqn.outvars):
            return [(i, i) for i in range(len(eqn.outvars))]
        return []


class _NormInputEqn:
    """What ``_Analysis._source`` returns where its walk leaves a norm module (the module's input)."""

    class primitive:
        name = "norm_input"

    invars: tuple[Any, ...] = ()


_NORM_INPUT = _NormInputEqn()


class _Analysis:
    """Per-variable flags (DATA/ACT/PARAM), use lists and producers of every reachable jaxpr."""

    def __init__(self, closed: Any, param_invars: Sequence[Any], data_vars: Sequence[Any],
                 position_vars: Sequence[Any] = ()) -> None:
        self.flags: dict[int, int] = {}
        self.root = closed.jaxpr
        self.uses = UseLists().uses  # the equations using a variable, per jaxpr
        self._producers: dict[int, dict[int, Any]] = {}
        self._results: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        self.norm_codes: frozenset[Any] = frozenset()  # code objects of norm classes' ``__call__``
        self._depths: dict[int, int] = {}
        self.slots: dict[int, str] = {}  # id(param invar) -> "kernel" / "bias" by the model's classes
        constvars = {id(v) for v in closed.jaxpr.constvars}
        self.root_consts_are_inputs = any(id(v) in constvars for v in data_vars)
        for v in param_invars:
            self.flags[id(v)] = PARAM
        positions = {id(v) for v in position_vars}
        for v in data_vars:
            self.flags[id(v)] = self.flags.get(id(v), 0) | (POS if id(v) in positions else DATA) | ACT
        self.run(self.root, [self.flag(v) for v in self.root.invars])

    def flag(self, v: Any) -> int:
        return self.flags.get(id(v), 0) if _is_var(v) else 0

    def _set(self, v: Any, f: int) -> None:
        if _is_var(v) and f:
            self.flags[id(v)] = self.flags.get(id(v), 0) | f

    def run(self, jaxpr: Any, in_flags: Sequence[int]) -> list[int]:
        """Propagate flags through ``jaxpr`` called with ``in_flags``; the flags of its outputs. Each call
        context is computed on its own (a sub-jaxpr shared by two calls, such as ``jnp.take``'s ``_where``,
        must not pass one call's data flags to the other's outputs); variables keep the union for the walk."""
        key = (id(jaxpr), tuple(in_flags))
        done = self._results.get(key)
        if done is not None:
            return done
        env = dict(self.flags) if jaxpr is self.root else {}
        for v, f in zip(jaxpr.invars, in_flags, strict=False):
            if f and _is_var(v):
                env[id(v)] = env.get(id(v), 0) | f
        for eqn in jaxpr.eqns:
            self._eqn(eqn, env)
        for k, f in env.items():
            self.flags[k] = self.flags.get(k, 0) | f
        out = [env.get(id(v), 0) if _is_var(v) else 0 for v in jaxpr.outvars]
        self._results[key] = out
        return out

    def _eqn(self, eqn: Any, env: dict[int, int]) -> None:
        def flag(v: Any) -> int:
            return env.get(id(v), 0) if _is_var(v) else 0

        def put(v: Any, f: int) -> None:
            if _is_var(v) and f:
                env[id(v)] = env.get(id(v), 0) | f

        ins = [flag(v) for v in eqn.invars]
        links = _Links.inputs(eqn)
        if not links:
            f = 0
            for x in ins:
                f |= x
            if f & PARAM and not f & DATA and _expands(eqn):
                f |= ACT
            for v in eqn.outvars:
                put(v, f)
            return
        name = eqn.primitive.name
        loop = name in ("scan", "while")
        for _ in range(3 if loop else 1):  # carries: iterate to a fixed point (flags only grow)
            before = [flag(v) for v in eqn.outvars]
            for sub, mapping in links:
                sub_in = [0] * len(sub.invars)
                for k, i in mapping:
                    sub_in[i] = ins[k]
                outs = self.run(sub, sub_in)
                for i, o in _Links.outputs(eqn, sub):
                    put(eqn.outvars[o], outs[i])
            if not loop:
                break
            if name == "scan":
                nc, ncarry = eqn.params["num_consts"], eqn.params["num_carry"]
                for i in range(ncarry):
                    ins[nc + i] |= flag(eqn.outvars[i])
            else:
                cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
                for i, v in enumerate(eqn.outvars):
                    ins[cn + bn + i] |= flag(v)
            if [flag(v) for v in eqn.outvars] == before:
                break

    def producer(self, jaxpr: Any, var: Any) -> Any:
        table = self._producers.get(id(jaxpr))
        if table is None:
            table = {id(v): eqn for eqn in jaxpr.eqns for v in eqn.outvars}
            self._producers[id(jaxpr)] = table
        return table.get(id(var))

    # -- backward questions about an operand -------------------------------------------------------

    def norm_depth(self, eqn: Any) -> int:
        """How many norm-module ``__call__`` frames (``norm_codes``) were on the Python stack when ``eqn`` was
        traced (its ``source_info`` traceback): an equation computed inside a norm module has more than the one
        that produced its input."""
        if not self.norm_codes or eqn is None:
            return 0
        depth = self._depths.get(id(eqn))
        if depth is None:
            tb = getattr(eqn.source_info, "traceback", None)
            codes = tb.raw_frames()[0] if tb is not None else ()
            depth = self._depths[id(eqn)] = sum(1 for c in codes if c in self.norm_codes)
        return depth

    def norm_input(self, var: Any, jaxpr: Any, consumer: Any) -> bool:
        """``consumer`` (an equation using ``var``) runs inside a norm module that ``var``'s producer is outside
        of: ``var`` is that module's input."""
        return bool(self.norm_codes) and self.norm_depth(consumer) > self.norm_depth(self.producer(jaxpr, var))

    def _source(self, var: Any, jaxpr: Any, ops: frozenset[str], inside: int = 0) -> tuple[Any, Any, Any]:
        """Walk back from ``var`` through ``ops`` (operand 0) and out of sub-jaxpr calls:
        ``(producing eqn or None, its jaxpr, the var)``; ``(_NORM_INPUT, ...)`` where the walk leaves a norm
        module (``inside``: the norm depth of the equation using ``var``)."""
        for _ in range(64):
            eqn = self.producer(jaxpr, var)
            if inside and self.norm_depth(eqn) < inside:
                return _NORM_INPUT, jaxpr, var  # the input of a norm module
            if eqn is None:
                return None, jaxpr, var
            inside = self.norm_depth(eqn)
            if eqn.primitive.name in ops and eqn.invars:
                var = eqn.invars[0]
                continue
            subs = list(subjaxprs(eqn))
            if len(subs) == 1 and eqn.primitive.name not in ("scan", "while", "cond"):
                sub = subs[0]
                k = eqn.outvars.index(var) if var in eqn.outvars else -1
                if 0 <= k < len(sub.outvars) and _is_var(sub.outvars[k]):
                    jaxpr, var, inside = sub, sub.outvars[k], 0  # a cached jit's equations keep their first trace's
                    continue
            return eqn, jaxpr, var
        return None, jaxpr, var  # pragma: no cover - a 64-op chain of reshapes

    def slot_of(self, var: Any, jaxpr: Any) -> str:
        """``kernel``/``bias`` when ``var`` is (a reshaped / broadcast) parameter the model's classes say is a
        layer's kernel / bias (``slots`` of ``usage_from_jaxpr``), else ``""``."""
        if not self.slots:
            return ""
        eqn, jx, v = self._source(var, jaxpr, _SHAPE_ONLY)
        return self.slots.get(id(v), "") if eqn is None and jx is self.root else ""

    def straight_from_contraction(self, var: Any, jaxpr: Any) -> bool:
        eqn, _, _ = self._source(var, jaxpr, _SHAPE_ONLY)
        return eqn is not None and _FAMILY.get(eqn.primitive.name) == "contract"

    def normalized(self, var: Any, jaxpr: Any, depth: int = 3, of: int = ACT, inside: int = 0) -> bool:
        """``var`` is a value just divided by its own RMS / std (see the module docstring): an activation, or
        with ``of=PARAM`` a parameter (weight norm, weight standardization). ``inside``: the norm depth of the
        equation using ``var``."""
        eqn, jx, _ = self._source(var, jaxpr, _SHAPE_ONLY, inside)
        if eqn is None:
            return False
        name = eqn.primitive.name
        if name == "norm_input":  # inside a norm module, derived from its input (running statistics)
            return of == ACT
        if name == "rsqrt":
            return bool(self.flag(eqn.invars[0]) & of)
        if name == "div" and len(eqn.invars) == 2:
            den, _, _ = self._source(eqn.invars[1], jx, _SHAPE_ONLY)
            if den is not None and den.primitive.name == "sqrt" and self.flag(den.invars[0]) & of:
                return True
        if name in ("mul", "div", "sub") and depth > 0:
            inner = self.norm_depth(eqn)
            return any(_is_var(v) and self.normalized(v, jx, depth - 1, of, inner) for v in eqn.invars)
        return False

    def ancestors(self, var: Any, jaxpr: Any, limit: int = 256) -> set[int]:
        """Ids of the variables ``var`` is computed from in ``jaxpr`` (bounded)."""
        out: set[int] = set()
        todo = [var]
        while todo and len(out) < limit:
            v = todo.pop()
            if not _is_var(v) or id(v) in out:
                continue
            out.add(id(v))
            eqn = self.producer(jaxpr, v)
            if eqn is not None:
                todo.extend(eqn.invars)
        return out


def _constant_index(an: _Analysis, var: Any, jaxpr: Any, chain: tuple[tuple[Any, Any], ...]) -> bool | None:
    """Whether an index is built from literals/``iota``/nested constants only (True), from a loop
    counter (None), or from the inputs (False: callers check DATA first)."""
    seen: set[int] = set()

    def const(v: Any, jx: Any, ch: tuple[tuple[Any, Any], ...]) -> bool | None:
        if not _is_var(v):
            return True
        if id(v) in seen:
            return True
        seen.add(id(v))
        if an.flag(v) & DATA:
            return False
        eqn = an.producer(jx, v)
        if eqn is not None:
            subs = _Links.inputs(eqn)
            if subs:  # a call: its outputs are constant iff its inputs are (conservatively, all of them)
                results = [const(x, jx, ch) for x in eqn.invars]
                return None if None in results else all(results)
            results = [const(x, jx, ch) for x in eqn.invars]
            return None if None in results else all(results)
        if v in getattr(jx, "constvars", ()):
            return jx is not an.root or not an.root_consts_are_inputs  # closed-over inputs (trace_usage)
        if v in jx.invars and ch:
            parent, call = ch[-1]
            i = jx.invars.index(v)
            name = call.primitive.name
            if name == "scan":
                nc, ncarry = call.params["num_consts"], call.params["num_carry"]
                if nc <= i < nc + ncarry:
                    return None  # a loop counter / carry
                return const(call.invars[i], parent, ch[:-1])
            if name == "while":
                return None
            for sub, mapping in _Links.inputs(call):
                if sub is jx:
                    k = next((k for k, j in mapping if j == i), None)
                    if k is not None:
                        return const(call.invars[k], parent, ch[:-1])
            return None
        return False  # a top-level invar that is not data: a parameter or state used as an index

    return const(var, jaxpr, chain)


def _non_singleton(var: Any) -> int:
    return sum(1 for d in _shape(var) if d != 1)


#: per axis of a followed value, the parameter leaf's axes it comes from (``None``: not known)
LeafAxes = tuple[tuple[int, ...], ...] | None
Contract = tuple[tuple[int, ...], tuple[int, ...]]


def _union(axes: Sequence[tuple[int, ...]], dims: Collection[int]) -> set[int]:
    return {a for d in dims for a in axes[d]}


def _regroup(src: tuple[int, ...], dst: tuple[int, ...], axes: tuple[tuple[int, ...], ...]) -> LeafAxes:
    """The leaf axes of a reshape's output axes: input and output dims grouped by equal cumulative products."""
    out: list[tuple[int, ...]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and src[i] == dst[j] == 1:
            out.append(axes[i])
            i, j = i + 1, j + 1
        elif j < len(dst) and dst[j] == 1:
            out.append(())
            j += 1
        elif i < len(src) and src[i] == 1:
            i += 1
        elif i == len(src) or j == len(dst):
            return None
        else:
            group, n_out, a, b = [i], 1, src[i], dst[j]
            i, j = i + 1, j + 1
            while a != b:
                if a < b and i < len(src):
                    a, i = a * src[i], i + 1
                    group.append(i - 1)
                elif b < a and j < len(dst):
                    b, j, n_out = b * dst[j], j + 1, n_out + 1
                else:
                    return None
            out.extend([tuple(sorted(_union(axes, group)))] * n_out)
    return tuple(out)


def _carry_axes(eqn: Any, axes: LeafAxes, out: Any) -> LeafAxes:
    """The leaf axes of ``out``, an output of ``eqn`` followed from its operand 0 (or an operand of the output's
    shape) whose leaf axes are ``axes``."""
    if axes is None:
        return None
    name, params, shape = eqn.primitive.name, eqn.params, _shape(out)
    src = _shape(eqn.invars[0])
    if name == "transpose":
        return tuple(axes[d] for d in params["permutation"])
    if name == "reshape":
        return axes if src == shape else _regroup(src, shape, axes)
    if name == "squeeze":
        return tuple(a for d, a in enumerate(axes) if d not in {k % len(axes) for k in params["dimensions"]})
    if name == "broadcast_in_dim":
        new: list[tuple[int, ...]] = [()] * len(shape)
        for k, d in enumerate(params["broadcast_dimensions"]):
            new[d] = axes[k] if src[k] == shape[d] else ()
        return tuple(new)
    if name == "gather":
        dn = params["dimension_numbers"]
        gone = set(dn.collapsed_slice_dims) | set(dn.operand_batching_dims)
        kept = [a for d, a in enumerate(axes) if d not in gone]
        if len(kept) != len(dn.offset_dims):
            return None
        new = [()] * len(shape)
        for d, a in zip(dn.offset_dims, kept, strict=True):
            new[d] = a
        return tuple(new)
    if "axes" in params and name.startswith(("reduce_", "arg")):
        return tuple(a for d, a in enumerate(axes) if d not in params["axes"])
    if _FAMILY.get(name) == "contract" or len(shape) != len(axes):
        return None
    return axes  # elementwise, slices, padding, concatenation, a loop's slice (dynamic_slice), ...


def _read_contract(eqn: Any, k: int, axes: LeafAxes) -> Contract | None:
    """``(reduction, output)`` leaf axes of operand ``k`` of a contraction: its contracting (conv: input feature
    and window) axes and its free (conv: output feature) axes; batch and group axes are neither."""
    if axes is None:
        return None
    name, params = eqn.primitive.name, eqn.params
    if name == _CONV:
        if k != 1:
            return None
        spec = params["dimension_numbers"].rhs_spec
        red, free, batch = set(spec[1:]), {spec[0]}, set()
    else:
        if name == "dot_general":
            dims, group = params["dimension_numbers"], ()
        else:
            rd = params["ragged_dot_dimension_numbers"]
            dims, group = rd.dot_dimension_numbers, rd.rhs_group_dimensions if k == 1 else ()
        (contracting, batched) = dims[0][k], dims[1][k]
        red, batch = set(contracting), set(batched) | set(group)
        free = set(range(len(axes))) - red - batch
    r, o, b = _union(axes, red), _union(axes, free), _union(axes, batch)
    if r & o or (r | o) & b:
        return None
    return tuple(sorted(r)), tuple(sorted(o))


def _merge(reads: Sequence[Contract | None]) -> Contract | None:
    known = [r for r in reads if r is not None]
    red = {a for r, _ in known for a in r}
    out = {a for _, o in known for a in o}
    return None if len(known) < len(reads) or red & out else (tuple(sorted(red)), tuple(sorted(out)))


class _Walker:
    """Follows one parameter from its invar to its first real consumers."""

    def __init__(self, an: _Analysis) -> None:
        self.an = an
        self.uses: set[Use] = set()
        self.unknown = False
        self.seen: set[tuple[Any, ...]] = set()
        self.calls: dict[int, tuple[bool, bool]] = {}  # producing equation -> (reached a norm, escaped)
        self.gathered = False  # rows of the parameter were picked by a data index
        self.contracts: dict[tuple[int, int], list[Contract | None]] = {}  # (eqn, operand) -> what each path read

    def follow(self, var: Any, jaxpr: Any, chain: tuple[tuple[Any, Any], ...], batched: bool,
               nonlinear: bool, gathered: bool = False, axes: LeafAxes = None) -> None:
        key = (id(var), batched, nonlinear, gathered, axes)
        if key in self.seen:
            return
        self.seen.add(key)
        an = self.an
        for i, out in enumerate(jaxpr.outvars):
            if out is var and chain:
                parent, call = chain[-1]
                stacked = call.primitive.name == "scan" and i >= call.params["num_carry"]  # ys: a new axis
                for j, o in _Links.outputs(call, jaxpr):
                    if j == i:
                        self.follow(call.outvars[o], parent, chain[:-1], batched, nonlinear, gathered,
                                    None if stacked else axes)
        for eqn in an.uses(jaxpr, var):
            self._eqn(eqn, var, jaxpr, chain, batched, nonlinear, gathered, axes)

    def _eqn(self, eqn: Any, var: Any, jaxpr: Any, chain: Any, batched: bool, nonlinear: bool,
             gathered: bool, axes: LeafAxes = None) -> None:
        """Family and facts of one equation consuming ``var``; ``wdmask._usage.resolve`` decides."""
        an = self.an
        name = eqn.primitive.name
        positions = [k for k, v in enumerate(eqn.invars) if v is var]
        links = _Links.inputs(eqn)
        if links:  # a call: follow into the sub-jaxprs
            xs = eqn.params["num_consts"] + eqn.params["num_carry"] if name == "scan" else len(eqn.invars)
            for sub, mapping in links:
                for k, i in mapping:
                    if k in positions:  # a scan's xs: the body gets one slice (the leading axis is the loop's)
                        inner = axes[1:] if k >= xs and axes is not None else axes
                        self.follow(sub.invars[i], sub, (*chain, (jaxpr, eqn)), batched, nonlinear, gathered, inner)
            return
        family = _FAMILY.get(name, "unknown")
        act = any(an.flag(v) & ACT for v in eqn.invars if v is not var)
        facts: dict[str, Any] = {}
        if family == "shape_only":
            if positions != [0] and not (name == "pad" and 0 in positions):
                return  # a template / padding value: not a use
            batched = batched or _expands(eqn)
        elif family == "reduce" and positions != [0]:
            return
        elif family == "contract":
            if positions[0] > 1:  # ragged_dot group sizes
                family, act = "unknown", True
            elif set(positions) == {0, 1}:
                act = True  # x @ x of the same value: both sides are the activation
            elif name == "dot_general" and not eqn.params["dimension_numbers"][0][positions[0]]:
                family = "mul"  # no axis of p is summed: a broadcast product (einsum "btd,d->btd")
            else:
                facts["hint"] = "conv" if name == _CONV else ""
                other = eqn.invars[1 - positions[0]] if positions[0] < 2 else None
                if an.slot_of(var, jaxpr) == "kernel":
                    facts["slot"] = "kernel"
                elif other is not None and an.slot_of(other, jaxpr) == "kernel":
                    facts["slot"] = "input"
        elif family == "gather":
            if positions != [0]:
                family, act = "unknown", True  # a parameter used as an index
            else:
                facts["index"] = self._index(eqn.invars[1:], jaxpr, chain)
        elif family == "insert" and name == "select_n":
            if 0 in positions:
                family, act = "unknown", True  # a parameter used as the predicate
            elif an.flag(eqn.invars[0]) & PARAM and not an.flag(eqn.invars[0]) & DATA:
                family = "nonlinear"  # a select on a parameter's own values is piecewise (softplus)
        if act and family in ("add", "mul"):
            other = next(v for v in eqn.invars if v is not var)
            facts["normalized"] = an.normalized(other, jaxpr, inside=an.norm_depth(eqn))
            facts["non_singleton"] = _non_singleton(var)
            if family == "add":
                facts["from_contraction"] = an.straight_from_contraction(other, jaxpr)
            if family == "mul":
                facts["summed_over_p_axis"] = self._summed(eqn, var, jaxpr)
        if family == "mul" and not act and name in ("mul", "div"):
            facts["normalized"] = self._gain(eqn, var, jaxpr, positions)
        if family == "add" and an.slot_of(var, jaxpr) == "bias":
            other = next(v for v in eqn.invars if v is not var)
            facts["slot"], facts["from_contraction"] = "bias", an.straight_from_contraction(other, jaxpr)
        f = Facts(family, other_activation=act, broadcast=batched, nonlinear=nonlinear, gathered=gathered, **facts)
        use = resolve(f)
        if use is FOLLOW:
            picked = gathered or facts.get("index") == "data"
            self.gathered = self.gathered or picked
            for out in eqn.outvars:
                self.follow(out, jaxpr, chain, batched, follow_nonlinear(f), picked, _carry_axes(eqn, axes, out))
        elif use is None:
            self.unknown = True
        else:
            self.uses.add(use)
            if use.usage == "contract":
                read = family == "contract" and len(positions) == 1
                self.contracts.setdefault((id(eqn), positions[0]), []).append(
                    _read_contract(eqn, positions[0], axes) if read else None)
            if (use.usage == "contract" and act) or (use.usage == "add" and f.from_contraction):
                if id(eqn) not in self.calls:  # a producer: its kernel and its bias get feeds_norm
                    self.calls[id(eqn)] = _Feeds(self.an).follow(eqn.outvars[0], jaxpr, chain)

    def _gain(self, eqn: Any, var: Any, jaxpr: Any, positions: list[int]) -> bool:
        """``var`` multiplies a parameter normalized by statistics it takes no part in (``g`` in ``(g * v) / ||v||``
        or ``g * standardized(w)``)."""
        an = self.an
        if eqn.primitive.name == "div":
            if positions != [0]:
                return False
            den, _, _ = an._source(eqn.invars[1], jaxpr, _SHAPE_ONLY)
            other = eqn.invars[1]
            if den is None or den.primitive.name not in ("sqrt", "rsqrt") or not an.flag(den.invars[0]) & PARAM:
                return False
        else:
            other = next((v for v in eqn.invars if v is not var), var)
            if not an.normalized(other, jaxpr, of=PARAM):
                return False
        mine = {key[0] for key in self.seen}
        return not (an.ancestors(other, jaxpr) & mine)

    def _index(self, index: Sequence[Any], jaxpr: Any, chain: Any) -> str:
        an = self.an
        if any(an.flag(v) & DATA for v in index):
            return "data"
        if any(an.flag(v) & POS for v in index):
            return "position"
        consts = [_constant_index(an, v, jaxpr, chain) for v in index]
        return "constant" if all(c is True for c in consts) else "loop"

    def _summed(self, eqn: Any, var: Any, jaxpr: Any) -> bool:
        """The product is then summed over an axis along which ``var`` is non-singleton."""
        own = {i for i, d in enumerate(_shape(var)) if d != 1}
        todo, seen = list(eqn.outvars), set()
        while todo:
            out = todo.pop()
            if id(out) in seen:
                continue
            seen.add(id(out))
            for use in self.an.uses(jaxpr, out):
                uname = use.primitive.name
                if uname == "reduce_sum" and own & set(use.params.get("axes", ())):
                    return True
                if uname == "convert_element_type":
                    todo.extend(use.outvars)
        return False

    def contract_axes(self) -> Contract | None:
        """The ``(reduction, output)`` leaf axes of every contraction, when all are known and agree (the paths
        into one contraction are merged: ``v / ||v||`` reaches it whole and reduced)."""
        found = {_merge(reads) for reads in self.contracts.values()}
        return found.pop() if len(found) == 1 else None

    def feeds_norm(self) -> bool:
        """Every call of the contraction this parameter produces reached a norm and nothing else."""
        return bool(feeds_verdict(self.calls.values()))

    def result(self) -> tuple[Use, ...]:
        if self.gathered and not self.uses:
            return (Use("gather_data"),)  # the rows were only returned: a table all the same
        if self.uses:
            return tuple(sorted(self.uses))
        return () if self.unknown else (Use("unused"),)


class _Feeds:
    """Follows a producer's output (``wdmask._usage.feeds_step`` on each consumer): ``(reached, escaped)``."""

    def __init__(self, an: _Analysis) -> None:
        self.an = an
        self.seen: set[int] = set()

    def follow(self, var: Any, jaxpr: Any, chain: tuple[tuple[Any, Any], ...]) -> tuple[bool, bool]:
        if id(var) in self.seen:
            return False, False
        self.seen.add(id(var))
        reached = escaped = False
        for i, out in enumerate(jaxpr.outvars):
            if out is not var:
                continue
            if not chain:
                escaped = True  # a result of the traced function
                continue
            parent, call = chain[-1]
            for j, o in _Links.outputs(call, jaxpr):
                if j == i:
                    r, e = self.follow(call.outvars[o], parent, chain[:-1])
                    reached, escaped = reached or r, escaped or e
        for eqn in self.an.uses(jaxpr, var):
            r, e = self._eqn(eqn, var, jaxpr, chain)
            reached, escaped = reached or r, escaped or e
        return reached, escaped

    def _eqn(self, eqn: Any, var: Any, jaxpr: Any, chain: tuple[tuple[Any, Any], ...]) -> tuple[bool, bool]:
        name = eqn.primitive.name
        if name == "while":
            return False, True
        if self.an.norm_input(var, jaxpr, eqn):  # also a call (jit) made inside a norm module
            return True, False
        links = _Links.inputs(eqn)
        if links:
            reached = escaped = False
            for sub, mapping in links:
                for k, i in mapping:
                    if eqn.invars[k] is var:
                        r, e = self.follow(sub.invars[i], sub, (*chain, (jaxpr, eqn)))
                        reached, escaped = reached or r, escaped or e
            return reached, escaped
        family, slot = _FAMILY.get(name, "unknown"), ""
        if family == "shape_only" and eqn.invars[0] is not var:
            family = "unknown"
        own_bias = family == "add" and all(
            v is var or not self.an.flag(v) & (DATA | ACT) for v in eqn.invars)
        step = feeds_step(family, slot=slot, own_bias=own_bias)
        if step == "reached":
            return True, False
        if step == "escape":
            return False, True
        return self.follow(eqn.outvars[0], jaxpr, chain)


def usage_from_jaxpr(closed: Any, param_invars: Sequence[Any], data_vars: Sequence[Any],
                     position_vars: Sequence[Any] = (), *, abstract_ids: bool = False,
                     slots: Sequence[str] = (),
                     norm_codes: frozenset[Any] = frozenset(),
                     ) -> tuple[list[tuple[Use, ...]], list[bool], set[int], list[Contract | None]]:
    """The uses of each of ``param_invars`` (vars of ``closed.jaxpr.invars``), given which vars are inputs
    (``position_vars``: inputs read as position ids), and the indices of the params whose table reading is a
    guess (gathered by an integer input whose values were not seen, ``abstract_ids``); feeds_norm of each
    parameter is the second list, its contraction axes (``UsageTrace.contract_axes``) the fourth.
    ``norm_codes``: the code objects of norm modules' ``__call__``, whose first equations consuming a value from
    outside them take norm inputs (``eqn.source_info``: no tagging)."""
    an = _Analysis(closed, param_invars, data_vars, position_vars)
    an.norm_codes = norm_codes
    an.slots = {id(v): slot for v, slot in zip(param_invars, slots, strict=False) if slot}
    out, feeds, guessed, contracts = [], [], set(), []
    for k, v in enumerate(param_invars):
        walker = _Walker(an)
        walker.follow(v, an.root, (), False, False, axes=tuple((a,) for a in range(len(_shape(v)))))
        out.append(walker.result())
        feeds.append(walker.feeds_norm())
        contracts.append(walker.contract_axes())
        if abstract_ids and Use("gather_data") in walker.uses:
            guessed.add(k)
    return out, feeds, guessed, contracts


def trace_sample(forward: Callable[..., Any], params: PyTree, rest: tuple[Any, ...], sample: Any,
                 slots: Mapping[Path, str] | Callable[[], Mapping[Path, str]] | None = None,
                 axis_env: Sequence[tuple[str, int]] = (),
                 norm_codes: Collection[Any] = ()) -> UsageTrace:
    """Usage of every leaf of ``params`` in ``forward(params, *rest, arrays)``, traced once with
    ``jax.make_jaxpr`` on abstract params and the ``Sample``'s arrays (a batch of one enlarged to two;
    the sample as given if the model rejects that). ``slots`` may be a function, called once the forward pass
    was traced (classes recorded while tracing)."""
    import jax

    from wdmask._usage import note_positions

    abstract_params = abstract(params)
    try:
        closed = jax.make_jaxpr(forward, axis_env=list(axis_env))(abstract_params, *rest, sample.traced())
    except Exception:
        closed = jax.make_jaxpr(forward, axis_env=list(axis_env))(abstract_params, *rest, sample.traced(enlarge=False))
    invars = list(closed.jaxpr.invars)
    n_params = len(jax.tree.leaves(abstract_params))
    n_data = len(sample.arrays)
    data = invars[len(invars) - n_data:] if n_data else []
    found, abstract_ids = sample.positions()
    paths = leaf_paths(params)
    slots = slots() if callable(slots) else slots
    uses, feeds, guessed, contracts = usage_from_jaxpr(closed, invars[:n_params], data, [data[k] for k in found],
                                            abstract_ids=abstract_ids,
                                            slots=[(slots or {}).get(p, "") for p in paths],
                                            norm_codes=frozenset(norm_codes))  # filled while tracing
    note_positions([f"sample array {k}" for k in found], sorted({".".join(paths[k]) for k in guessed}))
    merged: dict[Path, bool] = {}
    for path, f in zip(paths, feeds, strict=True):
        merged[path] = merged.get(path, True) and f
    axes: dict[Path, set[Contract | None]] = {}
    for path, c in zip(paths, contracts, strict=True):
        axes.setdefault(path, set()).add(c)
    known: dict[Path, Contract] = {}
    for path, found in axes.items():
        one = found.pop() if len(found) == 1 else None
        if one is not None:
            known[path] = one
    return UsageTrace(closed, merge_uses(paths, uses), merged, known)


def first_uses(closed: Any, n_params: int) -> list[float]:
    """For each of the first ``n_params`` invars of ``closed``: the position of the first equation using it, in
    trace order (sub-jaxprs walked where they are called); ``inf`` if unused. Parameters are used in the order
    their modules are called: this gives the call order without intercepting any call."""
    first: list[float] = [float("inf")] * n_params
    counter = [0]

    def walk(jaxpr: Any, tracked: dict[int, int]) -> None:
        for eqn in jaxpr.eqns:
            counter[0] += 1
            here = counter[0]
            for sub, mapping in _Links.inputs(eqn):  # inside a call: the equations it runs order the params
                inner = {id(sub.invars[i]): tracked[id(eqn.invars[k])] for k, i in mapping
                         if _is_var(eqn.invars[k]) and id(eqn.invars[k]) in tracked}
                if inner:
                    walk(sub, inner)
            for v in eqn.invars:
                k = tracked.get(id(v)) if _is_var(v) else None
                if k is not None and first[k] == float("inf"):
                    first[k] = here

    walk(closed.jaxpr, {id(v): k for k, v in enumerate(closed.jaxpr.invars[:n_params])})
    return first


class UsageTrace(NamedTuple):
    """One traced forward pass: its jaxpr (for feeds_norm) and every parameter's uses."""

    closed: Any
    usage: dict[Path, tuple[Use, ...]]
    feeds_norm: dict[Path, bool]
    #: kernel leaf path -> (reduction axes, output axes) in the leaf's full shape, as the traced contraction
    #: with the activations reads them (axes a loop slices or the contraction batches over are neither; a
    #: ``vmap``-stacked axis of an unbatched input is free here, dropped by ``wdmask._contract``); absent when
    #: unknown or inconsistent
    contract_axes: dict[Path, tuple[tuple[int, ...], tuple[int, ...]]]


def abstract(tree: PyTree) -> PyTree:
    """``tree`` with every array leaf replaced by a ``jax.ShapeDtypeStruct`` (boxes kept)."""
    import jax

    def to_sds(x: Any) -> Any:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    return jax.tree.map(to_sds, tree)


def leaf_paths(params: PyTree) -> list[Path]:
    """The ``wdmask`` path of each *array* leaf of ``params`` (``jax.tree`` order, boxes looked through)."""
    import jax

    leaves, _ = flatten(params)
    raw, _ = jax.tree_util.tree_flatten_with_path(params)
    out: list[Path] = []
    j = 0
    for keypath, _x in raw:
        keys = tuple(key_str(k) for k in keypath)
        while j < len(leaves) and keys[:len(leaves[j].keys)] != leaves[j].keys:
            j += 1
        if j == len(leaves):
            raise ValueError(f"trace_usage: leaf {jax.tree_util.keystr(keypath)} of `params` is not in the "
                             "flattened params (an unexpected container)")  # pragma: no cover
        out.append(leaves[j].path)
    return out


def merge_uses(paths: Sequence[Path], uses: Sequence[tuple[Use, ...]]) -> dict[Path, tuple[Use, ...]]:
    """Uses per path (a box holding several arrays gets the union)."""
    merged: dict[Path, set[Use]] = {}
    for path, u in zip(paths, uses, strict=True):
        merged.setdefault(path, set()).update(u)
    out = {}
    for path, u in merged.items():
        real = {x for x in u if x.usage != "unused"}
        out[path] = tuple(sorted(real or u))
    return out


def trace_usage(fn: Callable[..., Any], params: PyTree, *, sample: Any = None) -> dict[Path, tuple[Use, ...]]:
    r"""How a forward pass uses each parameter, from one abstract trace (no FLOPs, no memory).

    Args:
      fn: maps a params pytree of ``params``' structure (leaves may be ``jax.ShapeDtypeStruct``) to the
        model output, closing over the model inputs (the arrays it closes over count as the inputs).
      params: the params pytree (arrays, ``jax.ShapeDtypeStruct``, ``nn.Partitioned``/``nnx.Param`` boxes).
      sample: a ``wdmask._jax._sample.Sample``: then ``fn(params, arrays)`` takes the sample's arrays as its
        second argument (traced abstractly, a batch of one enlarged to two; position ids read from the values).

    Returns:
      ``{path: uses}`` for every leaf (``wdmask`` paths, as ``describe`` gives them); ``()`` when the
      parameter met activations only in ops the walker does not know (no evidence).

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((4, 3))
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "g": jnp.ones(2)}
      >>> uses = trace_usage(lambda p: (x @ p["w"] + p["b"]) * p["g"], params)
      >>> {k[0]: [u.usage for u in v] for k, v in uses.items()}
      {'b': ['add'], 'g': ['mul'], 'w': ['contract']}
    """
    import jax

    if sample is not None:
        return trace_sample(fn, params, (), sample).usage
    paths = leaf_paths(params)
    closed = jax.make_jaxpr(fn)(abstract(params))
    invars = list(closed.jaxpr.invars)
    if len(invars) != len(paths):
        raise ValueError(f"trace_usage: `fn` was traced with {len(paths)} param leaves but its jaxpr has "
                         f"{len(invars)} inputs; `fn` must take exactly the params pytree")
    uses, _, _, _ = usage_from_jaxpr(closed, invars, list(closed.jaxpr.constvars))
    return merge_uses(paths, uses)


