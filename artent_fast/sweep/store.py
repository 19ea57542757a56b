"""Atomic part files, the manifest, and the final tidy table (Parquet, or CSV without pyarrow)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

PARTS = "parts"
MANIFEST = "manifest.json"
ERRORS = "errors.json"
TABLE_STEM = "sweep"
_INT = ("step", "layer", "rows", "cols", "rank", "bond", "left_dim", "right_dim")
_FLOAT = ("entropy", "theory")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path``, flush to disk, then ``os.replace``: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def part_path(out: Path, unit_id: str, failed: bool = False) -> Path:
    return Path(out) / PARTS / (f"{unit_id}.err.json" if failed else f"{unit_id}.json")


def is_done(out: Path, unit_id: str) -> bool:
    """A unit is finished when its clean part exists; units that hit errors run again."""
    return part_path(out, unit_id).is_file()


def write_part(out: Path, unit_id: str, rows: dict[str, list], errors: list[dict[str, Any]]) -> None:
    payload = json.dumps({"unit": unit_id, "rows": rows, "errors": errors}, allow_nan=True)
    atomic_write(part_path(out, unit_id, failed=bool(errors)), payload)
    stale = part_path(out, unit_id, failed=not errors)
    if not errors and stale.exists():
        stale.unlink(missing_ok=True)


def read_part(out: Path, unit_id: str) -> dict[str, Any] | None:
    for failed in (False, True):
        path = part_path(out, unit_id, failed)
        if path.is_file():
            return json.loads(path.read_text())
    return None


def merge_parts(out: Path, unit_ids: list[str], columns: tuple[str, ...]) -> tuple[dict[str, list], list[dict]]:
    """Concatenate the parts of ``unit_ids`` in order: every row once; their errors listed."""
    table: dict[str, list] = {c: [] for c in columns}
    errors: list[dict] = []
    for uid in unit_ids:
        part = read_part(out, uid)
        if part is None:
            errors.append({"file": str(part_path(out, uid)), "tensor": None, "error": "work unit never finished"})
            continue
        for c in columns:
            table[c] += part["rows"][c]
        errors += part["errors"]
    return table, errors


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_table(out: Path, table: dict[str, list], fmt: str = "auto") -> Path:
    """Write the tidy table as ``sweep.parquet`` (``fmt`` "parquet"/"auto" with pyarrow) or ``sweep.csv``."""
    if fmt not in ("auto", "parquet", "csv"):
        raise ValueError(f"table format must be 'auto', 'parquet' or 'csv', got {fmt!r}")
    if fmt == "parquet" and not have_pyarrow():
        raise ImportError("Parquet output needs pyarrow: pip install 'artent_fast[tables]' (or use --format csv)")
    out = Path(out)
    if fmt != "csv" and have_pyarrow():
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {c: pa.int64() for c in _INT} | {c: pa.float64() for c in _FLOAT} | {"center": pa.bool_()}
        arrays = {c: pa.array(v, type=types.get(c, pa.string())) for c, v in table.items()}
        buf = pa.BufferOutputStream()
        pq.write_table(pa.table(arrays), buf)
        path = out / f"{TABLE_STEM}.parquet"
        atomic_write(path, buf.getvalue().to_pybytes())
        return path
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(list(table))
    for row in zip(*table.values(), strict=True):
        writer.writerow(["" if v is None else v for v in row])
    path = out / f"{TABLE_STEM}.csv"
    atomic_write(path, text.getvalue())
    return path


def find_table(path: str | Path) -> Path:
    """The table file in a sweep folder (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return path
    for name in (f"{TABLE_STEM}.parquet", f"{TABLE_STEM}.csv"):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no {TABLE_STEM}.parquet or {TABLE_STEM}.csv in {path} (run `artent sweep` first)")


def read_table(path: str | Path) -> dict[str, list]:
    """The tidy table as columns of Python values (no pandas needed)."""
    path = find_table(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pydict()
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    table: dict[str, list] = {}
    for j, col in enumerate(header):
        raw = [r[j] for r in body]
        if col in _INT:
            table[col] = [int(v) if v != "" else None for v in raw]
        elif col in _FLOAT:
            table[col] = [float(v) for v in raw]
        elif col == "center":
            table[col] = [v == "True" for v in raw]
        else:
            table[col] = raw
    return table
