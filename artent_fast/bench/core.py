"""Ratio tables of the core engine: exact profiles vs the naive per-bond SVD pipeline and vs one
``svdvals`` (the floor: the row/column bond *is* that SVD); factored (LoRA) profiles, single and batched.

Ratios are within one run (machines are noisy); absolute times are given for context. :func:`ratio_tables`
and :func:`engine_tables` are ``benchmarks/core_ratios.py`` and ``benchmarks/bench_gpu_engine.py``.
"""

# ruff: noqa: B023  (the timed closures run at once, inside the loop that defines them)

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from artent_fast.api import entanglement_profile, lowrank_profile, sites
from artent_fast.backends import available_backends
from artent_fast.bench.eigvalsh import eig_table
from artent_fast.bench.selfcheck import forced
from artent_fast.bench.table import Table
from artent_fast.bench.timing import machine, median_time
from artent_fast.plotting import require_matplotlib, save_figure


def naive_profile(m: torch.Tensor, reduce_elongated: bool | None = None) -> torch.Tensor:
    """The naive pipeline: normalise, then one svdvals per bond (what the paper's offline code does).

    On CUDA a bond matrix far from square (an edge bond of a 4096x4096 matrix is 2 x 2^23) makes
    cuSOLVER's gesvdj refuse its workspace query (CUSOLVER_STATUS_INVALID_VALUE, seen on an H200),
    so there the long side is first reduced by a QR factorisation, as LAPACK's own gesvd does for
    such shapes: the singular values of ``R`` are those of the matrix. ``reduce_elongated`` forces
    that step on or off (default: on CUDA only).
    """
    if reduce_elongated is None:
        reduce_elongated = m.is_cuda
    layout = sites(m.shape[-2], m.shape[-1])
    psi = m / torch.linalg.matrix_norm(m, keepdim=True)
    flat = psi.reshape(*m.shape[:-2], -1)
    out = []
    for left, right in layout.bond_dims():
        x = flat.reshape(*m.shape[:-2], left, right)
        if reduce_elongated and max(left, right) >= 64 * min(left, right):
            x = torch.linalg.qr(x.mT if left < right else x, mode="r").R
        p = torch.linalg.svdvals(x).square()
        out.append(-torch.special.xlogy(p, p).sum(-1))
    return torch.stack(out, -1)


def dense_table(
    dev: str,
    shapes: Sequence[tuple[int, int]],
    *,
    repeats: int = 3,
    sweep: bool = True,
    echo: bool = True,
    progress=iter,
) -> Table:
    """Exact profile (gram method, and sweep) of one fp32 matrix vs naive and vs one svdvals."""
    table = Table(
        "core_dense",
        "Dense exact profile of one fp32 matrix vs naive per-bond SVD and one svdvals",
        {
            "shape": "shape",
            "naive_s": "naive s",
            "svdvals_s": "one svdvals s",
            "gram_s": "gram s",
            "speedup_vs_naive": "gram vs naive",
            "gram_over_svdvals": "gram / svdvals",
            "sweep_s": "sweep s",
        },
        echo=echo,
    ).start()
    gen = torch.Generator(device=dev).manual_seed(0)
    for m, n in progress(shapes):
        w = torch.randn(m, n, device=dev, generator=gen)
        t_naive = median_time(lambda: naive_profile(w), device=dev, repeats=repeats, budget_s=5)
        t_svd = median_time(lambda: torch.linalg.svdvals(w), device=dev, repeats=repeats)
        t_gram = median_time(lambda: entanglement_profile(w, method="gram"), device=dev, repeats=repeats)
        t_sweep = (
            median_time(lambda: entanglement_profile(w, method="sweep"), device=dev, repeats=1, warmup=0)
            if sweep
            else None
        )
        table.add(
            shape=f"{m}x{n}",
            naive_s=t_naive,
            svdvals_s=t_svd,
            gram_s=t_gram,
            speedup_vs_naive=t_naive / t_gram,
            gram_over_svdvals=t_gram / t_svd,
            sweep_s=t_sweep,
        )
    return table


