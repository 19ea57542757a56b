"""The findings blocks of README.md and docs/findings.md (``<!-- findings: PATH -->`` ... ``<!-- /findings -->``):
verdict lists generated from the results.json files they name, so that the numbers in the docs come from
results.json alone (a test checks they match)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from artent_fast.atomic import atomic_write
from experiments.report import summary_markdown

BLOCK = re.compile(r"(<!-- findings: (\S+) -->\n)(.*?)(<!-- /findings -->)", re.S)


def doc_blocks(text: str) -> list[tuple[str, str]]:
    """(results.json path relative to the repository, block text) of every findings block in a document."""
    return [(m.group(2), m.group(3)) for m in BLOCK.finditer(text)]


def update_docs(paths: list[Path], root: Path) -> None:
    """Rewrite the findings blocks (``<!-- findings: PATH -->`` ... ``<!-- /findings -->``) of ``paths`` from
    the results files they name, so that the numbers in README and docs come from results.json alone."""
    for path in paths:
        text = path.read_text()
        new = BLOCK.sub(
            lambda m: m.group(1) + summary_markdown(json.loads((root / m.group(2)).read_text())) + m.group(4), text
        )
        if new != text:
            atomic_write(path, new)
