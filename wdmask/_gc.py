"""Building an inventory allocates a few small objects per parameter and no reference cycles.

CPython's cyclic collector runs every few hundred allocations and, in its oldest generation, walks every
live object: during a build over 100k parameters it re-walks the growing inventory again and again, which
made the build superlinear (4.1 s instead of 2.3 s for a 100k-tensor torch model). The entry points that
build over every parameter pause it; reference counting frees everything as usual, and the collector
resumes (if it was on) when the outermost build returns.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def builds_inventory(fn: F) -> F:
    """Run ``fn`` with the cyclic garbage collector paused (re-entrant; its state is restored).

    Example:
      >>> import gc
      >>> @builds_inventory
      ... def inside():
      ...     return gc.isenabled()
      >>> inside(), gc.isenabled()
      (False, True)
    """
    @functools.wraps(fn)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return paused  # type: ignore[return-value]
