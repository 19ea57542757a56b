"""Helpers (no tests) for the sweep tests: small checkpoints written with safetensors, the float64 reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from artent_fast.core.reference import reference_profile


def save(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 1, stem: str = "model") -> None:
    """One safetensors file, or ``shards`` files plus model.safetensors.index.json."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if shards == 1:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"{stem}.safetensors"))
        return
    per = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        fname = f"{stem}-{s + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {k: tensors[k].contiguous() for k in names[s * per : (s + 1) * per]}
        save_file(chunk, str(folder / fname))
        weight_map.update(dict.fromkeys(chunk, fname))
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def model_tensors(
    rng: np.random.Generator, layers: int, shapes: dict[str, tuple[int, int]], dtype=torch.float32
) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": torch.randn(10, 8), "model.norm.weight": torch.ones(8)}
    for layer in range(layers):
        for mod, shape in shapes.items():
            out[f"model.layers.{layer}.{mod}.weight"] = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    out["lm_head.weight"] = torch.randn(10, 8)
    return out


def peft_config(r: int = 2, **extra) -> dict:
    """An ``adapter_config.json`` of a peft LoRA adapter of rank ``r`` (alpha 16), ``extra`` fields set."""
    return {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 16,
        "rank_pattern": {},
        "alpha_pattern": {},
        "fan_in_fan_out": False,
        **extra,
    }


def ref(matrix: torch.Tensor) -> np.ndarray:
    """The float64 numpy reference profile (one SVD per bond)."""
    return reference_profile(matrix.double().numpy())


def rows_by_module(table: dict[str, list], checkpoint: str | None = None) -> dict[str, np.ndarray]:
    """``module -> entropies ordered by bond`` (checks each bond appears once)."""
    acc: dict[str, dict[int, float]] = {}
    for ckpt, module, bond, s in zip(
        table["checkpoint"], table["module"], table["bond"], table["entropy"], strict=True
    ):
        if checkpoint is not None and ckpt != checkpoint:
            continue
        per = acc.setdefault(module, {})
        assert bond not in per, f"duplicate row {ckpt} {module} bond {bond}"
        per[bond] = s
    return {m: np.array([per[b] for b in sorted(per)]) for m, per in acc.items()}


def test_one_sweep_table_per_folder(tmp_path):
    """Re-sweeping in the other format (pyarrow installed since) leaves one table, the new one."""
    pytest.importorskip("pyarrow")
    from artent_fast.sweep.store import find_table, write_table

    first = {"module": ["a"], "step": [1]}
    second = {"module": ["b"], "step": [2]}
    assert write_table(tmp_path, first, "csv").name == "sweep.csv"
    assert write_table(tmp_path, second, "parquet").name == "sweep.parquet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.parquet"]
    assert write_table(tmp_path, first, "csv").name == "sweep.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv"]
    assert find_table(tmp_path).name == "sweep.csv"
