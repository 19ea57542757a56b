"""Timing helpers for the benchmarks: device-synchronised medians, and round-robin pairs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def sync(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], object], *, device: str = "cpu", repeats: int = 5, warmup: int = 1, budget_s: float = 20.0
) -> float:
    """Median wall time of ``fn`` in seconds (fewer repeats when one call is slow)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_times(fns: Sequence[Callable[[], object]], *, device: str, repeats: int) -> list[float]:
    """Median seconds of each function, timed round-robin so that machine noise hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def machine() -> str:
    """One line: processor, threads, torch version, GPU name."""
    import platform

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, {dev}"