def factored_table(
    dev: str,
    shapes: Sequence[tuple[int, int]],
    ranks: Sequence[int],
    *,
    batch: int = 16,
    echo: bool = True,
    progress=iter,
) -> Table:
    """Factored LoRA profile (one, and per matrix in a batch) vs naive on the materialised product."""
    table = Table(
        "core_factored",
        f"Factored (LoRA) profile vs naive on the materialised product (batch {batch})",
        {
            "shape": "shape",
            "r": "r",
            "naive_s": "naive s",
            "one_ms": "factored (1) ms",
            "speedup_one": "speed-up (1)",
            "batched_ms": "factored / matrix (batched) ms",
            "speedup_batched": "speed-up / matrix",
        },
        echo=echo,
    ).start()
    gen = torch.Generator(device=dev).manual_seed(1)
    for m, n in progress(shapes):
        for r in ranks:
            B = torch.randn(m, r, device=dev, generator=gen)
            A = torch.randn(r, n, device=dev, generator=gen)
            w = B @ A
            t_naive = median_time(lambda: naive_profile(w), device=dev, repeats=3, budget_s=5)
            t_one = median_time(lambda: lowrank_profile(B, A), device=dev, repeats=20)
            Bb = torch.randn(batch, m, r, device=dev, generator=gen)
            Ab = torch.randn(batch, r, n, device=dev, generator=gen)
            t_batch = median_time(lambda: lowrank_profile(Bb, Ab), device=dev, repeats=10) / batch
            table.add(
                shape=f"{m}x{n}",
                r=r,
                naive_s=t_naive,
                one_ms=t_one * 1e3,
                speedup_one=t_naive / t_one,
                batched_ms=t_batch * 1e3,
                speedup_batched=t_naive / t_batch,
            )
    return table


def plot_speedups(dense: Table, factored: Table, path, title: str) -> None:
    """Two log-scale bar panels: dense exact profile and factored path, speed-up over naive per-bond SVD."""
    plt = require_matplotlib()
    fig, (ax_d, ax_f) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 3]})
    ax_d.bar_label(
        ax_d.bar([r["shape"] for r in dense.rows], [r["speedup_vs_naive"] for r in dense.rows], color="C0"),
        fmt="%.1fx",
        fontsize=8,
    )
    ax_d.set(title="dense exact profile (gram)", ylabel="speed-up over naive per-bond SVD")
    labels = [f"{r['shape']} r={r['r']}" for r in factored.rows]
    xs = range(len(labels))
    one = ax_f.bar(
        [x - 0.2 for x in xs], [r["speedup_one"] for r in factored.rows], 0.4, label="one matrix", color="C1"
    )
    batch = ax_f.bar(
        [x + 0.2 for x in xs],
        [r["speedup_batched"] for r in factored.rows],
        0.4,
        label="per matrix, batched",
        color="C2",
    )
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


def batch_table(dev: str, shapes: Sequence[tuple[int, int]], *, batch: int = 16, echo: bool = True) -> Table:
    """Dense profiles of a batch vs one matrix at a time (per matrix)."""
    table = Table(
        "core_batch",
        f"Dense batch of {batch} vs one at a time (per matrix)",
        {"shape": "shape", "loop_s": "one at a time s", "batched_s": "batched s / matrix", "ratio": "ratio"},
        echo=echo,
    ).start()
    gen = torch.Generator(device=dev).manual_seed(2)
    for m, n in shapes:
        ws = torch.randn(batch, m, n, device=dev, generator=gen)
        t_loop = median_time(lambda: [entanglement_profile(x) for x in ws[:4]], device=dev, repeats=1) / 4
        t_b = median_time(lambda: entanglement_profile(ws), device=dev, repeats=1) / batch
        table.add(shape=f"{m}x{n}", loop_s=t_loop, batched_s=t_b, ratio=t_b / t_loop)
    return table


