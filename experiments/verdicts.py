"""The verdict rule of the findings experiments (the nulls themselves: experiments/nulls.py).

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
import statistics
from collections.abc import Sequence
from typing import Any

from experiments.nulls import no_dependence_null, spread_of_means

Z_REPRODUCED = 3.0
Z_NOT = 1.0
FLOORS = {"entropy": 0.05, "r2": 0.01, "loss": 0.01, "cosine": 0.01}  # the noise is never below these
MPS_RECOVERY = 0.5  # MPS must recover at least this fraction of LoRA's held-out loss reduction

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


def dependence(groups: Sequence[Sequence[float]], floor: float) -> dict[str, Any]:
    """Does the quantity depend on the setting? measured: spread (max - min) of the group (setting) means
    over seeds; null: the same spread when it does not (:func:`no_dependence_null`). One value per group:
    no seed spread, so at most inconclusive."""
    seeds = min(len(g) for g in groups)
    if seeds < 2:
        return {**judge([spread_of_means(groups)], [0.0], floor=floor, seeds=1), "note": "one seed: no seed spread"}
    return judge([spread_of_means(groups)], no_dependence_null(groups), floor=floor, seeds=seeds)
