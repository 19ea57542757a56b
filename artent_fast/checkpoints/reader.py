"""Lazy checkpoint readers: shapes from headers, one tensor at a time, never a whole model.

Safetensors files are opened with ``safe_open`` and sized with ``get_slice(...).get_shape()``;
a tensor is read only when its work unit runs. Pickled ``.bin`` files are read only when the
caller allows it, through ``torch.load(weights_only=True, mmap=True)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from artent_fast.checkpoints.confine import Escape, confine, roots_of
from artent_fast.checkpoints.names import parse_step
from artent_fast.checkpoints.pickles import PickleRefused, load_weights_only
from artent_fast.extras import optional_imports
from artent_fast.paths import what_is

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
ADAPTER_CONFIG = "adapter_config.json"
SAFETENSORS, PICKLE = "safetensors", "pickle"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


class CheckpointError(Exception):
    """A problem with one file or tensor: recorded, reported at the end; the sweep goes on."""

    def __init__(self, file: str | Path, tensor: str | None, message: str):
        self.file, self.tensor, self.message = str(file), tensor, message
        where = f"{self.file}" + (f" [{tensor}]" if tensor else "")
        super().__init__(f"{where}: {message}")

    def record(self) -> dict[str, Any]:
        return {"file": self.file, "tensor": self.tensor, "error": self.message}


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and its shape, from the file header only."""

    name: str
    file: str
    shape: tuple[int, ...]


def _require_safetensors() -> Any:
    with optional_imports("safetensors", "reading checkpoints", extra="hf"):
        import safetensors
        from safetensors import safe_open
    return safe_open, safetensors


