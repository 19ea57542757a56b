"""Reading the due units in the order every rank shares, sharded ones made whole on their owners.

See :mod:`artent_fast.tracking.dist` for the protocol; :func:`read_due` is its first step.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from artent_fast.parallel import collective_device, full_tensor, is_dtensor
from artent_fast.tracking.dist.exchange import Outcome
from artent_fast.tracking.dist.wrappers import fsdp1_owner, gathered, is_zero3
from artent_fast.tracking.schedule import Tracked
from artent_fast.updates import Unit
from artent_fast.updates.types import same


class Gathering:
    """How one unit's tensors become whole on its owner, for the layout the unit has (decided once)."""

    def __init__(self, model: nn.Module, unit: Unit) -> None:
        self.tensors = unit.tensors()
        self.kind = unit.kind
        self.sharded = any(is_dtensor(t) for t in self.tensors)
        self.zero3 = any(is_zero3(t) for t in self.tensors)  # made whole for all due units at once
        self.fsdp1 = fsdp1_owner(model, unit.path or unit.module)
        self.fsdp1_module = dict(model.named_modules()).get(self.fsdp1) if self.fsdp1 is not None else None

    @functools.cached_property
    def batched(self) -> bool:
        """LoRA factors sharded along dim 0 on a 1-D mesh (FSDP2): gathered together with the other units' in one
        collective per due step (they are small); anything else is gathered unit by unit."""
        return (
            self.sharded and self.fsdp1_module is None and self.kind == "lora" and all(shard0(t) for t in self.tensors)
        )

    @functools.cached_property
    def collective(self) -> bool:
        """Whether every rank takes part in reading this unit (else only the owner reads it)."""
        return self.sharded or self.fsdp1_module is not None

    @functools.cached_property
    def everyone_reads(self) -> bool:
        """Whether every rank runs the reading code (DTensor: ``full_tensor`` is called inside it)."""
        return self.sharded and self.fsdp1_module is None

    @contextlib.contextmanager
    def whole(self) -> Iterator[Any]:
        """A context (entered by every rank when :attr:`collective`) giving the ``full`` function for reading."""
        if self.fsdp1_module is not None:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            # gathers this FSDP unit's flat parameter; what is read is cloned before it is resharded
            with FSDP.summon_full_params(self.fsdp1_module, recurse=False, writeback=False):
                yield torch.clone
        elif self.sharded:
            yield full_tensor
        else:
            yield same


def counting(full: Any, calls: list) -> Any:
    """``full``, noting in ``calls`` each collective it makes (one per DTensor it is given)."""

    def counted(tensor: torch.Tensor) -> torch.Tensor:
        if is_dtensor(tensor):
            calls.append(tuple(tensor.shape))
        return full(tensor)

    return counted


def catch_up(unit: Unit, done: int) -> None:
    """Make the DTensor collectives that reading ``unit`` would have made after the first ``done``.

    A rank whose reading fails part-way (before its ``full_tensor()`` calls) still joins the others'
    all-gathers, in order and with the same shapes and dtypes, so no rank waits for it; its error
    then fails the unit on every rank (see :func:`exchange`). Mirrors ``Unit.factors`` (B, then A)
    and ``Unit.dense`` for snapshots (``W - W0`` in float32/64, or ``W`` itself when ``W0`` is not
    sharded alike); other adapters' updates (``get_delta_weight``) are not replayed.
    """
    tensors = unit.tensors()
    if unit.kind == "lora":
        pending = [(t, t.dtype) for t in tensors]
    elif unit.source == "snapshot" and tensors:
        W = tensors[0]
        wide = torch.float64 if W.dtype == torch.float64 else torch.float32
        pending = [(W, W.dtype)] if type(W) is not type(unit.w0) else [(W, wide)]
    else:
        return
    with torch.no_grad():
        for tensor, dtype in pending[done:]:
            if is_dtensor(tensor):
                tensor.detach().to(dtype).full_tensor()


def shard0(tensor: Any) -> bool:
    """A DTensor on a 1-D mesh sharded along dim 0: rank order of the local chunks is the row order."""
    if not is_dtensor(tensor):
        return False
    from torch.distributed.tensor import Shard

    placements = tensor.placements
    return tensor.device_mesh.ndim == 1 and len(placements) == 1 and placements[0] == Shard(0)


