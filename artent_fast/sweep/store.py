"""Atomic part files, the manifest, and the final tidy table (Parquet, or CSV without pyarrow)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from artent_fast.atomic import TMP_SUFFIX, atomic_path, atomic_write
from artent_fast.extras import missing_extra, optional

# the table's columns, in order (the format of profiles.parquet / profiles.csv)
COLUMNS = (
    "checkpoint",
    "step",
    "module",
    "layer",
    "kind",
    "update",
    "rows",
    "cols",
    "rank",
    "bond",
    "left_dim",
    "right_dim",
    "row_col_bond",
    "entropy",
    "theory",
    "theory_kind",
)

PARTS = "parts"
MANIFEST = "manifest.json"
ERRORS = "errors.json"
TABLE_STEM = "sweep"
# the ``update`` of each ``kind`` in tables written before the column (no DoRA, no initial adapters then)
OLD_UPDATES = {"weight": "W", "dW": "W-W0", "lora": "BA"}
_INT = ("step", "layer", "rows", "cols", "rank", "bond", "left_dim", "right_dim")
_FLOAT = ("entropy", "theory")


_TEMP = re.compile(r"^\..+\.(\d+)" + re.escape(TMP_SUFFIX) + "$")  # artent_fast.atomic.temp_name's form


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process (or cannot tell): leave its file
    return True


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary files a crashed run left in ``out`` and ``out/parts`` (those whose writer is gone)."""
    removed = []
    for folder in (Path(out), Path(out) / PARTS):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TEMP.match(path.name)
            if match and path.is_file() and not path.is_symlink() and not _alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def part_path(out: Path, unit_id: str, failed: bool = False) -> Path:
    return Path(out) / PARTS / (f"{unit_id}.err.json" if failed else f"{unit_id}.json")


def _part_problem(part: Any, unit_id: str, columns: tuple[str, ...], rows: int | None, clean: bool) -> str | None:
    if not isinstance(part, dict) or part.get("unit") != unit_id:
        return "not a part of this work unit"
    table, errors = part.get("rows"), part.get("errors")
    if not isinstance(table, dict) or not isinstance(errors, list) or (clean and errors):
        return "wrong shape (rows and errors)"
    if any(not isinstance(table.get(c), list) for c in columns):
        return f"missing columns {[c for c in columns if not isinstance(table.get(c), list)]}"
    lengths = {len(table[c]) for c in columns}
    if len(lengths) != 1:
        return "columns of different lengths"
    n = lengths.pop()
    if rows is not None and (n != rows if clean else n > rows):
        return f"{n} rows where the work unit makes {rows}"
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in table["entropy"]):
        return "non-numeric entropies"
    if any(not isinstance(e, dict) or not {"file", "error"} <= set(e) for e in errors):
        return "malformed error records"
    return None


def load_part(
    out: Path, unit_id: str, columns: tuple[str, ...], rows: int | None = None, failed: bool = False
) -> dict[str, Any] | None:
    """The part of ``unit_id`` if it is there and well formed; a corrupt or wrong-shaped one is removed with a
    warning (so its unit is computed again) and None returned. ``rows``: how many rows a clean part holds."""
    path = part_path(out, unit_id, failed)
    if not path.is_file():
        return None
    try:
        part = json.loads(path.read_text())
        problem = _part_problem(part, unit_id, columns, rows, clean=not failed)
    except (OSError, ValueError) as exc:
        problem = f"unreadable ({exc})"
    if problem is None:
        return part
    warnings.warn(f"{path}: corrupt part file ({problem}); its work unit is computed again", stacklevel=2)
    path.unlink(missing_ok=True)
    return None


def is_done(out: Path, unit_id: str, columns: tuple[str, ...], rows: int | None = None) -> bool:
    """A unit is finished when its clean part exists and is well formed; units that hit errors run again."""
    return load_part(out, unit_id, columns, rows) is not None


def write_part(out: Path, unit_id: str, rows: dict[str, list], errors: list[dict[str, Any]]) -> None:
    payload = json.dumps({"unit": unit_id, "rows": rows, "errors": errors}, allow_nan=True)
    atomic_write(part_path(out, unit_id, failed=bool(errors)), payload)
    stale = part_path(out, unit_id, failed=not errors)
    if not errors and stale.exists():
        stale.unlink(missing_ok=True)


