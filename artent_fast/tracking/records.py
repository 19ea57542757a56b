"""Records and the history file: one JSON line per (step, unit), appended and flushed as training runs.

A record of a measured update is ``{"step", **unit.key(), "update", **Meta.fields(), "entropies",
**summary_fields(...)}``: :class:`Meta` is the one place its measurement keys are defined (the
tracker builds it when it reads a unit; under ``torch.distributed`` the exchange sends it as numbers).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from artent_fast.core.layout import default_sites
from artent_fast.filelock import InUseError, lock
from artent_fast.paths import not_usable

UPDATE_KINDS = ("lora", "dense")  # the kinds of a record of a measured update (attention records have others)
SCALARS = ("row_col_entropy", "valley_depth", "peak_entropy")  # the summary fields of such a record


@dataclass(frozen=True)
class Meta:
    """What a measurement records besides its entropies: the update's shape and, for a factored (LoRA)
    update, its rank, scaling and whether it is merged. ``row_sites`` follows from the shape."""

    m: int
    n: int
    rank: int | None = None  # None: a dense update (no rank, scaling, merged)
    scaling: Any = None
    merged: bool = False

    NUMBERS: ClassVar[int] = 6  # m, n, rank, scaling, row_sites, merged: what the exchange sends

    @property
    def row_sites(self) -> int:
        return default_sites(self.m, self.n).row_sites

    @property
    def bonds(self) -> int:
        return default_sites(self.m, self.n).num_bonds

    def fields(self) -> dict[str, Any]:
        """The record's keys, in the record's order."""
        if self.rank is None:
            return {"shape": [self.m, self.n], "row_sites": self.row_sites}
        return {
            "shape": [self.m, self.n],
            "rank": self.rank,
            "scaling": self.scaling,
            "row_sites": self.row_sites,
            "merged": self.merged,
        }

    def numbers(self) -> list[float]:
        """:data:`NUMBERS` floats (dense: rank and scaling 0)."""
        factored = self.rank is not None
        scaling = self.scaling if factored else 0.0
        return [self.m, self.n, self.rank or 0, scaling, self.row_sites, float(self.merged)]

    @classmethod
    def from_numbers(cls, values: Sequence[float], factored: bool) -> Meta:
        """The meta :meth:`numbers` gave (of a factored update when ``factored``)."""
        m, n, rank, scaling, _, merged = values
        if not factored:
            return cls(int(m), int(n))
        return cls(int(m), int(n), int(rank), scaling, bool(merged))


def valley_depth(entropies: Sequence[float], row_sites: int) -> float:
    """Depth of the dip at the row/column bond: the mean of the two side peaks minus that bond's entropy.

    The side peaks are the largest entropies among the bonds left of the row/column bond (inside
    the row sites) and right of it (inside the column sites). Positive for LoRA's rank-pinned
    valley, negative for a profile that peaks at the centre (a Page curve). With bonds on one side
    only, that side's peak is used; with none, the depth is NaN. (Nearest neighbours alone would
    not do: adjacent bonds of dimension-2 sites differ by at most ln 2.)
    """
    c = row_sites - 1
    if not 0 <= c < len(entropies):
        return math.nan
    sides = [max(part) for part in (entropies[:c], entropies[c + 1 :]) if part]
    if not sides:
        return math.nan
    return sum(sides) / len(sides) - entropies[c]


def summary_fields(entropies: Sequence[float], row_sites: int) -> dict[str, float]:
    """The scalars reported per record: row/column-bond entropy, valley depth, peak entropy."""
    c = row_sites - 1
    finite = [e for e in entropies if e == e]
    values = (
        entropies[c] if 0 <= c < len(entropies) else math.nan,
        valley_depth(entropies, row_sites),
        max(finite) if finite else math.nan,
    )
    return dict(zip(SCALARS, values, strict=True))


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf floats become null (strict JSON), tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class HistoryInUseError(InUseError):
    """Another tracker holds the lock of this history file (two trackers must not write one file)."""


class HistoryFile:
    """Appends records as JSON lines, flushed per batch: a crash loses at most the step in flight.

    The file is opened without truncation, locked (an advisory ``flock``, released at :meth:`close`
    or when the process ends) and only then emptied (``resume=False``) or repaired (``resume=True``:
    a line cut by a crash is removed, so the next record starts on a line of its own; the records
    already there are kept in :attr:`previous`). An I/O error while writing or closing (e.g. a full
    disk) is never raised: it is kept in :attr:`error`, warned once, the handle is released and the
    file stops growing (the tracker keeps its records in memory).
    """

    def __init__(self, path: str | Path, *, resume: bool = False) -> None:
        self.path = Path(path)
        self.error: str | None = None
        self.previous: list[dict] = []
        if self.path.is_dir():
            raise ValueError(f"out: history file {self.path} is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the tracker
        except OSError as exc:
            raise ValueError(f"out: cannot open the history file {self.path}: {exc.strerror or exc}") from exc
        try:
            lock(
                self._file,
                lambda who: (
                    f"out: history file {self.path} is in use by another tracker ({who} holds the "
                    "file's lock): close that tracker first or give this one another out="
                ),
                HistoryInUseError,
            )
            if resume:
                repair_tail(self.path)
                self.previous = read_history(self.path)
            else:
                self._file.truncate(0)
        except BaseException:
            self._file.close()
            raise

    def write(self, records: Sequence[dict]) -> None:
        if not records or self._file is None:
            return
        try:
            self._file.write("".join(json.dumps(clean(r), separators=(",", ":")) + "\n" for r in records))
            self._file.flush()
        except OSError as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._give_up(exc)
        finally:
            self._release()

    def _give_up(self, exc: OSError) -> None:
        if self.error is None:
            self.error = f"{self.path}: {exc!r}"
            warnings.warn(
                f"artent_fast.track: cannot write the history file {self.path} ({exc}); training goes "
                "on, records stay in memory (tracker.history()) and the file stops here",
                RuntimeWarning,
                stacklevel=4,
            )
        self._release()

    def _release(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            handle.close()  # closes the descriptor (and drops the lock) even when the final flush fails
        except OSError:
            pass


def repair_tail(path: Path) -> None:
    """Make the file end at a line boundary: drop a last line cut by a crash, or end a complete one."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        try:
            json.loads(data[keep:])
        except ValueError:
            warnings.warn(
                f"artent_fast.track: {path}: removed a last line cut by a crash "
                f"({len(data) - keep} bytes) before resuming",
                RuntimeWarning,
                stacklevel=4,
            )
            handle.truncate(keep)
        else:
            handle.write(b"\n")


