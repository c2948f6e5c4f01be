"""Shared test set-up: float64 available in JAX (parity needs it); each test sets dtypes explicitly."""

import importlib.util

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
