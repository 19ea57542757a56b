"""Plain float64 numpy references: one SVD per bond, straight from docs/definitions.md §1. Slow and obviously right.

The fast paths are tested against these; they are not used by the library itself. They share no
code with it either: the site layout below is worked out here, from the definition, so a mistake in
the library's layout cannot hide in both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def reference_prime_factors(n: int) -> list[int]:
    """Prime factors of ``n`` in ascending order, by plain trial division."""
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def reference_chain(m: int, n: int, row_dims=None, col_dims=None, order: str = "row-major"):
    """``(row_dims, col_dims, perm)``: the sites of an ``m x n`` matrix (size-1 dims dropped) and the chain
    order as axes of the ``(row_dims..., col_dims...)`` tensor (row-major: as is; interleaved: i1 j1 i2 j2 ...)."""
    rows = [int(d) for d in row_dims if int(d) != 1] if row_dims is not None else reference_prime_factors(m)
    cols = [int(d) for d in col_dims if int(d) != 1] if col_dims is not None else reference_prime_factors(n)
    assert math.prod(rows) == m and math.prod(cols) == n, "dims must multiply to the shape"
    a, b = len(rows), len(cols)
    if order == "row-major":
        perm = list(range(a + b))
    else:
        perm = [axis for k in range(max(a, b)) for axis in ((k,) if k < a else ()) + ((a + k,) if k < b else ())]
    return rows, cols, perm


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
    m = np.asarray(matrix, dtype=np.float64)
    rows, cols, perm = reference_chain(m.shape[0], m.shape[1], row_dims, col_dims, order)
    m = m / np.abs(m).max()  # scale invariant; keeps squares of 1e154 or 1e-300 representable
    psi = m.reshape(*rows, *cols).transpose(perm) / np.linalg.norm(m)
    dims = psi.shape
    out = []
    for k in range(1, len(dims)):
        p = np.linalg.svd(psi.reshape(math.prod(dims[:k]), -1), compute_uv=False) ** 2
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
