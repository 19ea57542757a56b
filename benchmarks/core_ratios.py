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
    ap.add_argument("--plot", type=Path, help="also write a PNG of the speed-ups over naive (matplotlib)")
    args = ap.parse_args()
    dense: dict[str, float] = {}
    factored: dict[str, tuple[float, float]] = {}
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
        dense[f"{m}x{n}"] = t_naive / t_gram
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
            factored[f"{m}x{n} r={r}"] = (t_naive / t_one, t_naive / t_batch)
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
    if args.plot:
        plot_speedups(dense, factored, args.plot, f"{machine()}; {dev}")


def plot_speedups(dense: dict[str, float], factored: dict[str, tuple[float, float]], path: Path, title: str) -> None:
    """Two log-scale bar panels: dense exact profile and factored path, speed-up over naive per-bond SVD."""
    from artent_fast.plotting import require_matplotlib, save_figure

    plt = require_matplotlib()
    fig, (ax_d, ax_f) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 3]})
    ax_d.bar_label(ax_d.bar(list(dense), list(dense.values()), color="C0"), fmt="%.1fx", fontsize=8)
    ax_d.set(title="dense exact profile (gram)", ylabel="speed-up over naive per-bond SVD")
    labels = list(factored)
    xs = range(len(labels))
    one = ax_f.bar([x - 0.2 for x in xs], [v[0] for v in factored.values()], 0.4, label="one matrix", color="C1")
    batch = ax_f.bar([x + 0.2 for x in xs], [v[1] for v in factored.values()], 0.4, label="per matrix, batch of 16",
                     color="C2")
    for bars in (one, batch):
        ax_f.bar_label(bars, fmt="%.0fx", fontsize=7)
    ax_f.set_xticks(list(xs), labels, rotation=45, ha="right")
    ax_f.set(title="factored (LoRA) profile", yscale="log")
    ax_f.legend()
    ax_d.tick_params(axis="x", rotation=45)
    for ax in (ax_d, ax_f):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, plt, path, dpi=110)


if __name__ == "__main__":
    main()
