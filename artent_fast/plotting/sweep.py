"""Figures from an ``artent sweep`` table: profiles with theory, layer x bond heatmaps, valley depth vs step."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from artent_fast.plotting import mean_with_band, require_matplotlib, save_figure
from artent_fast.plotting.profile_figure import plot_profile
from artent_fast.tracking.records import valley_depth


def family(module: str) -> str:
    """The module's role without its layer: ``model.layers.3.self_attn.q_proj`` -> ``q_proj``."""
    return module.rsplit(".", 1)[-1]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _records(table: Mapping[str, list]) -> list[dict[str, Any]]:
    cols = list(table)
    return [dict(zip(cols, row, strict=True)) for row in zip(*table.values(), strict=True)]


def _label(rec: dict[str, Any]) -> str:
    return f"step {rec['step']}" if rec.get("step") is not None else Path(str(rec["checkpoint"])).name


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def row_sites_of(records: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple]) -> dict[tuple, int]:
    """``key(record) -> row_sites``: the table's one reader of its boolean ``row_col_bond`` column, which marks
    the row whose ``bond`` is the row/column bond (that bond's number is the matrix's number of row sites)."""
    return {key(rec): rec["bond"] for rec in records if rec["row_col_bond"]}


def profile_groups(table: Mapping[str, list]) -> dict[tuple, dict[str, Any]]:
    """``(family, kind, rows, cols) -> {"profiles": {checkpoint label: mean profile over layers},
    "theory": curve, "row_sites": k}`` (``k``: the row/column bond's number, None for a matrix without one)."""
    acc: dict[tuple, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    theory: dict[tuple, dict[int, float]] = defaultdict(dict)
    order: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    records = _records(table)

    def group(rec: dict[str, Any]) -> tuple:
        return (family(rec["module"]), rec["kind"], rec["rows"], rec["cols"])

    for rec in records:
        key = group(rec)
        label = _label(rec)
        acc[key][label][rec["bond"]].append(rec["entropy"])
        order[key][label] = (rec["step"] if rec.get("step") is not None else -1, str(rec["checkpoint"]))
        theory[key][rec["bond"]] = rec["theory"]
    row_sites = row_sites_of(records, group)
    out = {}
    for key, per_label in acc.items():
        labels = sorted(per_label, key=lambda lab: order[key][lab])
        bonds = sorted(theory[key])
        out[key] = {
            "profiles": {lab: [_mean(per_label[lab][b]) for b in bonds] for lab in labels},
            "theory": [theory[key][b] for b in bonds],
            "row_sites": row_sites.get(key),
        }
    return out


def valley_depths(table: Mapping[str, list]) -> dict[tuple, list[tuple[int, float]]]:
    """``(family, kind) -> [(step, mean depth)]``, the depth averaged over layers (see
    :func:`valley_depths_by_step`)."""
    return {k: sorted((s, _mean(v)) for s, v in per.items()) for k, per in valley_depths_by_step(table).items()}


def valley_depths_by_step(table: Mapping[str, list]) -> dict[tuple, dict[int, list[float]]]:
    """``(family, kind) -> {step: [depth of each matrix (layer)]}``; the valley depth is the tracker's
    (:func:`artent_fast.tracking.records.valley_depth`: the mean of the highest entropy on each side of the
    row/column bond minus the entropy at it). Checkpoints without a step use their order."""
    by_matrix: dict[tuple, dict[int, float]] = defaultdict(dict)
    steps: dict[str, int] = {}
    records = _records(table)

    def matrix(rec: dict[str, Any]) -> tuple:
        return (family(rec["module"]), rec["kind"], str(rec["checkpoint"]), rec["module"])

    for rec in records:
        ckpt = str(rec["checkpoint"])
        steps.setdefault(ckpt, rec["step"] if rec.get("step") is not None else len(steps))
        by_matrix[matrix(rec)][rec["bond"]] = rec["entropy"]
    row_sites = row_sites_of(records, matrix)
    depth: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, bonds in by_matrix.items():
        if key not in row_sites:
            continue
        profile = [bonds[b] for b in sorted(bonds)]
        depth[(key[0], key[1])][steps[key[2]]].append(valley_depth(profile, row_sites[key]))
    return {k: dict(per) for k, per in depth.items()}


def resolve_checkpoint(table: Mapping[str, list], checkpoint: str | None) -> str | None:
    """``checkpoint`` as written in the table (given so, or by its folder name); a ValueError naming
    ``--checkpoint`` and the table's checkpoints when it is none of them."""
    if checkpoint is None:
        return None
    known = list(dict.fromkeys(str(c) for c in table.get("checkpoint", [])))
    if checkpoint in known:
        return checkpoint
    by_name = [c for c in known if Path(c).name == checkpoint or str(Path(c)) == str(Path(checkpoint))]
    if len(by_name) == 1:
        return by_name[0]
    shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
    what = "names several" if by_name else "is not"
    raise ValueError(f"--checkpoint {checkpoint!r} {what} a checkpoint of the table (it has: {shown})")


def plot_sweep(table: Mapping[str, list], out: str | Path, *, checkpoint: str | None = None) -> list[Path]:
    """Write every figure into ``out``; returns their paths.

    ``profiles_<family>_<kind>_<shape>.png`` (mean profile per checkpoint, theory dashed),
    ``heatmap_<family>_<kind>_<shape>.png`` (layer x bond for ``checkpoint``, default the last step),
    ``valley_depth.png`` (valley depth against step, one line per family and kind).
    """
    plt = require_matplotlib()
    if not table or not table.get("entropy"):
        raise ValueError("the sweep table is empty: nothing to plot")
    checkpoint = resolve_checkpoint(table, checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (fam, kind, m, n), group in profile_groups(table).items():
        name = _slug(f"{fam}_{kind}_{m}x{n}")
        path = out / f"profiles_{name}.png"
        plot_profile(
            group["profiles"],
            overlays={"theory": group["theory"]},
            row_sites=group["row_sites"],
            title=f"{fam} ({kind}, {m}x{n}): mean over layers",
            path=path,
        )
        written.append(path)
    written += _heatmaps(plt, table, out, checkpoint)
    depths = valley_depths_by_step(table)
    if depths:
        path = out / "valley_depth.png"
        save_figure(_valley_figure(plt, depths), plt, path)
        written.append(path)
    return written


def _valley_figure(plt, depths: dict[tuple, dict[int, list[float]]]):
    """Valley depth against step (mean over layers, a band from the lowest to the highest layer); with one
    checkpoint only, one bar per module family (mean over layers, whiskers from lowest to highest)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=200)
    steps = {s for per in depths.values() for s in per}
    keys = sorted(depths)
    if len(steps) <= 1:
        values = [next(iter(depths[k].values())) for k in keys]
        means = [_mean(v) for v in values]
        pairs = list(zip(means, values, strict=True))
        spread = [[m - min(v) for m, v in pairs], [max(v) - m for m, v in pairs]]
        ax.bar(range(len(keys)), means, yerr=spread, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(keys)), [f"{fam}\n({kind})" for fam, kind in keys], fontsize=8)
        ax.set_title(
            "Entanglement valley depth at the row/column bond\none checkpoint: mean over layers, whiskers min-max",
            fontsize=10,
        )
    else:
        for (fam, kind), per in sorted(depths.items()):
            mean_with_band(ax, per, f"{fam} ({kind})", marker="o")
        ax.set_xlabel("step")
        ax.set_title("Entanglement valley depth at the row/column bond\nmean over layers; band: min-max", fontsize=10)
        ax.legend(fontsize=8)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_ylabel("valley depth (nats)")
    ax.grid(alpha=0.3)
    return fig


def _heatmaps(plt, table: Mapping[str, list], out: Path, checkpoint: str | None) -> list[Path]:
    recs = _records(table)
    if checkpoint is None:  # the last checkpoint by step (then by name)
        checkpoint = max({(r["step"] if r["step"] is not None else -1, str(r["checkpoint"])) for r in recs})[1]
    grids: dict[tuple, dict[tuple[int, int], float]] = defaultdict(dict)
    for r in recs:
        if str(r["checkpoint"]) == checkpoint and r["layer"] is not None:
            grids[(family(r["module"]), r["kind"], r["rows"], r["cols"])][(r["layer"], r["bond"])] = r["entropy"]
    if not grids:
        return []
    written = []
    for (fam, kind, m, n), cells in grids.items():
        layers = sorted({k[0] for k in cells})
        bonds = sorted({k[1] for k in cells})
        grid = [[cells.get((lay, b), float("nan")) for b in bonds] for lay in layers]
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.18 * len(layers) + 1.5)), dpi=120)
        im = ax.imshow(
            grid,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            extent=(bonds[0] - 0.5, bonds[-1] + 0.5, layers[0] - 0.5, layers[-1] + 0.5),
        )
        fig.colorbar(im, ax=ax, label="entropy (nats)")
        ax.set_xlabel("bond")
        ax.set_ylabel("layer")
        ax.set_yticks(layers if len(layers) <= 16 else layers[:: -(-len(layers) // 16)])
        ax.set_title(f"{fam} ({kind}, {m}x{n}) at {Path(checkpoint).name}")
        path = out / f"heatmap_{_slug(f'{fam}_{kind}_{m}x{n}')}.png"
        save_figure(fig, plt, path)
        written.append(path)
    return written
