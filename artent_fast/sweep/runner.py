"""``run_sweep``: plan, shard across ranks, run unfinished units, merge into one table, report."""

from __future__ import annotations

import json
import math
import operator
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from artent_fast import parallel
from artent_fast.atomic import atomic_write, no_room, out_folder, room_under
from artent_fast.checkpoints import DEFAULT_TARGETS, check_targets
from artent_fast.filelock import InUseError, lock_folder
from artent_fast.sweep import distributed
from artent_fast.sweep.compute import Loaded, UnitResult, load_unit, profile_unit, unit_rows
from artent_fast.sweep.memory import current_rss_bytes, mib, peak_rss_bytes
from artent_fast.sweep.plan import WorkUnit, build_plan
from artent_fast.sweep.progress import Progress
from artent_fast.sweep.store import (
    COLUMNS,
    ERRORS,
    MANIFEST,
    have_pyarrow,
    is_done,
    merge_parts,
    no_pyarrow_error,
    remove_stale_temps,
    write_part,
    write_table,
)

LOCK = ".artent-sweep.lock"
# what makes a table: a sweep into an --out whose manifest differs in one of these replaces its rows
_SETTING_FLAGS = {
    "alpha": "alpha (--alpha)",
    "log_base": "log_base (--log-base)",
    "version": "table version",
    "base": "base (--base)",
    "initial_adapter": "initial adapter (--initial-adapter)",
    "targets": "targets (--target / --all-linear)",
    "checkpoints": "checkpoints (--tuned)",
}


class OutInUseError(InUseError, ValueError):
    """Another sweep is writing this ``--out``."""


