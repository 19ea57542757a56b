"""Sharding across torchrun ranks: greedy longest-first, gloo on CPU, nccl on GPU, rank 0 merges."""

from __future__ import annotations

import datetime
import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False  # True when this module started the process group


def from_env() -> Rank:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a single process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Rank(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: str, timeout_s: float = 24 * 3600) -> Rank:
    """Join the process group torchrun prepared (nccl for CUDA devices, gloo otherwise)."""
    rank = from_env()
    if rank.world <= 1:
        return rank
    import torch.distributed as dist

    if dist.is_initialized():
        return Rank(dist.get_rank(), dist.get_world_size(), rank.local_rank, False)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Rank(dist.get_rank(), dist.get_world_size(), rank.local_rank, True)


def barrier(rank: Rank) -> None:
    if rank.world > 1:
        import torch.distributed as dist

        dist.barrier()


def teardown(rank: Rank) -> None:
    if rank.initialized:
        import torch.distributed as dist

        dist.destroy_process_group()


def shard(costs: Sequence[float], world: int) -> list[list[int]]:
    """Indices per rank: longest first, each to the least loaded rank (LPT); deterministic on every rank."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, r) for r in range(world)]
    out: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        load, r = heapq.heappop(heap)
        out[r].append(i)
        heapq.heappush(heap, (load + costs[i], r))
    return out
