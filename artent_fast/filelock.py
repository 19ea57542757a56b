"""One exclusive lock per output (a tracker's history file, a sweep's ``--out``), and who holds it.

An advisory POSIX ``flock`` on an open file: taken without waiting, released when the file is closed or the
process ends (``kill -9`` included, so a crashed run never leaves a stale lock). Where the lock is held, the
error names the process holding it (from ``/proc/locks`` on Linux: its id and command line).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class InUseError(RuntimeError):
    """Another process (or another object in this one) holds the lock of an output."""


def holder(fd: int) -> str:
    """Who holds the lock on the file open as ``fd``: ``process 1234 (artent sweep ...)``, ``this process``,
    or ``another process`` where the system does not say."""
    try:
        st = os.fstat(fd)
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except (OSError, AttributeError):
        return "another process"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and "->" not in fields and fields[1] == "FLOCK" and fields[5] == key:
            pid = int(fields[4])
            if pid == os.getpid():
                return "this process"
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                command = ""
            return f"process {pid}" + (f" ({command[:200]})" if command else "")
    return "another process"


def lock(handle: Any, message: Callable[[str], str], error: type[InUseError] = InUseError) -> None:
    """An exclusive advisory lock on the open file ``handle``, or ``error(message(holder))`` at once.

    A no-op where ``fcntl`` is missing (Windows) or the file system refuses ``flock`` (some network mounts).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise error(message(holder(handle.fileno()))) from None
    except OSError:
        return  # file systems without flock support: go on unlocked


def lock_folder(folder: Path, name: str, message: Callable[[str], str], error: type[InUseError] = InUseError) -> Any:
    """Lock ``folder/name`` (created) and return its open handle: closing it releases the lock."""
    handle = open(folder / name, "a", encoding="utf-8")  # noqa: SIM115 - held until the caller closes it
    try:
        lock(handle, message, error)
    except BaseException:
        handle.close()
        raise
    return handle
