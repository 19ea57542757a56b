"""Site layouts: how a matrix's row and column indices are split into MPS sites.

docs/definitions.md §1.1: by default the row dimension ``m`` and column dimension ``n`` are factored into
ascending prime factors, row sites first, then column sites (the row-major flattening of
the matrix). Explicit ``row_dims`` / ``col_dims`` and an ``interleaved`` order
(``i_1 j_1 i_2 j_2 ...``) are also accepted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from artent_fast.core.validate import as_int

ORDERS = ("row-major", "interleaved")
# Largest matrix side that is factored into primes (2**40, about 1.1e12 rows): trial division stays
# below ~0.1 s; no real matrix comes near it. Larger sides are refused with a ValueError.
MAX_SIDE = 2**40


def prime_factors(n: Any) -> tuple[int, ...]:
    """Prime factors of ``n`` in ascending order (``()`` for 1); ``n`` at most :data:`MAX_SIDE`."""
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            n = as_int(n, "n")
        except TypeError:
            raise ValueError(f"prime_factors needs a positive integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"prime_factors needs a positive integer, got {n!r}")
    if n > MAX_SIDE:
        raise ValueError(f"prime_factors: {n} is above the supported size 2**40 (artent_fast.core.layout.MAX_SIDE)")
    return _prime_factors(n)


@lru_cache(maxsize=4096)
def _prime_factors(n: int) -> tuple[int, ...]:
    out: list[int] = []
    p = 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1 if p == 2 else 2
    if n > 1:
        out.append(n)
    return tuple(out)


def _check_dims(name: str, dims: Sequence[int] | None, size: int) -> tuple[int, ...]:
    if dims is None:
        return prime_factors(size)
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise TypeError(f"{name} must be a sequence of positive integers, got {dims!r}")
    try:
        dims = tuple(as_int(d, name) for d in dims)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {dims!r}") from None
    if any(d < 1 for d in dims):
        raise ValueError(f"{name} must hold positive integers, got {dims}")
    dims = tuple(d for d in dims if d != 1)
    if math.prod(dims) != size:
        raise ValueError(f"{name}={dims} multiply to {math.prod(dims)}, but the matrix has {size} along that axis")
    return dims


@dataclass(frozen=True)
class Sites:
    """The site layout of an ``m x n`` matrix viewed as an MPS.

    ``dims`` are the site dimensions in chain order; ``perm`` maps chain position to the
    axis of the row-major tensor ``(row_dims..., col_dims...)``; ``row_sites`` is the number
    of row sites, which in row-major order is the number of the row/column bond (bonds count
    from 1; docs/definitions.md, section 1.3).
    """

    m: int
    n: int
    row_dims: tuple[int, ...]
    col_dims: tuple[int, ...]
    order: str = "row-major"

    @property
    def row_sites(self) -> int:
        return len(self.row_dims)

    @property
    def num_sites(self) -> int:
        return len(self.row_dims) + len(self.col_dims)

    @property
    def num_bonds(self) -> int:
        return max(self.num_sites - 1, 0)

    @property
    def perm(self) -> tuple[int, ...]:
        a, b = len(self.row_dims), len(self.col_dims)
        if self.order == "row-major":
            return tuple(range(a + b))
        out: list[int] = []
        for k in range(max(a, b)):
            if k < a:
                out.append(k)
            if k < b:
                out.append(a + k)
        return tuple(out)

    @property
    def dims(self) -> tuple[int, ...]:
        raw = self.row_dims + self.col_dims
        return tuple(raw[p] for p in self.perm)

    @property
    def row_col_bond(self) -> int | None:
        """Position of the row/column bond in a profile tensor, ``row_sites - 1`` (row-major order with
        row and column sites only; None otherwise): ``profile[layout.row_col_bond]`` is its entropy."""
        if self.order != "row-major" or not self.row_dims or not self.col_dims:
            return None
        return self.row_sites - 1

    @property
    def center_bond(self) -> int | None:
        """Deprecated name of :attr:`row_col_bond`."""
        import warnings

        warnings.warn("Sites.center_bond is now Sites.row_col_bond", DeprecationWarning, stacklevel=2)
        return self.row_col_bond

    def bond_dims(self) -> list[tuple[int, int]]:
        """``(left, right)`` Hilbert-space dimensions at every bond."""
        total = self.m * self.n
        out, left = [], 1
        for d in self.dims[:-1]:
            left *= d
            out.append((left, total // left))
        return out


def sites(
    m: int,
    n: int,
    *,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    order: str = "row-major",
) -> Sites:
    """The site layout of an ``m x n`` matrix (docs/definitions.md §1.1).

    Default: ascending prime factors, rows then columns. Dimensions of 1 are dropped.
    ``m``, ``n`` and the dims may be Python or numpy integers; ``row_dims`` / ``col_dims`` that
    are not sequences of integers (``3.5``, ``"12"``) are a TypeError naming them. Sides above
    :data:`MAX_SIDE` (2**40) without explicit dims are refused (ValueError), so that factoring
    stays instant.
    """
    sizes = []
    for name, v in (("m", m), ("n", n)):
        try:
            v = as_int(v, name)
        except TypeError:
            raise ValueError(f"{name} must be a positive integer, got {v!r}") from None
        if v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        sizes.append(v)
    m, n = sizes
    for name, v, dims in (("m", m, row_dims), ("n", n, col_dims)):
        if dims is None and v > MAX_SIDE:
            raise ValueError(f"{name}={v} is above the supported side 2**40 (MAX_SIDE): pass explicit dims")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    layout = Sites(m, n, _check_dims("row_dims", row_dims, m), _check_dims("col_dims", col_dims, n), order)
    if layout.num_sites < 2:
        raise ValueError(
            f"a {m}x{n} matrix has {layout.num_sites} site(s) with dims {layout.dims}: "
            "an entanglement profile needs at least 2 sites (one bond)"
        )
    return layout


@lru_cache(maxsize=1024)
def default_sites(m: int, n: int) -> Sites:
    """:func:`sites` with the default layout, cached (trackers ask for the same shapes every step)."""
    return sites(m, n)
