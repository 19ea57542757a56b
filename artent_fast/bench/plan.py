"""What ``artent bench`` measures at which size: one plan per (device kind, mode).

Modes: ``full`` (the targets' shapes), ``quick`` (<= 3 minutes on a 2-core CPU, <= 8 minutes on one
H100 with the csrc build), ``tiny`` (the CI test: every section at toy sizes, seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from artent_fast.bench.tracking import LLAMA_1B, SMALL

SECTIONS = ("selfcheck", "core", "eigvalsh", "attention", "tracking", "sweep")
QV = ("q_proj", "v_proj")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Plan:
    mode: str
    dense_shapes: list[tuple[int, int]]
    dense_sweep: bool
    factored_shapes: list[tuple[int, int]]
    ranks: list[int]
    factored_batch: int
    eig_sizes: list[int]
    eig_batch: int
    eig_dtypes: list[torch.dtype]
    attn_dtypes: list[torch.dtype]
    attn_fwd: list[tuple[int, int, int, int, int]]
    attn_train: list[tuple[int, int, int, int, int]]
    attn_repeats: int
    tracking_shape: dict
    tracking_dtype: torch.dtype
    tracking_blocks: tuple[int, int]  # (block pairs, steps per block)
    sweep_cases: list[dict]
    notes: list[str] = field(default_factory=list)


def _llama(**over) -> dict:
    return {**LLAMA_1B, **over}


def plan_for(device: str, mode: str) -> Plan:
    if mode not in ("full", "quick", "tiny"):
        raise ValueError(f"mode must be full, quick or tiny, got {mode!r}")
    if mode == "tiny":
        return Plan(
            mode,
            [(64, 48)],
            True,
            [(64, 48)],
            [4],
            4,
            [40],
            4,
            [torch.float32],
            [torch.bfloat16] if device == "cuda" else [torch.float32],
            [(1, 2, 1, 32, 16)],
            [(1, 2, 1, 32, 16)],
            2,
            _llama(hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1, rank=2, vocab=64, batch=1, seq=16),
            torch.float32,
            (1, 1),
            [
                {"label": "q,v", "scale": "1/128", "layers": 1, "modules": QV},
                {"label": "all linear", "scale": "1/128", "layers": 1, "modules": ALL_LINEAR, "lora": False},
            ],
            ["tiny sizes (a test of the command, not a measurement)"],
        )
    if device == "cuda":
        quick = mode == "quick"
        lens = [2048] if quick else [2048, 4096, 8192, 16384]
        return Plan(
            mode,
            [(2048, 2048), (4096, 1024)]
            if quick
            else [(1024, 1024), (2048, 2048), (2048, 512), (4096, 1024), (4096, 4096)],
            not quick,
            [(4096, 4096), (1024, 4096)],
            [16] if quick else [8, 16, 64],
            16 if quick else 32,
            [64, 128, 256],
            1024,
            [torch.float32] if quick else [torch.float32, torch.float64],
            [torch.bfloat16] if quick else [torch.bfloat16, torch.float16],
            [(max(1, 16384 // t), 16, 16, t, d) for t in lens for d in (64, 128)],
            [(max(1, 8192 // t), 32, 8, t, 64) for t in ([2048] if quick else [2048, 4096])],  # LLaMA-3.2-1B heads
            10,
            _llama(),
            torch.bfloat16,
            (3, 3) if quick else (6, 5),
            [
                {"label": "q,v", "scale": "1/2" if quick else "1", "layers": 32, "modules": QV},
                {
                    "label": "all linear",
                    "scale": "1/4" if quick else "1",
                    "layers": 32,
                    "modules": ALL_LINEAR,
                    "lora": False,
                },
            ],
            ["quick: 8B sweep at scale 1/2 (q,v) and 1/4 (all linear); fp32 eigvalsh only"] if quick else [],
        )
    quick = mode == "quick"
    small = _llama(hidden=128, intermediate=344, layers=2, heads=4, kv_heads=2, rank=8, vocab=4096, batch=2, seq=64)
    mid = dict(SMALL)
    shown = small if quick else mid
    return Plan(
        mode,
        [(256, 256), (512, 128)] if quick else [(1024, 1024), (2048, 2048), (2048, 512), (4096, 1024)],
        True,
        [(256, 256), (512, 128)] if quick else [(1024, 1024), (2048, 512), (4096, 1024)],
        [8, 16] if quick else [8, 16, 64],
        16,
        [64, 128] if quick else [64, 128, 256],
        16 if quick else 64,
        [torch.float32],
        [torch.float32],
        [(1, 4, 4, 128, 64), (1, 8, 2, 256, 64)]
        if quick
        else [(1, 8, 8, 256, 64), (1, 8, 2, 512, 64), (1, 8, 8, 1024, 64), (1, 4, 4, 512, 128)],
        [(1, 4, 4, 128, 64)] if quick else [(1, 8, 8, 256, 64), (1, 8, 2, 512, 64)],
        5 if quick else 9,
        small if quick else mid,
        torch.float32,
        (3, 2) if quick else (6, 5),
        [
            {"label": "q,v", "scale": "1/16" if quick else "1/8", "layers": 4 if quick else 32, "modules": QV},
            {
                "label": "all linear",
                "scale": "1/32" if quick else "1/8",
                "layers": 2 if quick else 32,
                "modules": ALL_LINEAR,
                "lora": False,
            },
        ],
        [
            f"CPU: every shape scaled down from the GPU targets (tracking: a {shown['layers']}-layer, "
            f"{shown['hidden']}-hidden LLaMA instead of LLaMA-3.2-1B; sweep: 8B shapes scaled down, fewer layers)"
        ],
    )
