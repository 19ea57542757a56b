"""Paths read from a checkpoint's own files stay inside the checkpoint folder.

A checkpoint from the internet is untrusted input: an index entry, a file name or a symbolic link
may point anywhere (``../../etc/passwd``, ``/home/me/.ssh/id_rsa``). :func:`confine` resolves such
a path one component at a time, following symbolic links itself, and refuses it as soon as it would
step outside the allowed folders, before anything outside is opened or even looked at (``lstat``
is only called on paths already known to lie inside). The caller opens the returned path, which
has no symbolic link left in it, so what is opened is exactly what was checked.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

_MAX_LINKS = 40  # as the kernel's own limit on nested symbolic links


class Escape(ValueError):
    """A path from a checkpoint's own files that leaves the checkpoint folder."""


def roots_of(folder: str | Path) -> tuple[Path, ...]:
    """The folders a checkpoint at ``folder`` may read from: itself (resolved), and for a Hugging Face hub
    cache snapshot (``models--org--name/snapshots/REV``) the repository's ``blobs`` folder its links point to."""
    folder = Path(folder).resolve()
    roots = [folder]
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(("models--", "datasets--")):
        roots.append(folder.parent.parent / "blobs")
    return tuple(roots)


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def confine(folder: Path, relative: str, roots: tuple[Path, ...]) -> Path:
    """``folder / relative`` with every symbolic link resolved, or :class:`Escape` if it leaves ``roots``.

    ``folder`` must be a resolved folder inside ``roots``. Absolute paths are refused. Nothing outside
    ``roots`` is touched: ``..`` moves up without a system call, and a component is looked at only once
    its path is known to lie inside.
    """
    if not isinstance(relative, str) or not relative:
        raise Escape(f"{relative!r} is not a file name")
    if "\x00" in relative:
        raise Escape(f"{relative!r} holds a NUL character")
    if PurePath(relative).is_absolute() or PurePath(relative).drive or relative.startswith(("/", "\\")):
        raise Escape(f"{relative!r} is an absolute path")
    current, pending, links = folder, list(PurePath(relative).parts), 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent  # current has no link in it: its parent is the real parent
            continue
        candidate = current / part
        if not _inside(candidate, roots):
            raise Escape(f"{relative!r} leaves the checkpoint folder {folder}")
        if not candidate.is_symlink():  # lstat of a path inside: absent or a plain entry
            current = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise Escape(f"{relative!r}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if PurePath(target).is_absolute():
            normal = Path(os.path.normpath(target))
            root = next((r for r in roots if normal == r or normal.is_relative_to(r)), None)
            if root is None:
                raise Escape(f"{relative!r} is a symbolic link to {target}, outside the checkpoint folder {folder}")
            current, pending = root, list(normal.relative_to(root).parts) + pending
        else:
            pending = list(PurePath(target).parts) + pending  # relative to the link's folder: current
    if not _inside(current, roots):
        raise Escape(f"{relative!r} leaves the checkpoint folder {folder}")
    return current
