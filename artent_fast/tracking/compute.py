"""Batched profile computation for the tracker, asynchronous on CUDA.

All the LoRA units of one rank are measured in one call whatever their shapes (their factors zero
padded into one stack, :mod:`artent_fast.core.lowrank_mixed`); dense updates of one shape are
stacked into one ``entanglement_profile`` call (``on_zero="nan"``, ``check_finite=False``). Units with
a non-finite entry are zeroed in the stack, so they measure as NaN and nothing waits on the host. On CUDA the stacking
(a snapshot of the current weights) is queued on the training stream, the measurement on a side
stream, and the result is copied to pinned host memory behind an event: the training loop never
blocks, and :meth:`Job.ready` tells a later step when the numbers can be read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from artent_fast.api import entanglement_profile
from artent_fast.core.lowrank_mixed import lowrank_profiles, pad_factors
from artent_fast.tracking.units import Unit

# Largest stack of dense updates measured in one call (elements); bigger groups are chunked.
DENSE_CHUNK_ELEMENTS = 1 << 25


@dataclass
class Job:
    """Profiles of ``units`` at ``step``: ``values`` is a host tensor ``(units, bonds)``, valid once ``ready()``.

    Rows may be NaN padded after a unit's last bond (units of different shapes measured together).
    """

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


def snapshot_lowrank(tensors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """``[B, A]``: the units' factors zero padded into one stack each (a copy; non-finite units measure as NaN)."""
    return list(pad_factors(tensors))


def measure_lowrank(B: torch.Tensor, A: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    return lowrank_profiles(B, A, shapes)


def lowrank_measure(tensors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Callable[..., torch.Tensor]:
    """The measurement of the stack :func:`snapshot_lowrank` makes of ``tensors`` (it needs their shapes)."""
    shapes = [(B.shape[-2], A.shape[-1]) for B, A in tensors]
    return lambda B, A: measure_lowrank(B, A, shapes)


def snapshot_dense(tensors: Sequence[tuple[torch.Tensor]]) -> list[torch.Tensor]:
    """``[W]``: the units' updates (of one shape) stacked (a copy), non-finite units zeroed."""
    return finite_only([torch.stack([w for (w,) in tensors])])


def measure_dense(W: torch.Tensor) -> torch.Tensor:
    return entanglement_profile(W, on_zero="nan", check_finite=False)


def dense_measure(tensors: Sequence[tuple[torch.Tensor]]) -> Callable[..., torch.Tensor]:
    """The measurement of the stack :func:`snapshot_dense` makes of ``tensors``."""
    return lambda W: measure_dense(W)


def finite_only(stacked: list[torch.Tensor]) -> list[torch.Tensor]:
    """The stacked inputs with every unit that has a NaN/Inf entry zeroed (so it measures as NaN and is skipped).

    One ``isfinite`` pass per stacked tensor; on CUDA no host synchronisation (``torch.where``).
    """
    ok = None
    for t in stacked:
        finite = torch.isfinite(t).flatten(1).all(1)
        ok = finite if ok is None else ok & finite
    if ok is None:
        return stacked
    if ok.device.type != "cuda" and bool(ok.all()):
        return stacked
    zero = torch.zeros((), dtype=stacked[0].dtype, device=stacked[0].device)
    return [torch.where(ok.view(-1, *([1] * (t.ndim - 1))), t, zero.to(t.dtype)) for t in stacked]


def group(items: list[tuple[Unit, dict, tuple[torch.Tensor, ...]]], key: Callable | None = None) -> list[list]:
    """Items with equal ``key(tensors)`` (default: shapes, dtypes and devices), in first-seen order."""
    groups: dict[tuple, list] = {}
    for item in items:
        k = key(item[2]) if key is not None else tuple((tuple(t.shape), t.dtype, t.device) for t in item[2])
        groups.setdefault(k, []).append(item)
    return list(groups.values())


def lowrank_key(tensors: tuple[torch.Tensor, ...]) -> tuple:
    """LoRA units measured together: same device and rank (any shapes and dtypes)."""
    B = tensors[0]
    return B.device, B.shape[-1]


def chunks(items: list, max_elements: int) -> list[list]:
    """Split a group of equal-shape items so each stack holds at most ``max_elements`` (at least one item)."""
    size = max(1, sum(t.numel() for t in items[0][2]))
    per = max(1, max_elements // size)
    return [items[i : i + per] for i in range(0, len(items), per)]
