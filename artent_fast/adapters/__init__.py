"""Parameter-efficient adapters measured by artent_fast.

:mod:`artent_fast.adapters.mps`: MPS Adaptation (docs/definitions.md §7), ``dW = (alpha / r) * B @ A_mps`` with
``A_mps`` a tensor train. Imported on first use (``from artent_fast.adapters import mps``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["mps"]


def __getattr__(name: str) -> Any:
    if name == "mps":
        return importlib.import_module("artent_fast.adapters.mps")
    raise AttributeError(f"module 'artent_fast.adapters' has no attribute {name!r}")
