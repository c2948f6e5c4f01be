r"""Jaxpr helpers shared by the usage walk, and how norm inputs are found without tagging or patching.

``feeds_norm`` itself is decided in ``wdmask._usage`` (``feeds_step``/``feeds_verdict``) from the same walk
that gives usage (``wdmask._jax._usage``): the producer's output is followed through shape-only ops and its
own bias; the input of a norm module is *reached*; anything else *escapes*. A norm module's input is the value
that the first equations traced inside its class's ``__call__`` consume from outside (``norm_codes``: the
code objects looked for in each equation's ``source_info`` traceback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


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


def norm_codes(classes: Iterable[type], kind: Callable[[type], str]) -> frozenset[Any]:
    """The code objects of the ``__call__`` of the norm classes among ``classes`` (``kind(cls)`` starts with
    ``norm.``): the jaxpr equations whose ``source_info`` traceback holds one were traced inside a norm module,
    so the first of them consuming a value from outside takes the norm's input (no tagging, no patching)."""
    out = set()
    for cls in classes:
        owner = next((c for c in cls.__mro__ if "__call__" in c.__dict__), None)
        if owner is not None and kind(owner).startswith("norm."):  # a `__call__` shared with non-norms: not read
            code = call_code(owner)
            if code is not None:
                out.add(code)
    return frozenset(out)


def call_code(cls: type) -> Any:
    """The code object of ``cls.__call__`` (wrappers unwrapped), or ``None``."""
    import inspect

    fn = next((c.__dict__["__call__"] for c in cls.__mro__ if "__call__" in c.__dict__), None)  # not type's
    fn = getattr(fn, "__func__", fn)
    try:
        fn = inspect.unwrap(fn)
    except ValueError:  # pragma: no cover - a cycle of __wrapped__
        return None
    return getattr(fn, "__code__", None)
