"""``artent plot``: figures from an ``artent sweep`` table (profiles, layer x bond heatmaps, valley depth)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="figures from an `artent sweep` table")
    p.add_argument("--in", dest="inp", required=True, type=Path, metavar="DIR",
                   help="sweep output folder (or the sweep.parquet/.csv file)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the PNG figures")
    p.add_argument("--checkpoint", help="checkpoint (as in the table) for the heatmaps (default: the last step)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from artent_fast.plotting.sweep import plot_sweep
    from artent_fast.sweep.store import read_table

    table = read_table(args.inp)
    paths = plot_sweep(table, args.out, checkpoint=args.checkpoint)
    for path in paths:
        print(f"wrote {path}")
    return 0
