"""Triton kernels for the engine ops (kernels/src/gram.py, partial_trace.py, entropy.py).

Importing this module raises ImportError without triton, so the registry skips the backend.
Policy: on CUDA tensors the kernels run for the shapes below and decline (``NotImplemented``,
the dispatcher then tries the next backend) otherwise; on CPU tensors they run only when the
backend is forced (``ARTENT_FAST_BACKEND=triton``) and triton's interpreter is on
(``TRITON_INTERPRET=1`` before triton is imported), which is how they are tested without a GPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from artent_fast.backends.registry import register_kernel, selected_backend

try:
    from artent_fast.kernels import _support
    from artent_fast.kernels import entropy as _entropy
    from artent_fast.kernels import gram as _gram
    from artent_fast.kernels import partial_trace as _trace
except ImportError as exc:  # pragma: no cover - source checkout without the kernels mapping
    raise ImportError(f"artent_fast.kernels is not importable: {exc}") from exc

if not _support.AVAILABLE:
    raise ImportError("triton is not installed: the triton backend is unavailable")

# Largest Gram output side the Triton kernel takes on CUDA; cuBLAS wins on large products.
GRAM_MAX_OUT = 256
_DISABLED: set[str] = set()  # ops whose kernel failed to compile on this machine


def run_guarded(op: str, fn: Callable, device_type: str, *args, **kwargs):
    """Run a compiled kernel; if triton cannot build it here (TritonError), warn once, disable it, decline.

    A monitoring tool never kills training: the torch kernel takes over. Under the CPU interpreter
    errors propagate, so the tests see every failure.
    """
    if op in _DISABLED:
        return NotImplemented
    if device_type != "cuda":
        return fn(*args, **kwargs)
    from triton.errors import TritonError

    try:
        return fn(*args, **kwargs)
    except TritonError as exc:
        _DISABLED.add(op)
        warnings.warn(
            f"triton kernel for {op!r} failed on this GPU ({type(exc).__name__}: {str(exc)[:200]}); "
            "using the torch kernel from now on",
            RuntimeWarning,
            stacklevel=3,
        )
        return NotImplemented


def _runs_here(t: torch.Tensor) -> bool:
    """CUDA tensors always; CPU tensors only when forced and interpretable."""
    if t.dtype not in _support.DTYPES:
        return False
    if t.device.type == "cuda":
        return True
    return t.device.type == "cpu" and selected_backend() == "triton" and _support.interpreting()


@register_kernel("gram", "triton")
def gram(x: torch.Tensor, side: str):
    """Batched Gram product; declines large outputs on CUDA (cuBLAS is faster there)."""
    if not _runs_here(x):
        return NotImplemented
    n_out = x.shape[-2] if side == "left" else x.shape[-1]
    if x.device.type == "cuda" and n_out > GRAM_MAX_OUT and selected_backend() != "triton":
        return NotImplemented
    return run_guarded("gram", _gram.gram, x.device.type, x, side)


@register_kernel("partial_trace", "triton")
def partial_trace(rho: torch.Tensor, keep: int, traced: int, side: str):
    """Trace out one site (see kernels/src/partial_trace.py)."""
    if not _runs_here(rho):
        return NotImplemented
    return run_guarded("partial_trace", _trace.partial_trace, rho.device.type, rho, keep, traced, side)


@register_kernel("partial_trace_chain", "triton")
def partial_trace_chain(rho: torch.Tensor, keeps: list[int], side: str):
    """Every nested trace of a bond chain's root density in one launch."""
    if not _runs_here(rho):
        return NotImplemented
    traced = [rho.shape[-1] // k for k in keeps]
    return run_guarded("partial_trace_chain", _trace.partial_trace_chain, rho.device.type, rho, keeps, traced, side)


@register_kernel("entropy", "triton")
def entropy(values: torch.Tensor, total: torch.Tensor | None = None, *, alpha: float = 1.0, base: float = math.e):
    """Fused clamp / normalise / xlogy (or Renyi, min-entropy) / sum over the last dim."""
    if not _runs_here(values) or (total is not None and total.device != values.device):
        return NotImplemented
    return run_guarded("entropy", _entropy.entropy, values.device.type, values, total, alpha=alpha, base=base)
