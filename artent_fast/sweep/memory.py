"""Peak host memory of this process (resident set size), for the end-of-sweep report."""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int:
    """Peak resident set size so far (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = int(peak if sys.platform == "darwin" else peak * 1024)
    return max(peak, current_rss_bytes())  # the two counters round differently


def current_rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
