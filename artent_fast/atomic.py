"""One atomic write for every file the package produces: all of it, or the old file untouched.

A temporary file beside the target is written, flushed and fsynced, then ``os.replace``-d over the
target (atomic on POSIX and Windows within one folder), and the folder entry is synced where the
platform allows. A failure removes the temporary file and re-raises.
"""

from __future__ import annotations

import contextlib
import errno
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


# A write that fails for want of room (disk full, quota, read-only, file too large) ends the work: no later
# write to the same place can succeed, so it is not one unit's error to record and go on from.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


class OutFullError(OSError):
    """A write under an output folder failed for want of room: one line naming the flag and folder."""

    def __str__(self) -> str:
        return str(self.strerror)


def no_room(exc: BaseException) -> bool:
    """Whether ``exc`` is a write failing for want of room (``NO_ROOM``)."""
    return isinstance(exc, OSError) and exc.errno in NO_ROOM


@contextlib.contextmanager
def room_under(out: str | os.PathLike, kept: str = "", flag: str = "--out") -> Iterator[None]:
    """Turn a write failing for want of room under ``out`` into an ``OutFullError`` naming ``flag`` (``kept``
    says what stays there, for a rerun to resume from)."""
    try:
        yield
    except OutFullError:
        raise
    except OSError as exc:
        if not no_room(exc):
            raise
        what = exc.strerror or os.strerror(exc.errno)
        raise OutFullError(exc.errno, f"{flag} {out}: cannot write there ({what}){kept}") from None
