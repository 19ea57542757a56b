"""Checkpoint sweeps: entanglement profiles of every target matrix of HF checkpoints, adapters and updates.

The pipeline: plan (work units from file headers), compute (shape-batched profiles), runner (sharding,
resume), store (atomic part files, one table). Reading checkpoints is :mod:`artent_fast.checkpoints`.
See docs/sweep.md.
"""

from __future__ import annotations

from artent_fast.checkpoints import DEFAULT_TARGETS, CheckpointError, parse_layer, parse_step
from artent_fast.sweep.runner import SweepResult, run_sweep
from artent_fast.sweep.store import read_table

__all__ = ["DEFAULT_TARGETS", "CheckpointError", "SweepResult", "parse_layer", "parse_step", "read_table", "run_sweep"]
