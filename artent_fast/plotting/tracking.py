"""Figures of a tracking history: profile vs bond (with theory), bond x step heatmap, valley depth over steps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from artent_fast.plotting import require_matplotlib, save_figure
from artent_fast.plotting.profile import plot_profile
from artent_fast.tracking.records import record_label

UPDATE_KINDS = ("lora", "dense")
WRAPPER_PREFIXES = ("base_model.model.",)  # peft's wrapping, dropped from figure labels only


def display(label: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        label = label.removeprefix(prefix)
    return label


def as_records(history: Any) -> list[dict]:
    """Accept a list of dicts, a DataFrame, or a history file/folder path."""
    if isinstance(history, (str, Path)):
        from artent_fast.tracking.records import read_history

        return read_history(history)
    if hasattr(history, "to_dict"):
        return history.to_dict("records")
    return list(history)


def select(records: list[dict], modules: Iterable[str] | None, kinds: Sequence[str]) -> dict[str, list[dict]]:
    """Records of the wanted kinds grouped by label (``module[part]@adapter``), in first-seen order."""
    wanted = None if modules is None else set([modules] if isinstance(modules, str) else modules)
    out: dict[str, list[dict]] = {}
    for r in records:
        if r.get("kind") not in kinds:
            continue
        label = record_label(r)
        if wanted is None or label in wanted or r.get("module") in wanted:
            out.setdefault(label, []).append(r)
    if not out:
        raise ValueError(f"no {'/'.join(kinds)} records{'' if wanted is None else f' for {sorted(wanted)}'} "
                         "in the history")
    return out


def plot_tracked_profile(
    history: Any,
    *,
    step: int | None = None,
    modules: Iterable[str] | None = None,
    max_curves: int = 8,
    theory: bool = True,
    title: str | None = None,
    path: str | Path | None = None,
):
    """Entropy vs bond of each unit at ``step`` (default: the last recorded), with theory overlays.

    Overlays (dashed): the Page curve of a Gaussian matrix of the same shape and, for LoRA units,
    the profile of a random rank-r product with Gaussian factors (SPEC section 5).
    """
    from artent_fast.api import page_curve, random_lowrank_profile

    groups = select(as_records(history), modules, UPDATE_KINDS)
    if step is None:
        step = max(r["step"] for rs in groups.values() for r in rs)
    at_step = {label: r for label, rs in groups.items() for r in rs if r["step"] == step}
    if not at_step:
        raise ValueError(f"no records at step {step}")
    curves = dict(list(at_step.items())[:max_curves])
    overlays: dict[str, Any] = {}
    if theory:
        for r in curves.values():
            m, n = r["shape"]
            overlays.setdefault(f"Page curve {m}x{n}", page_curve(m, n))
            if r.get("rank"):
                overlays.setdefault(f"random rank-{r['rank']} {m}x{n}", random_lowrank_profile(m, n, r["rank"]))
    first = next(iter(curves.values()))
    return plot_profile({display(label): r["entropies"] for label, r in curves.items()}, overlays=overlays,
                        center_bond=first["row_sites"] - 1, title=title or f"entanglement profiles, step {step}",
                        path=path)


def plot_bond_heatmap(
    history: Any, *, module: str | None = None, title: str | None = None, path: str | Path | None = None
):
    """Entropy of every bond (x) at every recorded step (y) for one unit (default: the first tracked)."""
    plt = require_matplotlib()
    groups = select(as_records(history), None if module is None else [module], UPDATE_KINDS)
    label, records = next(iter(groups.items()))
    records = sorted(records, key=lambda r: r["step"])
    grid = [[math.nan if e is None else e for e in r["entropies"]] for r in records]
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bonds = len(grid[0])
    image = ax.imshow(grid, aspect="auto", origin="lower", interpolation="nearest",
                      extent=(0.5, bonds + 0.5, steps[0] - 0.5, steps[-1] + 0.5))
    fig.colorbar(image, ax=ax, label="entropy (nats)")
    ax.axvline(records[0]["row_sites"], color="white", lw=0.8, ls=":", label="row/column bond")
    ax.set_xlabel("bond")
    ax.set_ylabel("step")
    ax.set_title(title or f"{display(label)}: entropy per bond and step", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, plt, path)


def plot_valley_depth(
    history: Any,
    *,
    modules: Iterable[str] | None = None,
    max_curves: int = 12,
    title: str = "valley depth at the row/column bond",
    path: str | Path | None = None,
):
    """Valley depth (neighbours' mean entropy minus the row/column bond's) over steps, one line per unit."""
    plt = require_matplotlib()
    groups = select(as_records(history), modules, UPDATE_KINDS)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, records in list(groups.items())[:max_curves]:
        records = sorted(records, key=lambda r: r["step"])
        depth = [math.nan if r.get("valley_depth") is None else r["valley_depth"] for r in records]
        ax.plot([r["step"] for r in records], depth, marker="o", ms=2, lw=1, label=display(label))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("valley depth (nats)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, plt, path)
