"""The ops, typed: one function per op with the torch kernel's signature, dispatched through the registry.

Prefer these to ``dispatch("name", ...)``: a typo is an AttributeError at import, not a KeyError at
run time, and the arguments are documented once. Every backend's kernel for an op has exactly this
signature (tests/backends/test_backends.py checks it).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from artent_fast.backends.registry import dispatch


def eigvalsh(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues, ascending, of a batch of symmetric matrices ``(..., s, s)``."""
    return dispatch("eigvalsh", x)


def gram(x: torch.Tensor, side: Literal["left", "right"]) -> torch.Tensor:
    """``x @ x^T`` (side='left') or ``x^T @ x`` (side='right') for a batch ``(..., a, b)``."""
    return dispatch("gram", x, side)


def partial_trace(rho: torch.Tensor, keep: int, traced: int, side: Literal["last", "first"]) -> torch.Tensor:
    """Trace out one site of dim ``traced`` from ``rho`` ``(..., keep*traced, keep*traced)``; side 'last' or 'first'."""
    return dispatch("partial_trace", rho, keep, traced, side)


def partial_trace_chain(rho: torch.Tensor, keeps: list[int], side: Literal["last", "first"]) -> list[torch.Tensor]:
    """Every nested trace of a chain root ``rho``: level ``l`` keeps ``keeps[l]`` of its dims."""
    return dispatch("partial_trace_chain", rho, keeps, side)


def entropy(
    values: torch.Tensor, total: torch.Tensor | None = None, *, alpha: float = 1.0, base: float = math.e
) -> torch.Tensor:
    """Entropy of each spectrum (last dim of ``values``), normalised by ``total`` (default: their sum)."""
    return dispatch("entropy", values, total, alpha=alpha, base=base)
