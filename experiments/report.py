"""``report.md`` and its figures, written from a findings experiment's results.json alone (either model source:
the built model's one-seed results or a pretrained model's seeded ones), and the verdict lists that README and
docs/findings.md carry. Figures are skipped, with a note in the report, when matplotlib is missing; a pretrained
model's figures are named ``<tag>_<what>.png`` (tag ``smollm2`` for SmolLM2).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from artent_fast.atomic import atomic_write
from experiments import verdicts as V
from experiments.figures import (
    KINDS,
    center_figure,
    external_figure,
    final,
    label,
    layers_external_figure,
    loss_figure,
    nohair_figure,
    profile_figure,
    seed_entries,
    stat,
    steps_figure,
)
from experiments.measure import mean_profile
from experiments.run_plan import built_model, runs_of

BUILT_LOSS_TITLE = "fine-tuning loss (same batches for every run)"
REAL_LOSS_TITLE = "fine-tuning loss on the real text (answer half of each window)"


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write the figures and ``report.md`` of ``results`` into ``out``; the path of report.md."""
    out = Path(out)
    return built_report(out, results) if built_model(results) else pretrained_report(out, results)


def one_panel(results: dict[str, Any], curves: list[tuple[str, list[float], str]]) -> list:
    """The built model's profile panel: one seed per curve, one (m x n) layout for every module."""
    m, n, row_sites = results["layout"]
    return [("", m, n, row_sites, [(name, [prof], None, method) for name, prof, method in curves])]


def kind_panels(results: dict[str, Any], names: list[str]) -> list:
    """A pretrained model's profile panels: one per kind (q_proj, v_proj), each run's final profiles over seeds."""
    panels = []
    for kind in KINDS:
        curves = []
        for i, name in enumerate(names):
            run = results["runs"][name]
            rows = [e["mean_final"][kind] for e in seed_entries(run) if kind in e["mean_final"]]
            color = f"C{i}" if run["method"] == "lora" else {"fft": "C3", "mps": "C2"}[run["method"]]
            curves.append((label(run), rows, color, run["method"]))
        m, n = results["shapes"][kind]
        panels.append((f"{kind} ({m}x{n})", m, n, results["row_sites"][kind], curves))
    return panels


def effect_range(f: dict[str, Any]) -> str:
    """The smallest and largest effect over a finding's parts, and how many parts there are."""
    eff = [p["effect"] for p in f["parts"] if "effect" in p]
    pending = len(f["parts"]) - len(eff)
    text = (f"{min(eff):+.1f} … {max(eff):+.1f}" if len(eff) > 1 else f"{eff[0]:+.1f}") if eff else "-"
    return f"{text} ({len(f['parts'])} parts" + (f", {pending} pending rerun)" if pending else ")")


