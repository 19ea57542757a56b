"""Plain float64 numpy references: one SVD per bond, straight from docs/definitions.md §1. Slow and obviously right.

The fast paths are tested against these; they are not used by the library itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def reference_profile(
    matrix: np.ndarray,
    *,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    order: str = "row-major",
    alpha: float = 1.0,
    base: float = math.e,
) -> np.ndarray:
    """Entropy at every bond of one matrix, from one numpy SVD per bond, in float64."""
    from artent_fast.core.layout import sites

    m = np.asarray(matrix, dtype=np.float64)
    layout = sites(m.shape[0], m.shape[1], row_dims=row_dims, col_dims=col_dims, order=order)
    m = m / np.abs(m).max()  # scale invariant; keeps squares of 1e154 or 1e-300 representable
    psi = m.reshape(*layout.row_dims, *layout.col_dims).transpose(layout.perm) / np.linalg.norm(m)
    out = []
    for left, right in layout.bond_dims():
        p = np.linalg.svd(psi.reshape(left, right), compute_uv=False) ** 2
        p = p[p > 0]
        if alpha == 1:
            s = -np.sum(p * np.log(p))
        elif math.isinf(alpha):
            s = -np.log(p.max())
        else:  # p_max as the unit: finite for any alpha
            s = np.log(np.sum((p / p.max()) ** alpha)) / (1 - alpha) + alpha / (1 - alpha) * np.log(p.max())
        out.append(s / math.log(base))
    return np.array(out)


def reference_profiles(batch: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`reference_profile` over the leading dims of ``batch``."""
    batch = np.asarray(batch, dtype=np.float64)
    flat = batch.reshape(-1, *batch.shape[-2:])
    out = np.stack([reference_profile(x, **kwargs) for x in flat])
    return out.reshape(*batch.shape[:-2], out.shape[-1])
