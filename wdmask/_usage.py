r"""Roles from usage: ONE resolver decides, for both frameworks, how the forward pass uses a parameter.

Each adapter traces one forward pass (torch: a ``TorchFunctionMode``; JAX: a jaxpr walk) and does two
things only: it maps its framework's ops to a **family** and computes **facts** about the operands
(``Facts``). This module makes every decision from them: ``resolve`` turns the facts at an op into a
``Use`` (or ``FOLLOW``: the value is still "the parameter" after the op), ``classify`` turns a
parameter's uses into a layer kind and a role, and ``feeds_step``/``feeds_verdict`` derive
``feeds_norm`` from the same families.

The principle behind ``presets.standard``: decay what the forward pass **contracts with
activations** (kernels of conv / linear / einsum / matmul / bmm, fused QKV, MoE expert stacks,
recurrent weight matrices) and **token-embedding tables**; decay nothing else.

The table (p = the parameter-derived value, at the first op where it meets an activation; an
activation is a value computed from the inputs, or a parameter broadcast to a batch axis):

===========  =============================================================================  ===========
family       facts -> usage                                                                 role
===========  =============================================================================  ===========
gather       a position / constant index -> ``gather_pos`` (at the gather, with or        embedding /
             without activations); a loop counter (a stacked layer's slice) -> FOLLOW;      position
             an index from the inputs -> FOLLOW as *gathered* rows: ``contract`` if they
             are then contracted as a kernel (a routed MoE expert), else ``gather_data``
contract     ``contract`` (hint ``conv``), also after nonlinear functions (``exp(w)``,       kernel
             weight norm); p on the *input* side (or broadcast) against a kernel that is
             not an activation -> ``concat``, with or without activations elsewhere (a      token
             learned query / latent / probe fed to a layer that names its input slot);
             the kernel slot of a layer -> ``contract`` and its bias slot -> ``add``,
             whatever the layer's input
add          nonlinear -> ``elementwise``; normalized -> ``norm_shift``; >= 2               bias /
             non-singleton axes and not a contraction's output -> ``gather_pos`` (a table   position
             added whole); else ``add``
mul          reduced afterwards over one of p's own axes -> ``contract`` (``(x*w).sum(k)``);  gain /
             nonlinear -> ``elementwise``; normalized -> ``norm_scale``; else ``mul``        scale
normalize    a fused norm op: scale slot -> ``norm_scale``, shift slot -> ``norm_shift``     scale /
             (of a normalized parameter, weight standardization: ``mul``/``add``; the       bias
             normalized parameter itself FOLLOWs)
insert       ``concat`` (concatenated, ``where``-substituted, scattered: a token)            token
compare      ``add`` (a learned threshold: FilterResponseNorm's ``tau`` in ``max(x, tau)``)  bias
nonlinear    ``elementwise`` (``pow(x, p)``)                                                elementwise
shape_only,  FOLLOW                                                                         --
reduce
unknown      no evidence (``None``: reported, never guessed)                                --
===========  =============================================================================  ===========

A parameter multiplied with a *parameter* normalized by its own statistics is a gain (``mul``: weight
norm's ``g`` in ``g * v / ||v||``), with or without activations. Otherwise, without an activation among
the operands every family is FOLLOW (a re-expression: ``W * mask``,
``1 + scale``, low rank ``A @ B``, a concatenation of parameters, weight standardization); following
through ``nonlinear``/``compare``/``unknown`` marks the value nonlinear (``follow_nonlinear``). A
parameter no op consumed is ``unused``. A value that went through a contraction with an activation
is an activation. Several uses: the first of ``USAGES`` present decides (``classify``).

``feeds_norm`` (the producer's kernel and bias): every consumer of a contraction's output is followed
with ``feeds_step`` -- ``shape_only`` and the add of the layer's own bias continue, the input of a
normalization is *reached*, anything else *escapes*; ``feeds_verdict`` says True when, on every call,
at least one path reached a norm and none escaped.

Examples:
  >>> resolve(Facts("contract", other_activation=True, nonlinear=True))
  Use(usage='contract', layer='')
  >>> resolve(Facts("compare", other_activation=True))
  Use(usage='add', layer='')
  >>> resolve(Facts("mul", other_activation=True, summed_over_p_axis=True)).usage
  'contract'
  >>> resolve(Facts("add", other_activation=True, non_singleton=2)).usage
  'gather_pos'
  >>> resolve(Facts("add")) is FOLLOW
  True
  >>> classify([Use("add"), Use("contract", "conv")], known="other")
  ('conv', 'kernel')
  >>> classify([Use("mul")], known="norm.layer")
  ('norm.layer', 'scale')
  >>> classify([Use("unused")], known="other") is None
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from wdmask._types import ParamInfo, Path

__all__ = [
    "FAMILIES", "FOLLOW", "USAGES", "Facts", "Use", "classify", "feeds_step", "feeds_verdict", "follow_nonlinear",
    "from_graph", "is_position_ids", "param_info", "note_positions", "read_positions", "resolve", "usage_names",
]

#: The neutral usage vocabulary, in priority order (the first present decides).
USAGES: tuple[str, ...] = (
    "gather_data", "contract", "norm_scale", "norm_shift", "gather_pos", "concat", "mul", "add", "elementwise",
    "unused",
)
#: What an op is, as far as the resolver cares.
FAMILIES: tuple[str, ...] = (
    "shape_only", "reduce", "contract", "add", "mul", "normalize", "gather", "insert", "nonlinear", "compare",
    "unknown",
)
#: Gather index sources.
INDEXES: tuple[str, ...] = ("data", "position", "constant", "loop")

# usage -> (layer kind when nothing better is known, role)
_TABLE: dict[str, tuple[str, str]] = {
    "gather_data": ("embedding", "embedding"),
    "contract": ("linear", "kernel"),
    "norm_scale": ("norm.layer", "scale"),
    "norm_shift": ("norm.layer", "bias"),
    "gather_pos": ("other", "position"),
    "concat": ("other", "token"),
    "mul": ("other", "gain"),
    "add": ("other", "bias"),
    "elementwise": ("other", "elementwise"),
}
# Under a known norm layer, an elementwise product / sum with the activations is its scale / shift.
_UNDER_NORM = {"mul": "scale", "add": "bias", "norm_scale": "scale", "norm_shift": "bias"}


class _Follow:
    """``resolve``'s answer when the op only re-expresses the parameter: keep following its output."""

    def __repr__(self) -> str:
        return "FOLLOW"


