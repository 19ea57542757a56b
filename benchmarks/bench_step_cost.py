"""Host cost of one due ``tracker.step()`` on a small LoRA model, and of its measurement alone.

The case of issue 12: a 4-layer LLaMA with hidden 256 (8 heads), LoRA r=8 on q_proj and v_proj:
8 tracked updates, q 256x256 and v (kv_heads * 32)x256 (``--kv-heads 2``: 64x256, the issue's
shapes; 4: 128x256, benchmarks/bench_tracking.py's preset). Between timed calls the LoRA factors
are nudged (as an optimizer step would), so nothing can be served from a cache of old results.

    python benchmarks/bench_step_cost.py                 # median of 300 due steps, 2 kv heads
    python benchmarks/bench_step_cost.py --kv-heads 4 --profile   # also a cProfile of 100 steps
    python benchmarks/bench_step_cost.py --measure-only --threads 1   # the measurement alone, no model

The tracker runs with ``background=False`` here (the whole due step on the calling thread); what
the default worker thread saves inside real training is measured by ``bench_tracking.py --background``.
The measuring code is :mod:`artent_fast.bench.step_cost`.
"""

from __future__ import annotations

import argparse

import torch

from artent_fast.bench.step_cost import step_cost, time_measurement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of 100 due steps")
    parser.add_argument("--measure-only", action="store_true", help="time the measurement alone (no model)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_only:
        time_measurement(args.kv_heads, args.rank, args.steps)
    else:
        step_cost(args.kv_heads, args.rank, args.steps, profile=args.profile)


if __name__ == "__main__":
    main()
