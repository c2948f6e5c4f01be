"""Every ```python block of the README runs on its own, as pasted into a fresh interpreter.

A block followed directly by a ```text block must print exactly that text (trailing spaces aside). Each block is
its own test, so pytest-xdist runs them on all cores alongside the rest of the suite. The default run forks each
block from an interpreter that already imported the frameworks (``_blockrunner``); ``-m slow`` runs every block
with ``python -c`` as well, so a block that works only because something was preloaded fails there.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import XLA_TEST_FLAGS

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


def _env() -> dict[str, str]:
    # the suite's compile-speed flag only (conftest), not its fake devices of a sharding test
    return {**os.environ, "COLUMNS": "120", "PYTHONWARNINGS": "ignore", "TERM": "dumb", "XLA_FLAGS": XLA_TEST_FLAGS}


def _run(code: str, cwd: str) -> subprocess.CompletedProcess[str]:
    """``code`` as ``python -c`` runs it: a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=_env(),
                          timeout=300)


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], subprocess.CompletedProcess[str]]]:
    """``_run``, but each block forked from one interpreter that imported the frameworks (``_blockrunner``)."""
    server = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("_blockrunner.py"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(),
                              cwd=tmp_path_factory.mktemp("blockrunner"))
    assert server.stdin is not None and server.stdout is not None

    def run(code: str, cwd: str) -> subprocess.CompletedProcess[str]:
        server.stdin.write(json.dumps({"code": code, "cwd": cwd}) + "\n")
        server.stdin.flush()
        answer = json.loads(server.stdout.readline())
        return subprocess.CompletedProcess(["fork", "-c"], answer["returncode"], answer["stdout"], answer["stderr"])

    yield run
    server.kill()  # nothing to save: every block ran in a child
    server.wait(timeout=60)


@pytest.mark.parametrize(("line", "code", "expected"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block(line: int, code: str, expected: str | None, tmp_path: pathlib.Path,
                      forked: Callable[[str, str], subprocess.CompletedProcess[str]]) -> None:
    """Each block in its own process with a fresh ``__main__`` (frameworks imported before the fork)."""
    _check(line, forked(code, str(tmp_path)), expected)


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code", "expected"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block_in_a_fresh_interpreter(line: int, code: str, expected: str | None,
                                             tmp_path: pathlib.Path) -> None:
    """Exactly as pasted: ``python -c``, nothing imported before (catches a block relying on a preloaded module)."""
    _check(line, _run(code, str(tmp_path)), expected)


def _check(line: int, proc: subprocess.CompletedProcess[str], expected: str | None) -> None:
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
