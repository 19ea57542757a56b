"""The Calabrese-Cardy form of an external (attention) profile: its fit, and the fit as a model comparison
against a volume-law line and a saturating curve."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

import artent_fast

CARDY_BOUNDARY = "open"  # an MPS of a matrix is an open chain; results before 2026-12 stored the periodic c


def cardy(profiles: list[list[float]]) -> tuple[float, float]:
    """(c, r2) of the Calabrese-Cardy fit (open chain, all bonds) of the mean of the given profiles."""
    fit = artent_fast.fit_cardy(torch.tensor(profiles, dtype=torch.float64).nanmean(0), boundary=CARDY_BOUNDARY)
    return float(fit.c), float(fit.r2)


def _cardy_fit_open(y: torch.Tensor, bonds: torch.Tensor, num_sites: int) -> tuple[float, float]:
    """(c, r2) of the open-chain form ``S = (c/6) ln[(2L/pi) sin(pi l/L)] + s0`` over the given bonds."""
    x = torch.log(2 * num_sites / math.pi * torch.sin(math.pi * bonds / num_sites))
    slope, _, rss = _linear(x, y)
    tss = float((y - y.mean()).square().sum())
    return 6 * slope, (1 - rss / tss) if tss > 0 else 1.0


def _linear(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    xc = x - x.mean()
    sxx = float(xc.square().sum())
    slope = float((xc * (y - y.mean())).sum()) / sxx if sxx > 0 else 0.0
    icpt = float(y.mean()) - slope * float(x.mean())
    return slope, icpt, float((y - slope * x - icpt).square().sum())


def _aic(rss: float, n: int, k: int) -> float:
    return n * math.log(max(rss, 1e-300) / n) + 2 * k


def cardy_forms(profile: Sequence[float], *, edges: bool = True) -> dict[str, float]:
    """Fit an external profile (bonds l = 1..L-1 of a chain of L sites) by four forms and give their AIC:
    ``cardy_open`` (the open chain, what an MPS of a matrix is: ``(c/6) ln[(2L/pi) sin(pi l/L)]``),
    ``cardy_periodic`` (``(c/3) ln[(L/pi) sin(pi l/L)]``: the same regressor up to a constant, so the same
    r2 and AIC, with c halved), ``line`` (``a + b l``, a volume law) and ``saturating``
    (``a + b (1 - exp(-l / xi))``, xi on a grid). ``edges=False`` leaves out the first and last bond.
    Also ``c_open``, ``c_periodic``, ``r2`` and ``delta_aic`` = best other form's AIC minus Cardy's
    (positive: Cardy is preferred)."""
    y_all = torch.tensor([float(v) for v in profile], dtype=torch.float64)
    num_sites = len(y_all) + 1
    bonds = torch.arange(1, num_sites, dtype=torch.float64)
    if not edges:
        y_all, bonds = y_all[1:-1], bonds[1:-1]
    n = len(y_all)
    c_open, r2 = _cardy_fit_open(y_all, bonds, num_sites)
    x = torch.log(torch.sin(math.pi * bonds / num_sites))
    cardy_aic = _aic(_linear(x, y_all)[2], n, 3)  # slope, intercept, noise
    line_aic = _aic(_linear(bonds, y_all)[2], n, 3)
    sat = min(_linear(1 - torch.exp(-bonds / xi), y_all)[2] for xi in torch.logspace(-1, 3, 60).tolist())
    sat_aic = _aic(sat, n, 4)
    return {
        "c_open": c_open,
        "c_periodic": c_open / 2,
        "r2": r2,
        "aic_cardy": cardy_aic,
        "aic_line": line_aic,
        "aic_saturating": sat_aic,
        "delta_aic": min(line_aic, sat_aic) - cardy_aic,
    }
