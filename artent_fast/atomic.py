"""One atomic write for every file the package produces: all of it, or the old file untouched.

A temporary file beside the target is written, flushed and fsynced, then ``os.replace``-d over the
target (atomic on POSIX and Windows within one folder), and the folder entry is synced where the
platform allows. A failure removes the temporary file and re-raises.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temporary name used beside ``path`` (hidden, per process, ends in ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any writer: savefig, safetensors);
    on a clean exit it is synced and moved over ``path``, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        _sync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _sync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def out_folder(out: str | os.PathLike, flag: str = "--out") -> Path:
    """The output folder ``out``, created: an existing file, or a path under a file, is a ValueError naming
    ``flag`` (checked before any work, so a command answers it with one line)."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == out else f"lies under the file {p}"
                raise ValueError(f"{flag} {out}: {where}, not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {out}: cannot create the folder ({exc.strerror or exc})") from None
    return out
