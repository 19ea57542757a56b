"""The tracker under ``torch.distributed``: who measures what, how sharded updates are gathered, results to all.

Every rank builds the same units in the same order (the model is the same on every rank). Each
unit gets one *owner* rank (greedy, balanced by estimated cost). On a due step:

1. units are read in that fixed order. FSDP2 LoRA factors (row-sharded ``DTensor`` parameters)
   of all due units are gathered by one ``all_gather`` of a flat buffer (with a status slot, so a
   rank that cannot read its shards still takes part). Other sharded units (full fine-tuning
   under FSDP2, FSDP1 flat parameters) are gathered by a collective that every rank calls, one
   matrix at a time (the update ``W - W0``, differenced shard by shard); only the owner keeps
   it. A unit whose parameters are whole on every rank (DDP, replicated) is read by its owner
   alone, with no communication;
2. each owner measures its units locally (all its LoRA units in one call); failures and
   non-finite updates become per-unit outcomes instead of exceptions;
3. one ``all_gather`` of a float64 buffer laid out from the due units (status, meta numbers,
   entropies) gives every rank every outcome (error texts travel in one ``all_gather_object``
   more, only on steps where a unit failed), so all ranks record, skip, count failures and drop
   units identically, and the next due step calls the same collectives.

Steps with nothing due call no collective.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from artent_fast.core.layout import default_sites
from artent_fast.parallel import full_tensor, is_dtensor
from artent_fast.updates import Unit
from artent_fast.updates.types import same


def process_group(distributed: bool | None) -> tuple[int, int] | None:
    """``(rank, world)`` when the tracker works across ranks, else None.

    ``distributed=None`` (default): when ``torch.distributed`` is initialised with more than one
    rank. ``True`` requires it; ``False`` tracks each process on its own.
    """
    if distributed is False:
        return None
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if not ready:
        if distributed:
            raise ValueError(
                "distributed=True: torch.distributed is not initialised (launch with torchrun and "
                "call torch.distributed.init_process_group first)"
            )
        return None
    world = dist.get_world_size()
    if world == 1 and not distributed:
        return None
    return dist.get_rank(), world


def refuse_unsupported(model: nn.Module) -> None:
    """Clear errors for the wrappers the tracker cannot read: DeepSpeed, FSDP1 without ``use_orig_params``."""
    cls = type(model)
    if (
        "deepspeed" in cls.__module__
        or any("deepspeed" in type(m).__module__ for m in model.modules())
        or any(hasattr(p, "ds_id") for p in model.parameters())
    ):
        raise ValueError(
            "model: DeepSpeed engines are not supported by artent_fast.track (untested: ZeRO-3 "
            "parameters are partitioned outside torch.distributed's FSDP/DTensor); use DDP or FSDP"
        )
    root_is_fsdp1 = type(model).__name__ == "FullyShardedDataParallel"
    inner = next((n for n, m in model.named_modules() if type(m).__name__ == "FullyShardedDataParallel"), None)
    flattened = any(getattr(p, "_fsdp_flattened", False) for p in model.parameters())
    if not root_is_fsdp1 and (inner is not None or flattened):
        where = f"it contains FSDP1 module {inner}" if inner is not None else "its parameters are FSDP1 flat views"
        raise ValueError(
            f"model is not the FullyShardedDataParallel root ({where}): pass the outermost "
            "FullyShardedDataParallel wrapper to artent_fast.track (the module inside it cannot be read "
            "without disturbing FSDP), or use FSDP2 (fully_shard)"
        )
    for name, module in model.named_modules():
        if type(module).__name__ == "FullyShardedDataParallel" and not getattr(module, "_use_orig_params", True):
            raise ValueError(
                f"model: FSDP1 module {name or '<root>'} was wrapped without use_orig_params=True; "
                "artent_fast.track reads the original parameters: wrap with "
                "FullyShardedDataParallel(..., use_orig_params=True), or use FSDP2 (fully_shard)"
            )


def fsdp1_owner(model: nn.Module, module_name: str) -> str | None:
    """The name of the innermost FSDP1 module around ``module_name`` (None: not under FSDP1)."""
    best = None
    for name, module in model.named_modules():
        if type(module).__name__ != "FullyShardedDataParallel":
            continue
        if name == "" or module_name == name or module_name.startswith(name + "."):
            if best is None or len(name) >= len(best):
                best = name
    return best


def unit_tensors(unit: Unit) -> list[torch.Tensor]:
    return unit.tensors()


def unit_cost(unit: Unit) -> float:
    """Estimated measuring cost: a Gram of the factors (LoRA) or an SVD-like cubic cost (dense)."""
    tensors = unit_tensors(unit)
    if unit.kind == "lora" and len(tensors) == 2:
        (m, r), (_, n) = tensors[0].shape, tensors[1].shape
        return float(r * r * (m + n) + r**3 * 8)
    if tensors and tensors[0].ndim == 2:
        m, n = tensors[0].shape
        return float(m * n * min(m, n))
    return 1.0


def assign_owners(costs: Sequence[float], world: int) -> list[int]:
    """Longest-processing-time-first assignment: each unit to the least loaded rank (ties: lowest rank)."""
    loads = [0.0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[i] = rank
        loads[rank] += costs[i]
    return owners


class Gathering:
    """How one unit's tensors become whole on its owner, for the layout the unit has (decided once)."""

    def __init__(self, model: nn.Module, unit: Unit) -> None:
        self.tensors = unit_tensors(unit)
        self.kind = unit.kind
        self.sharded = any(is_dtensor(t) for t in self.tensors)
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
    tensors = unit_tensors(unit)
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


