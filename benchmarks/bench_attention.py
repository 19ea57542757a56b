"""Ratio tables for artent_fast.attention: capture cost, against torch SDPA (and flash-attn), training steps.

    python benchmarks/bench_attention.py [--device cuda] [--quick] [--threads N]

- forward with capture (lse + entropy) against the same path without capture, against
  ``torch.nn.functional.scaled_dot_product_attention`` and flash-attn when installed, in TFLOP/s;
- forward + backward (a training step of the attention alone), with and without capture;
- ``attention_profile`` against ``entanglement_profile`` of the materialised matrices.

On CPU this measures the torch path at small sizes; on CUDA the Triton kernel at T = 2k..16k,
d = 64/128, fp16/bf16. A thin wrapper over :func:`artent_fast.bench.attention.attention_tables` (the tables
are also run by ``artent bench``); not a pytest file (timing assertions are not allowed).
"""

from __future__ import annotations

import argparse

import torch

from artent_fast.bench.attention import attention_tables


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    attention_tables(args.device, args.quick)


if __name__ == "__main__":
    main()
