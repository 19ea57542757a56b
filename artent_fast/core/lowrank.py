"""Exact profiles of factored updates ``scale * B @ A`` without forming the product (docs/definitions.md §6).

With ``L_A L_A^T = A A^T`` and ``L_B L_B^T = B^T B`` (``r x r`` square roots of the small Grams):
``(B A)(B A)^T = (B L_A)(B L_A)^T`` and ``(B A)^T (B A) = (L_B^T A)^T (L_B^T A)``. Every row
bond's reduced density is a partial trace of the first, every column bond's of the second, so
the row bonds are those of the small tensor ``B~ = B L_A`` (``m x r``, sites ``d_1..d_a, r``)
and the column bonds those of ``A~ = L_B^T A`` (``r x n``, sites ``r, e_1..e_b``). Work is
``O((m + n) r^2)`` plus Grams of size at most ``sqrt(m r)``: never the ``m x n`` product.

The square roots come from ``eigh`` of the ``r x r`` Grams in float64 (cheaper than QR of the
tall factors); directions of ``A`` or ``B`` below ``sqrt(eps)`` of the largest are resolved only
to ``~eps`` of the total weight, which moves an entropy by ~1e-14 nats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from artent_fast.core.bondplan import lowrank_plan
from artent_fast.core.entropy import check_alpha_base
from artent_fast.core.layout import default_sites, sites
from artent_fast.core.validate import (
    as_matrix,
    check_finite_real,
    check_zero_policy,
    handle_zero,
    naming_nonfinite,
    unit_scale,
)


def gram_sqrt(gram: torch.Tensor) -> torch.Tensor:
    """``L`` with ``L L^T = gram`` for symmetric positive semi-definite ``(..., r, r)``.

    Cholesky where the Gram is positive definite (cheap, and differentiable even at degenerate
    spectra); ``V sqrt(Lambda)`` from ``eigh`` (round-off clamped) for the singular ones. On CUDA,
    without autograd, ``eigh`` throughout: the Cholesky check would wait on the device.
    """
    if gram.device.type == "cuda" and not (gram.requires_grad and torch.is_grad_enabled()):
        return _eigh_sqrt(gram)
    root, info = torch.linalg.cholesky_ex(gram)
    failed = info != 0
    if not bool(failed.any()):
        return root
    if gram.requires_grad and torch.is_grad_enabled():
        warnings.warn(
            "lowrank_profile: a factor is rank-deficient; the entropy is not differentiable there "
            "and its gradient may be inf or NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.where(failed[..., None, None], _eigh_sqrt(gram), root)


def _eigh_sqrt(gram: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(gram)
    return vectors * values.clamp_min(0).sqrt().unsqueeze(-2)


def reduced_factors(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B L_A, L_B^T A)``: factors carrying the row- and column-side spectra of ``B @ A``.

    Both ``r x r`` Grams share one square-root call (they have the same shape).
    """
    roots = gram_sqrt(torch.stack(torch.broadcast_tensors(A @ A.mT, B.mT @ B)))
    return B @ roots[0], roots[1].mT @ A


def lowrank_profile(
    B: Any,
    A: Any,
    *,
    scale: float = 1.0,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    alpha: float = 1.0,
    base: float = math.e,
    on_zero: str = "raise",
    check_finite: bool = True,
) -> torch.Tensor:
    """Entanglement profile of ``scale * B @ A`` (row-major sites), exact, batched.

    ``B``: ``(..., m, r)``, ``A``: ``(..., r, n)``; leading dims broadcast. Same output, zero
    policy and argument checks as :func:`artent_fast.entanglement_profile`.

    ``scale`` must be a finite real number; only ``scale == 0`` (a zero update) changes the
    profile, which is scale invariant: ``scale=1e200`` or ``1e-200`` and factors of any magnitude
    give the same entropies (each factor is first divided by its largest absolute entry).

    Gradients flow to ``B`` and ``A`` (``gradcheck``-exact) where both factors have full rank ``r``,
    degenerate Gram spectra included (Cholesky square roots). A rank-deficient factor with
    ``requires_grad`` gives a ``RuntimeWarning``: the entropy is not differentiable there and its
    gradient may be inf or NaN.
    """
    alpha, base = check_alpha_base(alpha, base)
    check_zero_policy(on_zero)
    B = as_matrix(B, "B", check_finite=check_finite)
    A = as_matrix(A, "A", check_finite=check_finite)
    if B.shape[-1] != A.shape[-2]:
        raise ValueError(f"B {tuple(B.shape)} and A {tuple(A.shape)} do not chain: B is (..., m, r), A is (..., r, n)")
    if B.device != A.device:
        raise ValueError(f"B is on {B.device} but A is on {A.device}")
    try:
        batch = B.shape[:-2] if B.shape[:-2] == A.shape[:-2] else torch.broadcast_shapes(B.shape[:-2], A.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(f"batch dims of B {tuple(B.shape[:-2])} and A {tuple(A.shape[:-2])} do not broadcast") from exc
    scale = check_finite_real(scale, "scale")
    m, r, n = B.shape[-2], B.shape[-1], A.shape[-1]
    layout = (
        default_sites(m, n)
        if row_dims is None and col_dims is None
        else sites(m, n, row_dims=row_dims, col_dims=col_dims)
    )
    out_dtype = torch.float64 if torch.float64 in (B.dtype, A.dtype) else torch.float32
    # profiles are scale invariant: only scale == 0 matters; each factor is brought to max-abs ~1
    # (divided by its max-abs entry) so that no Gram overflows or underflows, whatever the magnitudes
    with naming_nonfinite(B=B, A=A):
        B64 = unit_scale(B.to(torch.float64), (-2, -1))
        A64 = unit_scale(A.to(torch.float64), (-2, -1))
        if B64.shape[:-2] != batch:
            B64 = B64.expand(*batch, m, r)
        if A64.shape[:-2] != batch:
            A64 = A64.expand(*batch, r, n)
        b_red, a_red = reduced_factors(B64, A64)
        k_b, k_a = b_red.shape[-1], a_red.shape[-2]
        norm_sq = b_red.square().sum((-2, -1))
        if scale == 0:
            norm_sq = torch.zeros_like(norm_sq)
        zero = handle_zero(norm_sq, on_zero, "scale * B @ A")  # every bond's density is normalised by its trace
        plan, sources = lowrank_plan(layout.row_dims, layout.col_dims, r)
        states = {"row": b_red.reshape(*batch, m * k_b), "col": a_red.reshape(*batch, k_a * n)}
        prof = plan.entropies([states[s] for s in sources], alpha, base)
    if on_zero == "nan":
        prof = prof.masked_fill(zero.unsqueeze(-1), float("nan"))
    return prof.to(out_dtype)