def whole_model(model: nn.Module) -> contextlib.AbstractContextManager:
    """FSDP1: the whole parameters (offloaded to CPU) while units are found at construction; else nothing."""
    if not any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    on_accelerator = any(p.device.type != "cpu" for p in model.parameters())  # offloading CPU params breaks FSDP1
    return FSDP.summon_full_params(model, writeback=False, offload_to_cpu=on_accelerator)


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


def collective_device() -> torch.device:
    """Where tensors for this process group's collectives must live: CUDA under NCCL alone, else the CPU."""
    import torch.distributed as dist

    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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
    import torch.distributed as dist

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


META = ("m", "n", "rank", "scaling", "row_sites", "merged")  # numbers of a record's meta, sent with its entropies


def profile_width(unit: Unit) -> int:
    """An upper bound on the number of bonds of ``unit``'s update (fixed at construction).

    A side of ``s`` rows has at most ``log2(s)`` sites (each a prime factor, at least 2), parts and
    transposes included; the layout of the exchange buffer is built from these bounds.
    """
    tensors = unit_tensors(unit)
    if unit.kind == "lora" and len(tensors) == 2:
        sides = (tensors[0].shape[0], tensors[1].shape[1])
    elif tensors and tensors[0].ndim == 2:
        sides = tuple(tensors[0].shape)
    else:
        return 64
    return max(1, sum(max(1, int(s).bit_length() - 1) for s in sides) - 1)


