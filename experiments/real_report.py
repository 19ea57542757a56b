"""``report.md`` and figures for experiments/real_findings.py, from ``results.json`` alone.

    python experiments/real_report.py experiments/smollm2      # (re)write the report of a finished run

Figures are named ``<tag>_<what>.png`` (tag ``smollm2`` for SmolLM2); they are skipped, with a note in
the report, when matplotlib is missing.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module: verdicts
import verdicts as V  # noqa: E402

KINDS = ("q_proj", "v_proj")
STYLE = {"fft": ("C3", "-", "s"), "lora": ("C0", "-", "o"), "mps": ("C2", "--", "^")}


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


BLOCK = re.compile(r"(<!-- findings: (\S+) -->\n)(.*?)(<!-- /findings -->)", re.S)


def doc_blocks(text: str) -> list[tuple[str, str]]:
    """(results.json path relative to the repository, block text) of every findings block in a document."""
    return [(m.group(2), m.group(3)) for m in BLOCK.finditer(text)]


def update_docs(paths: list[Path], root: Path) -> None:
    """Rewrite the findings blocks (``<!-- findings: PATH -->`` ... ``<!-- /findings -->``) of ``paths`` from
    the results files they name, so that the numbers in README and docs come from results.json alone."""
    from artent_fast.atomic import atomic_write

    for path in paths:
        text = path.read_text()
        new = BLOCK.sub(
            lambda m: m.group(1) + summary_markdown(json.loads((root / m.group(2)).read_text())) + m.group(4), text
        )
        if new != text:
            atomic_write(path, new)


def _plt():
    from artent_fast.plotting import require_matplotlib

    return require_matplotlib()


def _save(fig, path: Path, layout: bool = True) -> str:
    """Lay out (unless done already, as for figure legends below the axes) and write atomically."""
    from artent_fast.atomic import atomic_path

    if layout:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _mean_sd(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(rows, dtype=torch.float64)
    sd = t.std(0) if len(rows) > 1 else torch.zeros(t.shape[1:], dtype=torch.float64)
    return t.nanmean(0), sd


def _seeds(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [run["seeds"][k] for k in sorted(run["seeds"], key=int)]


def _final(entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    return entry["summary"][max(entry["summary"], key=int)]


def _stat(values: list[float], digits: int = 3) -> str:
    v = [x for x in values if x == x]
    if not v:
        return "n/a"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.{digits}f} ± {sd:.{digits}f}"


def _label(run: dict[str, Any]) -> str:
    if run["method"] == "fft":
        return f"FFT lr={run['lr']:g}"
    if run["method"] == "mps":
        return f"MPS r={run['r']} chi={run['chi']}"
    return f"LoRA r={run['r']} alpha={run['alpha']:g} lr={run['lr']:g}"


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def profile_figure(path: Path, results: dict[str, Any], names: list[str], title: str, overlay_ranks: list[int]) -> str:
    """Final internal profiles (mean over trained layers, band = spread over seeds) per kind, with the
    Page curve and random rank-r overlays."""
    import artent_fast

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, kind in zip(axes, KINDS, strict=True):
        m, n = results["shapes"][kind]
        rs = results["row_sites"][kind]
        page = artent_fast.page_curve(m, n)
        bonds = range(1, len(page) + 1)
        ax.plot(bonds, page, color="0.55", lw=3, alpha=0.45, label="Page curve (Gaussian matrix)")
        for i, r in enumerate(overlay_ranks):
            prof = artent_fast.random_lowrank_profile(m, n, r, samples=8, seed=0)
            ax.plot(
                bonds,
                prof,
                ":",
                color=f"C{i}",
                lw=1.2,
                label="random rank-r B@A (dotted, colour of r)" if i == 0 else None,
            )
        for i, name in enumerate(names):
            run = results["runs"][name]
            rows = [e["mean_final"][kind] for e in _seeds(run) if kind in e["mean_final"]]
            if not rows:
                continue
            mean, sd = _mean_sd(rows)
            color = f"C{i}" if run["method"] == "lora" else STYLE[run["method"]][0]
            ls, marker = STYLE[run["method"]][1:]
            ax.plot(bonds, mean, ls, marker=marker, ms=3.5, color=color, label=_label(run))
            ax.fill_between(bonds, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
        ax.axvline(rs, color="0.75", lw=1, ls="--")
        ax.text(rs, ax.get_ylim()[1] * 0.98, " row/column bond", fontsize=8, va="top", color="0.4")
        ax.set(xlabel="bond", ylabel="entanglement entropy S (nats)", title=f"{kind} ({m}x{n})")
        _integer_ticks(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.04 + 0.06 * math.ceil(len(labels) / 4), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return _save(fig, path, layout=False)


def center_figure(path: Path, results: dict[str, Any], names: list[str]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    xs = [math.log(results["runs"][n]["r"]) for n in names]
    for kind, marker, color in (("q_proj", "o", "C0"), ("v_proj", "s", "C1")):
        ys = [[_final(e)[kind]["center"] for e in _seeds(results["runs"][n])] for n in names]
        ax.errorbar(
            xs,
            [statistics.fmean(y) for y in ys],
            yerr=[statistics.stdev(y) if len(y) > 1 else 0 for y in ys],
            fmt=marker + "-",
            color=color,
            capsize=3,
            label=f"{kind}: row/column-bond S (seed mean ± sd)",
        )
    lo, hi = min(xs), max(xs)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="S = ln r (the bound)")
    ax.plot([lo, hi], [lo / 2, hi / 2], ":", color="0.5", lw=1, label="S = ln r / 2 (criterion's floor)")
    ax.set(xlabel="ln r", ylabel="S at the row/column bond (nats)", title="LoRA's valley against ln r (alpha/r fixed)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def steps_figure(path: Path, results: dict[str, Any], names: list[str]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, key, ylabel in (
        (axes[0], "valley_depth", "valley depth (nats)"),
        (axes[1], "center", "S at the row/column bond (nats)"),
    ):
        for name in names:
            run = results["runs"][name]
            color, ls, marker = STYLE[run["method"]]
            for kind, kls in (("q_proj", ls), ("v_proj", ":")):
                steps = sorted(_seeds(run)[0]["summary"], key=int)
                rows = [[e["summary"][s][kind][key] for s in steps] for e in _seeds(run)]
                mean, sd = _mean_sd(rows)
                x = [int(s) for s in steps]
                ax.plot(x, mean, kls, marker=marker, color=color, label=f"{_label(run)}, {kind}")
                ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
        ax.set(xlabel="step", ylabel=ylabel)
        _integer_ticks(ax)
    axes[0].axhline(0, color="0.7", lw=1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("internal profiles during training (mean over trained layers; band: spread over seeds)", fontsize=11)
    fig.tight_layout(rect=(0, 0.04 + 0.06 * math.ceil(len(labels) / 3), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return _save(fig, path, layout=False)


def external_figure(path: Path, results: dict[str, Any]) -> str:
    import artent_fast

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    layers = list(range(len(results["base_cardy_layers"])))
    heads = results["base_cardy_heads"]
    for li, hs in enumerate(heads):
        ax.scatter([li] * len(hs), [c for c, _ in hs], s=8, color="0.6", label="one head" if li == 0 else None)
    ax.plot(
        layers,
        [c for c, _ in results["base_cardy_layers"]],
        "o-",
        color="C0",
        ms=4,
        label="layer mean profile (over heads and probes)",
    )
    for t in results["trained_layers"]:
        ax.axvspan(t - 0.5, t + 0.5, color="C1", alpha=0.12, lw=0)
    ax.set(
        xlabel="layer",
        ylabel=f"central charge c ({results.get('cardy_boundary', 'periodic')}-chain Cardy fit)",
        title="base model: c per layer and head (shaded: fine-tuned layers)",
    )
    _integer_ticks(ax)
    ax.legend(fontsize=8)
    ax = axes[1]
    base = torch.tensor(
        [h for li in results["trained_layers"] for h in results["base_external"][li]], dtype=torch.float64
    ).nanmean(0)
    bonds = range(1, len(base) + 1)
    fit = artent_fast.fit_cardy(base, boundary="open")
    ax.plot(bonds, base, "k-", lw=2.5, alpha=0.5, label=f"base: c={float(fit.c):.2f}, r2={float(fit.r2):.3f}")
    ax.plot(bonds, fit.predict(len(base) + 1, boundary="open"), "k:", lw=1, label="open-chain Cardy fit of the base")
    for _name, run in results["runs"].items():
        if run["method"] == "lora" and "base" not in run["axes"]:
            continue
        color, ls, marker = STYLE[run["method"]]
        e = _seeds(run)[0]["external"]
        prof = torch.tensor([h for layer in e[max(e, key=int)] for h in layer], dtype=torch.float64).nanmean(0)
        c, r2 = _seeds(run)[0]["cardy"][max(e, key=int)]
        ax.plot(bonds, prof, ls, marker=marker, ms=3, color=color, label=f"{_label(run)}: c={c:.2f}, r2={r2:.3f}")
    ax.set(xlabel="bond", ylabel="S (nats)", title="fine-tuned layers: mean external profile (final step, seed 0)")
    _integer_ticks(ax)
    ax.legend(fontsize=7)
    return _save(fig, path)


def nohair_figure(path: Path, results: dict[str, Any]) -> str:
    plt = _plt()
    pairs = list(results["nohair"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, key, title in (
        (axes[0], "cosine", "attention-output cosine"),
        (axes[1], "external_gap", "external gap (nats)"),
        (axes[2], "internal_gap", "internal gap (nats)"),
    ):
        vals = [[s["summary"][key] for s in results["nohair"][p].values()] for p in pairs]
        ax.bar(
            range(len(pairs)),
            [statistics.fmean(v) for v in vals],
            yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in vals],
            color=["C0", "C2", "C4"][: len(pairs)],
            capsize=4,
        )
        ax.set_xticks(range(len(pairs)), [p.replace(" vs ", "\nvs\n") for p in pairs], fontsize=7)
        ax.set_title(title, fontsize=10)
    axes[0].axhline(0.95, color="k", ls="--", lw=1)
    axes[1].axhline(0.05, color="k", ls="--", lw=1)
    fig.suptitle("no-hair comparison on the fine-tuned layers (bars: seed mean ± sd; dashed: criterion)", fontsize=11)
    return _save(fig, path)


def loss_figure(path: Path, results: dict[str, Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for i, (_name, run) in enumerate(results["runs"].items()):
        rows = [e["losses"] for e in _seeds(run)]
        mean, _ = _mean_sd(rows)
        k = max(1, len(mean) // 20)
        smooth = torch.nn.functional.avg_pool1d(mean.view(1, 1, -1), k, 1).view(-1) if k > 1 else mean
        color, ls, _ = STYLE[run["method"]]
        ax.plot(
            range(k, len(mean) + 1),
            smooth,
            ls,
            lw=1.2,
            color=color if run["method"] != "lora" else f"C{i % 10}",
            label=f"{_label(run)} (eval {_stat([e['eval_loss'] for e in _seeds(run)])})",
        )
    ax.axhline(
        results["base_eval_loss"], color="k", lw=1, ls=":", label=f"base eval loss {results['base_eval_loss']:.3f}"
    )
    ax.set(
        xlabel="step",
        ylabel="training loss (mean over seeds, running mean)",
        title="fine-tuning loss on the real text (answer half of each window)",
    )
    ax.legend(fontsize=6.5, ncol=2)
    return _save(fig, path)


def write_report(out: Path, results: dict[str, Any], runs: Any = None) -> Path:
    out = Path(out)
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
                        results,
                        by_axis["rank"] + others,
                        "final internal profiles: LoRA ranks, FFT, MPS (mean over fine-tuned layers; band: seeds)",
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
                            results,
                            by_axis[axis],
                            f"final internal profiles against LoRA {axis} (r={rs[by_axis[axis][0]]['r']})",
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
        figures.append(("external profiles and central charges", external_figure(out / f"{tag}_external.png", results)))
        if results.get("nohair"):
            figures.append(("no-hair comparison", nohair_figure(out / f"{tag}_nohair.png", results)))
        figures.append(("training loss", loss_figure(out / f"{tag}_loss.png", results)))
    except ImportError as exc:
        why_not = str(exc)
    s = results["settings"]
    lines = [
        f"# The paper's findings on {results['description']}",
        "",
        "Written by experiments/real_findings.py from results.json; the criteria, nulls and thresholds are in "
        "experiments/real_findings.py (CRITERIA) and experiments/verdicts.py.",
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
        es = _seeds(run)
        lines.append(
            f"| {_label(run)} | {es[0]['trainable']:,} | {_stat([e['eval_loss'] for e in es])} | "
            + " / ".join(_stat([_final(e)[k]["valley_depth"] for e in es]) for k in KINDS)
            + " | "
            + " / ".join(_stat([_final(e)[k]["center"] for e in es]) for k in KINDS)
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
                    _stat([x[k] for x in sm], 4) for k in ("cosine", "rel_distance", "external_gap", "internal_gap")
                )
                + " |"
            )
        lines.append("")
    lines += ["## Figures", ""]
    if figures:
        lines += [f"![{title}]({name})" for title, name in figures]
    else:
        lines.append(f"Figures skipped: {why_not}")
    from artent_fast.atomic import atomic_write

    atomic_write(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


def reevaluate(folder: Path) -> dict[str, Any]:
    """Judge the stored measurements of ``folder/results.json`` again with the current criteria and nulls
    (random-matrix nulls need only shapes and ranks; those that need the models, such as the attention-output
    seed floor, stay *pending rerun*), and rewrite results.json atomically."""
    from real_findings import CRITERIA, Run, findings

    from artent_fast.atomic import atomic_write

    results = json.loads((folder / "results.json").read_text())
    runs = [Run(**{k: v for k, v in r.items() if k != "seeds"}) for r in results["runs"].values()]
    results.pop("nulls", None)
    results["criteria"] = CRITERIA
    results["findings"] = findings(results, runs)
    atomic_write(folder / "results.json", json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="(re)write report.md and the figures from results.json")
    parser.add_argument("folder", type=Path)
    parser.add_argument(
        "--reevaluate", action="store_true", help="judge the stored measurements again (criteria, nulls) first"
    )
    parser.add_argument("--docs", nargs="*", type=Path, default=[], help="documents whose findings blocks to rewrite")
    args = parser.parse_args()
    res = reevaluate(args.folder) if args.reevaluate else json.loads((args.folder / "results.json").read_text())
    print(write_report(args.folder, res))
    update_docs(args.docs, Path(__file__).resolve().parents[1])
