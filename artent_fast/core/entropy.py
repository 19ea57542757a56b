"""Entropies of probability spectra: von Neumann and Renyi (docs/definitions.md §1.4)."""

from __future__ import annotations

import math
from typing import Any

import torch

from artent_fast.core.validate import as_real


def check_alpha_base(alpha: Any, base: Any) -> tuple[float, float]:
    """``(alpha, base)`` as floats: ``alpha`` > 0 (``math.inf`` allowed), ``base`` finite, > 0 and != 1.

    Numpy scalars are accepted; anything else that is not a real number is a TypeError naming the argument.
    """
    a, b = as_real(alpha, "alpha"), as_real(base, "base")
    if not a > 0:  # also NaN
        raise ValueError(f"alpha must be a positive number (1 = von Neumann, math.inf = min-entropy), got {alpha!r}")
    if not (math.isfinite(b) and b > 0 and b != 1):
        raise ValueError(f"base must be a finite positive number other than 1, got {base!r}")
    return a, b


def entropy_from_spectrum(
    values: torch.Tensor, total: torch.Tensor | None = None, *, alpha: float = 1.0, base: float = math.e
) -> torch.Tensor:
    """Entropy of the spectrum ``values`` (last dim), normalised by ``total``.

    ``values`` are eigenvalues of a reduced density matrix (squared singular values); tiny
    negative round-off is clamped to zero. ``total`` defaults to their sum.

    Zero entries contribute nothing to the value and nothing to the gradient (``0 ln 0 = 0``,
    ``0^alpha = 0`` are taken as constants), so zero padding and zero Schmidt values never turn
    a gradient into NaN. Renyi entropies use ``p_max`` as the unit (``sum (p/p_max)^alpha >= 1``),
    which stays finite for any ``alpha`` (``1e300`` gives the min-entropy, as it should).
    """
    values = values.clamp_min(0)
    if alpha == 1 and total is None and not (values.requires_grad and torch.is_grad_enabled()):
        # S = ln T - sum(v ln v) / T: a few calls fewer, for the hot path of trackers (no autograd)
        total = values.sum(-1)
        s = torch.log(total) - torch.special.xlogy(values, values).sum(-1) / total
        return s / math.log(base) if base != math.e else s
    if total is None:
        total = values.sum(-1)
    p = values / total.unsqueeze(-1)
    positive = p > 0
    if alpha == 1:
        safe = torch.where(positive, p, torch.ones_like(p))
        s = -torch.where(positive, p * torch.log(safe), torch.zeros_like(p)).sum(-1)
    else:
        p_max = p.amax(-1)
        if math.isinf(alpha):
            s = -torch.log(p_max)
        else:
            ratio = torch.where(positive, p / p_max.unsqueeze(-1), torch.ones_like(p))
            terms = torch.where(positive, ratio.pow(alpha), torch.zeros_like(p))
            s = torch.log(terms.sum(-1)) / (1 - alpha) + (alpha / (1 - alpha)) * torch.log(p_max)
    s = torch.where(p.isnan().any(-1), torch.full_like(s, math.nan), s)  # NaN input or zero spectrum: NaN, not 0
    if base != math.e:
        s = s / math.log(base)
    return s


def renyi2_from_purity(purity: torch.Tensor, *, base: float = math.e) -> torch.Tensor:
    """Renyi-2 entropy ``-ln tr(rho^2)`` from the purity (no eigenvalues needed)."""
    s = -torch.log(purity)
    return s / math.log(base) if base != math.e else s
