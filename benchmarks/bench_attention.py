"""Ratio tables for artent_fast.attention: capture cost, against torch SDPA, training steps, profiles.

    python benchmarks/bench_attention.py [--device cuda] [--quick]

- forward with capture (lse + entropy) against the same path without capture, and against
  ``torch.nn.functional.scaled_dot_product_attention``;
- forward + backward (a training step of the attention alone) against SDPA;
- ``attention_profile`` against ``entanglement_profile`` of the materialised matrices.

On CPU this measures the torch path at small sizes; on CUDA the Triton kernel at T = 2k..16k,
d = 64/128, fp16/bf16 (with TFLOP/s: 4 B H T S d flops forward, halved when causal).
Ratios are within one run; absolute times are printed for context. Not a pytest file: it
defines no tests (pytest-benchmark files would, and timing assertions are not allowed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _timing when run as a script

from _timing import machine, sync

import artent_fast as af
from artent_fast.attention import attention, attention_profile
from artent_fast.attention.reference import reference_probs


def paired_times(fns, *, device: str, repeats: int) -> list[float]:
    """Median seconds of each function, timed round-robin so that machine noise hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])


def tflops(b, h, t, d, causal, seconds, factor=1.0):
    flops = 4 * b * h * t * t * d * factor * (0.5 if causal else 1.0)
    return flops / seconds / 1e12


def forward_table(dev, dtype, shapes, repeats):
    print(f"\n## Forward ({dtype}): capture vs none, vs SDPA")
    print("| B,H,Hkv,T,d | causal | capture s | no capture s | SDPA s | speed capture:none "
          "| speed capture:SDPA | TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    gen = torch.Generator(device=dev).manual_seed(0)
    for b, h, hk, t, d in shapes:
        q = torch.randn(b, h, t, d, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(b, hk, t, d, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(b, hk, t, d, device=dev, dtype=dtype, generator=gen)
        for causal in (False, True):
            with torch.no_grad():
                t_cap, t_none, t_sdpa = paired_times(
                    [lambda: attention(q, k, v, causal=causal), lambda: attention(q, k, v, causal=causal, capture=()),
                     lambda: sdpa(q, k, v, causal)], device=dev, repeats=repeats)
            print(f"| {b},{h},{hk},{t},{d} | {causal} | {t_cap:.4f} | {t_none:.4f} | {t_sdpa:.4f} | "
                  f"{t_none / t_cap:.3f}x | {t_sdpa / t_cap:.3f}x | {tflops(b, h, t, d, causal, t_cap):.1f} |")


def training_table(dev, dtype, shapes, repeats):
    print(f"\n## Forward + backward ({dtype}), capture every step, vs SDPA")
    print("| B,H,Hkv,T,d | causal | artent s | SDPA s | speed artent:SDPA |")
    print("|---|---|---|---|---|")
    gen = torch.Generator(device=dev).manual_seed(1)
    for b, h, hk, t, d in shapes:
        q = torch.randn(b, h, t, d, device=dev, dtype=dtype, generator=gen).requires_grad_()
        k = torch.randn(b, hk, t, d, device=dev, dtype=dtype, generator=gen).requires_grad_()
        v = torch.randn(b, hk, t, d, device=dev, dtype=dtype, generator=gen).requires_grad_()
        dout = torch.randn_like(q)
        for causal in (False, True):
            def ours():
                out, _ = attention(q, k, v, causal=causal)
                torch.autograd.grad(out, (q, k, v), dout)

            def theirs():
                torch.autograd.grad(sdpa(q, k, v, causal), (q, k, v), dout)

            t_ours, t_sdpa = paired_times([ours, theirs], device=dev, repeats=repeats)
            print(f"| {b},{h},{hk},{t},{d} | {causal} | {t_ours:.4f} | {t_sdpa:.4f} | {t_sdpa / t_ours:.3f}x |")


def profile_table(dev, sizes, repeats):
    print("\n## attention_profile (chunked heads, two Gram roots) vs entanglement_profile(materialised P)")
    print("| B,H,T,d | attention_profile s | materialise + profile s | speed-up |")
    print("|---|---|---|---|")
    gen = torch.Generator(device=dev).manual_seed(2)
    for b, h, t, d in sizes:
        q = torch.randn(b, h, t, d, device=dev, generator=gen)
        k = torch.randn(b, h, t, d, device=dev, generator=gen)
        t_ours, t_mat = paired_times([lambda: attention_profile(q, k, causal=True),
                                      lambda: af.entanglement_profile(reference_probs(q, k, causal=True))],
                                     device=dev, repeats=repeats)
        print(f"| {b},{h},{t},{d} | {t_ours:.4f} | {t_mat:.4f} | {t_mat / t_ours:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# machine: {machine()}; device {dev}")
    if dev.startswith("cuda"):
        lens = [2048] if args.quick else [2048, 4096, 8192, 16384]
        shapes = [(max(1, 16384 // t), 16, 16, t, d) for t in lens for d in (64, 128)]
        for dtype in (torch.bfloat16, torch.float16):
            forward_table(dev, dtype, shapes, repeats=10)
        train = [(max(1, 8192 // t), 32, 8, t, 64) for t in ([2048] if args.quick else [2048, 4096])]  # LLaMA-1B
        training_table(dev, torch.bfloat16, train, repeats=10)
        profile_table(dev, [(1, 8, 256, 64), (1, 8, 1024, 64)], repeats=3)
    else:
        shapes = [(1, 4, 4, 128, 64), (1, 8, 2, 256, 64)] if args.quick else \
            [(1, 8, 8, 256, 64), (1, 8, 2, 512, 64), (1, 8, 8, 1024, 64), (1, 4, 4, 512, 128)]
        forward_table(dev, torch.float32, shapes, repeats=9)
        training_table(dev, torch.float32, shapes[:2], repeats=5)
        profile_table(dev, [(1, 4, 64, 32), (1, 4, 256, 32)] if args.quick else [(1, 8, 256, 64), (1, 4, 512, 64)],
                      repeats=3)


if __name__ == "__main__":
    main()
