"""Figures of a tracking history: profile vs bond (with theory), bond x step heatmap, valley depth over steps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from artent_fast.api import page_curve, random_lowrank_profile
from artent_fast.patterns import module_name
from artent_fast.plotting import (
    integer_ticks,
    legend_outside,
    line_style,
    mean_with_band,
    new_figure,
    require_matplotlib,
    save_figure,
)
from artent_fast.plotting.profile_figure import plot_profile
from artent_fast.tracking.records import UPDATE_KINDS, read_history, record_label


def projection(label: str) -> str:
    """The module's role without layer, part or adapter: ``model.layers.3.self_attn.q_proj@default`` -> ``q_proj``."""
    return label.split("@", 1)[0].split("[", 1)[0].rsplit(".", 1)[-1]


def as_records(history: Any) -> list[dict]:
    """Accept a list of dicts, a DataFrame, or a history file/folder path."""
    if isinstance(history, (str, Path)):
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
        raise ValueError(
            f"no {'/'.join(kinds)} records{'' if wanted is None else f' for {sorted(wanted)}'} in the history"
        )
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
    the profile of a random rank-r product with Gaussian factors (docs/definitions.md, section 5).
    When more than ``max_curves`` units were tracked, the first ``max_curves`` are drawn, spread over
    the kinds (q, v, ...), and the title says how many are shown.
    """
    groups = select(as_records(history), modules, UPDATE_KINDS)
    if step is None:
        step = max(r["step"] for rs in groups.values() for r in rs)
    at_step = {label: r for label, rs in groups.items() for r in rs if r["step"] == step}
    if not at_step:
        raise ValueError(f"no records at step {step}")
    curves = dict(spread_over_kinds(list(at_step.items()), max_curves))
    overlays: dict[str, Any] = {}
    if theory:
        for r in curves.values():
            m, n = r["shape"]
            overlays.setdefault(f"Page curve {m}x{n}", page_curve(m, n))
            if r.get("rank"):
                overlays.setdefault(f"random rank-{r['rank']} {m}x{n}", random_lowrank_profile(m, n, r["rank"]))
    note = None if len(curves) == len(at_step) else f"{len(curves)} of {len(at_step)} tracked modules shown"
    shapes_at: dict[int, list[str]] = {}  # each shape's own row/column bond: its row_sites
    for r in curves.values():
        shape = "x".join(map(str, r["shape"]))
        if shape not in shapes_at.setdefault(r["row_sites"], []):
            shapes_at[r["row_sites"]].append(shape)
    bonds = {bond: ", ".join(shapes) for bond, shapes in shapes_at.items()}
    ranks = sorted({int(r["rank"]) for r in curves.values() if r.get("rank")})
    return plot_profile(
        {module_name(label): r["entropies"] for label, r in curves.items()},
        overlays=overlays,
        row_sites=next(iter(bonds)) if len(bonds) == 1 else bonds,
        bounds={f"ln {k}: the most a rank-{k} update holds at its row/column bond": math.log(k) for k in ranks},
        kind_of=projection,
        note=note,
        title=title or f"Entanglement profiles of the weight updates, step {step}",
        path=path,
    )


def spread_over_kinds(items: list[tuple[str, Any]], limit: int) -> list[tuple[str, Any]]:
    """At most ``limit`` items, taken round-robin over the projection kinds so each kind is shown."""
    by_kind: dict[str, list] = {}
    for item in items:
        by_kind.setdefault(projection(item[0]), []).append(item)
    chosen: list = []
    while len(chosen) < min(limit, len(items)):
        for group in by_kind.values():
            if group and len(chosen) < limit:
                chosen.append(group.pop(0))
    order = {label: i for i, (label, _) in enumerate(items)}
    return sorted(chosen, key=lambda item: order[item[0]])


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
    fig, ax = new_figure(plt)
    ax.grid(False)
    bonds = len(grid[0])
    image = ax.imshow(
        grid,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="viridis",
        extent=(0.5, bonds + 0.5, steps[0] - 0.5, steps[-1] + 0.5),
    )
    fig.colorbar(image, ax=ax, label="entropy (nats)", pad=0.02)
    row_col_bond = records[0]["row_sites"]  # that bond's number, the x of its column
    ax.axvline(row_col_bond, color="tab:red", lw=1.2, ls="--")
    ax.annotate(
        f"row/column bond ({row_col_bond})",
        xy=(row_col_bond, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(0, 3),
        textcoords="offset points",
        ha="center",
        va="bottom",
        color="tab:red",
        fontsize=8,
    )
    ax.set_xlabel("bond")
    ax.set_ylabel("step")
    integer_ticks(ax.xaxis)
    integer_ticks(ax.yaxis)
    ax.set_title(title or f"Entropy per bond and step: {module_name(label)}", fontsize=10, pad=14)
    return save_figure(fig, plt, path)


def plot_valley_depth(
    history: Any,
    *,
    modules: Iterable[str] | None = None,
    max_curves: int = 12,
    title: str = "Valley depth at the row/column bond",
    path: str | Path | None = None,
):
    """Valley depth over steps, one line per unit; one line style (and marker) per projection kind.

    With more than ``max_curves`` units (a whole model: every layer's q and v, say), one line per
    projection kind instead: the mean over its units (layers) at each step, in a band from the lowest to
    the highest, so every layer counts and no colour repeats. The depth is the mean of the highest entropy
    on each side of the row/column bond minus the entropy at it (docs/definitions.md, section 1.7).
    """
    plt = require_matplotlib()
    groups = select(as_records(history), modules, UPDATE_KINDS)
    fig, ax = new_figure(plt)

    def depth(r: dict) -> float:
        return math.nan if r.get("valley_depth") is None else r["valley_depth"]

    if len(groups) <= max_curves:
        kinds: dict[str, int] = {}
        for label, records in groups.items():
            records = sorted(records, key=lambda r: r["step"])
            kind = kinds.setdefault(projection(label), len(kinds))
            style = line_style(kind, many_points=len(records) > 30)
            ax.plot([r["step"] for r in records], [depth(r) for r in records], label=module_name(label), **style)
        note = ""
    else:
        by_kind: dict[str, dict[int, list[float]]] = {}
        counts: dict[str, int] = {}
        for label, records in groups.items():
            kind = projection(label)
            counts[kind] = counts.get(kind, 0) + 1
            for r in records:
                if depth(r) == depth(r):  # NaN (a skipped step) does not count
                    by_kind.setdefault(kind, {}).setdefault(r["step"], []).append(depth(r))
        for i, (kind, per) in enumerate(sorted(by_kind.items())):
            mean_with_band(ax, per, f"{kind}: mean of {counts[kind]}", **line_style(i, many_points=len(per) > 30))
        note = f"\n{len(groups)} modules: mean per kind over layers, band min-max"
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("valley depth (nats)")
    integer_ticks(ax.xaxis)
    ax.set_title(title + note, fontsize=10)
    legend_outside(ax)
    return save_figure(fig, plt, path)


def plot_losses(losses: Sequence[float], *, title: str = "Training loss", path: str | Path | None = None):
    """Training loss per step, in the same style and size as the other figures."""
    plt = require_matplotlib()
    fig, ax = new_figure(plt)
    ax.plot(range(1, len(losses) + 1), losses, lw=1.2, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    integer_ticks(ax.xaxis)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, plt, path)
