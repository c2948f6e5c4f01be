"""Every ```python block of the README runs on its own, as pasted into a fresh interpreter.

A block followed directly by a ```text block must print exactly that text (trailing spaces aside). Each block is
its own test, so pytest-xdist runs them on all cores alongside the rest of the suite.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, expected output or None)`` for each python block."""
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in _FENCE.finditer(text)]
    out = []
    for i, (lang, body, start, end) in enumerate(found):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(found) and found[i + 1][0] == "text" and text[end:found[i + 1][2]].strip() == "":
            expected = found[i + 1][1]
        out.append((text.count("\n", 0, start) + 1, body, expected))
    return out


BLOCKS = blocks(README.read_text())


def _clean(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3
    assert blocks("```python\nprint(1)\n```\n\n```text\n1\n```\n") == [(1, "print(1)\n", "1\n")]


def _run(code: str, cwd: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "PYTHONWARNINGS": "ignore", "TERM": "dumb"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize(("line", "code", "expected"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block(line: int, code: str, expected: str | None, tmp_path: pathlib.Path) -> None:
    proc = _run(code, str(tmp_path))
    assert proc.returncode == 0, f"README block at line {line} failed:\n{proc.stderr[-3000:]}"
    if expected is not None:
        assert _clean(proc.stdout) == _clean(expected), f"README block at line {line} printed:\n{proc.stdout}"


DOCS = sorted((README.parent / "docs").rglob("*.md"))
_SEP = "\x00--- next block ---"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in DOCS if blocks(p.read_text())],
                         ids=lambda p: str(p.relative_to(README.parent)))
def test_docs_page(page: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A docs page is a tutorial: its python blocks run in order in one fresh interpreter, each printing what
    the page shows after it."""
    found = blocks(page.read_text())
    code = f"\nprint({_SEP!r})\n".join(body for _, body, _ in found)
    proc = _run(code, str(tmp_path))
    assert proc.returncode == 0, f"{page.name}: a block failed:\n{proc.stderr[-3000:]}"
    outputs = proc.stdout.split(_SEP + "\n")
    assert len(outputs) == len(found)
    for (line, _, expected), out in zip(found, outputs, strict=True):
        if expected is not None:
            assert _clean(out) == _clean(expected), f"{page.name}, block at line {line} printed:\n{out}"
