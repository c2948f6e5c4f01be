"""Tests (a package, so test files with the same name in tests/jax and tests/torch do not clash)."""
