"""Figures (matplotlib extra, imported lazily), in one house style meant for print.

Every figure goes through :func:`new_figure` and :func:`save_figure`: legends sit outside the data
(:func:`legend_outside`), bond and step axes have integer ticks (:func:`integer_ticks`), curves of
different kinds differ by line style as well as colour (:func:`line_style`), and PNGs are written at
2x resolution (200 dpi), atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from artent_fast.atomic import atomic_path
from artent_fast.extras import optional_imports

DPI = 200  # 2x a screen's 100 dpi: sharp in READMEs and on high-density displays
FONT_SIZE = 9
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def require_matplotlib() -> Any:
    """Import matplotlib with the Agg backend, or raise the error of :mod:`artent_fast.extras` (missing or broken)."""
    with optional_imports("matplotlib", "figures", extra="plot"):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    return plt


def new_figure(plt: Any, size: tuple[float, float] = (7.5, 4.0), **kwargs: Any) -> tuple[Any, Any]:
    """A figure and axes in the house style (readable fonts, light grid)."""
    with plt.rc_context({"font.size": FONT_SIZE, "legend.fontsize": FONT_SIZE - 1}):
        fig, ax = plt.subplots(figsize=size, **kwargs)
    for a in ax.flat if hasattr(ax, "flat") else (ax,):
        a.grid(alpha=0.3)
        a.tick_params(labelsize=FONT_SIZE - 1)
    return fig, ax


def integer_ticks(axis: Any) -> None:
    """Only whole numbers on ``axis`` (bonds, steps, layers are counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax: Any, title: str | None = None, **kwargs: Any) -> Any:
    """The legend to the right of the axes, never over the data; None when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        frameon=False,
        fontsize=FONT_SIZE - 1,
        title=title,
        title_fontsize=FONT_SIZE - 1,
        **kwargs,
    )


def line_style(kind_index: int, many_points: bool = False) -> dict[str, Any]:
    """Line style and marker for the ``kind_index``-th kind of curve (q vs v, LoRA vs dense, ...).

    Markers are dropped on curves with many points, where they would hide the line.
    """
    style: dict[str, Any] = {"ls": LINE_STYLES[kind_index % len(LINE_STYLES)], "lw": 1.4}
    if not many_points:
        style.update(marker=MARKERS[kind_index % len(MARKERS)], ms=3.5)
    return style


def mean_with_band(ax: Any, per_step: dict[int, list[float]], label: str, **style: Any) -> Any:
    """One line of the mean of ``per_step[step]`` (the values of several modules, e.g. layers) against step,
    in a band from the lowest to the highest value where there are several; returns the line."""
    steps = sorted(per_step)
    line = ax.plot(steps, [sum(per_step[s]) / len(per_step[s]) for s in steps], label=label, **style)[0]
    if any(len(per_step[s]) > 1 for s in steps):
        lo, hi = [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    return line


def save_figure(fig: Any, plt: Any, path: str | Path | None, **savefig_kwargs: Any) -> Any:
    """Lay out ``fig`` and, given a ``path``, write it atomically at :data:`DPI` and close it.

    The atomic write means an interrupted run never leaves a truncated image behind. Returns ``fig``.
    """
    fig.tight_layout()
    if path is None:
        return fig
    path = Path(path)
    savefig_kwargs.setdefault("dpi", DPI)
    savefig_kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    plt.close(fig)
    return fig
