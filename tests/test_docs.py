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
    """The checker finds both kinds of link."""
    sample = ROOT / "README.md"
    links = relative_links(sample)
    assert "docs/definitions.md" in links
    assert any(link.endswith(".png") for link in links)


def test_no_reference_to_files_outside_the_repository():
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*DOCS, *ROOT.glob("artent_fast/**/*.py")]
        if re.search(r"\.\./shared|SPEC\.md|\bSPEC \d", p.read_text())
    ]
    assert not offenders, f"these point at a design note users never see: {offenders}"


def declared_bounds() -> dict[str, str]:
    """``{distribution: lower bound}`` of every ``name>=X`` in pyproject.toml (dependencies and extras)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    bounds = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", spec.replace(" ", ""))
        if match:
            bounds[match[1].lower().replace("_", "-")] = match[2]
    return bounds


def test_minimum_constraints_pin_every_declared_lower_bound():
    pins = {}
    for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    from packaging.version import Version

    bounds = declared_bounds()
    bounds.pop("cupy-cuda13x", None)  # needs CUDA: not installable where the suite runs (see docs/install.md)
    assert sorted(pins) == sorted(bounds), "constraints/minimum.txt and pyproject.toml name different packages"
    differ = {name: (pins[name], bounds[name]) for name in pins if Version(pins[name]) != Version(bounds[name])}
    assert not differ, f"constraints/minimum.txt pins differ from pyproject.toml's lower bounds: {differ}"


def test_ci_runs_readmes_test_command_and_pip_check():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    command = 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest'
    assert command in ci and command in readme
    assert re.search(r"^broken=\$\(pip check\b", ci, flags=re.M), ".ci/run does not run pip check"
