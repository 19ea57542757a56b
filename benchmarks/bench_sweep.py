"""Sweep of an 8B-shaped checkpoint pair (q_proj and v_proj, 32 layers): I/O and compute timed separately.

    python benchmarks/bench_sweep.py --scale 1/8            # CPU, reduced scale
    python benchmarks/bench_sweep.py --scale 1 --device cuda # the real shapes on a GPU

Writes synthetic checkpoints (base, one full fine-tune, one LoRA adapter) into --workdir once, then
times fresh sweeps: dense dW = W_tuned - W_base, and the LoRA adapter (factored path). I/O is
reading tensors and moving them to the device; compute is the batched profiles (device-synchronised).
The page cache is warm after the first read: run with --repeat 1 on a cold cache for disk-bound figures.
The measuring code is :func:`artent_fast.bench.sweep.sweep_benchmark`.

Also a pytest-benchmark case (tiny scale):
    python -m pytest benchmarks/bench_sweep.py --benchmark-enable
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from artent_fast.bench.sweep import sweep_benchmark
from artent_fast.sweep import run_sweep
from artent_fast.testing.synthetic import make_synthetic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="1/8", help="dimension scale of the 8B shapes (1 = 4096x4096 q_proj)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="matrices per work unit")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=2, help="best of N fresh sweeps")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "artent_bench_sweep")
    sweep_benchmark(**vars(ap.parse_args()))


def test_sweep_tiny(benchmark, tmp_path):
    """pytest-benchmark: a dense-dW sweep of a 1/64-scale 8B pair (q and v, 4 layers)."""
    paths = make_synthetic(tmp_path / "ck", scale="1/64", layers=4, kinds=("full",))

    def once():
        out = Path(tempfile.mkdtemp(dir=tmp_path))
        return run_sweep([paths["full"][0]], out, base=paths["base"][0], progress=False, verbose=False)

    result = benchmark.pedantic(once, rounds=3, iterations=1)
    assert result.ok


if __name__ == "__main__":
    main()