def shard_rows(rows: int, world: int) -> list[int]:
    """Rows of each rank's chunk of a dim-0 sharded tensor (``torch.chunk`` semantics, as DTensor ``Shard(0)``)."""
    chunk = -(-rows // world) if rows else 0
    return [max(0, min(rows, (r + 1) * chunk) - r * chunk) for r in range(world)]


class ShardsUnavailable(RuntimeError):
    """Some rank could not prepare its shards for a gather (raised on every rank, after the collective)."""


def gather_factors(
    order: list[int], tensors: dict[int, list[torch.Tensor]], wanted: set[int]
) -> dict[int, list[torch.Tensor]]:
    """The whole factors of the units in ``wanted``, from every rank's row shards of the DTensors in ``tensors``.

    One ``all_gather`` of a flat buffer per rank (each rank computes every rank's shard sizes from
    the global shapes, so nothing else is exchanged); only the owners assemble. The buffer starts
    with a status slot: a rank whose local shards cannot be read still joins the collective (with
    zeros) and every rank then raises :class:`ShardsUnavailable` together, so none is left waiting.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    shapes = {i: [t.shape for t in ts] for i, ts in tensors.items()}
    dtype = torch.float64 if any(t.dtype == torch.float64 for ts in tensors.values() for t in ts) else torch.float32
    sizes = [1] * world  # elements each rank sends: the status slot, then its shards
    for i in order:
        for shape in shapes[i]:
            cols = shape[1:].numel()
            for r, rows in enumerate(shard_rows(shape[0], world)):
                sizes[r] += rows * cols
    buffer = torch.zeros(max(sizes), dtype=dtype, device=collective_device())
    error = None
    try:
        with torch.no_grad():  # to_local() first: a DTensor's own detach() costs ~6x more (measured)
            local = {i: [t.to_local().detach() for t in tensors[i]] for i in order}
        flat = [t.reshape(-1).to(buffer.device, dtype) for i in order for t in local[i]]
        mine = torch.cat(flat) if flat else buffer[:0]
        if mine.numel() != sizes[rank] - 1:
            raise ValueError(f"local shards hold {mine.numel()} elements, {sizes[rank] - 1} expected")
        buffer[1 : 1 + mine.numel()] = mine
    except Exception as exc:  # join the collective anyway; everyone learns it from the status slot
        error = exc
        buffer.zero_()
        buffer[0] = 1
    parts = [torch.empty_like(buffer) for _ in range(world)]
    dist.all_gather(parts, buffer)
    failed = [r for r in range(world) if bool(parts[r][0] != 0)]
    if failed:
        detail = f": {error!r}" if error is not None else ""
        raise ShardsUnavailable(f"rank(s) {failed} could not read their shards of the LoRA factors{detail}")
    offsets = [1] * world
    out = {}
    for i in order:
        whole = []
        for shape, original in zip(shapes[i], tensors[i], strict=True):
            cols = shape[1:].numel()
            pieces = []
            for r, rows in enumerate(shard_rows(shape[0], world)):
                n = rows * cols
                if i in wanted:
                    pieces.append(parts[r][offsets[r] : offsets[r] + n].view(rows, *shape[1:]))
                offsets[r] += n
            if i in wanted:
                whole.append(torch.cat(pieces).to(original.device, original.dtype))
        if i in wanted:
            out[i] = whole
    return out


Read = Callable[[Tracked, Callable[[torch.Tensor], torch.Tensor]], Any]  # (tracked, full) -> an item to measure


def read_due(due: Sequence[Tracked], rank: int, read: Read, items: list, outcomes: list[Outcome]) -> None:
    """Read the due units in their shared order, every rank taking part in the gathers of sharded ones.

    ``read(tracked, full)`` reads one unit (``full`` makes a parameter whole); what is read for the
    units this rank owns goes to ``items``, a unit that fails to read here becomes an error outcome.
    """
    zero3 = [t for t in due if t.gathering.zero3]
    with gathered([p for t in zero3 for p in t.gathering.tensors]):  # ZeRO-3: one call for the due step
        for t in zero3:
            if t.owner == rank:
                try:
                    items.append(read(t, torch.clone))  # cloned: the gathered data goes when the context ends
                except Exception as exc:
                    outcomes.append(Outcome(t.index, error=repr(exc)))
    factors = _gather_batched([t for t in due if t.gathering.batched and not t.gathering.zero3], rank, outcomes)
    for t in due:
        if t.gathering.zero3:
            continue
        if not t.gathering.batched:
            _read_one(t, rank, read, items, outcomes)
        elif t.owner == rank and t.index in factors:
            whole = iter(factors[t.index])  # factors() asks for B, then A
            try:
                items.append(read(t, lambda _t, whole=whole: next(whole)))
            except Exception as exc:
                outcomes.append(Outcome(t.index, error=repr(exc)))


def _gather_batched(batched: list[Tracked], rank: int, outcomes: list[Outcome]) -> dict[int, list[torch.Tensor]]:
    """Small sharded LoRA factors: one collective for all of them; the whole factors of this rank's units."""
    if not batched:
        return {}
    mine = {t.index for t in batched if t.owner == rank}
    try:
        tensors = {t.index: t.gathering.tensors for t in batched}
        return gather_factors([t.index for t in batched], tensors, mine)
    except ShardsUnavailable as exc:  # raised on every rank: skip these units together
        outcomes += [Outcome(i, error=repr(exc)) for i in sorted(mine)]
        return {}


def _read_one(t: Tracked, rank: int, read: Read, items: list, outcomes: list[Outcome]) -> None:
    """Read one unit: on its owner, and on every rank when its gathering is a collective."""
    mine, gathering = t.owner == rank, t.gathering
    if not (mine or gathering.collective):
        return  # whole on its owner: nothing to do here
    calls: list = []
    try:
        with gathering.whole() as full:
            if gathering.everyone_reads:  # DTensor: the collectives happen inside the reading
                full = counting(full, calls)
            item = read(t, full) if mine or gathering.everyone_reads else None
    except Exception as exc:
        if gathering.everyone_reads:
            catch_up(t.unit, len(calls))  # join the gathers the others are in
        if mine or gathering.everyone_reads:  # a helper's failure fails the unit everywhere
            outcomes.append(Outcome(t.index, error=repr(exc)))
        return
    if mine:
        items.append(item)  # a non-owner drops what it helped gather on return
