"""Host cost of one due ``tracker.step()`` on a small LoRA model (issue 12's case), and of its measurement alone.

    python benchmarks/bench_step_cost.py                 # median of 300 due steps, 2 kv heads
    python benchmarks/bench_step_cost.py --kv-heads 4 --profile   # also a cProfile of 100 steps
    python benchmarks/bench_step_cost.py --measure-only --threads 1   # the measurement alone, no model

What the default worker thread saves inside real training is measured by ``bench_tracking.py --background``.
The measuring code (and what it measures) is :mod:`artent_fast.bench.step_cost`.
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
