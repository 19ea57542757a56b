"""``artent bench``: the machine, which backends load (and why not), a self-check, and every ratio table.

    artent bench --quick                     # CPU or the GPU if there is one, a few minutes
    artent bench --device cuda --out DIR     # the full tables on the GPU

Writes ``report.md``, ``results.json`` and figures to ``--out``; exit 1 when the self-check fails.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from artent_fast.bench.runner import run_bench
from artent_fast.cli._common import add_command

HELP = "how fast is this here, and which backend runs: tables, self-check, report"
DESCRIPTION = (
    "The machine, which backends load (and why the others do not), a self-check against "
    "float64 torch, and every ratio table; writes report.md, results.json and figures to --out."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "bench", HELP, DESCRIPTION)
    p.add_argument("--quick", action="store_true", help="smaller shapes: <= 3 min on a 2-core CPU, minutes on a GPU")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--out", default="artent_bench", metavar="DIR", help="folder for report.md, results.json, figures")
    p.add_argument(
        "--only",
        metavar="SECTIONS",
        help="comma-separated subset of: selfcheck, core, eigvalsh, attention, tracking, sweep",
    )
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # toy sizes: the CI test of the command
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    only = None if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    command = "artent " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    results = run_bench(device, mode=mode, out=args.out, only=only, command=command)
    if results["selfcheck_passed"] is False:
        print("artent bench: the self-check FAILED (see report.md)", file=sys.stderr)
        return 1
    return 0
