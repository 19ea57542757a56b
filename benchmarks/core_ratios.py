"""Ratio table: exact profiles against the naive pipeline (one torch.linalg.svdvals per bond)
and against one svdvals of the whole matrix (the floor: the row/column bond *is* that SVD).

    python benchmarks/core_ratios.py [--device cuda] [--quick] [--plot PNG]

A thin wrapper: the measuring code is :mod:`artent_fast.bench.core` (also run by ``artent bench``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from artent_fast.bench.core import batch_table, dense_table, factored_table, naive_profile, plot_speedups
from artent_fast.bench.timing import machine

__all__ = ["naive_profile"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--plot", type=Path, help="also write a PNG of the speed-ups over naive (matplotlib)")
    args = ap.parse_args()
    dev = args.device
    shapes = [(256, 256), (512, 128)] if args.quick else [(1024, 1024), (2048, 2048), (2048, 512), (4096, 1024)]
    print(f"# machine: {machine()}; device {dev}; fp32 inputs")
    dense = dense_table(dev, shapes)
    factored = factored_table(dev, shapes, [8, 16, 64])
    batch_table(dev, shapes if args.quick else shapes[:2])
    if args.plot:
        plot_speedups(dense, factored, args.plot, f"{machine()}; {dev}")


if __name__ == "__main__":
    main()
