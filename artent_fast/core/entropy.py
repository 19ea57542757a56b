"""Entropy arguments and the purity shortcut (docs/definitions.md §1.4).

The entropy of a spectrum itself (von Neumann, Renyi, min-entropy) is the engine op ``entropy``:
its one torch definition is :func:`artent_fast.backends.torch_ops.entropy`, dispatched through
:func:`artent_fast.backends.ops.entropy`.
"""

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


def renyi2_from_purity(purity: torch.Tensor, *, base: float = math.e) -> torch.Tensor:
    """Renyi-2 entropy ``-ln tr(rho^2)`` from the purity (no eigenvalues needed)."""
    s = -torch.log(purity)
    return s / math.log(base) if base != math.e else s
