"""Null models and the verdict rule of the findings experiments (one place for both scripts).

A finding is judged by comparing a measurement with a *null*: the same quantity computed on something
that has no trained structure (random matrices of the same shape and rank, random causal softmax
matrices, the untrained base model, a second seed of the same method). The difference is expressed in
units of the *noise*: the seed-to-seed spread of the measurement and the spread of the null, never below
a fixed floor. The thresholds are fixed here, before any run, and docs/findings.md repeats them:

- ``effect >= Z_REPRODUCED`` (3 noise units): **reproduced**;
- ``effect <  Z_NOT`` (1 noise unit): **not reproduced**;
- in between: **inconclusive**; a null the stored results cannot give: **pending rerun**.

With a single seed there is no seed spread, so a verdict is at most *inconclusive*.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import torch

Z_REPRODUCED = 3.0
Z_NOT = 1.0
NULL_SAMPLES = 16  # draws of every random null
NULL_DRAWS = 200  # draws of the "no dependence" null of a sweep
FLOORS = {"entropy": 0.05, "r2": 0.01, "loss": 0.01, "cosine": 0.01}  # the noise is never below these
MPS_RECOVERY = 0.5  # MPS must recover at least this fraction of LoRA's held-out loss reduction
CAUSAL_LOGIT_SCALES = (1.0, 2.0, 4.0)  # std of the logits of the random causal softmax nulls

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, PENDING = "reproduced", "not reproduced", "inconclusive", "pending rerun"


def _sd(v: Sequence[float]) -> float:
    return statistics.stdev(v) if len(v) > 1 else 0.0


def judge(
    measured: Sequence[float],
    null: Sequence[float] | None,
    *,
    floor: float,
    direction: int = 1,
    paired: bool = False,
    seeds: int | None = None,
) -> dict[str, Any]:
    """Compare per-seed ``measured`` values with ``null`` values (draws of the null, or per-seed nulls when
    ``paired``). ``direction`` +1: the finding says measured > null; -1: measured < null; 0: either way.

    noise = max(floor, sd of the paired differences) when paired, else max(floor, sqrt(sd_m^2 + sd_null^2));
    effect = direction * (mean measured - mean null) / noise (``|...|`` for direction 0). ``seeds``: how many
    seeds stand behind the measurement (default ``len(measured)``); with one, the verdict is at most inconclusive.
    """
    measured = [float(x) for x in measured if x == x]
    if null is None:
        return {"measured": statistics.fmean(measured) if measured else math.nan, "verdict": PENDING}
    null = [float(x) for x in null if x == x]
    if not measured or not null:
        return {"measured": math.nan, "null": math.nan, "verdict": PENDING}
    m, n = statistics.fmean(measured), statistics.fmean(null)
    if paired and len(null) == len(measured) > 1:
        spread = _sd([a - b for a, b in zip(measured, null, strict=True)])
    else:
        spread = math.hypot(_sd(measured), _sd(null))
    noise = max(floor, spread)
    diff = m - n
    effect = abs(diff) / noise if direction == 0 else direction * diff / noise
    if effect < Z_NOT:
        verdict = NOT_REPRODUCED
    elif effect >= Z_REPRODUCED and (seeds or len(measured)) > 1:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return {
        "measured": m,
        "measured_sd": _sd(measured),
        "null": n,
        "null_sd": _sd(null),
        "noise": noise,
        "effect": effect,
        "seeds": seeds or len(measured),
        "values": [len(measured), len(null)],
        "verdict": verdict,
    }


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from several parts: all reproduced, all not reproduced, any pending, else inconclusive."""
    v = list(verdicts)
    if not v or PENDING in v:
        return PENDING
    if all(x == REPRODUCED for x in v):
        return REPRODUCED
    if all(x == NOT_REPRODUCED for x in v):
        return NOT_REPRODUCED
    return INCONCLUSIVE


ABOVE = {REPRODUCED: "clearly above", NOT_REPRODUCED: "not above", INCONCLUSIVE: "unclear"}


def fmt(j: dict[str, Any], digits: int = 3) -> str:
    """``measured ± sd vs null ± sd: effect E (verdict)`` for the report (``± sd`` only over several values;
    a part that only says whether a gap is above its floor, ``reads="above"``, says so instead of a verdict)."""
    if j.get("verdict") == PENDING or "null" not in j:
        return f"{j.get('measured', math.nan):.{digits}f} vs null: {j.get('note', 'pending rerun')}"
    n_m, n_n = j.get("values", [2, 2])

    def val(x: float, sd: float, n: int) -> str:
        return f"{x:.{digits}f} ± {sd:.{digits}f}" if n > 1 else f"{x:.{digits}f}"

    said = ABOVE[j["verdict"]] if j.get("reads") == "above" else j["verdict"]
    return (
        f"{val(j['measured'], j['measured_sd'], n_m)} vs null {val(j['null'], j['null_sd'], n_n)}: "
        f"effect {j['effect']:+.1f} ({said})"
    )


# -- random-matrix nulls -------------------------------------------------------------------------------------
def _profile_stats(profiles: torch.Tensor, row_sites: int) -> dict[str, list[float]]:
    from artent_fast.tracking.records import valley_depth

    rows = [[float(x) for x in p] for p in profiles]
    return {"depth": [valley_depth(p, row_sites) for p in rows], "center": [p[row_sites - 1] for p in rows]}


