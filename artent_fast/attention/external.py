"""External entanglement (docs/definitions.md §3): the entanglement profile of every head's attention matrix.

For each (batch, head) the attention matrix ``P`` (``T x S``) is a matrix like any other
(docs/definitions.md §1, row-major sites). Its bond densities come from the core engine itself
(``artent_fast.core.gram``, so the Triton gram and chain kernels serve both) with the two Gram roots
at the row/column bond: row-site bonds from ``P P^T`` traced down site by site, column-site bonds
from the column side; the spectra go through the same packed entropy reduction as every profile.
Heads are processed in chunks so that only a few ``T x S`` matrices and their Grams are alive at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from artent_fast.api import CardyFit, fit_cardy, sites
from artent_fast.attention.masking import apply_mask
from artent_fast.attention.torch_path import safe_softmax
from artent_fast.attention.validate import Problem, check_mask, check_qk
from artent_fast.backends import ops
from artent_fast.core.entropy import check_alpha_base
from artent_fast.core.gram import bond_densities
from artent_fast.core.profile import profile_from_spectra
from artent_fast.core.validate import naming_nonfinite

CHUNK_BYTES = 256 * 2**20


def chunk_probs(q, k, mask, p: Problem, causal: bool, heads: torch.Tensor) -> torch.Tensor:
    """Float64 attention matrices ``(n, T, S)`` of the flat (batch*head) indices ``heads``."""
    b, h = heads // p.heads, heads % p.heads
    qc = q[b, h].to(torch.float64)
    kc = k[b, h // p.groups].to(torch.float64)
    s = torch.matmul(qc, kc.transpose(-1, -2)) * p.scale
    m = None if mask is None else mask.expand(p.batch, p.heads, -1, -1)[b, h]
    return safe_softmax(apply_mask(s, m, causal=causal, q_len=p.q_len))[0]


def bond_densities_of(probs: torch.Tensor, row_dims: Sequence[int], col_dims: Sequence[int]) -> list[torch.Tensor]:
    """Unnormalised reduced density matrices at bonds ``1..K-1`` of ``probs`` ``(..., T, S)``: the core engine
    (:func:`artent_fast.core.gram.bond_densities`) with its two Gram roots at the row/column bond, so the
    row-site bonds come from ``P P^T`` and the column-site bonds from the column side; the row/column bond
    itself uses the smaller of the two.
    """
    a = len(row_dims)
    split = a if math.prod(row_dims) <= math.prod(col_dims) else a - 1
    return bond_densities(probs.reshape(*probs.shape[:-2], -1), [*row_dims, *col_dims], split)


def attention_profile(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    causal: bool,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    alpha: float = 1.0,
    base: float = math.e,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """Entanglement profiles ``(B, Hq, K-1)`` of the attention matrices ``P = softmax(q k^T * scale + mask)``.

    Exactly ``entanglement_profile(P)`` per head (row-major sites of ``T x S``), computed in
    float64 a chunk of heads at a time. A head whose ``P`` is all zero (every row masked)
    gets NaN. Returns float32 (float64 for float64 input).
    """
    check_alpha_base(alpha, base)
    p = check_qk(q, k, scale)
    mask = check_mask(mask, p, q.device)
    layout = sites(p.q_len, p.kv_len, row_dims=row_dims, col_dims=col_dims)
    if layout.num_bonds == 0:
        raise ValueError(f"a {p.q_len} x {p.kv_len} attention matrix has a single site: no bonds to profile")
    per_head = 8 * (2 * p.q_len * p.kv_len + p.q_len**2 + p.kv_len**2)
    step = max(1, chunk_bytes // per_head)
    total = p.batch * p.heads
    out = torch.empty(total, layout.num_bonds, dtype=torch.float64, device=q.device)
    with torch.no_grad(), naming_nonfinite(q=q, k=k):  # a NaN q or k: named, not a raw solver error
        for h0 in range(0, total, step):
            heads = torch.arange(h0, min(total, h0 + step), device=q.device)
            probs = chunk_probs(q, k, mask, p, causal, heads)
            spectra = [ops.eigvalsh(r) for r in bond_densities_of(probs, layout.row_dims, layout.col_dims)]
            out[h0 : h0 + len(heads)] = profile_from_spectra(spectra, alpha, base)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return out.reshape(p.batch, p.heads, layout.num_bonds).to(dtype)


class AttentionCardy(NamedTuple):
    """Calabrese-Cardy fits of attention profiles: one per profile, and one of the mean profile."""

    per_head: CardyFit
    mean: CardyFit
    mean_profile: torch.Tensor


def attention_cardy(profiles: torch.Tensor | Sequence[torch.Tensor], boundary: str = "periodic") -> AttentionCardy:
    """Fit ``S(l) = (c/3) ln[(L/pi) sin(pi l/L)] + s0`` per head and to the profile averaged over all heads.

    ``profiles``: ``(..., K-1)`` (e.g. ``(B, H, K-1)``), or a sequence of them (layers of equal
    sites) to average over heads and layers. NaN profiles are left out of the mean.
    """
    if not isinstance(profiles, torch.Tensor):
        profiles = torch.stack([torch.as_tensor(x) for x in profiles])
    flat = profiles.reshape(-1, profiles.shape[-1]).to(torch.float64)
    mean = flat.nanmean(0)
    return AttentionCardy(fit_finite_rows(flat, boundary, profiles.shape[:-1]), fit_cardy(mean, boundary), mean)


def fit_finite_rows(flat: torch.Tensor, boundary: str, shape: torch.Size) -> CardyFit:
    """Cardy fits of the rows of ``flat`` ``(n, K-1)``; a row with a NaN (a dead head) gets NaN ``c, s0, r2``
    (``fit_cardy`` itself refuses non-finite input)."""
    ok = torch.isfinite(flat).all(-1)
    out = [torch.full((flat.shape[0],), math.nan, dtype=torch.float64, device=flat.device) for _ in range(3)]
    if bool(ok.any()):
        fit = fit_cardy(flat[ok], boundary)
        for dst, src in zip(out, fit, strict=True):
            dst[ok] = src.to(torch.float64)
    return CardyFit(*(t.reshape(shape) for t in out))
