"""``artent plot``: figures from an ``artent sweep`` table (profiles, layer x bond heatmaps, valley depth)."""

from __future__ import annotations

import argparse
from pathlib import Path

from artent_fast.cli._common import add_command
from artent_fast.plotting.sweep import plot_sweep
from artent_fast.sweep.store import read_table

DESCRIPTION = (
    "Figures from an `artent sweep` table: the mean profile over layers per checkpoint with its theory curve "
    "(profiles_*.png), layer x bond entropy heatmaps at one checkpoint (heatmap_*.png), and the valley depth at "
    "the row/column bond against the training step (valley_depth.png). See docs/sweep.md."
)


HELP = "figures from an `artent sweep` table"
EPILOG = "exit codes: 0 figures written, 2 bad arguments (no table, or no such checkpoint)"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "plot", HELP, DESCRIPTION, EPILOG)
    p.add_argument(
        "--in",
        dest="inp",
        required=True,
        type=Path,
        metavar="DIR",
        help="sweep output folder (or its sweep.parquet / sweep.csv file)",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder for the PNG figures (created if absent)"
    )
    p.add_argument(
        "--checkpoint",
        metavar="NAME",
        help="checkpoint for the heatmaps, as written in the table's checkpoint column, or its folder "
        "name (default: the last step)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder")
    try:
        table = read_table(args.inp)
    except ValueError as exc:
        raise ValueError(f"--in: {exc}") from None
    paths = plot_sweep(table, args.out, checkpoint=args.checkpoint)
    for path in paths:
        print(f"wrote {path}")
    return 0
