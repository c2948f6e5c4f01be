"""mkdocs hook: drop two kinds of false warnings that ``mkdocs build --strict`` would fail on.

* autorefs reads doctest lines such as ``params["Dense_0"]["bias"]`` or ``[(a, b) for ...]`` in the
  Google-style docstrings as Markdown reference links; a "target" that is not a dotted Python name
  (``'"bias"'``, ``'0'``) is never a cross-reference someone meant.
* griffe does not understand one ``Args:`` line documenting several parameters (``b1, b2, eps: ...``).

Every other warning still fails the build.
"""

from __future__ import annotations

import logging
import re

_TARGET = re.compile(r"Could not find cross-reference target '(.*)'")
_NAME = re.compile(r"[A-Za-z_][\w.]*")


class _Filter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        m = _TARGET.search(msg)
        if m and not _NAME.fullmatch(m.group(1)):
            return False
        if re.search(r"[Pp]arameter '\w+(, \w+)+'", msg):
            return False
        return True


def _install() -> None:
    # A filter on a logger does not see its children's records; the handlers of "mkdocs" (the console and
    # the strict-mode counter) see every record, so the filter goes there, and on the emitting loggers too.
    for name in ("mkdocs", "mkdocs.plugins", "griffe"):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, _Filter) for f in target.filters):
                target.addFilter(_Filter())


def on_startup(**kwargs: object) -> None:
    _install()


def on_config(config: object, **kwargs: object) -> object:
    _install()
    return config
