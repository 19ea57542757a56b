"""Profile vs bond, with theory overlays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from artent_fast.plotting import require_matplotlib, save_figure


def plot_profile(
    profiles: Mapping[str, Sequence[float] | torch.Tensor],
    *,
    overlays: Mapping[str, Sequence[float] | torch.Tensor] | None = None,
    center_bond: int | None = None,
    title: str = "Entanglement profile",
    path: str | Path | None = None,
):
    """Line plot of entropy per bond; ``overlays`` (theory curves) dashed; the row/column bond marked.

    ``center_bond`` is a 0-based profile index. Returns the figure; saves a PNG when ``path`` is given.
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, values in profiles.items():
        y = torch.as_tensor(values, dtype=torch.float64).cpu()
        ax.plot(range(1, len(y) + 1), y, marker="o", ms=3, label=label)
    for label, values in (overlays or {}).items():
        y = torch.as_tensor(values, dtype=torch.float64).cpu()
        ax.plot(range(1, len(y) + 1), y, ls="--", lw=1.2, label=label)
    if center_bond is not None:
        ax.axvline(center_bond + 1, color="grey", lw=0.8, ls=":", label="row/column bond")
    ax.set_xlabel("bond")
    ax.set_ylabel("entropy (nats)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, plt, path)
