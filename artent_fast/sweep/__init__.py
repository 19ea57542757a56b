"""Checkpoint sweeps: entanglement profiles of every target matrix of HF checkpoints, adapters and updates.

Lazy safetensors reading, shape-batched profiles, resumable atomic part files, torchrun sharding.
See docs/sweep.md.
"""

from __future__ import annotations

from artent_fast.sweep.names import DEFAULT_TARGETS, parse_layer, parse_step
from artent_fast.sweep.reader import CheckpointError
from artent_fast.sweep.runner import SweepResult, run_sweep
from artent_fast.sweep.store import read_table

__all__ = ["DEFAULT_TARGETS", "CheckpointError", "SweepResult", "parse_layer", "parse_step", "read_table", "run_sweep"]
