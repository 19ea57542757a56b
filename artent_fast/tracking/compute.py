"""Batched profile computation for the tracker, off the training thread.

All the LoRA units of one rank are measured in one call whatever their shapes (their factors zero
padded into one stack, :mod:`artent_fast.core.lowrank_mixed`); dense updates of one shape are
stacked into one ``entanglement_profile`` call (``on_zero="nan"``, ``check_finite=False``). Units
with a non-finite entry measure as NaN, so nothing waits on the host.

The stacking is a snapshot (a copy) of the current weights, taken on the training thread (on CUDA:
queued on the training stream); the measurement of that snapshot then runs where it does not hold
training up:

- CUDA: on a side stream, the result copied to pinned host memory behind an event;
- CPU (``background=True``): on one worker thread of the tracker's own, with one intra-op thread
  (torch releases the GIL in its kernels, so the measurement overlaps the next training step; a
  second OpenMP team of the default size would oversubscribe the cores the training uses: measured
  +50% per untracked step with 2 threads on 2 cores), at a lower priority on Linux (:data:`WORKER_NICE`);
- CPU (``background=False``): inline, on the calling thread.

:meth:`Job.ready` tells a later step when the numbers can be read; :meth:`Job.result` waits for them
(and raises what the measurement raised).
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from artent_fast.api import entanglement_profile
from artent_fast.backends import native
from artent_fast.core.lowrank_mixed import lowrank_profiles, pad_factors
from artent_fast.tracking.records import Meta
from artent_fast.tracking.schedule import Tracked

# Largest stack of dense updates measured in one call (elements); bigger groups are chunked.
DENSE_CHUNK_ELEMENTS = 1 << 25


@dataclass
class Job:
    """Profiles of ``units`` at ``step``: :meth:`result` is a host tensor ``(units, bonds)``, valid once ``ready()``.

    Rows may be NaN padded after a unit's last bond (units of different shapes measured together).
    """

    step: int
    units: list[Tracked]
    meta: list[Meta]
    values: torch.Tensor | None
    event: object | None = None
    keep_alive: list[torch.Tensor] = field(default_factory=list, repr=False)
    future: concurrent.futures.Future | None = field(default=None, repr=False)

    @property
    def background(self) -> bool:
        """Measured on the CPU worker thread."""
        return self.future is not None

    def ready(self) -> bool:
        if self.future is not None:
            return self.future.done()
        return self.event is None or self.event.query()

    def wait(self) -> None:
        if self.future is not None:
            concurrent.futures.wait([self.future])
        elif self.event is not None:
            self.event.synchronize()

    def result(self) -> torch.Tensor:
        """The profiles (waits for them; raises the measurement's exception)."""
        if self.future is not None:
            return self.future.result()
        self.wait()
        return self.values


class Launcher:
    """Runs batched measurements: on one side stream per CUDA device; on CPU on a worker thread or inline."""

    def __init__(self, background: bool = False) -> None:
        self.background = background
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def run(
        self,
        step: int,
        units: list[Tracked],
        meta: list[Meta],
        inputs: Sequence[torch.Tensor],
        measure: Callable[..., torch.Tensor],
    ) -> Job:
        device = inputs[0].device
        if device.type != "cuda":
            if not self.background:
                return Job(step, units, meta, measure(*inputs).detach().cpu())
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="artent_fast-measure", initializer=_worker_setup, initargs=(worker_nice(),)
                )
            future = self._pool.submit(_measure_on_host, measure, inputs)
            return Job(step, units, meta, None, future=future)
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

    def close(self) -> None:
        """Let the worker thread finish what it was given, then end it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# The worker thread's scheduling priority on Linux (the nice value: 19 is the lowest): it measures when a
# training thread leaves a core free, instead of preempting one (``ARTENT_FAST_WORKER_NICE`` changes it; 0 keeps
# the process's). Measured with every core training: ``tracker.step()`` 1.5 -> 0.5 ms (benchmarks/RESULTS.md).
WORKER_NICE = 19


def worker_nice() -> int:
    """The nice value the worker thread takes (``ARTENT_FAST_WORKER_NICE``, default :data:`WORKER_NICE`)."""
    value = os.environ.get("ARTENT_FAST_WORKER_NICE", "").strip()
    try:
        return max(0, min(19, int(value))) if value else WORKER_NICE
    except ValueError:
        raise ValueError(f"ARTENT_FAST_WORKER_NICE={value!r} is not an integer from 0 to 19") from None


def _worker_setup(nice: int) -> None:
    """The worker thread's set-up: one intra-op thread, and on Linux a lower priority (this thread only)."""
    torch.set_num_threads(1)
    if nice and sys.platform.startswith("linux"):
        try:  # on Linux a thread id names that thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
        except OSError:  # a container that forbids it: measure at the process's priority
            pass


def _measure_on_host(measure: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():  # grad mode is per thread: the inputs are snapshots, nothing to record
        return measure(*inputs).detach().cpu()


def snapshot_lowrank(tensors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """``[B, A]``: the units' factors zero padded into one stack each (a copy; non-finite units measure as NaN)."""
    packed = native.pad_factors(tensors)  # one compiled call where it applies (CPU float32, float64, bfloat16)
    return list(pad_factors(tensors) if packed is NotImplemented else packed)


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


def group(items: list[tuple[Tracked, Meta, tuple[torch.Tensor, ...]]], key: Callable | None = None) -> list[list]:
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
