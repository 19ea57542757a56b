"""Ratio table: exact profiles against the naive pipeline (one torch.linalg.svdvals per bond)
and against one svdvals of the whole matrix (the floor: the row/column bond *is* that SVD).

    python benchmarks/core_ratios.py [--device cuda] [--quick]

Ratios are within one run (machines are noisy); absolute times are printed for context.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _timing when run as a script

from _timing import machine, median_time

import artent_fast as af


def naive_profile(m: torch.Tensor) -> torch.Tensor:
    """The naive pipeline: normalise, then one svdvals per bond (what the paper's offline code does)."""
    layout = af.sites(m.shape[-2], m.shape[-1])
    psi = m / torch.linalg.matrix_norm(m, keepdim=True)
    flat = psi.reshape(*m.shape[:-2], -1)
    out = []
    for left, right in layout.bond_dims():
        p = torch.linalg.svdvals(flat.reshape(*m.shape[:-2], left, right)).square()
        out.append(-torch.special.xlogy(p, p).sum(-1))
    return torch.stack(out, -1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    args = ap.parse_args()
    dev = args.device
    shapes = [(256, 256), (512, 128)] if args.quick else [(1024, 1024), (2048, 2048), (2048, 512), (4096, 1024)]
    ranks = [8, 16, 64]
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"# machine: {machine()}; device {dev}; fp32 inputs")
    print("\n## Dense exact profile (one matrix)")
    print("| shape | naive s | one svdvals s | gram s | gram vs naive | gram / svdvals | sweep s |")
    print("|---|---|---|---|---|---|---|")
    for m, n in shapes:
        w = torch.randn(m, n, device=dev, generator=gen)
        t_naive = median_time(lambda: naive_profile(w), device=dev, repeats=3)
        t_svd = median_time(lambda: torch.linalg.svdvals(w), device=dev, repeats=3)
        t_gram = median_time(lambda: af.entanglement_profile(w, method="gram"), device=dev, repeats=3)
        t_sweep = median_time(lambda: af.entanglement_profile(w, method="sweep"), device=dev, repeats=1, warmup=0)
        print(f"| {m}x{n} | {t_naive:.3f} | {t_svd:.3f} | {t_gram:.3f} | {t_naive / t_gram:.1f}x | "
              f"{t_gram / t_svd:.2f} | {t_sweep:.3f} |")
    print("\n## Factored (LoRA) profile vs naive on the materialised product")
    print("| shape | r | naive s | factored (1) | speed-up (1) | factored / matrix (batch 16) | speed-up / matrix |")
    print("|---|---|---|---|---|---|---|")
    for m, n in shapes:
        naive_cache: dict[int, float] = {}
        for r in ranks:
            B = torch.randn(m, r, device=dev, generator=gen)
            A = torch.randn(r, n, device=dev, generator=gen)
            w = B @ A
            t_naive = naive_cache.setdefault(r, median_time(lambda: naive_profile(w), device=dev, repeats=3))
            t_one = median_time(lambda: af.lowrank_profile(B, A), device=dev, repeats=20)
            Bb = torch.randn(16, m, r, device=dev, generator=gen)
            Ab = torch.randn(16, r, n, device=dev, generator=gen)
            t_batch = median_time(lambda: af.lowrank_profile(Bb, Ab), device=dev, repeats=10) / 16
            print(f"| {m}x{n} | {r} | {t_naive:.3f} | {t_one * 1e3:.2f} ms | {t_naive / t_one:.0f}x | "
                  f"{t_batch * 1e3:.2f} ms | {t_naive / t_batch:.0f}x |")
    print("\n## Dense batch of 16 vs one at a time (per matrix)")
    print("| shape | one at a time s | batched s / matrix | ratio |")
    print("|---|---|---|---|")
    for m, n in shapes[:2] if not args.quick else shapes:
        ws = torch.randn(16, m, n, device=dev, generator=gen)
        t_loop = median_time(lambda: [af.entanglement_profile(x) for x in ws[:4]], device=dev, repeats=1) / 4
        t_b = median_time(lambda: af.entanglement_profile(ws), device=dev, repeats=1) / 16
        print(f"| {m}x{n} | {t_loop:.3f} | {t_b:.3f} | {t_b / t_loop:.2f} |")


if __name__ == "__main__":
    main()
