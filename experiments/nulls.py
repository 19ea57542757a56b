"""The nulls of the findings: what a measurement would be without trained structure. Random rank-r products,
the trained spectrum with random singular vectors, random Gaussian and causal softmax attention matrices, and
the spread of a sweep's means when the setting does not matter (the verdict rule: experiments/verdicts.py)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import torch

import artent_fast
from artent_fast.compare import update_matrix
from artent_fast.core.profile import entanglement_profile
from artent_fast.tracking.records import valley_depth
from experiments.cardy import cardy_forms
from experiments.measure import kind_of

NULL_SAMPLES = 16  # draws of every random null
NULL_DRAWS = 200  # draws of the "no dependence" null of a sweep
CAUSAL_LOGIT_SCALES = (1.0, 2.0, 4.0)  # std of the logits of the random causal softmax nulls


# -- random-matrix nulls -------------------------------------------------------------------------------------
def _profile_stats(profiles: torch.Tensor, row_sites: int) -> dict[str, list[float]]:
    rows = [[float(x) for x in p] for p in profiles]
    return {"depth": [valley_depth(p, row_sites) for p in rows], "center": [p[row_sites - 1] for p in rows]}


def lowrank_null(m: int, n: int, r: int, *, samples: int = NULL_SAMPLES, seed: int = 0) -> dict[str, list[float]]:
    """Valley depth and row/column-bond entropy of ``samples`` Gaussian rank-r products ``B @ A`` (m x n)."""
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
    s = torch.tensor([x for x in singular_values if x > 0], dtype=torch.float64)
    r = len(s)
    gen = torch.Generator().manual_seed(seed)
    u = _haar_columns(m, r, samples, gen) * s
    v = _haar_columns(n, r, samples, gen)
    return _profile_stats(artent_fast.lowrank_profile(u, v.transpose(-1, -2)), artent_fast.sites(m, n).row_sites)


def gaussian_profiles(t: int, count: int, *, samples: int = NULL_SAMPLES, seed: int = 0) -> torch.Tensor:
    """``samples`` mean profiles, each the mean over ``count`` Gaussian t x t matrices (a Page-curve null)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, count, t, t, generator=gen, dtype=torch.float64)
    return entanglement_profile(x).mean(1)


def causal_softmax_profiles(
    t: int, count: int, scale: float, *, samples: int = NULL_SAMPLES, seed: int = 0
) -> torch.Tensor:
    """The same for random causal attention matrices: softmax of N(0, scale^2) logits under a causal mask."""
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(samples, count, t, t, generator=gen, dtype=torch.float64)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    probs = torch.softmax(logits.masked_fill(mask, -math.inf), -1)
    return entanglement_profile(probs).mean(1)


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


# -- the nulls of a pretrained model's results ----------------------------------------------------------
def compute_nulls(results: dict[str, Any]) -> dict[str, Any]:
    """The nulls that need only shapes, ranks and sizes (random matrices), computed once per results file:
    random rank-r products per kind and LoRA rank, and the Cardy nulls of the external profiles."""
    ranks = sorted({r["r"] for r in results["runs"].values() if r["method"] == "lora"})
    lowrank = {
        kind: {str(r): lowrank_null(m, n, r) for r in ranks if r <= min(m, n)}
        for kind, (m, n) in results["shapes"].items()
    }
    ext = next(iter(next(iter(results["runs"].values()))["seeds"].values()))["external"]
    final = ext[max(ext, key=int)]
    t = results["settings"]["seq_len"]  # the attention matrices of the probe windows are t x t
    # one block-mean profile averages layers x heads x probe windows attention matrices
    count = len(final) * len(final[0]) * results["settings"]["probe_windows"]
    return {
        "lowrank": lowrank,
        "cardy": cardy_null(t, count),
        "cardy_matrices": [t, count],
        "samples": NULL_SAMPLES,
    }


def spectrum_nulls(model_mods: dict[str, Any], base) -> dict[str, dict[str, Any]]:
    """Per kind: mean valley depth and row/column-bond entropy of the spectrum-matched null (mean over the
    kind's modules and the null's draws), and the trained updates' singular values."""
    per: dict[str, dict[str, list[float]]] = {}
    for name, module in model_mods.items():
        dw = update_matrix(module, name=name, base=base)
        sv = torch.linalg.svdvals(dw.double())
        sv = sv[sv > sv[0] * 1e-10] if len(sv) and sv[0] > 0 else sv[:0]
        null = spectrum_null(sv.tolist(), *dw.shape) if len(sv) else {"depth": [], "center": []}
        d = per.setdefault(kind_of(name), {"depth": [], "center": [], "rank": []})
        d["depth"].append(statistics.fmean(null["depth"]) if null["depth"] else math.nan)
        d["center"].append(statistics.fmean(null["center"]) if null["center"] else math.nan)
        d["rank"].append(len(sv))
    return {
        k: {"depth": statistics.fmean(v["depth"]), "center": statistics.fmean(v["center"]), "rank": v["rank"]}
        for k, v in per.items()
    }
