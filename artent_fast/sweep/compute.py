"""Run one work unit: read its matrices lazily, profile them in one batch, return tidy rows."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from artent_fast.api import entanglement_profile, lowrank_profile, page_curve, random_lowrank_profile, sites
from artent_fast.checkpoints import FILE_TYPES, CheckpointError, parse_layer
from artent_fast.core.update_algebra import change_factors, dora_change
from artent_fast.sweep.plan import Item, Source, WorkUnit, update_of
from artent_fast.sweep.store import COLUMNS


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


def _load(
    files, name: str, device: torch.device, result: UnitResult, dtype: torch.dtype = torch.float32, ndim: int = 2
) -> torch.Tensor:
    t0 = time.perf_counter()
    host = files.load(name)
    result.largest_bytes = max(result.largest_bytes, host.numel() * host.element_size())
    if host.ndim != ndim:
        found = "a matrix" if ndim == 2 else "a vector"
        raise CheckpointError(files.file_of(name), name, f"expected {found}, found shape {tuple(host.shape)}")
    out = host.to(device=device).to(dtype)  # copy in the stored dtype (bf16: half the bytes), then upcast
    result.io_s += time.perf_counter() - t0
    return out


@dataclass
class Loaded:
    """A unit's matrices on the device, ready to profile (``files``: where each kept item came from)."""

    unit: WorkUnit
    kept: list[Item]
    files: list[str]
    tensors: list[torch.Tensor]
    result: UnitResult


def _dense_batch(unit: WorkUnit, source: Source, device: torch.device, loaded: Loaded) -> None:
    """Fill a preallocated (b, m, n) batch one matrix at a time (host memory: about one matrix)."""
    m, n = unit.shape
    batch = torch.empty((len(unit.items), m, n), dtype=torch.float32, device=device)
    result = loaded.result
    for item in unit.items:
        try:
            w = _load(source.weights, item.tensor, device, result)
            if tuple(w.shape) != (m, n):
                raise CheckpointError(
                    source.weights.file_of(item.tensor),
                    item.tensor,
                    f"shape {tuple(w.shape)} differs from its header {unit.shape}",
                )
            if item.base_tensor is not None:
                w0 = _load(source.base, item.base_tensor, device, result)
                if w0.shape != w.shape:
                    raise CheckpointError(
                        source.base.file_of(item.base_tensor),
                        item.base_tensor,
                        f"base shape {tuple(w0.shape)} does not match tuned {tuple(w.shape)}",
                    )
                w.sub_(w0)
                del w0
            batch[len(loaded.kept)].copy_(w)
            loaded.kept.append(item)
            loaded.files.append(source.weights.file_of(item.tensor))
            del w
        except CheckpointError as exc:
            result.errors.append(exc.record())
    loaded.tensors = [batch[: len(loaded.kept)]]


def _typed_tensors(item: Item, source: Source, device: torch.device, result: UnitResult) -> dict[str, torch.Tensor]:
    """``role -> tensor`` (float64) of a module of another adapter type than LoRA."""
    files = source.adapter.weights
    return {
        role: _load(files, name, device, result, torch.float64, len(files.shape(name))) for role, name in item.tensors
    }


def _out_in(item: Item, shape: tuple[int, ...]) -> tuple[int, int]:
    """The update's ``(out, in)`` shape from its shape in the base weight's stored layout."""
    return (shape[1], shape[0]) if item.fan_in_fan_out else (shape[0], shape[1])


def _typed_dense(item: Item, source: Source, device: torch.device, unit: WorkUnit, result: UnitResult) -> torch.Tensor:
    """A dense update of another adapter type (IA3, a dense LoKr) in the base weight's stored layout."""
    kind = FILE_TYPES[item.peft_type]
    t = _typed_tensors(item, source, device, result)
    weight = None
    if kind.base_needed:
        weight = _load(source.base, item.base_tensor, device, result, torch.float64)
        weight = weight.mT if item.fan_in_fan_out else weight
    delta = kind.dense(t, weight) * item.scale
    delta = delta.mT if item.fan_in_fan_out else delta
    if tuple(delta.shape) != unit.shape:
        raise CheckpointError(
            source.adapter.weights.file_of(item.tensor),
            item.tensor,
            f"update shape {tuple(delta.shape)} differs from its header {unit.shape}",
        )
    return delta


