"""Fused attention: forward and forward+backward, with and without capture, vs torch SDPA (and flash-attn
when installed), in TFLOP/s (4 B H T S d flops forward, 2.5x that backward, halved when causal).

On CUDA the Triton kernels run (fp16/bf16); on CPU the torch path at small sizes (float32).
"""

# ruff: noqa: B023  (the timed closures run at once, inside the loop that defines them)

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from artent_fast.api import entanglement_profile
from artent_fast.attention import attention_profile, fused_attention
from artent_fast.attention.reference import reference_probs
from artent_fast.bench.table import Table
from artent_fast.bench.timing import machine, paired_times
from artent_fast.plotting import require_matplotlib, save_figure

Shape = tuple[int, int, int, int, int]  # B, H, Hkv, T, d


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])


def flash_fn():
    """flash-attn's ``flash_attn_func`` on (B, T, H, d) tensors, or None when not installed."""
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        from flash_attn import flash_attn_func
    except Exception:  # installed but broken (ABI mismatch with this torch): left out of the table
        return None
    return flash_attn_func


def tflops(shape: Shape, causal: bool, seconds: float | None, factor: float = 1.0) -> float | None:
    b, h, _, t, d = shape
    if not seconds:
        return None
    return 4 * b * h * t * t * d * factor * (0.5 if causal else 1.0) / seconds / 1e12