@dataclass
class SweepResult:
    """What a sweep did: the table (rank 0), the errors, timings and memory."""

    table_path: Path | None
    errors: list[dict[str, Any]]
    units: int
    ran: int
    skipped: int
    io_s: float = 0.0
    compute_s: float = 0.0
    total_s: float = 0.0
    peak_rss: int = 0
    start_rss: int = 0
    largest_matrix: int = 0
    rank: int = 0
    world: int = 1

    @property
    def ok(self) -> bool:
        return not self.errors


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """``device`` if this machine has it (cpu, cuda[:i], mps), else a ValueError naming ``--device``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r} is not a device (cpu, cuda, cuda:N, mps): {exc}") from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    if dev.type == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return device
    raise ValueError(f"--device {device!r} is not available here (cpu{', cuda' if torch.cuda.is_available() else ''})")


def check_settings(alpha: Any, log_base: Any, batch: Any) -> tuple[float, float, int]:
    """The numeric options, checked before any work: a ValueError naming the option."""

    def real(v: Any, name: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} must be a number, got {v!r}")
        return float(v)

    a, b = real(alpha, "alpha (--alpha)"), real(log_base, "log_base (--log-base)")
    if not (a > 0):  # NaN fails too
        raise ValueError(f"alpha (--alpha) must be a positive number (1: von Neumann, inf: min-entropy), got {alpha}")
    if not (math.isfinite(b) and b > 0 and b != 1):
        raise ValueError(f"log_base (--log-base) must be a finite positive number other than 1, got {log_base}")
    try:
        n = operator.index(batch) if not isinstance(batch, bool) else -1
    except TypeError:
        n = -1
    if n < 1:
        raise ValueError(f"batch (--batch) must be an integer >= 1, got {batch!r}")
    return a, b, n


def check_out(out: str | Path) -> Path:
    """The output folder, created: an existing file, or a path under a file, is a ValueError naming ``--out``."""
    return out_folder(out, "--out")


def run_sweep(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    *,
    base: str | Path | None = None,
    initial_adapter: str | Path | None = None,
    targets: Sequence[str] | None = DEFAULT_TARGETS,
    batch: int = 4,
    device: str | None = None,
    allow_pickle: bool = False,
    alpha: float = 1.0,
    log_base: float = math.e,
    table_format: str = "auto",
    progress: bool = True,
    verbose: bool = True,
    prefetch: bool | None = None,
    overwrite: bool = False,
) -> SweepResult:
    """Profile every target matrix of ``checkpoints`` (dW against ``base`` when given) into ``out``.

    ``base`` is needed for DoRA adapters (their update depends on the base weight). ``initial_adapter``: the
    folder of the adapter as saved before training, for adapters that did not start at zero (PiSSA, OLoRA,
    ...: their update is then ``s (B A - B0 A0)``; without it they are refused).

    ``targets``: regex patterns searched in module names (``None``: every linear weight). Resumable:
    finished units are skipped on a rerun with the same arguments. Under torchrun the units are
    sharded across ranks and rank 0 writes the table. ``prefetch`` (default: on for CUDA) reads the
    next unit in a thread while the current one computes. ``out`` is locked while the sweep runs (another
    sweep into it is a ValueError naming the process holding it), and a sweep with other settings (alpha,
    log base, base, targets, checkpoints) is refused there unless ``overwrite``.
    """
    t_start = time.perf_counter()
    if not checkpoints:
        raise ValueError("no checkpoints given (pass --tuned DIR, at least one)")
    alpha, log_base, batch = check_settings(alpha, log_base, batch)
    targets = check_targets(targets)
    if table_format not in ("auto", "parquet", "csv"):
        raise ValueError(f"table_format must be 'auto', 'parquet' or 'csv', got {table_format!r}")
    if table_format == "parquet" and not have_pyarrow():  # say so before the work, not after
        raise no_pyarrow_error()
    device = check_device(device or default_device())
    out = check_out(out)
    settings = {"alpha": alpha, "log_base": log_base, "version": 1}
    identity = {
        "settings": settings,
        "base": str(base) if base else None,
        "initial_adapter": str(initial_adapter) if initial_adapter else None,
        "targets": targets,
        "checkpoints": [str(c) for c in checkpoints],
    }
    held, first = None, distributed.from_env().rank == 0
    if first:  # rank 0 writes the manifest and the table: it holds --out and checks what it holds
        held = lock_folder(
            out,
            LOCK,
            lambda who: (
                f"--out {out} is in use by another sweep ({who} holds {out / LOCK}): "
                "wait for it to finish, or give this one another --out"
            ),
            OutInUseError,
        )
    try:
        if first and not overwrite:
            check_resume(out, identity)
        with room_under(out, "; the parts already finished are kept: make room and rerun the same command to resume"):
            return _run_locked(
                checkpoints,
                out,
                identity,
                batch,
                device,
                allow_pickle,
                table_format,
                progress,
                verbose,
                prefetch,
                t_start,
            )
    finally:
        if held is not None:
            held.close()


def check_resume(out: Path, identity: dict[str, Any]) -> None:
    """A ValueError naming each setting that differs when ``out`` holds the manifest of another sweep."""
    try:
        old = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return  # no sweep there yet (or an unreadable manifest: it is rewritten)
    if not isinstance(old, dict):
        return
    now = json.loads(json.dumps(identity))  # tuples as lists, as the manifest holds them
    keys = ("base", "initial_adapter", "targets", "checkpoints")
    was = {**(old.get("settings") or {}), **{k: old.get(k) for k in keys}}
    now = {**now["settings"], **{k: now[k] for k in keys}}
    differ = [
        f"{_SETTING_FLAGS.get(key, key)} {_short(was.get(key))} there, {_short(value)} now"
        for key, value in now.items()
        if was.get(key) != value
    ]
    if differ:
        raise ValueError(
            f"--out {out} holds a sweep with other settings ({'; '.join(differ)}): resuming would replace its "
            "table; give another --out, or pass --overwrite (overwrite=True) to replace it"
        )


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _run_locked(
    checkpoints, out, identity, batch, device, allow_pickle, table_format, progress, verbose, prefetch, t_start
) -> SweepResult:
    settings, base, targets = identity["settings"], identity["base"], identity["targets"]
    alpha, log_base = settings["alpha"], settings["log_base"]
    rank = distributed.setup(device)
    dev = torch.device(f"cuda:{rank.local_rank}" if device == "cuda" and rank.world > 1 else device)
    start_rss = current_rss_bytes()
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose and rank.rank == 0 else (lambda *a: None)
    try:
        plan = build_plan(
            [str(c) for c in checkpoints],
            base=str(base) if base else None,
            targets=targets,
            batch=batch,
            allow_pickle=allow_pickle,
            settings=settings,
            initial_adapter=identity["initial_adapter"],
        )
        if rank.rank == 0:
            for path in remove_stale_temps(out):  # a crashed run's leftovers; no rank writes before the barrier
                say(f"removed {path} (left by an interrupted run)")
            manifest = {
                **identity,
                "world": rank.world,
                "base_name_mapping": plan.name_maps,
                "units": [u.describe() for u in plan.units],
            }
            atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
            for ckpt, mapping in plan.name_maps.items():
                if mapping != "same names":
                    say(f"{ckpt}: module names matched to the base's by {mapping}")
        distributed.barrier(rank)
        mine = parallel.shard([u.cost for u in plan.units], rank.world)[rank.rank]
        todo, failed = [], []
        for i in mine:  # resume bookkeeping is per unit too: a unit it fails on is reported, the rest go on
            try:
                if not is_done(out, plan.units[i].id, COLUMNS, unit_rows(plan.units[i])):
                    todo.append(i)
            except Exception as exc:
                failed.append((plan.units[i], exc))
        skipped = len(mine) - len(todo) - len(failed)
        say(
            f"artent sweep: {len(plan.units)} work units ({sum(len(u.items) for u in plan.units)} matrices) on "
            f"{rank.world} rank(s), device {dev}; rank 0 skips {skipped} finished"
        )
        result = SweepResult(
            None,
            [],
            len(plan.units),
            len(todo) + len(failed),
            skipped,
            rank=rank.rank,
            world=rank.world,
            start_rss=start_rss,
        )
        for unit, exc in failed:
            _write_failed(out, unit, plan.sources.get(unit.checkpoint), exc)
        bar = Progress(
            sum(len(plan.units[i].items) for i in todo),
            desc=f"sweep[rank {rank.rank}]",
            enabled=progress and rank.rank == 0,
        )
        overlap = dev.type == "cuda" if prefetch is None else prefetch
        for unit, loaded in _loaded_units([plan.units[i] for i in todo], plan.sources, dev, overlap):
            try:  # one bad unit (a degenerate matrix, out of memory, a bug) must not end the sweep
                if isinstance(loaded, BaseException):
                    raise loaded
                res = profile_unit(loaded, alpha=alpha, log_base=log_base)
                write_part(out, unit.id, res.rows, res.errors)
            except Exception as exc:
                if no_room(exc):  # a full disk under --out ends the sweep (room_under), the parts written stay
                    raise
                res = _write_failed(out, unit, plan.sources.get(unit.checkpoint), exc)
            result.io_s += res.io_s
            result.compute_s += res.compute_s
            result.largest_matrix = max(result.largest_matrix, res.largest_bytes)
            bar.update(len(unit.items))
        bar.close()
        distributed.barrier(rank)
        if rank.rank == 0:
            table, unit_errors = merge_parts(out, [u.id for u in plan.units], COLUMNS, [_rows(u) for u in plan.units])
            result.table_path = write_table(out, table, table_format)
            result.errors = plan.errors + unit_errors
            atomic_write(out / ERRORS, json.dumps(result.errors, indent=1))
            say(f"wrote {result.table_path} ({len(table['entropy'])} rows)")
        distributed.barrier(rank)
        if rank.rank != 0:
            result.errors = json.loads((out / ERRORS).read_text())
    finally:
        distributed.teardown(rank)
    result.total_s = time.perf_counter() - t_start
    result.peak_rss = max(peak_rss_bytes(), start_rss)
    if verbose:
        report(result, rank.rank == 0)
    return result


def _rows(unit: WorkUnit) -> int | None:
    """The rows a unit makes, or None (not checked) for one whose shape has no bond: its part holds its error."""
    try:
        return unit_rows(unit)
    except Exception:
        return None


def _unit_failure(unit: WorkUnit, source: Any, exc: BaseException) -> UnitResult:
    """A unit that failed as a whole: one error naming the file and the tensor(s) (the first, and how many more)."""
    first = unit.items[0].tensor if unit.items else None
    try:
        weights = source.weights if source is not None and source.weights is not None else source.adapter.weights
        file = weights.file_of(first)
    except Exception:
        file = unit.checkpoint
    more = f" (and {len(unit.items) - 1} more of this shape)" if len(unit.items) > 1 else ""
    reason = str(exc) or type(exc).__name__
    return UnitResult(
        errors=[
            {
                "file": file,
                "tensor": first,
                "error": f"{unit.kind} matrix {unit.shape[0]}x{unit.shape[1]}{more} failed: {reason}",
            }
        ]
    )


def _write_failed(out: Path, unit: WorkUnit, source: Any, exc: BaseException) -> UnitResult:
    res = _unit_failure(unit, source, exc)
    write_part(out, unit.id, res.rows, res.errors)
    return res


def _loaded_units(
    units: list[WorkUnit], sources: dict, device: torch.device, overlap: bool
) -> Iterator[tuple[WorkUnit, Loaded | BaseException]]:
    """``(unit, loaded)`` in order; with ``overlap`` a loader thread reads unit i+1 while unit i computes."""

    def load(unit: WorkUnit) -> Loaded | BaseException:
        try:
            return load_unit(unit, sources[unit.checkpoint], device)
        except Exception as exc:  # reported against the unit by the caller
            return exc

    if not overlap:
        for unit in units:
            yield unit, load(unit)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="artent-sweep-load") as pool:
        pending = pool.submit(load, units[0]) if units else None
        for k, unit in enumerate(units):
            loaded = pending.result()
            pending = pool.submit(load, units[k + 1]) if k + 1 < len(units) else None
            yield unit, loaded


def report(result: SweepResult, header: bool) -> None:
    """Timings, peak memory and errors, on stderr."""
    tag = f"[rank {result.rank}] " if result.world > 1 else ""
    # one write per line: ranks share stderr, and print's separate newline write lets their lines join
    sys.stderr.write(
        f"{tag}units: {result.ran} run, {result.skipped} already done; I/O {result.io_s:.2f} s, compute "
        f"{result.compute_s:.2f} s, total {result.total_s:.2f} s; peak host memory {mib(result.peak_rss)} RSS "
        f"(start {mib(result.start_rss)}, largest matrix {mib(result.largest_matrix)})\n"
    )
    sys.stderr.flush()
    if header and result.errors:
        print(f"{len(result.errors)} error(s):", file=sys.stderr)
        for e in result.errors:
            where = e["file"] + (f" [{e['tensor']}]" if e.get("tensor") else "")
            print(f"  {where}: {e['error']}", file=sys.stderr)
