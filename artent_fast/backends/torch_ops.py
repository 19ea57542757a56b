"""Default torch kernels: correct on every device, the reference for the other backends."""

from __future__ import annotations

import torch

from artent_fast.backends.registry import register_kernel


@register_kernel("eigvalsh", "torch")
def eigvalsh(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending) of a batch of symmetric matrices ``(..., s, s)``."""
    if x.shape[-1] == 1:
        return x[..., 0, :].clone()
    return torch.linalg.eigvalsh(x)


@register_kernel("gram", "torch")
def gram(x: torch.Tensor, side: str) -> torch.Tensor:
    """``x @ x^T`` (side='left') or ``x^T @ x`` (side='right') for a batch ``(..., a, b)``."""
    return x @ x.mT if side == "left" else x.mT @ x


@register_kernel("partial_trace", "torch")
def partial_trace(rho: torch.Tensor, keep: int, traced: int, side: str) -> torch.Tensor:
    """Trace out one site of dim ``traced`` from ``rho`` (``(..., keep*traced, keep*traced)``).

    side='last': the traced site is the last factor (left-block densities);
    side='first': it is the first factor (right-block densities).
    """
    batch = rho.shape[:-2]
    if side == "last":
        r = rho.reshape(*batch, keep, traced, keep, traced)
        return torch.diagonal(r, dim1=-3, dim2=-1).sum(-1)
    r = rho.reshape(*batch, traced, keep, traced, keep)
    return torch.diagonal(r, dim1=-4, dim2=-2).sum(-1)