def read_part(out: Path, unit_id: str, columns: tuple[str, ...], rows: int | None = None) -> dict[str, Any] | None:
    for failed in (False, True):
        part = load_part(out, unit_id, columns, rows, failed)
        if part is not None:
            return part
    return None


def merge_parts(
    out: Path, unit_ids: list[str], columns: tuple[str, ...], rows: list[int | None] | None = None
) -> tuple[dict[str, list], list[dict]]:
    """Concatenate the parts of ``unit_ids`` in order: every row once; their errors listed."""
    table: dict[str, list] = {c: [] for c in columns}
    errors: list[dict] = []
    for k, uid in enumerate(unit_ids):
        part = read_part(out, uid, columns, rows[k] if rows else None)
        if part is None:
            errors.append({"file": str(part_path(out, uid)), "tensor": None, "error": "work unit never finished"})
            continue
        for c in columns:
            table[c] += part["rows"][c]
        errors += part["errors"]
    return table, errors


def have_pyarrow() -> bool:
    """Whether pyarrow is installed; installed but broken raises the real error (no silent CSV fallback)."""
    return optional("pyarrow.parquet", "Parquet output", extra="tables") is not None


def no_pyarrow_error() -> ImportError:
    return missing_extra("pyarrow", "Parquet output", install="pip install 'artent_fast[tables]' (or use --format csv)")


def write_table(out: Path, table: dict[str, list], fmt: str = "auto") -> Path:
    """Write the tidy table as ``sweep.parquet`` (``fmt`` "parquet"/"auto" with pyarrow) or ``sweep.csv``.

    One table per folder: the other format's file, left by an earlier sweep, is removed once this one is written.
    """
    if fmt not in ("auto", "parquet", "csv"):
        raise ValueError(f"table format must be 'auto', 'parquet' or 'csv', got {fmt!r}")
    if fmt == "parquet" and not have_pyarrow():
        raise no_pyarrow_error()
    out = Path(out)
    if fmt != "csv" and have_pyarrow():
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {c: pa.int64() for c in _INT} | {c: pa.float64() for c in _FLOAT} | {"row_col_bond": pa.bool_()}
        arrays = {c: pa.array(v, type=types.get(c, pa.string())) for c, v in table.items()}
        path = out / f"{TABLE_STEM}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(pa.table(arrays), str(tmp))
        return _only_table(path)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(list(table))
    for row in zip(*table.values(), strict=True):
        writer.writerow(["" if v is None else v for v in row])
    path = out / f"{TABLE_STEM}.csv"
    atomic_write(path, text.getvalue())
    return _only_table(path)


def _only_table(path: Path) -> Path:
    """``path``, after removing the sweep table of the other format beside it (a stale one from an earlier run)."""
    for suffix in (".parquet", ".csv"):
        other = path.with_suffix(suffix)
        if other != path:
            other.unlink(missing_ok=True)
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


def _parse_csv(path: Path) -> dict[str, list]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError("empty file")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise ValueError("rows of different lengths")
    table: dict[str, list] = {}
    for j, col in enumerate(header):
        raw = [r[j] for r in body]
        if col in _INT:
            table[col] = [int(v) if v != "" else None for v in raw]
        elif col in _FLOAT:
            table[col] = [float(v) for v in raw]
        elif col == "row_col_bond":
            table[col] = [v == "True" for v in raw]
        else:
            table[col] = raw
    return table


def read_table(path: str | Path) -> dict[str, list]:
    """The tidy table as columns of Python values (no pandas needed).

    A file that is not a sweep table (another format, unreadable, or without the table's columns) is a
    ValueError naming it; a folder without a table is a FileNotFoundError."""
    path = find_table(path)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{path} is not a sweep table (expected {TABLE_STEM}.parquet or {TABLE_STEM}.csv)")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path).to_pydict()
        else:
            table = _parse_csv(path)
    except ImportError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid, csv.Error, UnicodeDecodeError, ValueError
        raise ValueError(f"{path} is not a readable sweep table ({type(exc).__name__}: {exc})") from None
    if "update" not in table and "kind" in table:  # a table written before the column: W, W-W0 or BA by kind
        table["update"] = [OLD_UPDATES.get(kind, "") for kind in table["kind"]]
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{path} is not a sweep table: missing columns {', '.join(missing)}")
    return table