def _sniff(file: str) -> str:
    """The format of a file whose name says nothing (a hub cache blob): a safetensors file starts with the
    8-byte little-endian length of its JSON header, then ``{``; anything else is taken as pickled."""
    try:
        with open(file, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(file)
    except OSError:
        return PICKLE
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return SAFETENSORS
    return PICKLE


def file_format(shown: str, opened: str) -> str:
    """``safetensors`` or ``pickle``, decided from the name the user's folder shows (in a Hugging Face hub
    snapshot, ``model.safetensors`` is a link to ``../../blobs/<hash>``, a name with no suffix), else from the
    name of the file opened, else from its first bytes."""
    for name in (shown, opened):
        if name.endswith(".safetensors"):
            return SAFETENSORS
        if name.endswith(_PICKLE_SUFFIXES):
            return PICKLE
    return _sniff(opened)


class WeightFiles(Mapping):
    """Read-only, lazy name -> tensor mapping over a set of weight files (safetensors, or pickled .bin when
    allowed): ``files[name]`` reads one tensor (:meth:`load`), ``name in files`` and iteration look at headers only.

    ``infos`` holds readable tensors; ``broken`` maps names that cannot be read to the reason,
    and ``file_errors`` lists files whose header could not be read at all. ``shown`` maps a file opened to
    the name the folder shows for it (a link's own name), from which its format is decided.
    """

    def __init__(
        self,
        files: dict[str, list[str] | None],
        allow_pickle: bool = False,
        shown: dict[str, str] | None = None,
    ):
        self.allow_pickle = allow_pickle
        self._shown = dict(shown or {})
        self._formats: dict[str, str] = {}
        self.infos: dict[str, TensorInfo] = {}
        self.broken: dict[str, CheckpointError] = {}
        self.file_errors: list[CheckpointError] = []
        self._handles: dict[str, Any] = {}
        self._identity: dict[str, tuple[int, ...]] = {}
        self._files = sorted(files)
        for file, names in files.items():
            self._scan(file, names)

    def _safetensors(self, file: str) -> bool:
        if file not in self._formats:
            self._formats[file] = file_format(self._shown.get(file, file), file)
        return self._formats[file] == SAFETENSORS

    def _scan(self, file: str, expected: list[str] | None) -> None:
        try:
            shapes = self._header(file)
        except CheckpointError as exc:
            if expected:
                for name in expected:
                    self.broken[name] = CheckpointError(file, name, exc.message)
            else:
                self.file_errors.append(exc)
            return
        for name in expected or shapes:
            if name not in shapes:
                self.broken[name] = CheckpointError(file, name, "listed in the index but absent from the file")
            else:
                self.infos[name] = TensorInfo(name, file, shapes[name])

    def _header(self, file: str) -> dict[str, tuple[int, ...]]:
        if not Path(file).is_file():
            raise CheckpointError(file, None, f"not a readable file: it {what_is(file)}")
        st = os.stat(file)
        self._identity[file] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if self._safetensors(file):
            handle = self._open(file)
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        state = self._open(file)
        return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}

    def _open(self, file: str) -> Any:
        if file in self._handles:
            return self._handles[file]
        if self._safetensors(file):
            safe_open, _ = _require_safetensors()
            try:
                handle = safe_open(file, framework="pt", device="cpu")
            except Exception as exc:  # SafetensorError, OSError: a truncated or corrupt file
                raise CheckpointError(file, None, f"unreadable safetensors file ({exc})") from exc
        else:
            if not self.allow_pickle:
                raise CheckpointError(
                    file, None, "pickled checkpoint: pass --allow-pickle to read it (torch.load with weights_only=True)"
                )
            try:
                try:
                    handle = load_weights_only(file, map_location="cpu", mmap=True)
                except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
                    handle = load_weights_only(file, map_location="cpu")
            except PickleRefused as exc:
                raise CheckpointError(file, None, exc.reason) from None
            except Exception as exc:
                raise CheckpointError(file, None, f"unreadable pickled checkpoint ({exc})") from exc
            if not isinstance(handle, dict):
                raise CheckpointError(file, None, f"expected a state dict, found {type(handle).__name__}")
        self._handles[file] = handle
        return handle

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.infos and name not in self.broken:
            raise KeyError(name)
        return self.load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def names(self) -> list[str]:
        return list(self.infos)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.infos[name].shape

    def file_of(self, name: str) -> str:
        info = self.infos.get(name)
        return info.file if info else (self.broken[name].file if name in self.broken else "?")

    def load(self, name: str) -> torch.Tensor:
        """Read one tensor (a copy on the host), or raise CheckpointError naming file and tensor."""
        if name in self.broken:
            raise self.broken[name]
        info = self.infos.get(name)
        if info is None:
            raise CheckpointError(self.describe(), name, "tensor not found")
        try:
            handle = self._open(info.file)
            if self._safetensors(info.file):
                return handle.get_tensor(name)
            return handle[name].clone()
        except CheckpointError as exc:
            raise CheckpointError(info.file, name, exc.message) from exc
        except Exception as exc:
            raise CheckpointError(info.file, name, f"cannot read tensor ({exc})") from exc

    def identity(self, name: str) -> tuple[str, tuple[int, ...]]:
        """What a tensor is read from, as it was when planned: (file, (size, mtime_ns, ctime_ns, inode)).
        A file rewritten in place gets a new identity, so work units that read it get new ids."""
        file = self.file_of(name)
        return file, self._identity.get(file, ())

    def describe(self) -> str:
        files = sorted({i.file for i in self.infos.values()}) or self._files
        return files[0] if len(files) == 1 else str(Path(files[0]).parent) if files else "?"

    def unexplained_absence(self, name: str) -> bool:
        """Whether ``name`` being absent is news: not when it is listed as broken, nor when a file could not be
        read at all (that file's one error already explains every name it may hold)."""
        return name not in self.infos and name not in self.broken and not self.file_errors

    def close(self) -> None:
        """Drop open handles (unmaps the files, so touched pages leave the process)."""
        self._handles.clear()


def read_index(
    index: Path, folder: Path, roots: tuple[Path, ...], shown: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """``{confined file: [tensor names]}`` of a sharded checkpoint's index, every entry checked first
    (``shown`` gets each confined file's name as the index gives it).

    One error for the whole index when it is malformed or any entry leaves the folder (naming the first
    such entry): nothing it names is opened.
    """
    try:
        doc = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(index, None, f"unreadable index ({exc})") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(index, None, f"the index must be a JSON object, found {type(doc).__name__}")
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict):
        found = "missing" if "weight_map" not in doc else f"a {type(weight_map).__name__}"
        raise CheckpointError(
            index, "weight_map", f"'weight_map' must be an object of tensor name -> file, found {found}"
        )
    files: dict[str, list[str]] = {}
    bad: list[tuple[str, str]] = []
    for name, file in weight_map.items():
        if not isinstance(file, str) or not file:
            bad.append((name, f"weight_map[{name!r}] must name a file (a non-empty string), found {file!r}"))
            continue
        try:
            confined = str(confine(folder, file, roots))
            files.setdefault(confined, []).append(name)
            if shown is not None:
                shown[confined] = file
        except Escape as exc:
            bad.append((name, f"weight_map[{name!r}] = {exc}; refused, not read"))
    if bad:
        more = f" (and {len(bad) - 1} more bad entries)" if len(bad) > 1 else ""
        raise CheckpointError(index, bad[0][0], bad[0][1] + more)
    return files


