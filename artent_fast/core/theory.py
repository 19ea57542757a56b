"""Random-matrix references and the Cardy fit (docs/definitions.md §3 and §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from artent_fast.core.layout import MAX_SIDE, Sites, prime_factors, sites
from artent_fast.core.lowrank import lowrank_profile
from artent_fast.core.validate import as_int, check_positive_int

EULER_GAMMA = 0.5772156649015329


def _harmonic(n: torch.Tensor) -> torch.Tensor:
    return torch.special.digamma(n + 1) + EULER_GAMMA


def page_entropy(d_a: torch.Tensor | int, d_b: torch.Tensor | int) -> torch.Tensor:
    """Page's mean entropy of a random pure state on ``d_a x d_b`` (either order)."""
    d_a = torch.as_tensor(d_a, dtype=torch.float64)
    d_b = torch.as_tensor(d_b, dtype=torch.float64)
    small, large = torch.minimum(d_a, d_b), torch.maximum(d_a, d_b)
    return _harmonic(small * large) - _harmonic(large) - (small - 1) / (2 * large)


def _layout(row_dims: Sequence[int] | int, col_dims: Sequence[int] | int, order: str = "row-major") -> Sites:
    """Accept either site dims or plain sizes (factored into primes)."""
    rows = _dims_or_size(row_dims, "row_dims")
    cols = _dims_or_size(col_dims, "col_dims")
    return sites(math.prod(rows), math.prod(cols), row_dims=rows, col_dims=cols, order=order)


