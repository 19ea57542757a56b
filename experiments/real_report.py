"""``report.md`` and the figures of a findings experiment, from its ``results.json`` alone (either model source).

    python experiments/real_report.py experiments/smollm2      # (re)write the report of a finished run
    python experiments/real_report.py experiments/smollm2 --reevaluate --docs README.md docs/findings.md

``--reevaluate`` judges the stored measurements again (experiments/findings.py: current criteria and nulls)
and rewrites results.json first; ``--docs`` rewrites the findings blocks of the given documents
(experiments/doc_blocks.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: findings blocks name results files relative to it
sys.path.insert(0, str(ROOT))  # the experiments.* modules
from experiments.doc_blocks import update_docs  # noqa: E402
from experiments.findings import reevaluate  # noqa: E402
from experiments.report import write_report  # noqa: E402


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="(re)write report.md and the figures from results.json")
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--reevaluate", action="store_true", help="judge the stored measurements again (criteria, nulls) first"
    )
    parser.add_argument("--docs", nargs="*", type=Path, default=[], help="documents whose findings blocks to rewrite")
    args = parser.parse_args(argv)
    res = reevaluate(args.folder) if args.reevaluate else json.loads((args.folder / "results.json").read_text())
    path = write_report(args.folder, res)
    print(path)
    update_docs(args.docs, ROOT)
    return path


if __name__ == "__main__":
    main()
