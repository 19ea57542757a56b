"""Every bond's reduced density matrix from one or two Gram products and nested partial traces.

docs/definitions.md §6. For a state ``t`` over a chain of sites with dims ``d_1..d_K`` (flattened, ``(..., N)``),
bond ``k`` splits the chain into a left block of dim ``L_k`` and a right block of dim ``R_k``.
Its entropy only needs the spectrum of the *smaller* block's reduced density matrix. Left
blocks grow with ``k`` and right blocks shrink, so bonds ``1..k*`` use the left side and the rest
the right side. One Gram product at each side of the crossover gives the largest density
matrix of each side; every other one is a partial trace of its neighbour (tracing out one
site), which costs far less than a product. For a dense ``m x n`` matrix the cost approaches
that of one eigendecomposition of ``W W^T`` (the row/column bond), the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from artent_fast.backends import ops


def split_point(dims: Sequence[int]) -> int:
    """Number of leading bonds whose left block is no larger than the right block."""
    total, left, k = math.prod(dims), 1, 0
    for d in dims[:-1]:
        left *= d
        if left * left > total:
            break
        k += 1
    return k


def bond_densities(t: torch.Tensor, dims: Sequence[int], split: int | None = None) -> list[torch.Tensor]:
    """Unnormalised reduced density matrices ``(..., s_k, s_k)`` at every bond.

    ``t`` has shape ``(..., prod(dims))`` in chain order. Bonds ``1..split`` take the left block's
    density (one Gram root at bond ``split``), the others the right block's (one root at bond
    ``split + 1``). ``split`` defaults to :func:`split_point`, so every bond uses its smaller side;
    attention profiles put it at the row/column bond (roots ``P P^T`` and ``P^T P``-like).
    """
    dims = list(dims)
    n_bonds = len(dims) - 1
    total = math.prod(dims)
    batch = t.shape[:-1]
    out: list[torch.Tensor | None] = [None] * n_bonds
    k_star = split_point(dims) if split is None else split
    if not 0 <= k_star <= n_bonds:
        raise ValueError(f"split must lie in 0..{n_bonds} for {n_bonds} bonds, got {split}")
    if k_star > 0:  # left side: root at bond k_star, traced down to bond 1
        left = math.prod(dims[:k_star])
        rho = ops.gram(t.reshape(*batch, left, total // left), "left")
        out[k_star - 1] = rho
        keeps = [math.prod(dims[:k]) for k in range(k_star - 1, 0, -1)]  # bonds k_star-1 .. 1
        if keeps:
            out[: k_star - 1] = ops.partial_trace_chain(rho, keeps, "last")[::-1]
    if k_star < n_bonds:  # right side: root at bond k_star+1, traced up to bond K-1
        left = math.prod(dims[: k_star + 1])
        rho = ops.gram(t.reshape(*batch, left, total // left), "right")
        out[k_star] = rho
        keeps = [math.prod(dims[k:]) for k in range(k_star + 2, n_bonds + 1)]  # bonds k_star+2 .. K-1
        if keeps:
            out[k_star + 1 :] = ops.partial_trace_chain(rho, keeps, "first")
    return out  # type: ignore[return-value]


def bond_spectra(t: torch.Tensor, dims: Sequence[int], split: int | None = None) -> list[torch.Tensor]:
    """Eigenvalues (squared Schmidt coefficients, unnormalised) at every bond."""
    return [ops.eigvalsh(rho) for rho in bond_densities(t, dims, split)]


def bond_purities(t: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """``tr(rho_k^2) / tr(rho_k)^2`` at every bond, ``(..., K-1)``: Renyi-2 without eigenvalues."""
    vals = []
    for rho in bond_densities(t, dims):
        tr = torch.diagonal(rho, dim1=-2, dim2=-1).sum(-1)
        vals.append(rho.square().sum((-2, -1)) / tr.square())
    return torch.stack(vals, -1)
