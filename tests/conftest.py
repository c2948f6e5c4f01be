"""Shared test set-up: float64 available in JAX (parity needs it); each test sets dtypes explicitly."""

import importlib.util

_jax = importlib.util.find_spec("jax")
if _jax is not None and _jax.origin is not None:  # not the tests/jax folder seen as a namespace package
    import jax

    jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fixed_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render at 160 columns, whatever the terminal (pytest-xdist workers report 80); tests that check
    the fit at a given width set ``COLUMNS`` themselves."""
    monkeypatch.setenv("COLUMNS", "160")
