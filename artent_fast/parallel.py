"""Work shared across ``torch.distributed`` ranks: the process group there is, who does what, at what cost.

Used by the tracker (each tracked unit gets one owner rank) and by the sweep (each work unit one
rank): the process group is detected here, work is assigned longest-processing-time first, and
costs come from one rough model of what profiling a matrix costs.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


def process_group() -> tuple[int, int] | None:
    """``(rank, world)`` of the initialised default ``torch.distributed`` process group, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank(), dist.get_world_size()


def distributed_ready() -> bool:
    """True when ``torch.distributed`` is initialised with more than one rank (then every rank must track)."""
    group = process_group()
    return group is not None and group[1] > 1


def collective_device() -> torch.device:
    """Where tensors for this process group's collectives must live: CUDA under NCCL alone, else the CPU."""
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@functools.cache
def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch builds without distributed
        return None
    return DTensor


def is_dtensor(tensor: Any) -> bool:
    dtensor = _dtensor_type()  # looked up once: this runs for every tensor of every due step
    return dtensor is not None and isinstance(tensor, dtensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``DTensor.full_tensor()`` (a collective: every rank must call it), else itself."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def shard(costs: Sequence[float], world: int) -> list[list[int]]:
    """Indices per rank: longest first, each to the least loaded rank (LPT; ties: lowest rank); deterministic
    on every rank. Each rank's indices are in the order they were assigned (longest first)."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, r) for r in range(world)]
    out: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        load, r = heapq.heappop(heap)
        out[r].append(i)
        heapq.heappush(heap, (load + costs[i], r))
    return out


def owners(costs: Sequence[float], world: int) -> list[int]:
    """The rank :func:`shard` gives each index."""
    out = [0] * len(costs)
    for rank, indices in enumerate(shard(costs, world)):
        for i in indices:
            out[i] = rank
    return out


def matrix_cost(kind: str, shape: Sequence[int], rank: int | None = None) -> float:
    """Rough flop count of one profile: a dense ``m x n`` matrix costs about one Gram of it (``m n min(m, n)``),
    a factored one (``kind == "lora"``, rank ``r``) ``(m + n) r^2`` for the Grams of its factors plus
    ``64 (m + n) r`` for reshaping them bond by bond."""
    m, n = shape
    if kind == "lora":
        r = rank or 1
        return float((m + n) * r**2 + (m + n) * r * 64)
    return float(m * n * min(m, n))
