"""Torch tests: skipped as a whole where torch is not installed."""

import pytest

pytest.importorskip("torch")
