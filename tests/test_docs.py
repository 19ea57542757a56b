"""The README's Python snippet runs as written, and every relative link in README and docs/ resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_api_snippet_runs_verbatim():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README has no python snippet"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # the snippet as a user pastes it
    assert "profile" in namespace and namespace["profile"].shape == (21,)


def relative_links(path: Path) -> list[str]:
    links = LINK.findall(path.read_text())
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc):
    broken = []
    for link in relative_links(doc):
        target = (doc.parent / link.split("#", 1)[0]).resolve()
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(link)
    assert not broken, f"{doc.name}: links that do not resolve inside the repository: {broken}"


def test_link_checker_sees_links():
    """The checker finds both kinds of link, and would flag one that leaves the repository."""
    sample = ROOT / "README.md"
    links = relative_links(sample)
    assert "docs/definitions.md" in links
    assert any(link.endswith(".png") for link in links)
    assert not (sample.parent / ".." / "outside.md").resolve().is_relative_to(ROOT)


def test_no_reference_to_files_outside_the_repository():
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*DOCS, *ROOT.glob("artent_fast/**/*.py")]
        if re.search(r"\.\./shared|SPEC\.md|\bSPEC \d", p.read_text())
    ]
    assert not offenders, f"these point at a design note users never see: {offenders}"
