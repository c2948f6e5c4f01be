"""mkdocs hook: make griffe's silent docstring problems fail ``mkdocs build --strict``.

griffe logs a section header it could not parse ("Possible section skipped, reasons: Missing blank line
above section") at DEBUG level, so a docstring whose ``Returns:``/``Raises:``/``Examples:`` run together
into one paragraph would still build green. This hook lets those records through and raises them to
WARNING, which ``--strict`` turns into a failed build. Every other warning is left as it is: none is
filtered.
"""

from __future__ import annotations

import logging

#: griffe's loggers, as mkdocstrings patches them (``mkdocs.plugins.<name>``).
_GRIFFE = "mkdocs.plugins.griffe"
_SKIPPED = "Possible section skipped"


class _Promote(logging.Filter):
    """DEBUG "Possible section skipped" -> WARNING; other DEBUG records only when mkdocs runs verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG and _SKIPPED in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        if record.levelno < logging.INFO:
            return logging.getLogger("mkdocs").getEffectiveLevel() <= record.levelno
        return True


def _install() -> None:
    logger = logging.getLogger(_GRIFFE)
    logger.setLevel(logging.DEBUG)  # griffe's debug records must be created for the filter to see them
    if not any(isinstance(f, _Promote) for f in logger.filters):
        logger.addFilter(_Promote())


def on_startup(**kwargs: object) -> None:
    _install()


def on_config(config: object, **kwargs: object) -> object:
    _install()
    return config
