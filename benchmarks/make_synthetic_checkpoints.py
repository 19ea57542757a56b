"""Write synthetic checkpoints with LLaMA-3-8B tensor names and shapes (base, full fine-tunes, LoRA adapters).

    python benchmarks/make_synthetic_checkpoints.py --out /tmp/llama8b --scale 1/16 --steps 100 200
    python benchmarks/make_synthetic_checkpoints.py --out /data/llama8b --scale 1 --modules q_proj v_proj --shards 4

The logic lives in artent_fast.testing.synthetic; this is its command line.
"""

from __future__ import annotations

import argparse
import time

import torch

from artent_fast.testing.synthetic import LAYERS, LLAMA_8B, make_synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for base/, full/checkpoint-STEP/, lora/checkpoint-STEP/")
    ap.add_argument("--scale", default="1/16", help="shrink every dimension by this factor (1 = real 8B shapes)")
    ap.add_argument("--layers", type=int, default=LAYERS)
    all_modules = [k.split(".")[-1] for k in LLAMA_8B]
    ap.add_argument(
        "--modules",
        nargs="+",
        default=["q_proj", "v_proj"],
        choices=all_modules,
        help="projections to write (default q_proj v_proj)",
    )
    ap.add_argument("--all-modules", action="store_true", help="all seven projections (MLP 14336x4096 included)")
    ap.add_argument("--steps", type=int, nargs="+", default=[100])
    ap.add_argument("--kinds", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank")
    ap.add_argument("--lora-alpha", type=float, default=32)
    ap.add_argument("--shards", type=int, default=1, help="safetensors shards (with an index when > 1)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    paths = make_synthetic(
        args.out,
        scale=args.scale,
        layers=args.layers,
        modules=None if args.all_modules else args.modules,
        steps=args.steps,
        kinds=args.kinds,
        rank=args.rank,
        lora_alpha=args.lora_alpha,
        shards=args.shards,
        dtype=getattr(torch, args.dtype),
        seed=args.seed,
    )
    for kind, folders in paths.items():
        for folder in folders:
            print(f"{kind:5s} {folder}")
    print(f"wrote in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