FOLLOW: Final = _Follow()


@dataclasses.dataclass(frozen=True, order=True)
class Use:
    """One direct use of a parameter: ``usage`` from ``USAGES`` and the layer kind the op implies
    (``"conv"`` for a convolution, ``"norm.batch"`` for ``F.batch_norm``; ``""`` when the op says none)."""

    usage: str
    layer: str = ""

    def __post_init__(self) -> None:
        if self.usage not in USAGES:
            raise ValueError(f"Use.usage {self.usage!r}; valid: {', '.join(USAGES)}")


@dataclasses.dataclass(frozen=True)
class Facts:
    """What an adapter observed at one op consuming a parameter-derived value ``p``.

    ``family`` is from ``FAMILIES``; the facts (all about this op, see the module table):
    ``other_activation`` (another operand depends on the inputs, or is a parameter broadcast to a
    batch axis), ``broadcast`` (p itself was broadcast to a batch axis), ``normalized`` (the
    activation operand was just divided by its own statistics), ``index`` (gather: one of
    ``INDEXES``), ``non_singleton`` (p's non-singleton axis count), ``nonlinear`` (p went through a
    nonlinear function of parameters), ``from_contraction`` (the activation comes straight out of a
    contraction), ``summed_over_p_axis`` (mul: the product is reduced over one of p's non-singleton
    axes), ``gathered`` (p is rows of a parameter picked by a data index), ``slot`` (contract:
    ``kernel``/``input``; normalize: ``input``/``scale``/``shift``) and
    ``hint`` (the layer kind the op implies: ``conv``, ``norm.batch``, ...).
    """

    family: str
    other_activation: bool = False
    broadcast: bool = False
    normalized: bool = False
    index: str = ""
    non_singleton: int = 0
    nonlinear: bool = False
    from_contraction: bool = False
    summed_over_p_axis: bool = False
    gathered: bool = False
    slot: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"Facts.family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if self.index and self.index not in INDEXES:
            raise ValueError(f"Facts.index {self.index!r}; valid: {', '.join(INDEXES)}")