def backend_table(dev: str, size: int, backends: Sequence[str | None], *, echo: bool = True) -> Table:
    """Exact profile of one ``size`` x ``size`` fp32 matrix per forced backend (None: automatic) vs one svdvals."""
    gen = torch.Generator(device=dev).manual_seed(4)
    w = torch.randn(size, size, device=dev, generator=gen)
    t_svd = median_time(lambda: torch.linalg.svdvals(w), device=dev, repeats=3)
    table = Table(
        "core_backends",
        f"Exact profile of one {size}x{size} fp32 matrix by backend vs one svdvals ({t_svd:.3f} s)",
        {"backend": "backend", "profile_s": "profile s", "over_svdvals": "profile / svdvals"},
        echo=echo,
    ).start()
    for name in backends:
        if name is not None and (name not in available_backends() or (name != "torch" and dev != "cuda")):
            table.add(backend=name, profile_s=None, over_svdvals=None)
            continue
        with forced(name):
            t = median_time(lambda: entanglement_profile(w, on_zero="nan", check_finite=False), device=dev, repeats=3)
        table.add(backend=name or "auto (default policy)", profile_s=t, over_svdvals=t / t_svd)
    return table


def lora_step_table(
    dev: str, layers: int, *, rank: int = 16, backends: Sequence[str | None] = ("torch", None), echo: bool = True
) -> Table:
    """Factored LoRA profiles of every q (4096x4096) and v (1024x4096) of ``layers`` 8B layers, per step."""
    gen = torch.Generator(device=dev).manual_seed(5)
    shapes = {"q": (4096, 4096), "v": (1024, 4096)}
    factors = {
        k: (
            torch.randn(layers, m, rank, device=dev, generator=gen) * 0.01,
            torch.randn(layers, rank, n, device=dev, generator=gen),
        )
        for k, (m, n) in shapes.items()
    }

    def step():
        return [lowrank_profile(B, A, scale=2.0, on_zero="nan", check_finite=False) for B, A in factors.values()]

    table = Table(
        "core_lora_step",
        f"Factored LoRA r={rank} profiles of every q/v matrix of {layers} layers (8B shapes), per step",
        {"backend": "backend", "step_ms": "ms per step", "matrix_ms": "ms per matrix"},
        echo=echo,
    ).start()
    for name in backends:
        with forced(name):
            t = median_time(step, device=dev, repeats=5 if dev == "cuda" else 2)
        table.add(backend=name or "auto (default policy)", step_ms=t * 1e3, matrix_ms=t * 1e3 / (2 * layers))
    return table


def ratio_tables(dev: str, quick: bool, plot: Path | None = None) -> None:
    """``benchmarks/core_ratios.py``: the dense, factored and batch tables on fp32 matrices, printed;
    ``plot``: also a PNG of the speed-ups over naive."""
    shapes = [(256, 256), (512, 128)] if quick else [(1024, 1024), (2048, 2048), (2048, 512), (4096, 1024)]
    print(f"# machine: {machine()}; device {dev}; fp32 inputs")
    dense = dense_table(dev, shapes)
    factored = factored_table(dev, shapes, [8, 16, 64])
    batch_table(dev, shapes if quick else shapes[:2])
    if plot:
        plot_speedups(dense, factored, plot, f"{machine()}; {dev}")


def engine_tables(dev: str, quick: bool) -> None:
    """``benchmarks/bench_gpu_engine.py``: batched eigvalsh by backend, the profile of one matrix by backend,
    and a LoRA step (CUDA: 1024 matrices, 4096x4096, 32 layers; CPU: reduced sizes), printed."""
    print(f"# machine: {machine()}; device {dev}; backends available: {available_backends()}")
    eig_table(
        dev,
        [64, 128] if quick and dev != "cuda" else [64, 128, 256],
        1024 if dev == "cuda" else (16 if quick else 64),
        [torch.float32, torch.float64],
    )
    backend_table(dev, 4096 if dev == "cuda" else (512 if quick else 1024), ["torch", "triton", None])
    lora_step_table(dev, 32 if dev == "cuda" else 2 if quick else 4)