def _inputs(shape: Shape, dev: str, dtype: torch.dtype, gen: torch.Generator, grad: bool = False):
    b, h, hk, t, d = shape
    q = torch.randn(b, h, t, d, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(b, hk, t, d, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(b, hk, t, d, device=dev, dtype=dtype, generator=gen)
    return [x.requires_grad_(grad) for x in (q, k, v)]


COLUMNS = {
    "shape": "B,H,Hkv,T,d",
    "causal": "causal",
    "capture_s": "capture s",
    "none_s": "no capture s",
    "sdpa_s": "SDPA s",
    "flash_s": "flash-attn s",
    "capture_tflops": "capture TFLOP/s",
    "none_tflops": "no capture TFLOP/s",
    "sdpa_tflops": "SDPA TFLOP/s",
    "flash_tflops": "flash-attn TFLOP/s",
    "capture_vs_sdpa": "speed capture:SDPA",
}


def _table(name: str, title: str, columns: Sequence[str], echo: bool) -> Table:
    return Table(name, title, {k: COLUMNS[k] for k in columns}, echo=echo).start()


def _time_rows(table: Table, dev, dtype, shapes, fns_for, *, seed: int, grad: bool, factor: float, repeats, progress):
    """One row per shape and causal flag: times of ``fns_for(q, k, v, flash)(causal)`` (capture, no capture,
    SDPA, flash-attn when installed) and their TFLOP/s (``factor`` times the forward's flops); returns ``flash``."""
    flash = flash_fn() if dev.startswith("cuda") else None
    columns = list(table.columns)
    gen = torch.Generator(device=dev).manual_seed(seed)
    for shape in progress(shapes):
        q, k, v = _inputs(shape, dev, dtype, gen, grad=grad)
        fns = fns_for(q, k, v, flash)
        for causal in (False, True):
            with torch.set_grad_enabled(grad):
                times = paired_times(fns(causal), device=dev, repeats=repeats) + [None]
            t_cap, t_none, t_sdpa, t_flash = times[:4]
            row = {
                "shape": ",".join(map(str, shape)),
                "causal": causal,
                "capture_s": t_cap,
                "none_s": t_none,
                "sdpa_s": t_sdpa,
                "flash_s": t_flash,
                "capture_tflops": tflops(shape, causal, t_cap, factor),
                "none_tflops": tflops(shape, causal, t_none, factor),
                "sdpa_tflops": tflops(shape, causal, t_sdpa, factor),
                "flash_tflops": tflops(shape, causal, t_flash, factor),
                "capture_vs_sdpa": t_sdpa / t_cap,
            }
            table.add(**{k: row[k] for k in columns})
    return flash


def forward_table(
    dev: str, dtype: torch.dtype, shapes: Sequence[Shape], *, repeats: int, echo: bool = True, progress=iter
) -> Table:
    def fns_for(q, k, v, flash):
        qf, kf, vf = (x.transpose(1, 2).contiguous() for x in (q, k, v)) if flash is not None else (q, k, v)
        return lambda causal: [
            lambda: fused_attention(q, k, v, causal=causal),
            lambda: fused_attention(q, k, v, causal=causal, capture=()),
            lambda: sdpa(q, k, v, causal),
            *([lambda: flash(qf, kf, vf, causal=causal)] if flash is not None else []),
        ]

    kind = str(dtype)[6:]
    table = _table(f"attention_fwd_{kind}", f"Attention forward ({kind}): capture vs none vs SDPA", COLUMNS, echo)
    flash = _time_rows(
        table, dev, dtype, shapes, fns_for, seed=0, grad=False, factor=1.0, repeats=repeats, progress=progress
    )
    if flash is None:
        table.note("flash-attn is not installed (or not on CUDA): its columns are n/a")
    return table


def training_table(
    dev: str, dtype: torch.dtype, shapes: Sequence[Shape], *, repeats: int, echo: bool = True, progress=iter
) -> Table:
    def fns_for(q, k, v, flash):
        dout = torch.randn_like(q)
        if flash is not None:
            qf, kf, vf = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
            df = dout.transpose(1, 2).contiguous()

        def fns(causal):
            def ours(capture=("lse", "entropy")):
                out, _ = fused_attention(q, k, v, causal=causal, capture=capture)
                torch.autograd.grad(out, (q, k, v), dout)

            def theirs():
                torch.autograd.grad(sdpa(q, k, v, causal), (q, k, v), dout)

            if flash is None:
                return [ours, lambda: ours(()), theirs]
            return [
                ours,
                lambda: ours(()),
                theirs,
                lambda: torch.autograd.grad(flash(qf, kf, vf, causal=causal), (qf, kf, vf), df),
            ]

        return fns

    kind = str(dtype)[6:]
    title = f"Attention forward + backward ({kind}): capture vs none vs SDPA"
    table = _table(f"attention_fwd_bwd_{kind}", title, [c for c in COLUMNS if c != "none_tflops"], echo)
    _time_rows(table, dev, dtype, shapes, fns_for, seed=1, grad=True, factor=3.5, repeats=repeats, progress=progress)
    return table


def profile_table(dev: str, sizes, repeats: int) -> Table:
    """``attention_profile`` (chunked heads, two Gram roots) against ``entanglement_profile`` of the
    materialised attention matrices, causal, per ``(B, H, T, d)`` in ``sizes``."""
    table = Table(
        "attention_profile",
        "attention_profile (chunked heads, two Gram roots) vs entanglement_profile(materialised P)",
        {
            "shape": "B,H,T,d",
            "ours_s": "attention_profile s",
            "mat_s": "materialise + profile s",
            "speedup": "speed-up",
        },
    )
    table.start()
    gen = torch.Generator(device=dev).manual_seed(2)
    for b, h, t, d in sizes:
        q = torch.randn(b, h, t, d, device=dev, generator=gen)
        k = torch.randn(b, h, t, d, device=dev, generator=gen)
        t_ours, t_mat = paired_times(
            [
                lambda: attention_profile(q, k, causal=True),
                lambda: entanglement_profile(reference_probs(q, k, causal=True)),
            ],
            device=dev,
            repeats=repeats,
        )
        table.add(shape=f"{b},{h},{t},{d}", ours_s=t_ours, mat_s=t_mat, speedup=t_mat / t_ours)
    return table


def attention_tables(dev: str, quick: bool) -> None:
    """``benchmarks/bench_attention.py``: forward, forward + backward and profile tables, printed (CUDA: the
    Triton kernels at T = 2k..16k, bf16 and fp16; CPU: the torch path at small sizes; ``quick``: fewer)."""
    print(f"# machine: {machine()}; device {dev}")
    if dev.startswith("cuda"):
        lens = [2048] if quick else [2048, 4096, 8192, 16384]
        shapes = [(max(1, 16384 // t), 16, 16, t, d) for t in lens for d in (64, 128)]
        for dtype in (torch.bfloat16, torch.float16):
            forward_table(dev, dtype, shapes, repeats=10)
        train = [(max(1, 8192 // t), 32, 8, t, 64) for t in ([2048] if quick else [2048, 4096])]  # LLaMA-1B
        training_table(dev, torch.bfloat16, train, repeats=10)
        profile_table(dev, [(1, 8, 256, 64), (1, 8, 1024, 64)], repeats=3)
    else:
        shapes = (
            [(1, 4, 4, 128, 64), (1, 8, 2, 256, 64)]
            if quick
            else [(1, 8, 8, 256, 64), (1, 8, 2, 512, 64), (1, 8, 8, 1024, 64), (1, 4, 4, 512, 128)]
        )
        forward_table(dev, torch.float32, shapes, repeats=9)
        training_table(dev, torch.float32, shapes[:2], repeats=5)
        profile_table(
            dev, [(1, 4, 64, 32), (1, 4, 256, 32)] if quick else [(1, 8, 256, 64), (1, 4, 512, 64)], repeats=3
        )


def plot_attention(tables: Sequence[Table], path, title: str) -> None:
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 4), squeeze=False)
    for ax, table in zip(axes[0], tables, strict=True):
        labels = [f"{r['shape']}{' c' if r['causal'] else ''}" for r in table.rows]
        xs = range(len(labels))
        cols = [("capture_tflops", "artent (capture)"), ("sdpa_tflops", "SDPA"), ("flash_tflops", "flash-attn")]
        for i, (col, name) in enumerate(cols):
            ax.bar([x + (i - 1) * 0.27 for x in xs], [r.get(col) or 0 for r in table.rows], 0.27, label=name)
        ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=7)
        ax.set(title=table.title, ylabel="TFLOP/s")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, plt, path, dpi=110)
