"""Ratio tables for the GPU engine (issue 5): batched eigvalsh, dense exact profiles, factored LoRA profiles.

    python benchmarks/bench_gpu_engine.py [--device cuda|cpu] [--quick]

On CUDA: eigenvalues of 1024 symmetric matrices of size 64/128/256 (torch.linalg.eigvalsh against
the CUDA Jacobi extension, where built), the exact profile of a 4096x4096 matrix against one
svdvals of it (torch and triton backends), all 32 layers' q (4096x4096) and v (1024x4096) of an
8B model, and factored LoRA r=16 profiles of every q/v of an 8B model per step. Without CUDA the
same tables run at reduced sizes on CPU (the Triton and CUDA kernels need a GPU: their columns
say "n/a"). Ratios are within one run; absolute times are printed for context.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _timing when run as a script

from _timing import machine, median_time

import artent_fast as af
from artent_fast.backends import available_backends


@contextmanager
def backend(name: str | None):
    """Force ``ARTENT_FAST_BACKEND`` for the block (None: the default policy)."""
    old = os.environ.get("ARTENT_FAST_BACKEND")
    if name is None:
        os.environ.pop("ARTENT_FAST_BACKEND", None)
    else:
        os.environ["ARTENT_FAST_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ARTENT_FAST_BACKEND", None)
        else:
            os.environ["ARTENT_FAST_BACKEND"] = old


def sym_batch(batch: int, n: int, dtype: torch.dtype, dev: str, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(batch, n, n + 8, device=dev, dtype=dtype, generator=gen)
    return x @ x.mT


def eig_table(dev: str, quick: bool, gen: torch.Generator) -> None:
    cuda_ok = dev == "cuda" and "cuda" in available_backends()
    batch = 1024 if dev == "cuda" else (16 if quick else 64)
    sizes = [64, 128, 256] if not quick else [64, 128]
    print(f"\n## Eigenvalues of {batch} symmetric matrices (values only)")
    print("| n | dtype | torch.linalg.eigvalsh s | CUDA Jacobi s | speed-up | max rel. diff |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        for dtype in (torch.float32, torch.float64):
            a = sym_batch(batch, n, dtype, dev, gen)
            t_torch = median_time(lambda: torch.linalg.eigvalsh(a), device=dev, repeats=3)
            if cuda_ok:
                from artent_fast.backends import cuda_ops

                t_jac = median_time(lambda: cuda_ops.jacobi_eigvalsh(a), device=dev, repeats=3)
                ref = torch.linalg.eigvalsh(a.double())
                diff = float(((cuda_ops.jacobi_eigvalsh(a).double() - ref).abs().amax(-1) / ref.abs().amax(-1)).max())
                print(f"| {n} | {str(dtype)[6:]} | {t_torch:.4f} | {t_jac:.4f} | {t_torch / t_jac:.1f}x | {diff:.1e} |")
            else:
                print(f"| {n} | {str(dtype)[6:]} | {t_torch:.4f} | n/a | n/a | n/a |")


def dense_table(dev: str, quick: bool, gen: torch.Generator) -> None:
    size = 4096 if dev == "cuda" else (512 if quick else 1024)
    w = torch.randn(size, size, device=dev, generator=gen)
    t_svd = median_time(lambda: torch.linalg.svdvals(w), device=dev, repeats=3)
    print(f"\n## Exact profile of one {size}x{size} fp32 matrix vs one torch.linalg.svdvals ({t_svd:.3f} s)")
    print("| backend | profile s | profile / svdvals |")
    print("|---|---|---|")
    for name in ("torch", "triton", None):
        if name == "triton" and (dev != "cuda" or "triton" not in available_backends()):
            print("| triton | n/a | n/a |")
            continue
        with backend(name):
            t = median_time(lambda: af.entanglement_profile(w, on_zero="nan", check_finite=False), device=dev,
                            repeats=3)
        print(f"| {name or 'auto (default policy)'} | {t:.3f} | {t / t_svd:.2f} |")
    if dev == "cuda" and not quick:
        q = torch.randn(32, 4096, 4096, device=dev, generator=gen)
        v = torch.randn(32, 1024, 4096, device=dev, generator=gen)

        def all_layers():
            for i in range(32):
                af.entanglement_profile(q[i], on_zero="nan", check_finite=False)
                af.entanglement_profile(v[i], on_zero="nan", check_finite=False)

        t_all = median_time(all_layers, device=dev, repeats=1)
        print(f"\nAll 32 layers of an 8B model (q 4096x4096 and v 1024x4096), exact: {t_all:.2f} s (target <= 10 s)")


def lora_table(dev: str, quick: bool, gen: torch.Generator) -> None:
    layers, r = (32 if dev == "cuda" else 2 if quick else 4), 16
    shapes = {"q": (4096, 4096), "v": (1024, 4096)}
    factors = {
        k: (torch.randn(layers, m, r, device=dev, generator=gen) * 0.01, torch.randn(layers, r, n, device=dev,
                                                                                      generator=gen))
        for k, (m, n) in shapes.items()
    }

    def step():
        return [af.lowrank_profile(B, A, scale=2.0, on_zero="nan", check_finite=False) for B, A in factors.values()]

    print(f"\n## Factored LoRA r={r} profiles of every q/v matrix of {layers} layers (8B shapes), per step")
    print("| backend | ms per step | ms per matrix |")
    print("|---|---|---|")
    for name in ("torch", None):
        with backend(name):
            t = median_time(step, device=dev, repeats=5 if dev == "cuda" else 2)
        print(f"| {name or 'auto (default policy)'} | {t * 1e3:.2f} | {t * 1e3 / (2 * layers):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    args = ap.parse_args()
    dev = args.device
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"# machine: {machine()}; device {dev}; backends available: {available_backends()}")
    eig_table(dev, args.quick, gen)
    dense_table(dev, args.quick, gen)
    lora_table(dev, args.quick, gen)


if __name__ == "__main__":
    main()