def summary_markdown(results: dict[str, Any]) -> str:
    """The verdict lists that README and docs/findings.md carry (a test checks they match results.json)."""
    lines = []
    for verdict in (V.REPRODUCED, V.NOT_REPRODUCED, V.INCONCLUSIVE, V.PENDING):
        fs = [f for f in results.get("findings", []) if f["verdict"] == verdict]
        if not fs:
            continue
        lines += [f"**{verdict.capitalize()}**", ""]
        for f in fs:
            parts = [p for p in f["parts"] if "effect" in p]
            if f["key"] == "nohair":  # parts that must and must not exceed their floor: show all three
                detail = "; ".join(f"{p['label']}: {V.fmt(p)}" for p in f["parts"])
            elif parts:
                weakest = min(parts, key=lambda p: p["effect"])
                detail = f"weakest part {weakest['label']}: {V.fmt(weakest)}"
            else:
                detail = f"every part: {f['parts'][0].get('note', 'pending rerun')}"
            lines.append(f"- ({f['source']}) {f['claim']}: effects {effect_range(f)}; {detail}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def built_report(out: Path, results: dict[str, Any]) -> Path:
    """report.md and figures of the built model's results (one seed)."""
    runs = runs_of(results)
    rs = results["runs"]
    lora = [r for r in runs if r.method == "lora"]
    others = [r for r in runs if r.method != "lora"]
    figures: list[tuple[str, str]] = []
    try:
        for axis, key in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr")):
            sweep = sorted((r for r in lora if axis in r.axes), key=lambda r, k=key: getattr(r, k))
            if not sweep:
                continue
            curves = [(f"LoRA {axis}={getattr(r, key):g}", rs[r.name]["mean_final"], r.method) for r in sweep]
            if axis == "rank":
                curves += [(r.name, rs[r.name]["mean_final"], r.method) for r in others]
            ranks = sorted({r.r for r in sweep})
            figures.append(
                (
                    f"internal profiles against {axis} (final step, mean over q_proj/v_proj of all layers)",
                    profile_figure(
                        out / f"internal_{axis}.png", f"internal profiles: {axis}", one_panel(results, curves), ranks
                    ),
                )
            )
        for r in [next((r for r in lora if "base" in r.axes), None), *[r for r in others if r.method == "fft"]]:
            if r is None:
                continue
            curves = [(f"step {k}", mean_profile(v), r.method) for k, v in rs[r.name]["profiles"].items()]
            figures.append(
                (
                    f"{r.name}: internal profile against training step",
                    profile_figure(
                        out / f"internal_step_{r.method}.png",
                        f"{r.name}: profile vs step",
                        one_panel(results, curves),
                        [r.r] if r.r else [],
                    ),
                )
            )
        shown = [r.name for r in others] + [r.name for r in lora if "base" in r.axes]
        figures.append(
            ("external profiles with Cardy fits (dotted)", external_figure(out / "external.png", results, shown))
        )
        figures.append(("training loss", loss_figure(out / "loss.png", results, BUILT_LOSS_TITLE)))
        if (out / "nohair.png").exists():
            figures.append(("no-hair comparison (first pair)", "nohair.png"))
    except ImportError as exc:
        figures.append((f"figures skipped: {exc}", ""))

    s = results["settings"]
    lines = [
        "# Artificial entanglement: the paper's findings, reproduced or not",
        "",
        f"Model: {results['description']}. Device: {results['device']}. Fine-tuning: {s['steps']} steps, batch "
        f"{s['batch']} x {s['seq_len']} tokens, the same batches for every run; targets q_proj and v_proj "
        f"({results['layout'][0]} x {results['layout'][1]}, row/column bond {results['layout'][2]}). "
        f"Base model eval loss {results['base_eval_loss']:.3f}. Run time {results.get('seconds', 0):.0f} s.",
        "",
        "## Findings",
        "",
        "Each measurement beside its null (experiments/verdicts.py): effect = (measured - null) / noise. One seed: "
        "no seed spread, so no verdict is better than *inconclusive*.",
        "",
        "| finding | source | criterion | verdict | measured vs null: effect |",
        "|---|---|---|---|---|",
    ]
    for f in results["findings"]:
        lines.append(f"| {f['claim']} | {f['source']} | {f['criterion']} | **{f['verdict']}** | {f['evidence']} |")
    lines += [
        "",
        "## Runs",
        "",
        "| run | method | r | alpha | chi | lr | trainable | eval loss | centre S | ln r | "
        "valley depth | tracker vs direct |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        e = rs[r.name]
        diff = e.get("tracker_max_diff")
        lines.append(
            f"| {r.name} | {r.method} | {r.r or '-'} | {r.alpha or '-'} | {r.chi or '-'} | {r.lr:g} | "
            f"{e['trainable']} | {e['eval_loss']:.3f} | {e['center']:.3f} | "
            f"{math.log(r.r) if r.r > 1 else float('nan'):.3f} | {e['valley_depth']:+.3f} | "
            f"{'-' if diff is None else f'{diff:.1e}'} |"
        )
    lines += [
        "",
        "`tracker vs direct`: largest difference (nats) between `artent_fast.track`'s record and the direct "
        "checkpoint measurement at the last step.",
        "",
        "## No-hair comparisons",
        "",
    ]
    for pair, res in results.get("nohair", {}).items():
        da, db = res["moved_from_base"]
        lines += [
            f"### {pair}",
            "",
            f"Mean relative distance of the attention outputs from the base model's: {da:.4f} and {db:.4f}.",
            "",
            res["markdown"],
            "",
        ]
    lines += ["## Figures", ""]
    for caption, name in figures:
        lines += [f"**{caption}**", "", f"![{caption}]({name})" if name else "", ""]
    path = out / "report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def pretrained_report(out: Path, results: dict[str, Any]) -> Path:
    """report.md and figures of a pretrained model's results (several seeds)."""
    tag = results.get("tag", "real")
    rs = results["runs"]
    lora = {n: r for n, r in rs.items() if r["method"] == "lora"}
    by_axis = {
        axis: sorted((n for n, r in lora.items() if axis in r["axes"]), key=lambda n, a=attr: rs[n][a])
        for axis, attr in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr"))
    }
    base_name = next((n for n, r in lora.items() if "base" in r["axes"]), None)
    others = [n for n, r in rs.items() if r["method"] != "lora"]
    figures: list[tuple[str, str]] = []
    why_not = ""
    try:
        if by_axis["rank"]:
            ranks = sorted({rs[n]["r"] for n in by_axis["rank"]})
            figures.append(
                (
                    "internal profiles against rank (alpha/r fixed) with FFT and MPS",
                    profile_figure(
                        out / f"{tag}_internal_rank.png",
                        "final internal profiles: LoRA ranks, FFT, MPS (mean over fine-tuned layers; band: seeds)",
                        kind_panels(results, by_axis["rank"] + others),
                        ranks,
                    ),
                )
            )
            figures.append(
                (
                    "row/column-bond entropy against ln r",
                    center_figure(out / f"{tag}_center_vs_lnr.png", results, by_axis["rank"]),
                )
            )
        for axis in ("alpha", "lr"):
            if by_axis[axis]:
                figures.append(
                    (
                        f"internal profiles against {axis}",
                        profile_figure(
                            out / f"{tag}_internal_{axis}.png",
                            f"final internal profiles against LoRA {axis} (r={rs[by_axis[axis][0]]['r']})",
                            kind_panels(results, by_axis[axis]),
                            [rs[by_axis[axis][0]]["r"]],
                        ),
                    )
                )
        step_names = ([base_name] if base_name else []) + others
        if step_names:
            figures.append(
                (
                    "valley depth and row/column-bond entropy against the step",
                    steps_figure(out / f"{tag}_steps.png", results, step_names),
                )
            )
        figures.append(
            ("external profiles and central charges", layers_external_figure(out / f"{tag}_external.png", results))
        )
        if results.get("nohair"):
            figures.append(("no-hair comparison", nohair_figure(out / f"{tag}_nohair.png", results)))
        figures.append(("training loss", loss_figure(out / f"{tag}_loss.png", results, REAL_LOSS_TITLE)))
    except ImportError as exc:
        why_not = str(exc)
    s = results["settings"]
    lines = [
        f"# The paper's findings on {results['description']}",
        "",
        "Written by experiments/paper_findings.py from results.json; the criteria, nulls and thresholds are in "
        "experiments/findings.py (CRITERIA), experiments/nulls.py and experiments/verdicts.py.",
        "",
        "## Settings",
        "",
        f"- fine-tuned: q_proj and v_proj of layers {results['trained_layers']} (all other weights frozen); "
        f"shapes {results['shapes']}",
        f"- text: {results['tokens'][0]} training and {results['tokens'][1]} held-out tokens (chatterbot-corpus, "
        f"English, BSD-3-Clause); windows of {s['seq_len']} tokens, loss on the last {s.get('scored', 16)} "
        f"tokens of each; batch {s['batch']}; pool of {s['pool']} windows",
        f"- {s['steps']} AdamW steps per run, {s['checkpoints']} checkpoints; seeds {s['seeds']}",
        f"- LoRA base r={s['base_r']} alpha={s['base_alpha']:g} lr={s['base_lr']:g}; ranks {s['ranks']} (alpha/r "
        f"fixed); alphas {s['alphas']}; lrs {s['lrs']}; FFT lr "
        f"{', '.join(f'{x:g}' for x in sorted({s['fft_lr'], *s.get('fft_sweep', [])}))}",
        f"- base model eval loss {results['base_eval_loss']:.3f}; cached-prefix check: max |logit difference| "
        f"{results['top_view_max_diff']:.1e}",
        f"- wall time {results.get('seconds', float('nan')) / 60:.1f} min",
        "",
        "## Findings",
        "",
        "Each finding is a measurement beside its null, computed in the same run; the effect is the difference in "
        "units of the noise (the seed-to-seed spread and the null's spread, never below a fixed floor). Reproduced "
        f"at an effect of {V.Z_REPRODUCED:g} or more, not reproduced below {V.Z_NOT:g}, inconclusive between "
        "(experiments/verdicts.py); *paper*: a claim of the paper's abstract, *ours*: our own observation.",
        "",
        "| finding | source | criterion | effects (parts) | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in results.get("findings", []):
        lines.append(f"| {f['claim']} | {f['source']} | {f['criterion']} | {effect_range(f)} | **{f['verdict']}** |")
    lines += ["", "Each part: measured (mean ± sd over seeds) vs null (mean ± sd): effect (verdict).", ""]
    for f in results.get("findings", []):
        lines.append(f"- {f['claim']} (**{f['verdict']}**)")
        lines += [f"  - {p['label']}: {V.fmt(p)}" for p in f["parts"]]
    lines += [
        "",
        "## Runs (final checkpoint; mean ± sd over seeds)",
        "",
        "| run | trainable | eval loss | valley depth q / v | row/column S q / v |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for _name, run in rs.items():
        es = seed_entries(run)
        lines.append(
            f"| {label(run)} | {es[0]['trainable']:,} | {stat([e['eval_loss'] for e in es])} | "
            + " / ".join(stat([final(e)[k]["valley_depth"] for e in es]) for k in KINDS)
            + " | "
            + " / ".join(stat([final(e)[k]["center"] for e in es]) for k in KINDS)
            + " |"
        )
    cs = [c for c, _ in results["base_cardy_layers"]]
    r2s = [r2 for _, r2 in results["base_cardy_layers"]]
    lines += [
        "",
        "## External profiles of the base model",
        "",
        f"Per layer, the attention matrices' profiles are averaged over heads and probe windows and fitted: "
        f"c from {min(cs):.2f} to {max(cs):.2f} (median {statistics.median(cs):.2f}), r2 from {min(r2s):.3f} "
        f"to {max(r2s):.3f}. Per head: c from "
        f"{min(c for layer in results['base_cardy_heads'] for c, _ in layer):.2f} to "
        f"{max(c for layer in results['base_cardy_heads'] for c, _ in layer):.2f}.",
        "",
    ]
    if results.get("nohair"):
        lines += [
            "## No-hair comparisons (fine-tuned layers; mean ± sd over seeds)",
            "",
            "| pair | cosine | relative distance | external gap | internal gap |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for pair, by_seed in results["nohair"].items():
            sm = [v["summary"] for v in by_seed.values()]
            lines.append(
                f"| {pair} | "
                + " | ".join(
                    stat([x[k] for x in sm], 4) for k in ("cosine", "rel_distance", "external_gap", "internal_gap")
                )
                + " |"
            )
        lines.append("")
    lines += ["## Figures", ""]
    if figures:
        lines += [f"![{title}]({name})" for title, name in figures]
    else:
        lines.append(f"Figures skipped: {why_not}")
    atomic_write(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
