"""Shared test set-up: float64 available in JAX (parity needs it); each test sets dtypes explicitly."""

import importlib.util
import os

import pytest

XLA_TEST_FLAGS = "--xla_backend_optimization_level=0"

# One intra-op thread per test process: pytest-xdist runs one process per core, and a second OpenMP thread
# spin-waits on a busy core (a tiny torch step went from 0.01 s to 1.4 s). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests compile hundreds of small XLA programs once each: LLVM's optimization passes cost more than they save.
if XLA_TEST_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller runs no test: spare it importing jax
    spec = importlib.util.find_spec("jax")
    if spec is not None and spec.origin is not None:  # not the tests/jax folder seen as a namespace package
        import jax

        jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def _fixed_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render at 160 columns, whatever the terminal (pytest-xdist workers report 80); tests that check
    the fit at a given width set ``COLUMNS`` themselves."""
    monkeypatch.setenv("COLUMNS", "160")
