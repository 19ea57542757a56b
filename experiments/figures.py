"""The figures of a findings report, from results.json alone, in the house style of
:mod:`artent_fast.plotting` (legends outside the data, integer bond and step ticks, 200 dpi, atomic writes).
Each function writes one PNG and returns its file name; matplotlib missing raises ImportError."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch

import artent_fast
from artent_fast.plotting import FONT_SIZE, integer_ticks, legend_outside, new_figure, require_matplotlib, save_figure

KINDS = ("q_proj", "v_proj")
Curve = tuple[str, list[list[float]], "str | None", str]  # label, rows (one profile per seed), colour, method
Panel = tuple[str, int, int, int, list[Curve]]  # title, m, n, row_sites, curves
STYLE = {"fft": ("C3", "-", "s"), "lora": ("C0", "-", "o"), "mps": ("C2", "--", "^")}  # colour, line, marker


# -- reading results.json (both model sources) ------------------------------------------------------------
def seed_entries(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's per-seed entries: several for a pretrained model, the run's own entry for the built model."""
    if "seeds" not in run:
        return [run]
    return [run["seeds"][k] for k in sorted(run["seeds"], key=int)]


def final(entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    return entry["summary"][max(entry["summary"], key=int)]


def mean_sd(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(rows, dtype=torch.float64)
    sd = t.std(0) if len(rows) > 1 else torch.zeros(t.shape[1:], dtype=torch.float64)
    return t.nanmean(0), sd


def stat(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` of the finite values, ``n/a`` without any."""
    v = [x for x in values if x == x]
    if not v:
        return "n/a"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.{digits}f} ± {sd:.{digits}f}"


def label(run: dict[str, Any]) -> str:
    if run["method"] == "fft":
        return f"FFT lr={run['lr']:g}"
    if run["method"] == "mps":
        return f"MPS r={run['r']} chi={run['chi']}"
    return f"LoRA r={run['r']} alpha={run['alpha']:g} lr={run['lr']:g}"


def _save(fig, plt, path: Path) -> str:
    save_figure(fig, plt, path)
    return path.name


def _shared_legend(fig, ax) -> None:
    """One legend for the panels of ``fig`` (those of ``ax``), to the right of the figure."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False, fontsize=FONT_SIZE - 1)


# -- internal profiles --------------------------------------------------------------------------------------
def theory_overlay(ax, m: int, n: int, ranks: list[int], row_sites: int) -> None:
    """The Page curve of an m x n Gaussian matrix, random rank-r products ``B @ A`` (dotted, colour of r) and
    ``ln r`` (ticks at the row/column bond, dashed grey)."""
    page = artent_fast.page_curve(m, n)
    bonds = range(1, len(page) + 1)
    ax.plot(bonds, page, color="0.55", lw=3, alpha=0.45, label="Page curve (Gaussian matrix)")
    for i, r in enumerate(ranks):
        prof = artent_fast.random_lowrank_profile(m, n, r, samples=8, seed=0)
        ax.plot(
            bonds,
            prof,
            ":",
            color=f"C{i}",
            lw=1.2,
            label="random rank-r B@A (dotted); ln r (ticks)" if i == 0 else None,
        )
        ax.hlines(math.log(r), row_sites - 1.4, row_sites + 0.4, color=f"C{i}", lw=1)
    ax.axvline(row_sites, color="0.75", lw=1, ls="--")


def profile_figure(path: Path, title: str, panels: list[Panel], ranks: list[int]) -> str:
    """One panel per ``(title, m, n, row_sites, curves)``; a curve is ``(label, rows, colour, method)``: its
    mean over the rows (seeds) with a band of one sd, over the theory overlay."""
    plt = require_matplotlib()
    fig, axes = new_figure(plt, (6.5 * len(panels), 4.4), ncols=len(panels), squeeze=False)
    for ax, (panel, m, n, rs, curves) in zip(axes[0], panels, strict=True):
        theory_overlay(ax, m, n, ranks, rs)
        for i, (name, rows, color, method) in enumerate(curves):
            if not rows:
                continue
            mean, sd = mean_sd(rows)
            bonds = range(1, len(mean) + 1)
            c = color or f"C{i}"
            ls, marker = STYLE.get(method, STYLE["lora"])[1:]
            ax.plot(bonds, mean, ls, marker=marker, ms=3.5, color=c, label=name)
            if len(rows) > 1:
                ax.fill_between(bonds, mean - sd, mean + sd, color=c, alpha=0.2, lw=0)
        ax.set(xlabel=f"bond (row/column bond = {rs})", ylabel="entanglement entropy S (nats)", title=panel)
        integer_ticks(ax.xaxis)
    fig.suptitle(title, fontsize=FONT_SIZE + 1)
    _shared_legend(fig, axes[0][0])
    return _save(fig, plt, path)


def center_figure(path: Path, results: dict[str, Any], names: list[str]) -> str:
    plt = require_matplotlib()
    fig, ax = new_figure(plt, (6.5, 4.6))
    xs = [math.log(results["runs"][n]["r"]) for n in names]
    for kind, marker, color in (("q_proj", "o", "C0"), ("v_proj", "s", "C1")):
        ys = [[final(e)[kind]["center"] for e in seed_entries(results["runs"][n])] for n in names]
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
    legend_outside(ax)
    return _save(fig, plt, path)


def steps_figure(path: Path, results: dict[str, Any], names: list[str]) -> str:
    plt = require_matplotlib()
    fig, axes = new_figure(plt, (12, 4.4), ncols=2)
    for ax, key, ylabel in (
        (axes[0], "valley_depth", "valley depth (nats)"),
        (axes[1], "center", "S at the row/column bond (nats)"),
    ):
        for name in names:
            run = results["runs"][name]
            color, ls, marker = STYLE[run["method"]]
            for kind, kls in (("q_proj", ls), ("v_proj", ":")):
                steps = sorted(seed_entries(run)[0]["summary"], key=int)
                rows = [[e["summary"][s][kind][key] for s in steps] for e in seed_entries(run)]
                mean, sd = mean_sd(rows)
                x = [int(s) for s in steps]
                ax.plot(x, mean, kls, marker=marker, color=color, label=f"{label(run)}, {kind}")
                ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
        ax.set(xlabel="step", ylabel=ylabel)
        integer_ticks(ax.xaxis)
    axes[0].axhline(0, color="0.7", lw=1)
    fig.suptitle(
        "internal profiles during training (mean over trained layers; band: spread over seeds)", fontsize=FONT_SIZE + 1
    )
    _shared_legend(fig, axes[0])
    return _save(fig, plt, path)


# -- external profiles --------------------------------------------------------------------------------------
def cardy_panel(ax, series: list[tuple[str, list[float], dict[str, Any]]]) -> None:
    """Each ``(label, profile, style)`` with its open-chain Cardy fit (dotted, same colour)."""
    for name, prof, style in series:
        prof = torch.as_tensor(prof, dtype=torch.float64)
        fit = artent_fast.fit_cardy(prof, boundary="open")
        bonds = range(1, len(prof) + 1)
        line = ax.plot(bonds, prof, label=f"{name}: c={float(fit.c):.2f}, r2={float(fit.r2):.3f}", **style)[0]
        ax.plot(bonds, fit.predict(len(prof) + 1, boundary="open"), ":", lw=1, color=line.get_color())
    ax.set(xlabel="bond", ylabel="S (nats)")
    integer_ticks(ax.xaxis)


def external_figure(path: Path, results: dict[str, Any], names: list[str]) -> str:
    """Built model: the mean external profiles (over layers, heads, probes) of the base model and ``names``."""
    plt = require_matplotlib()
    fig, ax = new_figure(plt, (7, 4.2))
    series = [("base model", results["base_external"])] + [(k, results["runs"][k]["external"]) for k in names]
    cardy_panel(
        ax,
        [
            (name, torch.tensor(per_layer, dtype=torch.float64).nanmean(0), {"marker": "o", "ms": 3, "color": f"C{i}"})
            for i, (name, per_layer) in enumerate(series)
        ],
    )
    ax.set_title("external (attention) profiles, mean over layers/heads; open-chain Cardy fits")
    legend_outside(ax)
    return _save(fig, plt, path)


def layers_external_figure(path: Path, results: dict[str, Any]) -> str:
    """Pretrained model: c per layer and head of the base model, and the fine-tuned block's mean external profile
    of the base model and of each method's run (final step, seed 0) with their Cardy fits."""
    plt = require_matplotlib()
    fig, axes = new_figure(plt, (13, 4.4), ncols=2)
    ax = axes[0]
    layers = list(range(len(results["base_cardy_layers"])))
    for li, hs in enumerate(results["base_cardy_heads"]):
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
    integer_ticks(ax.xaxis)
    legend_outside(ax)
    base = torch.tensor(
        [h for li in results["trained_layers"] for h in results["base_external"][li]], dtype=torch.float64
    ).nanmean(0)
    series = [("base", base, {"color": "k", "lw": 2.5, "alpha": 0.5})]
    for run in results["runs"].values():
        if run["method"] == "lora" and "base" not in run["axes"]:
            continue
        color, ls, marker = STYLE[run["method"]]
        e = seed_entries(run)[0]["external"]
        prof = torch.tensor([h for layer in e[max(e, key=int)] for h in layer], dtype=torch.float64).nanmean(0)
        series.append((label(run), prof, {"ls": ls, "marker": marker, "ms": 3, "color": color}))
    cardy_panel(axes[1], series)
    axes[1].set_title("fine-tuned layers: mean external profile (final step, seed 0)")
    legend_outside(axes[1])
    return _save(fig, plt, path)


# -- no-hair and loss ---------------------------------------------------------------------------------------
def nohair_figure(path: Path, results: dict[str, Any]) -> str:
    plt = require_matplotlib()
    pairs = list(results["nohair"])
    fig, axes = new_figure(plt, (12, 3.8), ncols=3)
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
        ax.set_xticks(range(len(pairs)), [p.replace(" vs ", "\nvs\n") for p in pairs], fontsize=FONT_SIZE - 2)
        ax.set_title(title, fontsize=FONT_SIZE + 1)
    axes[0].axhline(0.95, color="k", ls="--", lw=1)
    axes[1].axhline(0.05, color="k", ls="--", lw=1)
    fig.suptitle(
        "no-hair comparison on the fine-tuned layers (bars: seed mean ± sd; dashed: criterion)", fontsize=FONT_SIZE + 1
    )
    return _save(fig, plt, path)


def loss_figure(path: Path, results: dict[str, Any], title: str) -> str:
    """The training loss of every run (mean over seeds, running mean over a 20th of the steps)."""
    plt = require_matplotlib()
    fig, ax = new_figure(plt, (8, 4.4))
    for i, run in enumerate(results["runs"].values()):
        rows = [e["losses"] for e in seed_entries(run)]
        mean, _ = mean_sd(rows)
        k = max(1, len(mean) // 20)
        smooth = torch.nn.functional.avg_pool1d(mean.view(1, 1, -1), k, 1).view(-1) if k > 1 else mean
        color, ls, _ = STYLE[run["method"]]
        ax.plot(
            range(k, len(mean) + 1),
            smooth,
            ls,
            lw=1.2,
            color=color if run["method"] != "lora" else f"C{i % 10}",
            label=f"{label(run)} (eval {stat([e['eval_loss'] for e in seed_entries(run)])})",
        )
    ax.axhline(
        results["base_eval_loss"], color="k", lw=1, ls=":", label=f"base eval loss {results['base_eval_loss']:.3f}"
    )
    ax.set(xlabel="step", ylabel="training loss (mean over seeds, running mean)", title=title)
    integer_ticks(ax.xaxis)
    legend_outside(ax, ncol=1 + len(results["runs"]) // 12)
    return _save(fig, plt, path)
