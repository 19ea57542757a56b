"""What a path that cannot be used as a file or folder is, in words: one place for "does not exist",
"is a symbolic link loop", "is a FIFO", ... so every argument at fault is described the same way."""

from __future__ import annotations

import errno
import os
import stat

_SPECIAL = (
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a file"),
    (stat.S_ISSOCK, "is a socket, not a file"),
    (stat.S_ISCHR, "is a character device, not a file"),
    (stat.S_ISBLK, "is a block device, not a file"),
)


def what_is(path: str | os.PathLike) -> str:
    """A phrase for ``path`` ("is a folder", "is a file", "does not exist", "is a symbolic link loop", "is a
    FIFO (named pipe), not a file", ...), to follow the path's name in an error."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (it resolves to itself)"
        if os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)!r}, which does not exist)"
        if exc.errno == errno.ENOENT:
            return "does not exist"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a part of it is a file, not a folder)"
        return f"cannot be reached ({exc.strerror or exc})"
    for test, phrase in _SPECIAL:
        if test(mode):
            return phrase
    return "is a folder" if stat.S_ISDIR(mode) else "is a file"


def not_usable(label: str, path: str | os.PathLike, hint: str = "") -> OSError | ValueError:
    """The error for ``label path`` that is not the file or folder wanted: FileNotFoundError when nothing is
    there, else a ValueError saying what is there (a FIFO, a link loop, ...); ``hint`` follows (what to give)."""
    kind = what_is(path)
    return (FileNotFoundError if kind == "does not exist" else ValueError)(f"{label} {kind}{hint}")
