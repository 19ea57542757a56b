"""The profile figure: entropy against bond, theory curves overlaid, the row/column bond marked."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from artent_fast.plotting import integer_ticks, legend_outside, line_style, new_figure, require_matplotlib, save_figure

OVERLAY_GREYS = ("black", "0.4", "0.6", "0.75")  # one shade per overlay shape
OVERLAY_LINES = {"page": "--", "random": "-."}  # one line style per theory
BOND_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink")  # one per shape's row/column bond


def overlay_style(label: str, shades: dict[str, str]) -> dict[str, str]:
    """Theory curves: line style by theory (first word of the label), grey shade by what follows it."""
    theory, _, rest = label.partition(" ")
    shade = shades.setdefault(rest.rsplit(" ", 1)[-1], OVERLAY_GREYS[len(shades) % len(OVERLAY_GREYS)])
    return {"color": shade, "ls": OVERLAY_LINES.get(theory.lower(), ":")}


def plot_profile(
    profiles: Mapping[str, Sequence[float] | torch.Tensor],
    *,
    overlays: Mapping[str, Sequence[float] | torch.Tensor] | None = None,
    row_sites: int | Mapping[int, str] | None = None,
    bounds: Mapping[str, float] | None = None,
    title: str = "Entanglement profile",
    note: str | None = None,
    kind_of: Callable[[str], str] | None = None,
    path: str | Path | None = None,
):
    """Entropy per bond: measured curves solid (one line style per kind given by ``kind_of(label)``),
    ``overlays`` (theory curves) in black and grey, dashed; the row/column bond marked.

    ``row_sites`` marks the row/column bond: the number of row sites, which is that bond's number (the x
    axis numbers bonds from 1), or ``{row_sites: what it is the bond of}`` when curves of several shapes are
    drawn (one marker per shape's own bond). A number that names no drawn bond (0 or the site count of a
    matrix with one row or column) marks nothing.
    ``bounds`` are horizontal lines ``{label: entropy}`` (e.g. ``ln r``, which no bond of a rank-r update
    can exceed). ``note`` is a line under the title (e.g. "4 of 8 modules shown"). Returns the figure;
    saves it when ``path`` is given.
    """
    plt = require_matplotlib()
    fig, ax = new_figure(plt)
    kinds: dict[str, int] = {}
    bonds = 0  # the most bonds of any curve
    for label, values in profiles.items():
        y = torch.as_tensor(values, dtype=torch.float64).cpu()
        kind = kinds.setdefault(kind_of(label) if kind_of else "", len(kinds))
        bonds = max(bonds, len(y))
        ax.plot(range(1, len(y) + 1), y, label=label, **line_style(kind, many_points=len(y) > 40))
    shades: dict[str, str] = {}
    for label, values in (overlays or {}).items():
        y = torch.as_tensor(values, dtype=torch.float64).cpu()
        bonds = max(bonds, len(y))
        ax.plot(range(1, len(y) + 1), y, lw=1.1, label=label, **overlay_style(label, shades))
    marks = {row_sites: ""} if isinstance(row_sites, int) else dict(row_sites or {})
    drawn = sorted((k, what) for k, what in marks.items() if 1 <= k <= bonds)
    for i, (bond, what) in enumerate(drawn):
        ax.axvline(
            bond,
            color=BOND_COLOURS[i % len(BOND_COLOURS)],
            lw=1.0,
            ls=":",
            label=f"row/column bond ({bond})" + (f": {what}" if what else ""),
        )
    for i, (label, value) in enumerate((bounds or {}).items()):
        ax.axhline(value, color=OVERLAY_GREYS[i % len(OVERLAY_GREYS)], lw=0.9, ls=(0, (1, 3)), label=label)
    ax.set_xlabel("bond")
    ax.set_ylabel("entropy (nats)")
    integer_ticks(ax.xaxis)
    ax.set_title(title if note is None else f"{title}\n{note}", fontsize=10)
    legend_outside(ax)
    return save_figure(fig, plt, path)
