"""Figures (matplotlib extra, imported lazily)."""

from __future__ import annotations

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
