"""Timing helpers shared by the benchmark scripts: median of repeats, device-synchronised."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], *, device: str = "cpu", repeats: int = 5, warmup: int = 1,
                budget_s: float = 20.0) -> float:
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


def machine() -> str:
    import platform

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, {dev}"