def lowrank_null(m: int, n: int, r: int, *, samples: int = NULL_SAMPLES, seed: int = 0) -> dict[str, list[float]]:
    """Valley depth and row/column-bond entropy of ``samples`` Gaussian rank-r products ``B @ A`` (m x n)."""
    import artent_fast

    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(samples, m, r, generator=gen, dtype=torch.float64)
    a = torch.randn(samples, r, n, generator=gen, dtype=torch.float64)
    return _profile_stats(artent_fast.lowrank_profile(b, a), artent_fast.sites(m, n).row_sites)


def _haar_columns(rows: int, cols: int, samples: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(samples, rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def spectrum_null(
    singular_values: Sequence[float], m: int, n: int, *, samples: int = NULL_SAMPLES, seed: int = 0
) -> dict[str, list[float]]:
    """The same for ``U diag(s) V^T`` with the trained update's singular values ``s`` and Haar-random U, V:
    its row/column-bond entropy equals the trained one exactly; the side bonds test the singular vectors."""
    import artent_fast

    s = torch.tensor([x for x in singular_values if x > 0], dtype=torch.float64)
    r = len(s)
    gen = torch.Generator().manual_seed(seed)
    u = _haar_columns(m, r, samples, gen) * s
    v = _haar_columns(n, r, samples, gen)
    return _profile_stats(artent_fast.lowrank_profile(u, v.transpose(-1, -2)), artent_fast.sites(m, n).row_sites)


def gaussian_profiles(t: int, count: int, *, samples: int = NULL_SAMPLES, seed: int = 0) -> torch.Tensor:
    """``samples`` mean profiles, each the mean over ``count`` Gaussian t x t matrices (a Page-curve null)."""
    from artent_fast.core.profile import entanglement_profile

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, count, t, t, generator=gen, dtype=torch.float64)
    return entanglement_profile(x).mean(1)


def causal_softmax_profiles(
    t: int, count: int, scale: float, *, samples: int = NULL_SAMPLES, seed: int = 0
) -> torch.Tensor:
    """The same for random causal attention matrices: softmax of N(0, scale^2) logits under a causal mask."""
    from artent_fast.core.profile import entanglement_profile

    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(samples, count, t, t, generator=gen, dtype=torch.float64)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    probs = torch.softmax(logits.masked_fill(mask, -math.inf), -1)
    return entanglement_profile(probs).mean(1)


# -- the Cardy form as a model comparison ------------------------------------------------------------------
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


def cardy_null(t: int, count: int, *, samples: int = NULL_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Cardy r2 (open form, all bonds) and delta AIC of the mean profiles of ``count`` random t x t matrices:
    Gaussian, and causal softmax at each scale of :data:`CAUSAL_LOGIT_SCALES`."""
    out: dict[str, Any] = {}
    sets = {"gaussian": gaussian_profiles(t, count, samples=samples, seed=seed)}
    for s in CAUSAL_LOGIT_SCALES:
        sets[f"causal_softmax_{s:g}"] = causal_softmax_profiles(t, count, s, samples=samples, seed=seed)
    for name, profs in sets.items():
        fits = [cardy_forms(p.tolist()) for p in profs]
        out[name] = {"r2": [f["r2"] for f in fits], "delta_aic": [f["delta_aic"] for f in fits]}
    return out


def strongest_null(nulls: dict[str, Any], key: str) -> tuple[str, list[float]]:
    """The null whose mean ``key`` is largest (the hardest one to beat)."""
    name = max(nulls, key=lambda k: statistics.fmean(nulls[k][key]))
    return name, nulls[name][key]


# -- "no dependence" null of a sweep ------------------------------------------------------------------------
def spread_of_means(groups: Sequence[Sequence[float]]) -> float:
    means = [statistics.fmean(g) for g in groups if g]
    return max(means) - min(means)


def no_dependence_null(groups: Sequence[Sequence[float]], *, draws: int = NULL_DRAWS, seed: int = 0) -> list[float]:
    """Spread of the group means when the setting does not matter: every group drawn from one normal law
    with the pooled within-group (seed-to-seed) standard deviation, at the groups' sizes."""
    sizes = [len(g) for g in groups]
    sd = math.sqrt(statistics.fmean(statistics.variance(g) for g in groups))
    rng = random.Random(seed)
    return [spread_of_means([[rng.gauss(0.0, sd) for _ in range(k)] for k in sizes]) for _ in range(draws)]


def dependence(groups: Sequence[Sequence[float]], floor: float) -> dict[str, Any]:
    """Does the quantity depend on the setting? measured: spread (max - min) of the group (setting) means
    over seeds; null: the same spread when it does not (:func:`no_dependence_null`). One value per group:
    no seed spread, so at most inconclusive."""
    seeds = min(len(g) for g in groups)
    if seeds < 2:
        return {**judge([spread_of_means(groups)], [0.0], floor=floor, seeds=1), "note": "one seed: no seed spread"}
    return judge([spread_of_means(groups)], no_dependence_null(groups), floor=floor, seeds=seeds)
