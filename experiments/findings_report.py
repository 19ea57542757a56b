"""Figures and ``report.md`` for experiments/paper_findings.py (from its ``results`` dict alone)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from artent_fast.atomic import atomic_write


def _plt():
    from artent_fast.plotting import require_matplotlib

    return require_matplotlib()


def _save(fig, path: Path) -> str:
    from artent_fast.plotting import save_figure

    save_figure(fig, _plt(), path)
    return path.name


def _theory(ax, m: int, n: int, ranks: list[int], row_sites: int) -> None:
    import artent_fast

    page = artent_fast.page_curve(m, n)
    bonds = range(1, len(page) + 1)
    ax.plot(bonds, page, color="0.6", lw=3, alpha=0.5, label="Page curve (Gaussian)")
    for i, r in enumerate(ranks):
        prof = artent_fast.random_lowrank_profile(m, n, r, samples=8, seed=0)
        ax.plot(bonds, prof, ":", color=f"C{i}", lw=1)
        ax.hlines(math.log(r), row_sites - 1.4, row_sites + 0.4, color=f"C{i}", lw=1)
    ax.axvline(row_sites, color="0.8", lw=1)
    ax.plot([], [], ":", color="k", label="random rank-r B@A (dotted); ln r (ticks)")


def profile_figure(
    path: Path, title: str, curves: list[tuple[str, list[float]]], results: dict[str, Any], ranks: list[int]
) -> str:
    plt = _plt()
    m, n, row_sites = results["layout"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _theory(ax, m, n, ranks, row_sites)
    for i, (label, prof) in enumerate(curves):
        ax.plot(range(1, len(prof) + 1), prof, "o-", ms=3, color=f"C{i}", label=label)
    ax.set(xlabel=f"bond (row/column bond = {row_sites})", ylabel="S (nats)", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def external_figure(path: Path, results: dict[str, Any], names: list[str]) -> str:
    import artent_fast

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = [("base model", results["base_external"])] + [(k, results["runs"][k]["external"]) for k in names]
    for i, (label, per_layer) in enumerate(series):
        mean = torch.tensor(per_layer, dtype=torch.float64).nanmean(0)
        fit = artent_fast.fit_cardy(mean, boundary="open")
        bonds = range(1, len(mean) + 1)
        ax.plot(bonds, mean, "o-", ms=3, color=f"C{i}", label=f"{label}: c={float(fit.c):.2f}, r2={float(fit.r2):.3f}")
        ax.plot(bonds, fit.predict(len(mean) + 1, boundary="open"), ":", color=f"C{i}")
    ax.set(
        xlabel="bond",
        ylabel="S (nats)",
        title="external (attention) profiles, mean over layers/heads; open-chain Cardy fits",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def loss_figure(path: Path, results: dict[str, Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results["runs"].items():
        ax.plot(range(1, len(r["losses"]) + 1), r["losses"], lw=1, label=name)
    ax.set(xlabel="step", ylabel="training loss", title="fine-tuning loss (same batches for every run)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def write_report(out: Path, results: dict[str, Any], runs: list) -> Path:
    """Write the figures and ``report.md`` into ``out``; figures are skipped without matplotlib."""
    rs = results["runs"]
    lora = [r for r in runs if r.method == "lora"]
    others = [r for r in runs if r.method != "lora"]
    figures: list[tuple[str, str]] = []
    try:
        for axis, key in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr")):
            sweep = sorted((r for r in lora if axis in r.axes), key=lambda r, k=key: getattr(r, k))
            if not sweep:
                continue
            curves = [(f"LoRA {axis}={getattr(r, key):g}", rs[r.name]["mean_final"]) for r in sweep]
            if axis == "rank":
                curves += [(r.name, rs[r.name]["mean_final"]) for r in others]
            ranks = sorted({r.r for r in sweep})
            figures.append(
                (
                    f"internal profiles against {axis} (final step, mean over q_proj/v_proj of all layers)",
                    profile_figure(out / f"internal_{axis}.png", f"internal profiles: {axis}", curves, results, ranks),
                )
            )
        for r in [next((r for r in lora if "base" in r.axes), None), *[r for r in others if r.method == "fft"]]:
            if r is None:
                continue
            curves = [(f"step {k}", mean_profile(v)) for k, v in rs[r.name]["profiles"].items()]
            figures.append(
                (
                    f"{r.name}: internal profile against training step",
                    profile_figure(
                        out / f"internal_step_{r.method}.png",
                        f"{r.name}: profile vs step",
                        curves,
                        results,
                        [r.r] if r.r else [],
                    ),
                )
            )
        shown = [r.name for r in others] + [r.name for r in lora if "base" in r.axes]
        figures.append(
            ("external profiles with Cardy fits (dotted)", external_figure(out / "external.png", results, shown))
        )
        figures.append(("training loss", loss_figure(out / "loss.png", results)))
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


def mean_profile(profiles: dict[str, list[float]]) -> list[float]:
    t = torch.tensor(list(profiles.values()), dtype=torch.float64)
    return [float(x) for x in t.nanmean(0)]
