"""Figures (matplotlib extra, imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def require_matplotlib() -> Any:
    """Import matplotlib with the Agg backend, or raise an ImportError saying which extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'artent_fast[plot]'") from exc
    return plt


def save_figure(fig: Any, plt: Any, path: str | Path | None, **savefig_kwargs: Any) -> Any:
    """Lay out ``fig`` and, given a ``path``, write it atomically (temp file, then rename) and close it.

    The atomic write means an interrupted run never leaves a truncated image behind. Returns ``fig``.
    """
    fig.tight_layout()
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    os.replace(tmp, path)
    plt.close(fig)
    return fig
