"""Parameter-efficient adapters measured by artent_fast.

:mod:`artent_fast.adapters.mps`: MPS Adaptation (docs/definitions.md §7), ``dW = (alpha / r) * B @ A_mps`` with
``A_mps`` a tensor train (``from artent_fast.adapters import mps``).
"""

from __future__ import annotations

from artent_fast.adapters import mps

__all__ = ["mps"]