def _dora_batch(unit: WorkUnit, source: Source, device: torch.device, loaded: Loaded) -> None:
    """An adapter's dense updates in float64: DoRA's (``W_dora - W`` is the small difference of two
    weight-sized matrices), IA3's and a dense LoKr's."""
    files, result = source.adapter.weights, loaded.result
    batch = torch.empty((len(unit.items), *unit.shape), dtype=torch.float64, device=device)
    for item in unit.items:
        try:
            if item.peft_type is not None:
                batch[len(loaded.kept)].copy_(_typed_dense(item, source, device, unit, result))
                loaded.kept.append(item)
                loaded.files.append(files.file_of(item.tensor))
                continue
            w0 = _load(source.base, item.base_tensor, device, result, torch.float64)
            a = _load(files, item.tensor, device, result, torch.float64)
            b = _load(files, item.b_tensor, device, result, torch.float64)
            m = _load(files, item.magnitude, device, result, torch.float64, ndim=1)
            if tuple(w0.shape) != unit.shape:
                raise CheckpointError(
                    source.base.file_of(item.base_tensor),
                    item.base_tensor,
                    f"shape {tuple(w0.shape)} differs from its header {unit.shape}",
                )
            delta = item.scale * (b @ a)  # (out, in): in the stored layout below
            batch[len(loaded.kept)].copy_(
                dora_change(w0, delta.mT if item.fan_in_fan_out else delta, m, item.fan_in_fan_out)
            )
            loaded.kept.append(item)
            loaded.files.append(files.file_of(item.tensor))
        except CheckpointError as exc:
            result.errors.append(exc.record())
    loaded.tensors = [batch[: len(loaded.kept)]]


def _lora_batch(unit: WorkUnit, source: Source, device: torch.device, loaded: Loaded) -> None:
    """Stacks of factors (B: (b, m, r), A: (b, r, n)) of the update in the base weight's layout, scale folded in;
    with an initial adapter, of ``s (B A - B0 A0)`` (float64, rank 2r: :func:`change_factors`); of another
    adapter type, as its :class:`~artent_fast.checkpoints.FileType` factors it (float64)."""
    files = source.adapter.weights
    bs, as_ = [], []
    for item in unit.items:
        try:
            if item.peft_type is not None:
                t = _typed_tensors(item, source, device, loaded.result)
                b, a = FILE_TYPES[item.peft_type].factors(t, _out_in(item, unit.shape))
            else:
                a = _load(files, item.tensor, device, loaded.result)
                b = _load(files, item.b_tensor, device, loaded.result)
            if item.a0_tensor is not None:
                start = source.adapter.initial.weights
                a0 = _load(start, item.a0_tensor, device, loaded.result)
                b0 = _load(start, item.b0_tensor, device, loaded.result)
                b, a = change_factors(b, a, b0, a0)
            b = b * item.scale
            if item.fan_in_fan_out:  # stored layout is (in, out): the update is (B A)^T = A^T B^T
                a, b = b.mT, a.mT
            bs.append(b)
            as_.append(a)
            loaded.kept.append(item)
            loaded.files.append(files.file_of(item.tensor))
        except CheckpointError as exc:
            loaded.result.errors.append(exc.record())
    loaded.tensors = [torch.stack(bs), torch.stack(as_)] if bs else []


