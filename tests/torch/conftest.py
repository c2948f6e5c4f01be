"""Torch tests: make the shared test models (``torch_models``) importable in any pytest import mode."""

import pathlib
import sys

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(pathlib.Path(__file__).parent))
