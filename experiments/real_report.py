"""report.md and figures for experiments/real_findings.py, from results.json alone.

python experiments/real_report.py experiments/smollm2     # rewrite the report of a finished run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_report(out: Path, results: dict[str, Any], runs: Any = None) -> None:
    lines = [f"# {results['description']}", ""]
    for f in results.get("findings", []):
        lines.append(f"- **{f['verdict']}**: {f['claim']} ({f['criterion']}): {f['evidence']}")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    write_report(folder, json.loads((folder / "results.json").read_text()))
