"""The sweep under torchrun: joining the process group (gloo on CPU, nccl on GPU), barriers, teardown.

Which rank runs which work unit is :func:`artent_fast.parallel.shard` (longest first); rank 0 merges.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from artent_fast.parallel import process_group


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
    group = process_group()
    if group is not None:
        return Rank(*group, rank.local_rank, False)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Rank(dist.get_rank(), dist.get_world_size(), rank.local_rank, True)


def barrier(rank: Rank) -> None:
    if rank.world > 1:
        dist.barrier()


def teardown(rank: Rank) -> None:
    if rank.initialized:
        dist.destroy_process_group()
