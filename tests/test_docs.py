"""The documentation site renders: docstrings parse, maths are Markdown maths, examples are highlighted code,
every public name has a rendered signature, code fits the page, and (where Chromium is installed) every page
looks right in a real browser.

The fast checks read sources; the slow ones build the site with ``mkdocs build --strict`` (a few seconds)
and inspect the HTML, then open each page in headless Chromium.
"""

from __future__ import annotations

import html
import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import wdmask

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(f for pkg in ("wdmask", "wdmask_torch", "wdmask_migrate") for f in (ROOT / pkg).rglob("*.py"))
PAGES = sorted((ROOT / "docs").rglob("*.md"))
#: The widest code line a docs page shows whole at a 1280-pixel window (content column of mkdocs-material).
CODE_WIDTH = 80
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def _public() -> list[tuple[str, object]]:
    pytest.importorskip("torch")
    import wdmask_migrate
    import wdmask_torch

    out, seen = [], set()
    for m in (wdmask, wdmask_torch, wdmask_migrate):
        for n in m.__all__:
            obj = getattr(m, n)
            if n != "presets" and id(obj) not in seen:  # wdmask_torch.AuditReport is wdmask.AuditReport
                seen.add(id(obj))
                out.append((f"{m.__name__}.{n}", obj))
    return out


def test_no_rst_maths_in_docstrings():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES for i, line in enumerate(p.read_text().splitlines(), 1)
             if ".. math::" in line or ":math:`" in line]
    assert found == [], "docstrings are Markdown: write $...$ / $$...$$, not RST maths"


def test_examples_sections_are_named_examples():
    # griffe reads "Example:" as an admonition whose >>> lines render as nested quotes; "Examples:" is a section
    found = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES for i, line in enumerate(p.read_text().splitlines(), 1)
             if line.strip() == "Example:"]
    assert found == []


def test_signatures_have_short_defaults():
    """``help(f)`` shows the signature: no default may print as a wall of text (a preset's repr)."""
    long = {}
    for name, obj in _public():
        if not callable(obj):
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        long.update({f"{name}({p.name}=...)": len(repr(p.default)) for p in sig.parameters.values()
                     if p.default is not p.empty and len(repr(p.default)) > 60})
    assert long == {}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_lines_fit_the_page(page):
    text = page.read_text()
    wide = [f"{page.name}:{text.count(chr(10), 0, m.start()) + 2 + i}: {len(line)}"
            for m in _FENCE.finditer(text) for i, line in enumerate(m.group(2).splitlines())
            if len(line) > CODE_WIDTH]
    assert wide == [], f"code lines wider than {CODE_WIDTH} columns are cut off on the page"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stderr


@pytest.mark.slow
def test_the_site_builds_without_a_warning(site):
    _, log = site
    assert "WARNING" not in log and "Missing blank line" not in log and "section skipped" not in log, log


@pytest.mark.slow
def test_api_page_renders(site):
    page = (site[0] / "api" / "index.html").read_text()
    # doctest prompts are highlighted code, never Markdown quotes
    assert not re.search(r"<blockquote>(?:(?!</blockquote>).)*&gt;&gt;&gt;", page, re.S)
    assert "<blockquote>\n<blockquote>" not in page
    assert len(re.findall(r"<span class=\"gp\">&gt;&gt;&gt; ?</span>", page)) >= 40
    # maths: Markdown maths for KaTeX, no RST left
    assert ".. math::" not in page and ":math:" not in page
    assert page.count('class="arithmatex"') >= 10
    # sections parsed: no "Returns:" / "Raises:" left as text in a paragraph
    assert not re.search(r"<p>[^<]*(Returns|Raises|Examples|Args):", page)
    headings = re.findall(r'<h3 id="([\w.]+)" class="doc doc-heading"', page)
    for name, obj in _public():
        assert name in headings, f"{name} has no section on the API page"
        if inspect.isfunction(obj):
            section = page[page.index(f'<h3 id="{name}"'):]
            assert re.match(r'(?s).*?</h3>\s*<div class="doc-signature highlight">', section), f"{name}: no signature"
    # ordered by what users call first
    order = [headings.index(n) for n in ("wdmask.decay", "wdmask.mask", "wdmask.explain", "wdmask_torch.groups")]
    assert order == sorted(order) and order[0] == 0


@pytest.mark.slow
def test_pages_in_chromium(site, tmp_path):
    """Each page in headless Chromium: no code block or table scrolls sideways (cut off), no nested quote.

    The page is copied with a script that measures the rendered layout into the DOM, which ``--dump-dom``
    returns. KaTeX is loaded from a CDN, so the maths are checked only where that copy can load.
    """
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    probe = """<script>window.addEventListener("load", () => setTimeout(() => {
      const cut = [...document.querySelectorAll(".md-content pre > code, .md-typeset__scrollwrap")]
        .filter(e => e.scrollWidth > e.clientWidth + 1)
        .map(e => (e.innerText || "").split("\\n").find(l => l.length > 0) || e.className);
      const quoted = [...document.querySelectorAll("blockquote blockquote")].length;
      document.body.setAttribute("data-probe", JSON.stringify({cut, quoted}));
    }, 500));</script>"""
    failures = {}
    for page in sorted(site[0].rglob("index.html")):
        rel = page.relative_to(site[0])
        if rel.parts[0] in ("search", "assets"):
            continue
        copy = page.with_name("probe.html")
        copy.write_text(page.read_text().replace("</body>", probe + "</body>"))
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                               "--virtual-time-budget=3000", "--dump-dom", copy.as_uri()],
                              capture_output=True, text=True, timeout=120)
        m = re.search(r'data-probe="([^"]*)"', proc.stdout)
        assert m, f"{rel}: the probe did not run ({proc.stderr[-500:]})"
        result = __import__("json").loads(html.unescape(m.group(1)))
        if result["cut"] or result["quoted"]:
            failures[str(rel)] = result
    assert failures == {}