def history_path(out: str | Path) -> Path:
    """``out`` itself when it names a ``.jsonl`` file, else ``out/history.jsonl``."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / "history.jsonl"


def read_history(path: str | Path) -> list[dict]:
    """Records of a history file (or of ``DIR/history.jsonl``).

    A last line that is not a JSON object (cut by a crash) is left out with a ``RuntimeWarning``;
    every good record is kept. A bad line anywhere else is a ``ValueError`` naming the file and line.
    """
    path = history_path(path)
    if not path.is_file():
        raise not_usable(f"history file {path}", path)
    records = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == last:
                warnings.warn(
                    f"{path}: line {i + 1} (the last) is cut or corrupt (a crash while writing?): "
                    f"left out, {len(records)} records kept",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            raise ValueError(f"{path}: line {i + 1} is not a JSON record (the file is corrupt there)") from None
        record["entropies"] = [math.nan if e is None else e for e in record.get("entropies") or []]
        records.append(record)
    return records


def record_label(record: dict) -> str:
    """Module name, then ``[part]``, then ``@adapter`` unless peft's ``default`` (as ``Unit.label``)."""
    text = str(record.get("module"))
    if record.get("part") is not None:
        text += f"[{record['part']}]"
    if record.get("adapter") not in (None, "default"):
        text += f"@{record['adapter']}"
    return text


def target_kind(label: str) -> str:
    """The kind of a unit for model-level summaries: its last name component with part and adapter (``q_proj``)."""
    return label.rsplit(".", 1)[-1]


def summarise(scalars: dict[str, float]) -> dict[str, float]:
    """Model-level summaries of per-module scalars (``artent/<module>/<name>``): per target kind, the mean
    and min valley depth and the mean row/column-bond entropy (``artent/<kind>/valley_depth_mean``, ...)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for key, value in scalars.items():
        if not key.startswith("artent/") or value != value:
            continue
        label, name = key[len("artent/") :].rsplit("/", 1)
        if name in ("valley_depth", "row_col_entropy"):
            groups.setdefault((target_kind(label), name), []).append(float(value))
    out: dict[str, float] = {}
    for (kind, name), values in sorted(groups.items()):
        out[f"artent/{kind}/{name}_mean"] = sum(values) / len(values)
        if name == "valley_depth":
            out[f"artent/{kind}/{name}_min"] = min(values)
    return out
