"""Step-time overhead of artent_fast.track on a LoRA fine-tune (ratios within one run).

Default (the CPU target, <= 5%): a 4-layer, 256-hidden LLaMA (8 heads, 4 key/value heads), LoRA
r=8 on q_proj and v_proj, batches of 4 x 128 tokens, tracked every step. ``--preset llama1b``
(the GPU target, <= 1%): LLaMA-3.2-1B shapes, 16 layers, q 2048x2048 and v 512x2048, r=16.

Tracked and untracked blocks of steps alternate on the same model so that machine noise hits
both alike; a block is timed as a whole (with a CUDA synchronize at its end), so on CUDA the
side-stream work the tracker queues is counted where it competes with training. The table gives
median per-step wall times, their ratio, the host time of ``tracker.step()`` itself, and the
process CPU time per step (less sensitive to other processes on a shared machine; CPU only).

    python benchmarks/bench_tracking.py                       # CPU target, vocab 32000
    python benchmarks/bench_tracking.py --vocab 256           # tiny vocabulary: a cheaper step, the harder case
    python benchmarks/bench_tracking.py --preset llama1b --device cuda --dtype bfloat16

Distributed (``--distributed fsdp2|ddp``, launched with torchrun; every rank trains and tracks, the
tracker splits the measuring work across ranks and gathers to rank 0; rank 0 prints):

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/bench_tracking.py --distributed fsdp2 --vocab 256
    torchrun --nproc-per-node 8 benchmarks/bench_tracking.py --distributed fsdp2 --preset llama1b \
        --device cuda --dtype bfloat16                      # NCCL, one GPU per rank

The measuring code is :func:`artent_fast.bench.tracking.overhead_benchmark`.
"""

from __future__ import annotations

import argparse
import os

from artent_fast.bench.tracking import PRESETS, overhead_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: the preset's)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: the preset's)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--blocks", type=int, default=6, help="tracked/untracked block pairs")
    parser.add_argument("--block-steps", type=int, default=5)
    parser.add_argument("--distributed", choices=("fsdp2", "ddp"), help="under torchrun: shard (FSDP2) or replicate")
    parser.add_argument(
        "--background",
        choices=("auto", "on", "off"),
        default="auto",
        help="CPU: measure on the tracker's worker thread (on) or the training thread (off); auto: track()'s default",
    )
    args = parser.parse_args()
    if args.distributed and "WORLD_SIZE" not in os.environ:
        parser.error("--distributed: launch with torchrun --nproc-per-node N")
    background = {"auto": None, "on": True, "off": False}[args.background]
    overhead_benchmark(
        args.preset,
        vocab=args.vocab,
        rank=args.rank,
        batch=args.batch,
        seq_len=args.seq_len,
        device=args.device,
        dtype=args.dtype,
        blocks=args.blocks,
        block_steps=args.block_steps,
        distributed=args.distributed,
        background=background,
    )


if __name__ == "__main__":
    main()