def _confined_glob(folder: Path, roots: tuple[Path, ...], pattern: str, shown: dict[str, str]) -> list[str]:
    out = []
    for p in sorted(folder.glob(pattern)):
        try:
            out.append(str(confine(folder, p.name, roots)))
        except Escape as exc:
            raise CheckpointError(p, None, f"{exc}; refused, not read") from exc
        shown[out[-1]] = p.name
    return out


def weight_files(
    path: str | Path, allow_pickle: bool = False, shown: dict[str, str] | None = None
) -> dict[str, list[str] | None]:
    """The weight files of a model folder (or a single file): ``{file: expected names or None}``.

    Every file named by the folder's index or found in it is resolved inside the folder first
    (symbolic links included); one that leaves it is refused before it is opened, pickled or not.
    ``shown`` gets the name the folder shows for each file (a link's own name: its format).
    """
    shown = {} if shown is None else shown
    path = Path(path)
    if path.is_file():
        return {str(path): None}
    if not path.is_dir():
        raise CheckpointError(path, None, f"not a checkpoint file or folder: it {what_is(path)}")
    roots = roots_of(path)
    folder = roots[0]
    for index_name in (SAFE_INDEX, BIN_INDEX):
        try:
            index = confine(folder, index_name, roots)
        except Escape as exc:
            raise CheckpointError(path / index_name, None, f"{exc}; refused, not read") from exc
        if index.is_file():
            files = read_index(index, folder, roots, shown)  # checked even when pickle is off: no invitation to read
            if index_name == SAFE_INDEX or allow_pickle:  # a file that would be refused anyway
                return files  # type: ignore[return-value]
    safe = _confined_glob(folder, roots, "*.safetensors", shown)
    if safe:
        return {f: None for f in safe}
    pickled = _confined_glob(folder, roots, "*.bin", shown) + _confined_glob(folder, roots, "*.pt", shown)
    if pickled and not allow_pickle:
        raise CheckpointError(
            path,
            None,
            "holds only pickled checkpoints (.bin/.pt): pass --allow-pickle to read "
            "them with torch.load(weights_only=True)",
        )
    if pickled:
        return {f: None for f in pickled}
    raise CheckpointError(path, None, "no .safetensors weights found (nor model.safetensors.index.json)")


def open_weights(path: str | Path, allow_pickle: bool = False) -> WeightFiles:
    shown: dict[str, str] = {}
    files = weight_files(path, allow_pickle, shown)
    return WeightFiles(files, allow_pickle, shown)


def _children(run: Path, errors: list[dict[str, Any]]) -> list[Path]:
    """A run folder's ``checkpoint-*`` sub-folders; one that is a link leaving the run folder is refused."""
    roots = roots_of(run)
    out = []
    for child in run.iterdir():
        if parse_step(child.name) is None:
            continue
        if child.is_symlink():
            try:
                target = confine(roots[0], child.name, roots)
            except Escape as exc:
                errors.append(CheckpointError(run, child.name, f"{exc}; refused, not read").record())
                continue
            if target.is_dir():
                out.append(child)
        elif child.is_dir():
            out.append(child)
    return out


def expand_checkpoints(paths: list[str], errors: list[dict[str, Any]] | None = None) -> list[str]:
    """Each path as given; a run folder without weights expands to its ``checkpoint-*`` children by step."""
    errors = [] if errors is None else errors
    out: list[str] = []
    for path in paths:
        p = Path(path)
        children = _children(p, errors) if p.is_dir() and not has_weights(p) else []
        if children:
            out += [str(c) for c in sorted(children, key=lambda c: (parse_step(c.name), c.name))]
        else:
            out.append(str(path))
    return list(dict.fromkeys(out))  # a checkpoint given twice is swept once


def is_adapter(path: str | Path) -> bool:
    """A peft adapter folder (its config is looked at without following a link out of the folder)."""
    return os.path.lexists(Path(path) / ADAPTER_CONFIG)


def has_weights(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() or is_adapter(path) or any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
