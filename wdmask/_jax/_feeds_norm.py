r"""``feeds_norm`` for linen and NNX: does a conv/dense output go straight into a norm layer?

While the forward pass is traced once with ``jax.make_jaxpr`` (linen: ``model.apply`` under an
``nn.intercept_methods`` interceptor; NNX: the merged module with each class's ``__call__`` patched
for the trace -- the same trace gives roles from usage, see ``_usage``), every
conv/dense ``__call__`` output and every norm ``__call__`` input is wrapped in
``jax.ad_checkpoint.checkpoint_name`` tags (identity ops that survive in the jaxpr as ``name``
equations). The jaxpr is then walked forward from each output tag:

* through shape-only ops (``reshape``, ``transpose``, ``convert_element_type``, ``squeeze``,
  ``expand_dims``, ``broadcast_in_dim``, ``copy``, other tags),
* into and out of sub-jaxprs (``jit``/``pjit``, ``remat``/``checkpoint``, ``scan``,
  ``custom_jvp_call``, ``custom_vjp_call``, ``cond`` branches, ``closed_call``),

and the producer *feeds a norm* iff at least one use reaches a norm-input tag and **every** use
does. Any other use (``relu``, ``add`` of a residual, being a model output, a ``while`` loop) is an
escape, so ``conv -> relu -> bn`` and an output used twice are ``False``; a producer whose output
is never used is ``False``. A module called several times must feed a norm on every call.

Not covered (reported ``False``, the conservative answer): values that pass through a ``while``
loop or through a scan's carry into a norm *outside* the loop; norms implemented without a norm
module (hand-written ``x - mean`` in a user ``__call__`` whose class name does not say ``norm``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

from wdmask._types import Path

# Ops that only move or re-type values: a tagged value passing through them is still "the output".
PASS_THROUGH = frozenset({
    "reshape", "transpose", "convert_element_type", "squeeze", "expand_dims", "broadcast_in_dim", "copy", "copy_p",
})
_OUT, _IN = "wdmask_out", "wdmask_in"
_ids = itertools.count()


class Tagger:
    """Hands out ``checkpoint_name`` tags during a trace and analyses the traced jaxpr."""

    def __init__(self) -> None:
        self.outputs: dict[str, Path] = {}
        self.inputs: set[str] = set()
        self.prefix = f"{next(_ids)}"

    def _tag(self, kind: str, x: Any) -> tuple[str, Any] | None:
        import jax
        from jax.ad_checkpoint import checkpoint_name

        if not isinstance(x, jax.Array):
            return None
        tag = f"{kind}:{self.prefix}:{len(self.outputs) + len(self.inputs)}"
        return tag, checkpoint_name(x, tag)

    def tag_output(self, path: Path, out: Any) -> Any:
        """Tag a conv/dense output (non-array outputs are left alone: their producer is never True)."""
        tagged = self._tag(_OUT, out)
        if tagged is None:
            return out
        self.outputs[tagged[0]] = path
        return tagged[1]

    def tag_input(self, path: Path, x: Any) -> Any:
        """Tag a norm input."""
        tagged = self._tag(_IN, x)
        if tagged is None:
            return x
        self.inputs.add(tagged[0])
        return tagged[1]

    def analyze(self, closed_jaxpr: Any) -> dict[Path, bool]:
        """Per producer path: True iff every traced call's output reaches only norm inputs."""
        return analyze(closed_jaxpr, self.outputs, self.inputs)


def subjaxprs(eqn: Any) -> Iterator[Any]:
    """The (open) sub-jaxprs of an equation, in parameter order."""
    for value in eqn.params.values():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            inner = getattr(item, "jaxpr", item)  # ClosedJaxpr -> Jaxpr
            if hasattr(inner, "eqns") and hasattr(inner, "invars"):
                yield inner


