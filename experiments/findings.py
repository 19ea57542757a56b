"""The evaluation of a findings experiment: the paper's claims and our observations (:data:`PAPER`,
:data:`CRITERIA`), each part judged against its null (experiments/nulls.py) by the rule of
experiments/verdicts.py.

A pretrained model's results have several seeds: every criterion of :data:`CRITERIA` is judged, per kind
(q_proj, v_proj) where it applies. The built model's results have one seed: there is no seed spread, so
no verdict is better than *inconclusive*, and the no-hair seed floor is missing (its parts say so).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from artent_fast.atomic import atomic_write
from experiments import verdicts as V
from experiments.cardy import cardy_forms
from experiments.measure import TARGETS, flat_heads
from experiments.nulls import cardy_null, compute_nulls, lowrank_null, strongest_null
from experiments.run_plan import Run, built_model, runs_of

# The paper's claims, in the words of its abstract (arXiv 2601.06788); everything else is our observation.
PAPER = {
    "valley": 'LoRA updates show "a volume law with a central suppression" (the Entanglement Valley)',
    "hyper": 'the valley is "sensitive to hyper-parameters"',
    "fft": 'the LoRA valley is "distinct from that in FFT"',
    "cardy": "attention matrices show an area law with logarithmic corrections",
    "nohair": 'the differences do not show in attention outputs ("no-hair")',
}

# The criteria of a pretrained model's run, fixed before the run (docs/findings.md repeats them); the verdict rule
# and its thresholds are in experiments/verdicts.py: effect = (measured - null) / noise, reproduced at >= 3, not
# below 1.
CRITERIA = {
    "valley": "every LoRA run, q_proj and v_proj: valley depth above that of random Gaussian B @ A of the same "
    "rank and shape (valley depth = mean of the highest entropy on each side of the row/column bond minus "
    "the entropy at it)",
    "valley_spectrum": "every LoRA run, q_proj and v_proj: valley depth above that of U diag(s) V^T with the "
    "trained update's singular values s and random singular vectors (same row/column-bond entropy)",
    "floor": "every LoRA run (ours): row/column-bond entropy below that of random Gaussian B @ A of the same rank",
    "rank": "rank sweep: spread of the seed-mean row/column-bond entropy or valley depth (mean of q and v) across "
    "the settings, against the spread expected from the seed-to-seed noise alone (the better of the two)",
    "alpha": "alpha sweep: as for rank",
    "lr": "learning-rate sweep: as for rank",
    "step": "base LoRA run (ours): as for rank, across the checkpoints",
    "fft": "each kind and LoRA run: FFT's row/column-bond entropy or valley depth differs from the LoRA run's "
    "(the better of the two), in units of their seed spreads",
    "cardy": "every run: r2 and delta AIC (best of a volume-law line and a saturating curve, minus the open-chain "
    "Cardy form) of the fine-tuned block's mean external profile above those of the strongest null: mean "
    "profiles of random Gaussian and random causal softmax matrices of the same size and count",
    "c_dependence": "LoRA runs (ours): spread of the central charge c across the settings against the seed-noise "
    "spread",
    "nohair": "each method pair: internal gap above, and external gap and attention-output relative distance not "
    "above, the same-method different-seed floor (not reproduced when either of the last two is clearly above; "
    "inconclusive when the internal gap is not: the pair cannot test the claim)",
    "mps": "MPS Adaptation (ours; not among the abstract's claims): held-out loss reduction from the base model "
    "above 0 (the untrained base model) and above MPS_RECOVERY of the base LoRA's reduction (paired by seed)",
}

PAPER_KEYS = ("valley", "valley_spectrum", "rank", "alpha", "lr", "fft", "cardy", "nohair")  # the rest: ours


def finding(
    key: str, source: str, claim: str, criterion: str, parts: list[dict[str, Any]], verdict: str | None = None
) -> dict[str, Any]:
    """One finding: its parts (each a measurement judged against its null) and its verdict (by default all
    parts' verdicts combined, :func:`verdicts.combine`)."""
    return {
        "key": key,
        "source": source,
        "claim": claim,
        "criterion": criterion,
        "parts": parts,
        "verdict": verdict or V.combine([p["verdict"] for p in parts]),
    }


def findings(results: dict[str, Any], runs: list[Run]) -> list[dict[str, Any]]:
    """The findings of ``results`` (the nulls that need only shapes and sizes are computed into
    ``results["nulls"]`` when missing)."""
    return built_findings(results, runs) if built_model(results) else seeded_findings(results, runs)


def reevaluate(folder: Path) -> dict[str, Any]:
    """Judge the stored measurements of ``folder/results.json`` again with the current criteria and nulls
    (random-matrix nulls need only shapes and ranks; those that need the models, such as the attention-output
    seed floor, stay *pending rerun*), and rewrite results.json atomically."""
    results = json.loads((folder / "results.json").read_text())
    results.pop("nulls", None)
    if not built_model(results):
        results["criteria"] = CRITERIA
    results["findings"] = findings(results, runs_of(results))
    atomic_write(folder / "results.json", json.dumps(results, indent=1, default=float))
    return results


def seeded_findings(results: dict[str, Any], runs: list[Run]) -> list[dict[str, Any]]:
    """A pretrained model's results: every criterion of :data:`CRITERIA`, each part judged against its null by
    :func:`verdicts.judge`."""
    if "nulls" not in results:
        results["nulls"] = compute_nulls(results)
    nulls = results["nulls"]
    rs = results["runs"]
    seeds = [int(x) for x in next(iter(rs.values()))["seeds"]] if rs else []
    lora = [r for r in runs if r.method == "lora"]
    out: list[dict[str, Any]] = []
    floor = V.FLOORS

    def entries(name: str) -> list[dict[str, Any]]:
        return [rs[name]["seeds"][str(sd)] for sd in seeds]

    def per_seed(name: str, kind: str | None, key: str, step: str | None = None) -> list[float]:
        vals = []
        for e in entries(name):
            summ = e["summary"][step] if step else _final_step(e["summary"])
            vals.append(summ[kind][key] if kind else statistics.fmean(v[key] for v in summ.values()))
        return vals

    def kinds(name: str) -> list[str]:
        return [k for k in TARGETS if k in _final_step(entries(name)[0]["summary"])]

    def add(key: str, claim: str, parts: list[dict[str, Any]], verdict: str | None = None) -> None:
        out.append(finding(key, "paper" if key in PAPER_KEYS else "ours", claim, CRITERIA[key], parts, verdict))

    if lora:
        parts, spec, flo = [], [], []
        for r in lora:
            for k in kinds(r.name):
                null = nulls["lowrank"][k].get(str(r.r))
                depth = per_seed(r.name, k, "valley_depth")
                parts.append(
                    {"label": f"{r.name} {k}", **V.judge(depth, null and null["depth"], floor=floor["entropy"])}
                )
                centre = per_seed(r.name, k, "center")
                flo.append(
                    {
                        "label": f"{r.name} {k}",
                        **V.judge(centre, null and null["center"], floor=floor["entropy"], direction=-1),
                    }
                )
                sn = [e.get("spectrum_null", {}).get(k) for e in entries(r.name)]
                snull = None if None in sn else [x["depth"] for x in sn]
                spec.append({"label": f"{r.name} {k}", **V.judge(depth, snull, floor=floor["entropy"], paired=True)})
        add("valley", PAPER["valley"] + ": deeper than random B @ A of the same rank", parts)
        add("valley_spectrum", PAPER["valley"] + ": deeper than the same spectrum with random singular vectors", spec)
        add("floor", "the valley floor sits below that of random B @ A of the same rank", flo)
        for axis, attr in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr")):
            sweep = sorted((r for r in lora if axis in r.axes), key=lambda r, a=attr: getattr(r, a))
            if len(sweep) < 2:
                continue
            parts = []
            for key in ("center", "valley_depth"):
                groups = [per_seed(r.name, None, key) for r in sweep]
                parts.append(
                    {
                        "label": f"{key} over {axis}=" + ",".join(f"{getattr(r, attr):g}" for r in sweep),
                        **V.dependence(groups, floor["entropy"]),
                    }
                )
            best = max(parts, key=lambda p: p.get("effect", -math.inf))
            add(axis, f"{PAPER['hyper']}: {axis}", parts, best["verdict"])
        b = next(r for r in lora if "base" in r.axes)
        steps = sorted(entries(b.name)[0]["summary"], key=int)
        groups = [per_seed(b.name, None, "valley_depth", st) for st in steps]
        add(
            "step",
            "the valley depth changes with the training step",
            [{"label": f"depth over steps {','.join(steps)}", **V.dependence(groups, floor["entropy"])}],
        )
    fft_name = matched_fft(results, runs)
    fft = next((r for r in runs if r.name == fft_name), None)
    if fft and lora:
        parts = []
        for r in lora:
            for k in kinds(r.name):
                js = [
                    V.judge(per_seed(fft.name, k, key), per_seed(r.name, k, key), floor=floor["entropy"], direction=0)
                    for key in ("center", "valley_depth")
                ]
                best = max(js, key=lambda j: j.get("effect", -math.inf))
                parts.append({"label": f"FFT vs {r.name} {k} ({'centre' if best is js[0] else 'depth'})", **best})
        base = next(r for r in lora if "base" in r.axes)
        loss = {n: statistics.fmean(e["eval_loss"] for e in entries(n)) for n in (fft.name, base.name)}
        add(
            "fft",
            f"{PAPER['fft']} ({fft.name} at lr {fft.lr:g}, "
            f"{'the FFT nearest' if sum(r.method == 'fft' for r in runs) > 1 else 'the only FFT; not at'} LoRA's "
            f"loss: held-out loss {loss[fft.name]:.3f} vs {loss[base.name]:.3f})",
            parts,
        )
    names = list(rs)
    if names:
        strongest = {key: strongest_null(nulls["cardy"], key) for key in ("r2", "delta_aic")}
        parts = []
        for n in names:
            fits = [cardy_forms(mean_block(e)) for e in entries(n)]
            for key in ("r2", "delta_aic"):
                null_name, null = strongest[key]
                parts.append(
                    {
                        "label": f"{n} {key} (null: {null_name})",
                        **V.judge([f[key] for f in fits], null, floor=floor["r2"] if key == "r2" else 2.0),
                    }
                )
        add("cardy", PAPER["cardy"] + " (open-chain Calabrese-Cardy form, all bonds)", parts)
    if len(lora) > 1:
        groups = [[_final_step(e["cardy"])[0] for e in entries(r.name)] for r in lora]
        add(
            "c_dependence",
            "the central charge c of the fine-tuned block changes with the LoRA setting",
            [{"label": "c over the LoRA runs", **V.dependence(groups, floor["entropy"])}],
        )
    floors = results.get("nohair_floor", {})
    for pair, by_seed in results.get("nohair", {}).items():
        a, b = pair.split(" vs ")
        sms = [by_seed[str(sd)]["summary"] for sd in seeds if str(sd) in by_seed]
        same = [
            stored_gaps(rs[n]["seeds"][str(x)], rs[n]["seeds"][str(y)]) for n in (a, b) for x, y in seed_pairs(seeds)
        ]
        out_floor = [v["summary"]["rel_distance"] for n in (a, b) for v in floors.get(n, {}).values()] or None
        internal = V.judge(
            [sm["internal_gap"] for sm in sms], [g["internal_gap"] for g in same], floor=floor["entropy"]
        )
        external = V.judge(
            [sm["external_gap"] for sm in sms], [g["external_gap"] for g in same], floor=floor["entropy"]
        )
        outputs = V.judge([sm["rel_distance"] for sm in sms], out_floor, floor=floor["cosine"])
        parts = [
            {"label": "internal gap (must be above the seed floor)", "reads": "above", **internal},
            {"label": "external gap (must not)", "reads": "above", **external},
            {"label": "attention-output relative distance (must not)", "reads": "above", **outputs},
        ]
        add("nohair", f"{PAPER['nohair']}: {pair}", parts, nohair_verdict(internal, external, outputs))
    mps_runs = [r for r in runs if r.method == "mps"]
    base_lora = next((r for r in lora if "base" in r.axes), None)
    if mps_runs and base_lora:
        base_loss = results["base_eval_loss"]
        red_m = [base_loss - e["eval_loss"] for e in entries(mps_runs[0].name)]
        red_l = [base_loss - e["eval_loss"] for e in entries(base_lora.name)]
        add(
            "mps",
            "MPS Adaptation recovers LoRA's loss reduction",
            [
                {
                    "label": f"{mps_runs[0].name} loss reduction vs the untrained base (0)",
                    **V.judge(red_m, [0.0] * len(red_m), floor=floor["loss"], paired=True),
                },
                {
                    "label": f"vs {V.MPS_RECOVERY:.0%} of {base_lora.name}'s reduction",
                    **V.judge(red_m, [V.MPS_RECOVERY * x for x in red_l], floor=floor["loss"], paired=True),
                },
            ],
        )
    return out


def nohair_verdict(internal: dict[str, Any], external: dict[str, Any], outputs: dict[str, Any]) -> str:
    """Not reproduced when the external profiles or the attention outputs differ clearly beyond the seed floor;
    inconclusive when the internal profiles do not (the pair then cannot test the claim); reproduced when the
    internal profiles differ clearly and neither the external profiles nor the outputs do; else inconclusive
    or pending rerun."""
    parts = (external["verdict"], outputs["verdict"])
    if V.REPRODUCED in parts:
        return V.NOT_REPRODUCED
    if internal["verdict"] == V.NOT_REPRODUCED:
        return V.INCONCLUSIVE
    if V.PENDING in (internal["verdict"], *parts):
        return V.PENDING
    if internal["verdict"] == V.REPRODUCED and parts == (V.NOT_REPRODUCED, V.NOT_REPRODUCED):
        return V.REPRODUCED
    return V.INCONCLUSIVE


def mean_block(entry: dict[str, Any]) -> list[float]:
    """The fine-tuned block's mean external profile at the final step (over trained layers and heads)."""
    return torch.tensor(flat_heads(_final_step(entry["external"])), dtype=torch.float64).nanmean(0).tolist()


def built_findings(results: dict[str, Any], runs: list[Run]) -> list[dict[str, Any]]:
    """The built model's results: the paper's claims (and our observations) with a null beside every measurement.
    One seed: there is no seed spread, so no verdict is better than *inconclusive*, and the no-hair parts have no
    seed floor (a pretrained model's run has 3 seeds)."""
    rs = results["runs"]
    lora = [r for r in runs if r.method == "lora"]
    m, n, row_sites = results["layout"]
    out: list[dict[str, Any]] = []
    nulls = results.setdefault("nulls", {})

    def add(key: str, source: str, claim: str, criterion: str, parts: list[dict[str, Any]]) -> None:
        evidence = "; ".join(f"{p['label']}: {V.fmt(p)}" for p in parts)
        out.append({**finding(key, source, claim, criterion, parts), "evidence": evidence})

    if lora:
        low = nulls.setdefault("lowrank", {str(r): lowrank_null(m, n, r) for r in sorted({x.r for x in lora})})
        add(
            "valley",
            "paper",
            PAPER["valley"],
            "valley depth above that of random Gaussian B @ A of the same rank",
            [
                {
                    "label": r.name,
                    **V.judge([rs[r.name]["valley_depth"]], low[str(r.r)]["depth"], floor=V.FLOORS["entropy"]),
                }
                for r in lora
            ],
        )
        add(
            "floor",
            "ours",
            "the valley floor sits below that of random B @ A of the same rank",
            "row/column-bond entropy below that of random Gaussian B @ A of the same rank",
            [
                {
                    "label": r.name,
                    **V.judge([rs[r.name]["center"]], low[str(r.r)]["center"], floor=V.FLOORS["entropy"], direction=-1),
                }
                for r in lora
            ],
        )
        for axis, key in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr")):
            sweep = sorted((r for r in lora if axis in r.axes), key=lambda r, k=key: getattr(r, k))
            if len(sweep) > 1:
                add(
                    axis,
                    "paper",
                    f"{PAPER['hyper']}: {axis}",
                    "spread of the row/column-bond entropy across the sweep against seed noise (one seed here)",
                    [
                        {
                            "label": f"centre over {axis}",
                            **V.dependence([[rs[r.name]["center"]] for r in sweep], V.FLOORS["entropy"]),
                        }
                    ],
                )
    if "fft" in rs and lora:
        add(
            "fft",
            "paper",
            PAPER["fft"],
            "FFT's row/column-bond entropy differs from each LoRA run's",
            [
                {
                    "label": f"FFT vs {r.name}",
                    **V.judge([rs["fft"]["center"]], [rs[r.name]["center"]], floor=V.FLOORS["entropy"], direction=0),
                }
                for r in lora
            ],
        )
    if rs:
        t, count = results["settings"]["seq_len"], len(results["base_external"]) * results["heads"] * results["probe"]
        cn = nulls.setdefault("cardy", cardy_null(t, count))
        parts = []
        for name, r in rs.items():
            fit = cardy_forms(torch.tensor(r["external"], dtype=torch.float64).nanmean(0).tolist())
            for key in ("r2", "delta_aic"):
                null_name, null = strongest_null(cn, key)
                parts.append(
                    {
                        "label": f"{name} {key} (null: {null_name})",
                        **V.judge([fit[key]], null, floor=V.FLOORS["r2"] if key == "r2" else 2.0),
                    }
                )
        add(
            "cardy",
            "paper",
            PAPER["cardy"],
            "r2 and delta AIC of the open-chain Cardy form above the strongest "
            "random-matrix null (Gaussian, causal softmax)",
            parts,
        )
    for pair, res in results.get("nohair", {}).items():
        sm = res["summary"]
        add(
            "nohair",
            "paper",
            f"{PAPER['nohair']}: {pair}",
            "gaps above the same-method seed floor (one seed: no floor)",
            [
                {
                    "label": "attention-output relative distance",
                    "measured": sm["rel_distance"],
                    "verdict": V.INCONCLUSIVE,
                    "note": "one seed: no same-method seed floor",
                }
            ],
        )
    mps = [r for r in runs if r.method == "mps"]
    base_lora = next((r for r in lora if "base" in r.axes), None)
    if mps and base_lora:
        red_m = results["base_eval_loss"] - rs[mps[0].name]["eval_loss"]
        red_l = results["base_eval_loss"] - rs[base_lora.name]["eval_loss"]
        add(
            "mps",
            "ours",
            "MPS Adaptation recovers LoRA's loss reduction",
            f"loss reduction above 0 (the base model) and above {V.MPS_RECOVERY:.0%} of LoRA's",
            [
                {"label": "vs the base model", **V.judge([red_m], [0.0], floor=V.FLOORS["loss"])},
                {
                    "label": f"vs {V.MPS_RECOVERY:.0%} of LoRA's",
                    **V.judge([red_m], [V.MPS_RECOVERY * red_l], floor=V.FLOORS["loss"]),
                },
            ],
        )
    return out


# -- helpers of the seeded evaluation (also used by the pretrained-model run) -----------------------------
def matched_fft(results: dict[str, Any], runs: list[Run]) -> str | None:
    """The FFT run whose held-out loss (mean over seeds) is nearest the base LoRA's: FFT at matched loss."""
    ffts = [r.name for r in runs if r.method == "fft" and results["runs"][r.name]["seeds"]]
    base = next((r.name for r in runs if "base" in r.axes), None)
    if not ffts or base is None or not results["runs"][base]["seeds"]:
        return ffts[0] if ffts else None

    def loss(name: str) -> float:
        return statistics.fmean(e["eval_loss"] for e in results["runs"][name]["seeds"].values())

    return min(ffts, key=lambda n: abs(loss(n) - loss(base)))


def nohair_pairs(runs: list[Run], results: dict[str, Any]) -> list[tuple[str, str]]:
    """FFT (at matched loss) vs the base LoRA, the base LoRA vs MPS, the smallest other rank vs the base LoRA."""
    base = next((r.name for r in runs if "base" in r.axes), None)
    small = next(
        (r.name for r in sorted(runs, key=lambda r: r.r) if r.method == "lora" and "rank" in r.axes and r.name != base),
        None,
    )
    fft = matched_fft(results, runs)
    pairs = []
    if base and fft:
        pairs.append((fft, base))
    if base and any(r.method == "mps" for r in runs):
        pairs.append((base, next(r.name for r in runs if r.method == "mps")))
    if base and small:
        pairs.append((small, base))
    return pairs


def seed_pairs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    return [(a, b) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]


def _final_step(d: dict[str, Any]) -> Any:
    return d[max(d, key=int)]


def block_profiles(entry: dict[str, Any]) -> list[list[float]]:
    """Per trained layer: the mean over heads of the final external profiles (what compare_models compares)."""
    return [torch.tensor(layer, dtype=torch.float64).nanmean(0).tolist() for layer in _final_step(entry["external"])]


def _gap(a: Sequence[float], b: Sequence[float]) -> float:
    d = [abs(x - y) for x, y in zip(a, b, strict=True) if x == x and y == y]
    return max(d) if d else math.nan


def stored_gaps(ea: dict[str, Any], eb: dict[str, Any]) -> dict[str, float]:
    """external_gap and internal_gap as compare_models.summary() gives them, from two stored entries: per
    layer the largest per-bond difference (external: of the head-mean profiles; internal: the largest over
    the layer's q_proj and v_proj), then the mean over layers."""
    ext = statistics.fmean(_gap(a, b) for a, b in zip(block_profiles(ea), block_profiles(eb), strict=True))
    pa, pb = _final_step(ea["profiles"]), _final_step(eb["profiles"])
    layers: dict[str, list[float]] = {}
    for name, prof in pa.items():
        if name in pb:
            layers.setdefault(name.rsplit(".self_attn", 1)[0], []).append(_gap(prof, pb[name]))
    return {"external_gap": ext, "internal_gap": statistics.fmean(max(v) for v in layers.values())}
