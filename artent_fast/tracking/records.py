"""Records and the history file: one JSON line per (step, unit), appended and flushed as training runs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
    return {
        "row_col_entropy": entropies[c] if 0 <= c < len(entropies) else math.nan,
        "valley_depth": valley_depth(entropies, row_sites),
        "peak_entropy": max(finite) if finite else math.nan,
    }


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf floats become null (strict JSON), tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class HistoryFile:
    """Appends records as JSON lines, flushed per batch: a crash loses at most the step in flight."""

    def __init__(self, path: str | Path, *, resume: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115 - lives with the tracker

    def write(self, records: Sequence[dict]) -> None:
        if not records:
            return
        self._file.write("".join(json.dumps(clean(r), separators=(",", ":")) + "\n" for r in records))
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def history_path(out: str | Path) -> Path:
    """``out`` itself when it names a ``.jsonl`` file, else ``out/history.jsonl``."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out / "history.jsonl"


def read_history(path: str | Path) -> list[dict]:
    """Records of a history file (or of ``DIR/history.jsonl``); a truncated last line (a crash) is ignored."""
    path = history_path(path)
    if not path.exists():
        raise FileNotFoundError(f"history file {path} does not exist")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # the write in flight when the run stopped
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
        record["entropies"] = [math.nan if e is None else e for e in record.get("entropies", [])]
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
