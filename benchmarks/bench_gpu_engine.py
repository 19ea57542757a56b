"""Ratio tables for the GPU engine (issue 5): batched eigvalsh, dense exact profiles, factored LoRA profiles.

    python benchmarks/bench_gpu_engine.py [--device cuda|cpu] [--quick]

On CUDA: eigenvalues of 1024 symmetric matrices of size 64/128/256 (torch.linalg.eigvalsh, the CUDA
Jacobi extension where built, cupy where installed, and the dispatcher's measured choice), the exact
profile of a 4096x4096 matrix against one svdvals of it (torch and triton backends), and factored
LoRA r=16 profiles of every q/v of an 8B model per step. Without CUDA the same tables run at reduced
sizes on CPU. A thin wrapper over :func:`artent_fast.bench.core.engine_tables` (the tables are also run by
``artent bench``).
"""

from __future__ import annotations

import argparse

import torch

from artent_fast.bench.core import engine_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    args = ap.parse_args()
    engine_tables(args.device, args.quick)


if __name__ == "__main__":
    main()
