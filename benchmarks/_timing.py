"""Timing helpers for the benchmark scripts: re-exported from :mod:`artent_fast.bench.timing` (one copy)."""

from artent_fast.bench.timing import machine, median_time, paired_times, sync

__all__ = ["machine", "median_time", "paired_times", "sync"]
