"""Helpers shared by the framework callbacks that import no framework."""

from __future__ import annotations


def distributed_ready() -> bool:
    """True when ``torch.distributed`` is initialised with more than one rank (then every rank must track)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
