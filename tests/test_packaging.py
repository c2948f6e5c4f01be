"""Package metadata: an SPDX license with its file, project URLs, and a long description that reads on the
package index (no relative links, no benchmark tables)."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_is_spdx_with_its_file():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # the SPDX field replaces them


def test_urls_keywords_classifiers():
    assert set(PROJECT["urls"]) >= {"Homepage", "Documentation", "Repository", "Issues"}
    assert all(u.startswith("https://github.com/wdmask/wdmask") for u in PROJECT["urls"].values())
    assert "weight decay" in PROJECT["keywords"] and "Typing :: Typed" in PROJECT["classifiers"]


def test_long_description_reads_on_the_package_index():
    readme = ROOT / PROJECT["readme"]
    assert readme.name != "README.md"  # the repository README keeps its relative links and benchmark tables
    text = readme.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all(link.startswith("https://") for link in links), links
    assert len(text.splitlines()) < 100 and "pip install 'wdmask[torch]'" in text and "'wdmask[jax]'" in text
    assert not re.search(r"^\|.*\|$", text, re.M)  # no tables
