"""Ratio table: exact profiles against the naive pipeline (one torch.linalg.svdvals per bond)
and against one svdvals of the whole matrix (the floor: the row/column bond *is* that SVD).

    python benchmarks/core_ratios.py [--device cuda] [--quick] [--plot PNG]

A thin wrapper over :func:`artent_fast.bench.core.ratio_tables` (the tables are also run by ``artent bench``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from artent_fast.bench.core import ratio_tables


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--plot", type=Path, help="also write a PNG of the speed-ups over naive (matplotlib)")
    args = ap.parse_args()
    ratio_tables(args.device, args.quick, args.plot)


if __name__ == "__main__":
    main()
