"""Warnings that point at the user's line, however deep inside wdmask (or the framework it drives) they arise.

A fixed ``stacklevel`` is right for one call path only: ``decide`` is reached from ``mask``, ``decay``'s
``init`` (called by ``optax.chain``'s), ``groups``, ``explain``, ``compare``... Python 3.12's
``skip_file_prefixes`` would do this; 3.11 has no such option, so the frames are walked here.
"""

from __future__ import annotations

import os
import sys
import warnings

#: Packages whose frames are never the user's call site: wdmask's own, and the frameworks that call back into
#: wdmask (``optax.chain``'s ``init`` calls ``wdmask.decay``'s, ``jax.make_jaxpr`` runs traced code).
_OWN = ("wdmask", "wdmask_torch")
_DRIVEN = ("jax", "jaxlib", "flax", "optax", "equinox", "torch")
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _skipped() -> tuple[str, ...]:
    prefixes = [os.path.join(_HERE, name) + os.sep for name in _OWN]
    for name in _DRIVEN:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            prefixes.append(os.path.dirname(os.path.abspath(file)) + os.sep)
    return tuple(prefixes)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the *caller* of this function point at the first
    frame outside wdmask, wdmask_torch and the frameworks (jax, flax, optax, equinox, torch)."""
    skipped = _skipped()
    frame = sys._getframe(1)  # the function that will call warnings.warn: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skipped):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn(message, category)`` attributed to the user's line (see ``user_stacklevel``)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