def _dims_or_size(value: Sequence[int] | int, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        size = check_positive_int(value, name, allow_none=False)
        if size > MAX_SIDE:
            raise ValueError(f"{name}={size} is above the supported side 2**40 (MAX_SIDE)")
        return prime_factors(size)
    try:
        return tuple(as_int(d, name) for d in value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer or a sequence of them, got {value!r}") from None


def page_curve(
    row_dims: Sequence[int] | int, col_dims: Sequence[int] | int, *, order: str = "row-major"
) -> torch.Tensor:
    """Page-curve prediction ``(K-1,)`` (nats) for a Gaussian matrix with these sites.

    Pass site dims, or plain sizes ``m, n`` to use their prime factors.
    """
    layout = _layout(row_dims, col_dims, order)
    return torch.stack([page_entropy(left, right) for left, right in layout.bond_dims()])


def lowrank_row_col_entropy(m: int, n: int, r: int) -> float:
    """Mean row/column-bond entropy of a Gaussian rank-r product ``B @ A``: ``ln r - r/2m - r/2n``."""
    return math.log(r) - r / (2 * m) - r / (2 * n)


def random_lowrank_profile(
    m: int,
    n: int,
    r: int,
    *,
    row_dims: Sequence[int] | None = None,
    col_dims: Sequence[int] | None = None,
    method: str = "monte-carlo",
    samples: int = 32,
    seed: int = 0,
    return_std: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Profile ``(K-1,)`` of a random rank-``r`` product ``B @ A`` with Gaussian factors.

    "monte-carlo" (seeded, exact per sample) averages ``samples`` draws; "analytic" uses Page
    curves of the reduced factors (a Gaussian approximation) and ``ln r - r/2m - r/2n`` at the
    row/column bond.
    """
    m, n, r, samples = (
        check_positive_int(v, k, allow_none=False)
        for k, v in zip(("m", "n", "r", "samples"), (m, n, r, samples), strict=True)
    )
    layout = sites(m, n, row_dims=row_dims, col_dims=col_dims)
    if method == "analytic":
        out = []
        for k, (left, right) in enumerate(layout.bond_dims(), start=1):
            if k == layout.row_sites and layout.col_dims:
                out.append(torch.tensor(lowrank_row_col_entropy(m, n, r), dtype=torch.float64))
            elif k < layout.row_sites:  # rows split (left, m/left); the rest is rank r
                out.append(page_entropy(left, min(right, (m // left) * r)))
            else:  # columns split (m*C1, C2); the left side is rank r*C1
                out.append(page_entropy(min(left, r * (left // m)), right))
        mean = torch.stack(out)
        return (mean, torch.zeros_like(mean)) if return_std else mean
    if method != "monte-carlo":
        raise ValueError(f"method must be 'monte-carlo' or 'analytic', got {method!r}")
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, min(samples, (1 << 24) // max(1, (m + n) * r)))
    profiles = []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        B = torch.randn(k, m, r, generator=gen, dtype=torch.float64)
        A = torch.randn(k, r, n, generator=gen, dtype=torch.float64)
        profiles.append(lowrank_profile(B, A, row_dims=layout.row_dims, col_dims=layout.col_dims))
    prof = torch.cat(profiles)
    mean = prof.mean(0)
    return (mean, prof.std(0) if samples > 1 else torch.zeros_like(mean)) if return_std else mean


class CardyFit(NamedTuple):
    """``S(l) = (c/3) ln[(L/pi) sin(pi l/L)] + s0`` (periodic) or ``(c/6) ln[(2L/pi) ...] + s0`` (open)."""

    c: torch.Tensor
    s0: torch.Tensor
    r2: torch.Tensor

    def predict(self, num_sites: int, boundary: str = "periodic") -> torch.Tensor:
        x, slope = _cardy_x(num_sites, boundary, self.c.device)
        return self.c.unsqueeze(-1) * slope * x + self.s0.unsqueeze(-1)


def _cardy_x(num_sites: int, boundary: str, device: torch.device) -> tuple[torch.Tensor, float]:
    if boundary not in ("periodic", "open"):
        raise ValueError(f"boundary must be 'periodic' or 'open', got {boundary!r}")
    l = torch.arange(1, num_sites, dtype=torch.float64, device=device)
    chord = torch.sin(math.pi * l / num_sites) * num_sites / math.pi
    if boundary == "periodic":
        return torch.log(chord), 1 / 3
    return torch.log(2 * chord), 1 / 6


def fit_cardy(profile: torch.Tensor, boundary: str = "periodic") -> CardyFit:
    """Least-squares Calabrese-Cardy fit of profiles ``(..., K-1)`` over bonds ``l = 1..K-1``.

    ``profile`` must be real (floating or integer), finite and have at least 3 bonds (two points
    always fit a line exactly): anything else is a ValueError or TypeError naming ``profile``.
    """
    try:
        profile = torch.as_tensor(profile)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"profile must be a tensor or array of entropies, got {type(profile).__name__}") from exc
    if (
        profile.is_complex()
        or profile.dtype == torch.bool
        or not (profile.is_floating_point() or profile.dtype.is_signed)
    ):
        raise TypeError(f"profile must hold real numbers, got dtype {profile.dtype}")
    if profile.ndim < 1 or profile.shape[-1] < 3:
        raise ValueError(f"fit_cardy needs profiles with at least 3 bonds, got profile of shape {tuple(profile.shape)}")
    if profile.numel() == 0:
        raise ValueError(f"profile is empty (shape {tuple(profile.shape)})")
    y = profile.to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"profile has {int((~torch.isfinite(y)).sum())} NaN or Inf entries")
    x, slope = _cardy_x(y.shape[-1] + 1, boundary, y.device)
    xc = x - x.mean()
    yc = y - y.mean(-1, keepdim=True)
    sxx = xc.square().sum()
    beta = (yc * xc).sum(-1) / sxx if sxx > 0 else torch.zeros(y.shape[:-1], dtype=torch.float64)
    s0 = y.mean(-1) - beta * x.mean()
    resid = y - (beta.unsqueeze(-1) * x + s0.unsqueeze(-1))
    ss_tot = yc.square().sum(-1)
    r2 = torch.where(ss_tot > 0, 1 - resid.square().sum(-1) / ss_tot.clamp_min(1e-300), torch.ones_like(ss_tot))
    return CardyFit(beta / slope, s0, r2)
