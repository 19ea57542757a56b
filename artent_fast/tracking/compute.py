"""Batched profile computation for the tracker, asynchronous on CUDA.

Units with the same shapes are stacked and measured in one batched call (one ``lowrank_profile``
for all the LoRA factors of a shape, one ``entanglement_profile`` for dense updates), with
``on_zero="nan"`` and ``check_finite=False`` so nothing waits on the host. On CUDA the stacking
(a snapshot of the current weights) is queued on the training stream, the measurement on a side
stream, and the result is copied to pinned host memory behind an event: the training loop never
blocks, and :meth:`Job.ready` tells a later step when the numbers can be read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from artent_fast.api import entanglement_profile, lowrank_profile
from artent_fast.tracking.units import Unit

# Largest stack of dense updates measured in one call (elements); bigger groups are chunked.
DENSE_CHUNK_ELEMENTS = 1 << 25


@dataclass
class Job:
    """Profiles of ``units`` at ``step``: ``values`` is a host tensor, valid once ``ready()``."""

    step: int
    units: list[Unit]
    meta: list[dict]
    values: torch.Tensor
    event: object | None = None
    keep_alive: list[torch.Tensor] = field(default_factory=list, repr=False)

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


class Launcher:
    """Runs batched measurements: inline on CPU, on one side stream per CUDA device."""

    def __init__(self) -> None:
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def run(
        self,
        step: int,
        units: list[Unit],
        meta: list[dict],
        inputs: Sequence[torch.Tensor],
        measure: Callable[..., torch.Tensor],
    ) -> Job:
        device = inputs[0].device
        if device.type != "cuda":
            return Job(step, units, meta, measure(*inputs).detach().cpu())
        main = torch.cuda.current_stream(device)
        side = self._streams.get(device)
        if side is None:
            side = self._streams[device] = torch.cuda.Stream(device)
        side.wait_stream(main)  # the stacked inputs were written on the training stream
        with torch.cuda.stream(side):
            prof = measure(*inputs)
            host = torch.empty(prof.shape, dtype=prof.dtype, pin_memory=True)
            host.copy_(prof, non_blocking=True)
            event = torch.cuda.Event()
            event.record(side)
        for t in inputs:
            t.record_stream(side)  # do not recycle the inputs' memory before the side stream is done
        return Job(step, units, meta, host, event, keep_alive=[prof])


def measure_lowrank(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return lowrank_profile(B, A, on_zero="nan", check_finite=False)


def measure_dense(W: torch.Tensor) -> torch.Tensor:
    return entanglement_profile(W, on_zero="nan", check_finite=False)


def group(items: list[tuple[Unit, dict, tuple[torch.Tensor, ...]]]) -> list[list]:
    """Items with equal tensor shapes, dtypes and devices, in first-seen order."""
    groups: dict[tuple, list] = {}
    for item in items:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in item[2])
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def chunks(items: list, max_elements: int) -> list[list]:
    """Split a group of equal-shape items so each stack holds at most ``max_elements`` (at least one item)."""
    size = max(1, sum(t.numel() for t in items[0][2]))
    per = max(1, max_elements // size)
    return [items[i : i + per] for i in range(0, len(items), per)]
