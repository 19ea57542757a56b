"""A checkpoint sweep of 8B-shaped synthetic checkpoints, I/O and compute timed separately by the sweep itself.

:func:`sweep_table` (``artent bench``): q and v of every layer, then all linear layers; dense dW (fine-tune
minus base) and the LoRA adapter (factored path), with the I/O share of the time. :func:`sweep_benchmark`
(``benchmarks/bench_sweep.py``): one q+v pair at a chosen scale, best of N sweeps, with memory.

Checkpoints are written once into a temporary folder (not timed); each sweep is fresh, I/O (reading
tensors and moving them to the device) and compute (batched profiles, device-synchronised) timed
separately by the sweep itself. The page cache is warm after writing: the I/O share is a lower bound
for a cold disk.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from artent_fast.bench.table import Table
from artent_fast.bench.timing import machine
from artent_fast.sweep import DEFAULT_TARGETS, SweepResult, run_sweep
from artent_fast.sweep.memory import mib, reset_peak
from artent_fast.testing.synthetic import make_synthetic

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def size_of(folder: Path) -> int:
    """Bytes of the safetensors files of a checkpoint folder."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def timed_sweep(
    checkpoint: Path, base: Path, device: str, batch: int, *, targets: Sequence[str] = DEFAULT_TARGETS, repeat: int = 1
) -> SweepResult:
    """The fastest of ``repeat`` fresh sweeps of ``checkpoint`` against ``base`` (each into a temporary folder,
    removed after; the process's peak RSS reset before each, so the result's ``peak_rss`` is its own)."""
    best = None
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="artent_bench_sweep_out_"))
        reset_peak()
        try:
            r = run_sweep(
                [checkpoint], out, base=base, targets=targets, batch=batch, device=device, progress=False, verbose=False
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        if not r.ok:
            raise RuntimeError(f"sweep of {checkpoint} failed: {r.errors[:2]}")
        if best is None or r.total_s < best.total_s:
            best = r
    return best


def sweep_table(dev: str, cases: list[dict], *, batch: int = 8, echo: bool = True, progress=iter) -> Table:
    """``cases``: dicts with ``label``, ``scale`` (of the 8B shapes), ``layers``, ``modules`` (short names)."""
    table = Table(
        "sweep",
        "Checkpoint sweep of 8B-shaped synthetic checkpoints (I/O share of the sweep time)",
        {
            "case": "modules",
            "scale": "scale",
            "layers": "layers",
            "kind": "sweep",
            "matrices": "matrices",
            "read_mib": "read MiB",
            "total_s": "total s",
            "io_s": "I/O s",
            "compute_s": "compute s",
            "io_share": "I/O share",
            "gb_per_s": "GB/s read",
        },
        echo=echo,
    ).start()
    work = Path(tempfile.mkdtemp(prefix="artent_bench_sweep_"))
    try:
        warm = make_synthetic(work / "warm", scale="1/64", layers=1, steps=(100,))
        timed_sweep(warm["full"][0], warm["base"][0], dev, batch, targets=("q_proj", "v_proj"))  # first calls not timed
        for i, case in enumerate(progress(cases)):
            modules = case["modules"]
            paths = make_synthetic(
                work / f"c{i}",
                scale=case["scale"],
                layers=case["layers"],
                modules=modules,
                steps=(100,),
                lora_modules=("q_proj", "v_proj"),
            )
            for kind in ("full", "lora"):
                if kind == "lora" and not case.get("lora", True):
                    continue
                r = timed_sweep(paths[kind][0], paths["base"][0], dev, batch, targets=modules)
                read = size_of(paths[kind][0]) + (size_of(paths["base"][0]) if kind == "full" else 0)
                table.add(
                    case=case["label"],
                    scale=str(case["scale"]),
                    layers=case["layers"],
                    kind="dense dW" if kind == "full" else "LoRA adapter",
                    matrices=case["layers"] * len(modules),
                    read_mib=read / 2**20,
                    total_s=r.total_s,
                    io_s=r.io_s,
                    compute_s=r.compute_s,
                    io_share=r.io_s / r.total_s if r.total_s else None,
                    gb_per_s=read / max(r.io_s, 1e-9) / 1e9,
                )
            shutil.rmtree(work / f"c{i}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table


def prepare(workdir: Path, scale: str, layers: int, rank: int) -> dict[str, list[Path]]:
    """Synthetic 8B-shaped q+v checkpoints (base, one full fine-tune, one LoRA adapter, 4 shards) under
    ``workdir``, written once per (scale, layers, rank) and reused by later runs."""
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


def _row(label: str, checkpoint: Path, base: Path, device: str, batch: int, repeat: int) -> dict:
    best = timed_sweep(checkpoint, base, device, batch, repeat=repeat)
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


def sweep_benchmark(
    *, scale: str, layers: int, rank: int, batch: int, device: str, repeat: int, workdir: Path
) -> list[dict]:
    """Sweeps of an 8B-shaped q+v pair at ``scale`` (dense dW, then the LoRA adapter), best of ``repeat``,
    after an untimed warm-up at scale 1/64; prints a table (and returns its rows)."""
    paths = prepare(workdir, scale, layers, rank)
    warm = prepare(workdir, "1/64", 1, rank)  # first calls (kernels, allocator) are not timed
    for kind in ("full", "lora"):
        timed_sweep(warm[kind][0], warm["base"][0], device, batch)
    print(f"machine: {machine()}; device {device}; scale {scale}, {layers} layers, q+v, batch {batch}, LoRA r={rank}")
    rows = [
        _row("dense dW", paths["full"][0], paths["base"][0], device, batch, repeat),
        _row("LoRA adapter", paths["lora"][0], paths["base"][0], device, batch, repeat),
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
    return rows
