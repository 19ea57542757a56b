"""Ratio tables for artent_fast.attention: capture cost, against torch SDPA (and flash-attn), training steps.

    python benchmarks/bench_attention.py [--device cuda] [--quick] [--threads N]

- forward with capture (lse + entropy) against the same path without capture, against
  ``torch.nn.functional.scaled_dot_product_attention`` and flash-attn when installed, in TFLOP/s;
- forward + backward (a training step of the attention alone), with and without capture;
- ``attention_profile`` against ``entanglement_profile`` of the materialised matrices.

On CPU this measures the torch path at small sizes; on CUDA the Triton kernel at T = 2k..16k,
d = 64/128, fp16/bf16. A thin wrapper over :mod:`artent_fast.bench.attention` (also run by
``artent bench``); not a pytest file (timing assertions are not allowed).
"""

from __future__ import annotations

import argparse

import torch

import artent_fast as af
from artent_fast.attention import attention_profile
from artent_fast.attention.reference import reference_probs
from artent_fast.bench.attention import forward_table, training_table
from artent_fast.bench.table import Table
from artent_fast.bench.timing import machine, paired_times


def profile_table(dev, sizes, repeats):
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
                lambda: af.entanglement_profile(reference_probs(q, k, causal=True)),
            ],
            device=dev,
            repeats=repeats,
        )
        table.add(shape=f"{b},{h},{t},{d}", ours_s=t_ours, mat_s=t_mat, speedup=t_mat / t_ours)


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
        shapes = (
            [(1, 4, 4, 128, 64), (1, 8, 2, 256, 64)]
            if args.quick
            else [(1, 8, 8, 256, 64), (1, 8, 2, 512, 64), (1, 8, 8, 1024, 64), (1, 4, 4, 512, 128)]
        )
        forward_table(dev, torch.float32, shapes, repeats=9)
        training_table(dev, torch.float32, shapes[:2], repeats=5)
        profile_table(
            dev, [(1, 4, 64, 32), (1, 4, 256, 32)] if args.quick else [(1, 8, 256, 64), (1, 4, 512, 64)], repeats=3
        )


if __name__ == "__main__":
    main()