class UseLists:
    """The equations that use each variable, per jaxpr reachable from the root, built once per jaxpr
    (an equation using a variable twice, ``mul x x``, is listed once)."""

    def __init__(self) -> None:
        self._uses: dict[int, dict[int, list[Any]]] = {}

    def uses(self, jaxpr: Any, var: Any) -> list[Any]:
        table = self._uses.get(id(jaxpr))
        if table is None:
            table = {}
            for eqn in jaxpr.eqns:
                for v in eqn.invars:
                    if hasattr(v, "aval") and not hasattr(v, "val"):  # a Var, not a Literal
                        listed = table.setdefault(id(v), [])
                        if not listed or listed[-1] is not eqn:
                            listed.append(eqn)
            self._uses[id(jaxpr)] = table
        return table.get(id(var), [])


def analyze(closed_jaxpr: Any, outputs: dict[str, Path], inputs: set[str]) -> dict[Path, bool]:
    """Walk ``closed_jaxpr`` from each output tag; see the module docstring for the rule."""
    graph = UseLists()
    verdicts: dict[Path, bool] = {}

    def follow(var: Any, jaxpr: Any, chain: tuple[tuple[Any, Any, int], ...], seen: set[int]) -> tuple[bool, bool]:
        """(reached a norm input, escaped) for all uses of ``var`` in ``jaxpr``."""
        if id(var) in seen:
            return False, False
        seen.add(id(var))
        reached = escaped = False

        def merge(result: tuple[bool, bool]) -> None:
            nonlocal reached, escaped
            reached, escaped = reached or result[0], escaped or result[1]

        for i, out in enumerate(jaxpr.outvars):
            if out is not var:
                continue
            if not chain:
                escaped = True  # a result of the traced function
                continue
            parent, eqn, _ = chain[-1]
            if i < len(eqn.outvars):
                merge(follow(eqn.outvars[i], parent, chain[:-1], seen))
            else:  # pragma: no cover - defensive
                escaped = True
        for eqn in graph.uses(jaxpr, var):
            name = eqn.primitive.name
            if name == "name":
                tag = eqn.params.get("name")
                if tag in inputs:
                    reached = True
                else:
                    merge(follow(eqn.outvars[0], jaxpr, chain, seen))
            elif name in PASS_THROUGH and eqn.invars and eqn.invars[0] is var:
                merge(follow(eqn.outvars[0], jaxpr, chain, seen))
            elif name == "while":
                escaped = True
            else:
                subs = list(subjaxprs(eqn))
                if not subs:
                    escaped = True
                    continue
                for sub in subs:
                    offset = len(eqn.invars) - len(sub.invars)  # 0 for jit/remat/scan, 1 for cond's index
                    if offset not in (0, 1):
                        escaped = True
                        continue
                    for k, v in enumerate(eqn.invars):
                        if v is var:
                            if k - offset < 0:
                                escaped = True  # used as cond's predicate/index
                                continue
                            merge(follow(sub.invars[k - offset], sub, (*chain, (jaxpr, eqn, k)), seen))
        return reached, escaped

    def visit(jaxpr: Any, chain: tuple[tuple[Any, Any, int], ...]) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "name" and eqn.params.get("name") in outputs:
                path = outputs[eqn.params["name"]]
                reached, escaped = follow(eqn.outvars[0], jaxpr, chain, set())
                verdicts[path] = verdicts.get(path, True) and reached and not escaped
            for sub in subjaxprs(eqn):
                visit(sub, (*chain, (jaxpr, eqn, -1)))

    visit(closed_jaxpr.jaxpr, ())
    return verdicts


#: Held while module classes' ``__call__`` are patched for a trace (NNX, NNX inside ``ToLinen``): the patches are
#: process-global, so two threads describing at once would record each other's calls and restore each other's
#: patches. Re-entrant: a trace may describe a bridged model inside.
PATCH_LOCK = threading.RLock()


def restore_calls(saved: dict[type, Any]) -> None:
    """Undo ``cls.__call__`` patches: ``saved`` maps each patched class to its own ``__call__`` (``None``: it had
    none and inherited it)."""
    for cls, orig in saved.items():
        if orig is None:
            if "__call__" in cls.__dict__:
                del cls.__call__
        else:
            cls.__call__ = orig  # type: ignore[method-assign]
