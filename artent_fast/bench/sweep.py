"""A checkpoint sweep of 8B-shaped synthetic checkpoints: q and v of every layer, then all linear layers;
dense dW (fine-tune minus base) and the LoRA adapter (factored path), with the I/O share of the time.

Checkpoints are written once into a temporary folder (not timed); each sweep is fresh, I/O (reading
tensors and moving them to the device) and compute (batched profiles, device-synchronised) timed
separately by the sweep itself. The page cache is warm after writing: the I/O share is a lower bound
for a cold disk.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from artent_fast.bench.table import Table

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _sweep(checkpoint: Path, base: Path, targets, device: str, batch: int):
    from artent_fast.sweep import run_sweep

    out = Path(tempfile.mkdtemp(prefix="artent_bench_sweep_out_"))
    try:
        r = run_sweep(
            [checkpoint], out, base=base, targets=targets, batch=batch, device=device, progress=False, verbose=False
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if not r.ok:
        raise RuntimeError(f"sweep of {checkpoint} failed: {r.errors[:2]}")
    return r


def sweep_table(dev: str, cases: list[dict], *, batch: int = 8, echo: bool = True, progress=iter) -> Table:
    """``cases``: dicts with ``label``, ``scale`` (of the 8B shapes), ``layers``, ``modules`` (short names)."""
    from artent_fast.sweep.synthetic import make_synthetic

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
        _sweep(warm["full"][0], warm["base"][0], ("q_proj", "v_proj"), dev, batch)  # first calls not timed
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
                r = _sweep(paths[kind][0], paths["base"][0], modules, dev, batch)
                read = _size(paths[kind][0]) + (_size(paths["base"][0]) if kind == "full" else 0)
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
