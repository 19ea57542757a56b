"""Run one work unit: read its matrices lazily, profile them in one batch, return tidy rows."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from artent_fast.api import entanglement_profile, lowrank_profile, page_curve, random_lowrank_profile, sites
from artent_fast.sweep.names import parse_layer
from artent_fast.sweep.plan import Item, Source, Unit
from artent_fast.sweep.reader import CheckpointError

COLUMNS = ("checkpoint", "step", "module", "layer", "kind", "rows", "cols", "rank", "bond", "left_dim", "right_dim",
           "center", "entropy", "theory", "theory_kind")


@dataclass
class UnitResult:
    rows: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    errors: list[dict[str, Any]] = field(default_factory=list)
    io_s: float = 0.0
    compute_s: float = 0.0
    largest_bytes: int = 0


@lru_cache(maxsize=256)
def theory_curve(m: int, n: int, rank: int | None) -> tuple[tuple[float, ...], str]:
    """The overlay: Page curve for dense matrices, a random rank-r product (analytic) for LoRA updates."""
    if rank is None:
        return tuple(page_curve(m, n).tolist()), "page"
    return tuple(random_lowrank_profile(m, n, rank, method="analytic").tolist()), "random-lowrank"


def _load(files, name: str, device: torch.device, result: UnitResult) -> torch.Tensor:
    t0 = time.perf_counter()
    host = files.load(name)
    result.largest_bytes = max(result.largest_bytes, host.numel() * host.element_size())
    if host.ndim != 2:
        raise CheckpointError(files.file_of(name), name, f"expected a matrix, found shape {tuple(host.shape)}")
    out = host.to(device=device, dtype=torch.float32)
    result.io_s += time.perf_counter() - t0
    return out


def _dense_batch(unit: Unit, source: Source, device: torch.device, result: UnitResult) -> tuple[list[Item], Any]:
    """Fill a preallocated (b, m, n) batch one matrix at a time (host memory: about one matrix)."""
    m, n = unit.shape
    batch = torch.empty((len(unit.items), m, n), dtype=torch.float32, device=device)
    kept: list[Item] = []
    for item in unit.items:
        try:
            w = _load(source.weights, item.tensor, device, result)
            if tuple(w.shape) != (m, n):
                raise CheckpointError(source.weights.file_of(item.tensor), item.tensor,
                                      f"shape {tuple(w.shape)} differs from its header {unit.shape}")
            if item.base_tensor is not None:
                w0 = _load(source.base, item.base_tensor, device, result)
                if w0.shape != w.shape:
                    raise CheckpointError(source.base.file_of(item.base_tensor), item.base_tensor,
                                          f"base shape {tuple(w0.shape)} does not match tuned {tuple(w.shape)}")
                w.sub_(w0)
                del w0
            batch[len(kept)].copy_(w)
            kept.append(item)
            del w
        except CheckpointError as exc:
            result.errors.append(exc.record())
    return kept, batch[: len(kept)]


def _lora_batch(unit: Unit, source: Source, device: torch.device, result: UnitResult) -> tuple[list[Item], Any]:
    """Stacks of factors (B: (b, m, r), A: (b, r, n)) of the update in the base weight's layout, scale folded in."""
    files = source.adapter.weights
    bs, as_, kept = [], [], []
    for item in unit.items:
        try:
            a = _load(files, item.tensor, device, result)
            b = _load(files, item.b_tensor, device, result) * item.scale
            if item.fan_in_fan_out:  # stored layout is (in, out): the update is (B A)^T = A^T B^T
                a, b = b.mT, a.mT
            bs.append(b)
            as_.append(a)
            kept.append(item)
        except CheckpointError as exc:
            result.errors.append(exc.record())
    if not kept:
        return kept, None
    return kept, (torch.stack(bs), torch.stack(as_))


def _drop_nonfinite(kept: list[Item], tensors: list[torch.Tensor], source: Source, unit: Unit,
                    result: UnitResult) -> list[int]:
    finite = torch.ones(len(kept), dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        finite &= torch.isfinite(t).flatten(1).all(1)
    ok = finite.tolist()
    for item, good in zip(kept, ok, strict=True):
        if not good:
            files = source.adapter.weights if source.adapter else source.weights
            result.errors.append(CheckpointError(files.file_of(item.tensor), item.tensor,
                                                 "NaN or Inf entries" + (" in the update" if item.base_tensor else ""))
                                 .record())
    return [i for i, good in enumerate(ok) if good]


def run_unit(unit: Unit, source: Source, device: torch.device, *, alpha: float = 1.0,
             log_base: float = math.e) -> UnitResult:
    """Profiles of every matrix of ``unit`` as tidy rows; per-tensor problems become error records."""
    result = UnitResult()
    try:
        if unit.kind == "lora":
            kept, stacks = _lora_batch(unit, source, device, result)
            tensors = list(stacks) if stacks else []
        else:
            kept, batch = _dense_batch(unit, source, device, result)
            tensors = [batch]
        if not kept:
            return result
        good = _drop_nonfinite(kept, tensors, source, unit, result)
        if len(good) < len(kept):
            index = torch.tensor(good, dtype=torch.long, device=tensors[0].device)
            tensors = [t.index_select(0, index) for t in tensors]
            kept = [kept[i] for i in good]
        if not kept:
            return result
        t0 = time.perf_counter()
        if unit.kind == "lora":
            prof = lowrank_profile(tensors[0], tensors[1], alpha=alpha, base=log_base, on_zero="nan",
                                   check_finite=False)
        else:
            prof = entanglement_profile(tensors[0], alpha=alpha, base=log_base, on_zero="nan", check_finite=False)
        values = prof.double().cpu().tolist()
        result.compute_s += time.perf_counter() - t0
    finally:
        source.close()
    _append_rows(result, unit, kept, values, log_base)
    return result


def _append_rows(result: UnitResult, unit: Unit, kept: list[Item], values: list[list[float]], log_base: float) -> None:
    m, n = unit.shape
    layout = sites(m, n)
    bonds = layout.bond_dims()
    to_base = 1.0 / math.log(log_base)
    rows = result.rows
    for item, profile in zip(kept, values, strict=True):
        theory, theory_kind = theory_curve(m, n, item.rank)
        layer = parse_layer(item.module)
        for k, (entropy, (left, right)) in enumerate(zip(profile, bonds, strict=True)):
            for col, value in (("checkpoint", unit.checkpoint), ("step", unit.step), ("module", item.module),
                               ("layer", layer), ("kind", unit.kind), ("rows", m), ("cols", n), ("rank", item.rank),
                               ("bond", k + 1), ("left_dim", left), ("right_dim", right),
                               ("center", k == layout.center_bond), ("entropy", entropy),
                               ("theory", theory[k] * to_base), ("theory_kind", theory_kind)):
                rows[col].append(value)