def exchange(due: list[int], widths: Sequence[int], kinds: Sequence[str], outcomes: list) -> list:
    """Every rank's outcomes ``(unit, meta, entropies, error)`` for the units in ``due``, on every rank.

    One ``all_gather`` of a float64 buffer laid out from ``due``, ``widths`` and ``kinds`` (the same on every rank):
    per unit a status, the meta numbers (:data:`META`) and the entropies, written by its owner (a rank
    that failed while helping to gather the unit adds an error to its status: the sum is then not 1).
    Only on steps where some unit failed, one ``all_gather_object`` more carries the error messages.
    """
    import torch.distributed as dist

    starts, pos = {}, 0
    for i in due:
        starts[i] = pos
        pos += 1 + len(META) + widths[i]
    buffer = torch.zeros(pos, dtype=torch.float64)
    errors = {}
    for i, meta, entropies, error in outcomes:
        s = starts[i]
        if error is None and len(entropies) > widths[i]:
            error = f"profile of {len(entropies)} bonds, at most {widths[i]} expected"
        if error is not None:  # from the owner, or from a rank that helped gather the unit
            buffer[s] += 2
            errors[i] = f"on rank {dist.get_rank()}: {error}"
            continue
        numbers = [meta["shape"][0], meta["shape"][1], meta.get("rank", 0), meta.get("scaling", 0.0)]
        numbers += [meta["row_sites"], float(meta.get("merged", False))]
        buffer[s : s + 1 + len(META) + len(entropies)] = torch.tensor([1.0, *numbers, *entropies], dtype=torch.float64)
    device = collective_device()
    parts = [torch.empty_like(buffer, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, buffer.to(device))  # on gloo ~1.5x faster than all_reduce at this size (measured)
    buffer = torch.stack(parts).sum(0).cpu()  # each slot is non-zero on its owner only
    status = buffer[[starts[i] for i in due]].tolist() if due else []
    if any(code != 1 for code in status):
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, errors)
        errors = {i: e for part in gathered for i, e in part.items()}
    values = buffer.tolist()
    out = []
    for i, code in zip(due, status, strict=True):
        s = starts[i] + 1
        if code != 1:
            out.append((i, None, None, errors.get(i, "no result from its owner")))
            continue
        m, n, rank, scaling, row_sites, merged = values[s : s + len(META)]
        if kinds[i] == "lora":  # the meta _read gives, key for key
            meta = {"shape": [int(m), int(n)], "rank": int(rank), "scaling": scaling, "row_sites": int(row_sites)}
            meta["merged"] = bool(merged)
        else:
            meta = {"shape": [int(m), int(n)], "row_sites": int(row_sites)}
        count = default_sites(int(m), int(n)).num_bonds
        out.append((i, meta, values[s + len(META) : s + len(META) + count], None))
    return out


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (one ``broadcast_object_list``)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_agreement(settings: dict[str, Any], units: Sequence[tuple[str, str, int]], targets: Sequence[str]) -> None:
    """Every rank's schedule (``settings``) and unit list (label, kind, width) the same, checked once when
    tracking starts by one ``all_gather_object``: ranks that disagree would otherwise hang in, or abort, the
    step's collectives. A ValueError on every rank names what differs, rank by rank."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"settings": settings, "units": list(units), "targets": list(targets)})
    problems = []
    for key, value in settings.items():
        values = [g["settings"][key] for g in gathered]
        if any(v != value for v in values):
            problems.append(f"{key} ({', '.join(f'rank {r}: {v!r}' for r, v in enumerate(values))})")
    first = [tuple(u) for u in gathered[0]["units"]]
    for r, g in enumerate(gathered[1:], 1):
        theirs = [tuple(u) for u in g["units"]]
        if theirs == first:
            continue
        lacks = [u[0] for u in first if u not in theirs]
        more = [u[0] for u in theirs if u not in first]
        detail = f"rank 0 tracks {len(first)} units, rank {r} {len(theirs)}"
        detail += f"; rank {r} lacks {_few(lacks)}" if lacks else ""
        detail += f"; rank {r} has {_few(more)} that rank 0 does not" if more else ""
        if not lacks and not more:
            detail += " (in another order)"
        if g["targets"] != gathered[0]["targets"]:
            detail += f"; targets: rank 0 {tuple(gathered[0]['targets'])}, rank {r} {tuple(g['targets'])}"
        problems.append(f"the units tracked ({detail})")
    if problems:
        raise ValueError(
            "artent_fast.track: the ranks disagree on " + "; and on ".join(problems) + ": every rank must call "
            "track() with the same model, targets and schedule"
        )


def _few(labels: Sequence[str], shown: int = 3) -> str:
    return ", ".join(labels[:shown]) + (f" and {len(labels) - shown} more" if len(labels) > shown else "")