def resolve(f: Facts) -> Use | _Follow | None:
    """The use of ``p`` at one op: a ``Use``, ``FOLLOW`` (keep following the op's output), or ``None``
    (an op nobody knows consumed it with activations: no evidence).

    Examples:
      >>> resolve(Facts("gather", index="data")) is FOLLOW  # decided where the rows are used
      True
      >>> resolve(Facts("add", other_activation=True, gathered=True)).usage
      'gather_data'
      >>> resolve(Facts("contract", other_activation=True, gathered=True)).usage  # a routed expert
      'contract'
      >>> resolve(Facts("contract", other_activation=True, slot="input"))
      Use(usage='contract', layer='')
      >>> resolve(Facts("contract", broadcast=True, slot="input")).usage
      'concat'
      >>> resolve(Facts("normalize", slot="scale", other_activation=True, hint="norm.batch"))
      Use(usage='norm_scale', layer='norm.batch')
      >>> resolve(Facts("unknown", other_activation=True)) is None
      True
    """
    fam = f.family
    if f.gathered:  # rows picked by a data index: a table, unless they are then contracted as a kernel (MoE)
        if fam in ("shape_only", "reduce"):
            return FOLLOW
        if fam == "contract" and f.other_activation and f.slot != "input":
            return Use("contract", f.hint)
        return Use("gather_data")
    if fam == "gather":
        if f.index == "data":
            return FOLLOW  # gathered: decided at the next op
        if f.index in ("position", "constant"):
            return Use("gather_pos")
        return FOLLOW
    if fam == "normalize" and f.slot in ("scale", "shift"):
        if not f.other_activation:  # the affine of a normalized parameter (weight standardization): a gain
            return Use("mul" if f.slot == "scale" else "add")
        return Use("norm_scale" if f.slot == "scale" else "norm_shift", f.hint)
    if fam == "mul" and f.normalized and not (f.other_activation or f.broadcast) and not f.nonlinear:
        return Use("mul")  # the gain of a normalized parameter (weight norm's g)
    if fam == "contract" and (f.slot == "input" or f.broadcast) and not f.other_activation:
        return Use("concat")  # the input of a layer whose kernel is a parameter: a learned query / latent / probe
    if fam == "contract" and f.slot == "kernel":
        return Use("contract", f.hint)  # a layer's kernel, whatever its input
    if fam == "add" and f.slot == "bias" and f.from_contraction and not f.nonlinear:
        return Use("add")  # a layer's bias, whatever its input
    if fam in ("shape_only", "reduce", "normalize") or not (f.other_activation or f.broadcast):
        return FOLLOW
    if fam == "contract":
        return Use("contract", f.hint)
    if fam == "add":
        if f.nonlinear:
            return Use("elementwise")
        if f.normalized:
            return Use("norm_shift")
        if f.non_singleton >= 2 and not f.from_contraction:
            return Use("gather_pos")
        return Use("add")
    if fam == "mul":
        if f.summed_over_p_axis:
            return Use("contract", f.hint)
        if f.nonlinear:
            return Use("elementwise")
        return Use("norm_scale" if f.normalized else "mul")
    if fam == "insert":
        return Use("concat")
    if fam == "compare":
        return Use("add")
    if fam == "nonlinear":
        return Use("elementwise")
    return None  # unknown


