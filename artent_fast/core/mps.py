"""Matrix product states of matrices: ``mps_decompose`` and the :class:`MPS` it returns (docs/definitions.md §1.6)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from artent_fast.backends.torch_ops import entropy as entropy_from_spectrum
from artent_fast.core.entropy import check_alpha_base
from artent_fast.core.layout import Sites, sites
from artent_fast.core.profile import normalised_chain
from artent_fast.core.ttsvd import tt_svd
from artent_fast.core.validate import as_matrix, check_positive_int


@dataclass
class MPS:
    """A left-canonical MPS of a matrix ``norm * psi``.

    ``cores[k]`` has shape ``(chi_{k-1}, d_k, chi_k)`` (``chi_0 = chi_K = 1``);
    ``discarded_weight[k]`` is the squared singular-value weight dropped at bond ``k+1``,
    relative to the squared Frobenius norm, so ``||M - to_matrix()||_F^2 / ||M||_F^2`` is at
    most its sum. ``singular_values[k]`` are the values kept there.
    """

    cores: list[torch.Tensor]
    singular_values: list[torch.Tensor]
    discarded_weight: torch.Tensor
    norm: torch.Tensor
    layout: Sites
    dtype: torch.dtype = field(default=torch.float32)

    @property
    def bond_dims(self) -> list[int]:
        return [c.shape[-1] for c in self.cores[:-1]]

    @property
    def num_params(self) -> int:
        return sum(c.numel() for c in self.cores)

    @property
    def total_discarded_weight(self) -> float:
        return float(self.discarded_weight.sum())

    def entropies(self, alpha: float = 1.0, base: float = math.e) -> torch.Tensor:
        """Entropy at every bond from the kept singular values (exact without truncation)."""
        alpha, base = check_alpha_base(alpha, base)
        values = [entropy_from_spectrum(s.square(), alpha=alpha, base=base) for s in self.singular_values]
        return torch.stack(values).to(self.dtype)

    def to_matrix(self) -> torch.Tensor:
        """Contract the cores back to the ``m x n`` matrix (norm included)."""
        v = self.cores[0].reshape(-1, self.cores[0].shape[-1])
        for core in self.cores[1:]:
            chi, d, chi_r = core.shape
            v = (v @ core.reshape(chi, d * chi_r)).reshape(-1, chi_r)
        lay = self.layout
        t = v.reshape(lay.dims) * self.norm
        if lay.order != "row-major":
            t = t.permute(*sorted(range(len(lay.perm)), key=lambda i: lay.perm[i]))
        return t.reshape(lay.m, lay.n).to(self.dtype)

    def __repr__(self) -> str:
        return (
            f"MPS({self.layout.m}x{self.layout.n}, sites={self.layout.num_sites}, "
            f"max_bond={max(self.bond_dims, default=1)}, discarded={self.total_discarded_weight:.3g})"
        )


def mps_decompose(
    matrix: Any,
    *,
    max_bond: int | None = None,
    cutoff: float = 0.0,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    order: str = "row-major",
) -> MPS:
    """TT-SVD of one matrix into an :class:`MPS` (float64 inside).

    ``max_bond`` caps every bond dimension; ``cutoff`` drops, at each bond, the smallest
    singular values whose squared weight (relative to that bond's total) stays within it.
    Without either, the MPS is exact. Any magnitude works (``1e-300 * randn`` is not a zero
    matrix; the norm is computed from the max-abs-scaled matrix, so it neither overflows nor
    underflows). Bad input (see :func:`artent_fast.entanglement_profile`; also ``max_bond`` not a
    positive integer, ``cutoff`` outside ``[0, 1)``) is a ValueError/TypeError naming the argument.
    """
    max_bond = check_positive_int(max_bond, "max_bond")
    if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real) or not 0 <= cutoff < 1:
        raise ValueError(f"cutoff must be a number in [0, 1), got {cutoff!r}")
    x = as_matrix(matrix, "matrix")
    if x.ndim != 2:
        raise ValueError(f"mps_decompose takes one matrix (m, n), got shape {tuple(x.shape)}: loop over the batch")
    layout = sites(x.shape[0], x.shape[1], row_dims=row_dims, col_dims=col_dims, order=order)
    dtype = x.dtype
    x64 = x.to(torch.float64)
    peak = x64.abs().amax()
    norm = torch.linalg.matrix_norm(x64 / peak) * peak if peak > 0 else peak  # no overflow or underflow
    t, _ = normalised_chain(x, layout, torch.float64, "raise", "matrix")
    res = tt_svd(t, layout.dims, max_bond=max_bond, cutoff=float(cutoff))
    return MPS(res.cores, res.singular_values, res.discarded_weight, norm, layout, dtype)
