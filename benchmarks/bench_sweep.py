"""Sweep of an 8B-shaped checkpoint pair (q_proj and v_proj, 32 layers): I/O and compute timed separately.

    python benchmarks/bench_sweep.py --scale 1/8            # CPU, reduced scale
    python benchmarks/bench_sweep.py --scale 1 --device cuda # the real shapes on a GPU

Writes synthetic checkpoints (base, one full fine-tune, one LoRA adapter) into --workdir once, then
times fresh sweeps: dense dW = W_tuned - W_base, and the LoRA adapter (factored path). I/O is
reading tensors and moving them to the device; compute is the batched profiles (device-synchronised).
The page cache is warm after the first read: run with --repeat 1 on a cold cache for disk-bound figures.

Also a pytest-benchmark case (tiny scale):
    python -m pytest benchmarks/bench_sweep.py --benchmark-enable
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _timing when run as a script

from _timing import machine

from artent_fast.sweep import run_sweep
from artent_fast.sweep.memory import mib, reset_peak
from artent_fast.sweep.synthetic import make_synthetic


def prepare(workdir: Path, scale: str, layers: int, rank: int) -> dict[str, list[Path]]:
    stamp = workdir / f"scale-{scale.replace('/', '_')}-layers-{layers}-r{rank}"
    paths = {
        "base": [stamp / "base"],
        "full": [stamp / "full" / "checkpoint-100"],
        "lora": [stamp / "lora" / "checkpoint-100"],
    }
    if not (stamp / "done").exists():
        t0 = time.perf_counter()
        paths = make_synthetic(
            stamp, scale=scale, layers=layers, modules=("q_proj", "v_proj"), steps=(100,), rank=rank, shards=4
        )
        (stamp / "done").write_text("ok")
        print(f"wrote synthetic checkpoints in {time.perf_counter() - t0:.1f} s: {stamp}")
    return paths


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def time_sweep(label: str, checkpoint: Path, base: Path, device: str, batch: int, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
        reset_peak()  # per-sweep peak (Linux)
        try:
            r = run_sweep([checkpoint], out, base=base, batch=batch, device=device, progress=False, verbose=False)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        assert r.ok, r.errors
        if best is None or r.total_s < best.total_s:
            best = r
    read = size_of(checkpoint) + (size_of(base) if label == "dense dW" else 0)
    return {
        "label": label,
        "total": best.total_s,
        "io": best.io_s,
        "compute": best.compute_s,
        "other": best.total_s - best.io_s - best.compute_s,
        "bytes": read,
        "peak": best.peak_rss,
        "start": best.start_rss,
        "largest": best.largest_matrix,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="1/8", help="dimension scale of the 8B shapes (1 = 4096x4096 q_proj)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="matrices per work unit")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=2, help="best of N fresh sweeps")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "artent_bench_sweep")
    args = ap.parse_args()
    paths = prepare(args.workdir, args.scale, args.layers, args.rank)
    warm = prepare(args.workdir, "1/64", 1, args.rank)  # first calls (kernels, allocator) are not timed
    for kind in ("full", "lora"):
        time_sweep("warm-up", warm[kind][0], warm["base"][0], args.device, args.batch, 1)
    print(
        f"machine: {machine()}; device {args.device}; scale {args.scale}, {args.layers} layers, q+v, "
        f"batch {args.batch}, LoRA r={args.rank}"
    )
    rows = [
        time_sweep("dense dW", paths["full"][0], paths["base"][0], args.device, args.batch, args.repeat),
        time_sweep("LoRA adapter", paths["lora"][0], paths["base"][0], args.device, args.batch, args.repeat),
    ]
    print(
        f"{'sweep':14s} {'read':>10s} {'total s':>8s} {'I/O s':>7s} {'compute s':>9s} {'other s':>7s} "
        f"{'I/O share':>9s} {'GB/s read':>9s} {'RSS start':>10s} {'RSS peak':>10s} {'largest':>9s}"
    )
    for r in rows:
        print(
            f"{r['label']:14s} {mib(r['bytes']):>10s} {r['total']:8.2f} {r['io']:7.2f} {r['compute']:9.2f} "
            f"{r['other']:7.2f} {r['io'] / r['total']:9.0%} {r['bytes'] / max(r['io'], 1e-9) / 1e9:9.2f} "
            f"{mib(r['start']):>10s} {mib(r['peak']):>10s} {mib(r['largest']):>9s}"
        )


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
