"""Entropies of probability spectra: von Neumann and Renyi (SPEC 1.4)."""

from __future__ import annotations

import math

import torch


def check_alpha_base(alpha: float, base: float) -> None:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0 or math.isnan(alpha):
        raise ValueError(f"alpha must be a positive number (1 = von Neumann, math.inf = min-entropy), got {alpha!r}")
    if not isinstance(base, (int, float)) or isinstance(base, bool) or not base > 0 or base == 1:
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")


def entropy_from_spectrum(
    values: torch.Tensor, total: torch.Tensor | None = None, *, alpha: float = 1.0, base: float = math.e
) -> torch.Tensor:
    """Entropy of the spectrum ``values`` (last dim), normalised by ``total``.

    ``values`` are eigenvalues of a reduced density matrix (squared singular values); tiny
    negative round-off is clamped to zero. ``total`` defaults to their sum.
    """
    values = values.clamp_min(0)
    if total is None:
        total = values.sum(-1)
    p = values / total.unsqueeze(-1)
    if alpha == 1:
        s = -torch.special.xlogy(p, p).sum(-1)
    elif math.isinf(alpha):
        s = -torch.log(p.amax(-1))
    else:
        s = torch.log(p.pow(alpha).sum(-1)) / (1 - alpha)
    if base != math.e:
        s = s / math.log(base)
    return s


def renyi2_from_purity(purity: torch.Tensor, *, base: float = math.e) -> torch.Tensor:
    """Renyi-2 entropy ``-ln tr(rho^2)`` from the purity (no eigenvalues needed)."""
    s = -torch.log(purity)
    return s / math.log(base) if base != math.e else s