def follow_nonlinear(f: Facts) -> bool:
    """Whether the value is nonlinear after FOLLOWing it through the op of ``f``.

    Examples:
      >>> [follow_nonlinear(Facts("nonlinear")), follow_nonlinear(Facts("mul"))]
      [True, False]
    """
    return f.nonlinear or f.family in ("nonlinear", "compare", "unknown")


Step = Literal["follow", "reached", "escape"]


def feeds_step(family: str, *, slot: str = "", own_bias: bool = False) -> Step:
    """feeds_norm: what one consumer of a contraction's output (or of a value followed from it) does.

    Examples:
      >>> feeds_step("shape_only"), feeds_step("add", own_bias=True), feeds_step("normalize", slot="input")
      ('follow', 'follow', 'reached')
      >>> feeds_step("nonlinear"), feeds_step("add")
      ('escape', 'escape')
    """
    if family == "shape_only" or (family == "add" and own_bias):
        return "follow"
    if family == "normalize" and slot == "input":
        return "reached"
    return "escape"


def feeds_verdict(calls: Iterable[tuple[bool, bool]]) -> bool | None:
    """feeds_norm of a producer from its calls' ``(reached, escaped)``: True when every call reached a
    norm and none escaped; ``None`` when it was never called.

    Examples:
      >>> feeds_verdict([(True, False), (True, False)]), feeds_verdict([(True, True)]), feeds_verdict([])
      (True, False, None)
    """
    verdict = None
    for reached, escaped in calls:
        ok = reached and not escaped
        verdict = ok if verdict is None else verdict and ok
    return verdict


def is_position_ids(values: object) -> bool:
    """Whether integer values (nested lists, e.g. ``tensor.tolist()``) count up by one along their last axis
    in every row -- ``arange(T)``, possibly offset per row: position ids passed as an input.

    Examples:
      >>> is_position_ids([[0, 1, 2], [5, 6, 7]]), is_position_ids([3, 9, 4]), is_position_ids([[0]])
      (True, False, False)
    """
    rows = [values]
    while rows and isinstance(rows[0], list) and rows[0] and isinstance(rows[0][0], list):
        rows = [r for row in rows for r in row]
    if not rows or not all(isinstance(r, list) and len(r) >= 2 for r in rows):
        return False
    return all(isinstance(x, int) and x - r[0] == k for r in rows for k, x in enumerate(r))


def read_positions(values: Sequence[object | None]) -> tuple[list[int], bool]:
    """Which of a sample's integer inputs are position ids: ``values`` holds each integer input's values
    (nested lists, ``None`` when abstract). An input counting up along its last axis
    (``is_position_ids``) is positions when another integer input does not (a single ``arange`` input is
    token ids written as ``arange``). Returns the indices and whether the values could not be seen
    (abstract inputs among several integer inputs: the tables they index are a guess).

    Examples:
      >>> read_positions([[[7, 3, 9]], [[0, 1, 2]]]), read_positions([[0, 1, 2]]), read_positions([None, None])
      (([1], False), ([], False), ([], True))
    """
    if len(values) < 2:
        return [], False
    if any(v is None for v in values):
        return [], True
    found = [k for k, v in enumerate(values) if is_position_ids(v)]
    return (found if len(found) < len(values) else []), False


def note_positions(inputs: Sequence[str], guessed: Sequence[str]) -> None:
    """Say which inputs were read as position ids (``UserWarning``), and which tables were read as token
    tables on a guess because the integer inputs were abstract (``UnclassifiedWarning``)."""
    from wdmask._errors import UnclassifiedWarning
    from wdmask._warn import warn

    if inputs:
        warn(f"wdmask: read {', '.join(inputs)} as position ids (integer input counting up along its "
             "last axis); the tables it indexes are position tables (role 'position')", UserWarning)
    if guessed:
        warn(f"wdmask: {', '.join(guessed)} indexed by an abstract integer input, read as token ids (a "
             "guess: its values were not seen; pass concrete ids and position ids to tell them apart)",
             UnclassifiedWarning)


