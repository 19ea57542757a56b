"""Host memory of this process (resident set size), for the end-of-sweep report."""

from __future__ import annotations

import os
import sys


def _status_kib(field: str) -> int | None:
    """A ``VmHWM``/``VmRSS`` line of /proc/self/status in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image.

    Linux: ``VmHWM`` (``ru_maxrss`` would include the parent's pages when this process was forked
    then exec'ed); elsewhere ``ru_maxrss``; 0 where the platform does not say.
    """
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return max(hwm * 1024, current_rss_bytes())
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """Current resident set size (Linux; 0 elsewhere)."""
    rss = _status_kib("VmRSS")
    if rss is not None:
        return rss * 1024
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def reset_peak() -> bool:
    """Reset the peak (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
