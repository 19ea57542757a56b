"""Working across ranks: sharded tensors made whole."""

from __future__ import annotations

from typing import Any

import torch


def is_dtensor(tensor: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch builds without distributed
        return False
    return isinstance(tensor, DTensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``DTensor.full_tensor()`` (a collective: every rank must call it), else itself."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor
