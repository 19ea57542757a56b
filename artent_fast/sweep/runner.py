"""``run_sweep``: plan, shard across ranks, run unfinished units, merge into one table, report."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from artent_fast.sweep import distributed
from artent_fast.sweep.compute import COLUMNS, Loaded, UnitResult, load_unit, profile_unit
from artent_fast.sweep.memory import current_rss_bytes, mib, peak_rss_bytes
from artent_fast.sweep.names import DEFAULT_TARGETS
from artent_fast.sweep.plan import Unit, build_plan
from artent_fast.sweep.progress import Progress
from artent_fast.sweep.store import (
    ERRORS,
    MANIFEST,
    atomic_write,
    have_pyarrow,
    is_done,
    merge_parts,
    write_part,
    write_table,
)

# Test hook: seconds to sleep after each unit, so a test can kill a run mid-way deterministically.
_DELAY_ENV = "ARTENT_SWEEP_TEST_DELAY"


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


def run_sweep(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    *,
    base: str | Path | None = None,
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
) -> SweepResult:
    """Profile every target matrix of ``checkpoints`` (dW against ``base`` when given) into ``out``.

    ``targets``: regex patterns searched in module names (``None``: every linear weight). Resumable:
    finished units are skipped on a rerun with the same arguments. Under torchrun the units are
    sharded across ranks and rank 0 writes the table. ``prefetch`` (default: on for CUDA) reads the
    next unit in a thread while the current one computes.
    """
    t_start = time.perf_counter()
    if not checkpoints:
        raise ValueError("no checkpoints given (pass --tuned DIR, at least one)")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if table_format not in ("auto", "parquet", "csv"):
        raise ValueError(f"table_format must be 'auto', 'parquet' or 'csv', got {table_format!r}")
    if table_format == "parquet" and not have_pyarrow():  # say so before the work, not after
        raise ImportError("Parquet output needs pyarrow: pip install 'artent_fast[tables]' (or use --format csv)")
    out = Path(out)
    device = device or default_device()
    rank = distributed.setup(device)
    dev = torch.device(f"cuda:{rank.local_rank}" if device == "cuda" and rank.world > 1 else device)
    start_rss = current_rss_bytes()
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose and rank.rank == 0 else (lambda *a: None)
    try:
        settings = {"alpha": alpha, "log_base": log_base, "version": 1}
        targets = list(targets) if targets is not None else None
        plan = build_plan([str(c) for c in checkpoints], base=str(base) if base else None, targets=targets,
                          batch=batch, allow_pickle=allow_pickle, settings=settings)
        if rank.rank == 0:
            manifest = {"settings": settings, "base": str(base) if base else None, "targets": targets,
                        "checkpoints": [str(c) for c in checkpoints], "world": rank.world,
                        "units": [u.describe() for u in plan.units]}
            atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
        mine = distributed.shard([u.cost for u in plan.units], rank.world)[rank.rank]
        todo = [i for i in mine if not is_done(out, plan.units[i].id)]
        skipped = len(mine) - len(todo)
        say(f"artent sweep: {len(plan.units)} work units ({sum(len(u.items) for u in plan.units)} matrices) on "
            f"{rank.world} rank(s), device {dev}; rank 0 skips {skipped} finished")
        result = SweepResult(None, [], len(plan.units), len(todo), skipped, rank=rank.rank, world=rank.world,
                             start_rss=start_rss)
        bar = Progress(sum(len(plan.units[i].items) for i in todo), desc=f"sweep[rank {rank.rank}]",
                       enabled=progress and rank.rank == 0)
        delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
        overlap = dev.type == "cuda" if prefetch is None else prefetch
        for unit, loaded in _loaded_units([plan.units[i] for i in todo], plan.sources, dev, overlap):
            try:
                if isinstance(loaded, BaseException):
                    raise loaded
                res = profile_unit(loaded, alpha=alpha, log_base=log_base)
            except Exception as exc:  # one bad unit (out of memory, a bug) must not end the sweep
                res = UnitResult(errors=[{"file": unit.checkpoint, "tensor": None,
                                          "error": f"work unit {unit.kind} {unit.shape} failed: {exc!r}"}])
            write_part(out, unit.id, res.rows, res.errors)
            result.io_s += res.io_s
            result.compute_s += res.compute_s
            result.largest_matrix = max(result.largest_matrix, res.largest_bytes)
            bar.update(len(unit.items))
            if delay:
                time.sleep(delay)
        bar.close()
        distributed.barrier(rank)
        if rank.rank == 0:
            table, unit_errors = merge_parts(out, [u.id for u in plan.units], COLUMNS)
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


def _loaded_units(units: list[Unit], sources: dict, device: torch.device,
                  overlap: bool) -> Iterator[tuple[Unit, Loaded | BaseException]]:
    """``(unit, loaded)`` in order; with ``overlap`` a loader thread reads unit i+1 while unit i computes."""

    def load(unit: Unit) -> Loaded | BaseException:
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