def load_unit(unit: WorkUnit, source: Source, device: torch.device) -> Loaded:
    """Read a unit's tensors onto ``device`` (on CUDA in a side stream, synchronised before returning).

    Safe to run in a loader thread while the previous unit computes; it closes the source's file handles.
    """
    loaded = Loaded(unit, [], [], [], UnitResult())
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    try:
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            if unit.kind == "lora":
                _lora_batch(unit, source, device, loaded)
            elif source.adapter is not None:  # an adapter's dense update: DoRA, IA3, a dense LoKr
                _dora_batch(unit, source, device, loaded)
            else:
                _dense_batch(unit, source, device, loaded)
        if stream is not None:
            stream.synchronize()
    finally:
        source.close()
    return loaded


def _drop_nonfinite(loaded: Loaded) -> None:
    finite = torch.ones(len(loaded.kept), dtype=torch.bool, device=loaded.tensors[0].device)
    for t in loaded.tensors:
        finite &= torch.isfinite(t).flatten(1).all(1)
    ok = finite.tolist()
    for item, file, good in zip(loaded.kept, loaded.files, ok, strict=True):
        if not good:
            loaded.result.errors.append(
                CheckpointError(
                    file, item.tensor, "NaN or Inf entries" + (" in the update" if item.base_tensor else "")
                ).record()
            )
    if not all(ok):
        keep = [i for i, good in enumerate(ok) if good]
        index = torch.tensor(keep, dtype=torch.long, device=loaded.tensors[0].device)
        loaded.tensors = [t.index_select(0, index) for t in loaded.tensors] if keep else []
        loaded.kept = [loaded.kept[i] for i in keep]
        loaded.files = [loaded.files[i] for i in keep]


def profile_unit(loaded: Loaded, *, alpha: float = 1.0, log_base: float = math.e) -> UnitResult:
    """Batched profiles of a loaded unit as tidy rows; non-finite matrices become error records."""
    result, unit = loaded.result, loaded.unit
    if not loaded.kept:
        return result
    if loaded.tensors[0].is_cuda:  # made on the loader's stream, used (and freed) on this one
        for t in loaded.tensors:
            t.record_stream(torch.cuda.current_stream(t.device))
    t0 = time.perf_counter()
    _drop_nonfinite(loaded)
    if not loaded.kept:
        return result
    if unit.kind == "lora":
        prof = lowrank_profile(*loaded.tensors, alpha=alpha, base=log_base, on_zero="nan", check_finite=False)
    else:
        prof = entanglement_profile(loaded.tensors[0], alpha=alpha, base=log_base, on_zero="nan", check_finite=False)
    values = prof.double().cpu().tolist()
    result.compute_s += time.perf_counter() - t0
    loaded.tensors = []
    _append_rows(result, unit, loaded.kept, values, log_base)
    return result


def unit_rows(unit: WorkUnit) -> int:
    """How many table rows a unit with no error makes: one per matrix and bond."""
    return len(unit.items) * len(sites(*unit.shape).bond_dims())


def _append_rows(
    result: UnitResult, unit: WorkUnit, kept: list[Item], values: list[list[float]], log_base: float
) -> None:
    m, n = unit.shape
    layout = sites(m, n)
    bonds = layout.bond_dims()
    to_base = 1.0 / math.log(log_base)
    rows = result.rows
    for item, profile in zip(kept, values, strict=True):
        theory, theory_kind = theory_curve(m, n, item.rank)
        layer = parse_layer(item.module)
        update = update_of(unit.kind, item)
        for k, (entropy, (left, right)) in enumerate(zip(profile, bonds, strict=True)):
            for col, value in (
                ("checkpoint", unit.checkpoint),
                ("step", unit.step),
                ("module", item.module),
                ("layer", layer),
                ("kind", unit.kind),
                ("update", update),
                ("rows", m),
                ("cols", n),
                ("rank", item.rank),
                ("bond", k + 1),
                ("left_dim", left),
                ("right_dim", right),
                ("row_col_bond", k + 1 == layout.row_sites),  # the file's form of row_sites
                ("entropy", entropy),
                ("theory", theory[k] * to_base),
                ("theory_kind", theory_kind),
            ):
                rows[col].append(value)