def usage_names(uses: Iterable[Use]) -> tuple[str, ...]:
    """Distinct usages in priority order, e.g. ``('contract', 'add')``."""
    present = {u.usage for u in uses}
    return tuple(u for u in USAGES if u in present)


def classify(uses: Iterable[Use], known: str = "other") -> tuple[str, str] | None:
    """``(layer, role)`` from a parameter's uses; ``None`` when the trace gives no evidence.

    Args:
      uses: the parameter's recorded uses.
      known: the layer kind already known from the owner's exact class (``"other"`` if none);
        it is kept, and under a norm layer ``mul``/``add`` are its scale/shift.

    Returns:
      ``(layer, role)``, or ``None`` for a parameter that was never used.
    """
    uses = list(uses)
    for usage in USAGES[:-1]:
        found = [u for u in uses if u.usage == usage]
        if not found:
            continue
        default_layer, role = _TABLE[usage]
        hint = next((u.layer for u in found if u.layer), "")
        if known.startswith("norm.") and usage in _UNDER_NORM:
            return known, _UNDER_NORM[usage]
        return (known if known != "other" else hint or default_layer), role
    return None


def from_graph(layer: str, role: str, source: str, uses: Iterable[Use] | None) -> tuple[str, str, str, tuple[str, ...]]:
    """``(layer, role, source, usage)`` of a leaf: what its class or names say (``layer``, ``role``, ``source``),
    decided by the traced forward pass's ``uses`` when it gives evidence -- the class's layer kind is kept when
    known, the graph decides the role (``classify(uses, known=layer)``, ``source="graph"``). ``uses=None`` (no
    trace) and uses without evidence leave the three as they are; ``usage`` lists what the trace saw.

    Both adapters' describe call this once per leaf, with every other fact known (one pass, no patch-up).

    Examples:
      >>> from_graph("other", "other", "type", (Use("mul"),))
      ('other', 'gain', 'graph', ('mul',))
      >>> from_graph("norm.layer", "scale", "type", None)
      ('norm.layer', 'scale', 'type', ())
    """
    if uses is None:
        return layer, role, source, ()
    uses = tuple(uses)
    found = classify(uses, known=layer)
    if found is None:
        return layer, role, source, usage_names(uses)
    return found[0], found[1], "graph", usage_names(uses)


def param_info(path: Path, shape: tuple[int, ...], dtype: str = "float32", *, layer: str = "other",
               role: str = "other", source: str = "shape", stacked_axes: Sequence[int] = (),
               feeds_norm: bool | None = None, module_type: str = "", declared: str = "",
               aliases: tuple[str, ...] = (), uses: Iterable[Use] | None = None,
               contract_axes: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
               call_index: int | None = None) -> ParamInfo:
    """The one constructor of a described leaf: every fact known first (what the class or names say, the stacked
    axes, feeds_norm, the declaration, the trace's ``uses``, ``contract_axes`` and ``call_index``), the graph's
    evidence applied by ``from_graph``; no stage patches it afterwards.

    Examples:
      >>> info = param_info(("blk", "lambda1"), (8,), source="type", uses=(Use("mul"),))
      >>> info.role, info.source, info.usage
      ('gain', 'graph', ('mul',))
    """
    layer, role, source, usage = from_graph(layer, role, source, uses)
    return ParamInfo(path, shape, dtype, layer, role, len(stacked_axes), feeds_norm, module_type, source, declared,
                     aliases, tuple(stacked_axes), usage, contract_axes=contract_axes, call_index=call_index)
