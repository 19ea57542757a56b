"""Optional triton import and lazy jitting shared by the engine kernels (gram, partial_trace, entropy).

Kernels are plain functions jitted on first use, keyed on ``TRITON_INTERPRET``, so importing a
kernel module needs no triton. The CPU interpreter needs ``TRITON_INTERPRET=1`` before triton is
first imported (triton builds its own jitted helpers at import).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

try:  # triton is optional: the torch kernels cover machines without it
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None
    tl = None
    AVAILABLE = False

# dtypes every engine kernel accepts (accumulation: float32, or float64 for float64 inputs)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1`` (kernels then run on CPU tensors through numpy)."""
    if not AVAILABLE:
        return False
    from triton import knobs

    return bool(knobs.runtime.interpret)


@functools.cache
def _jitted(fn: Callable, interpret: bool):
    return triton.jit(fn)


def jit(fn: Callable):
    """``triton.jit(fn)``, built on first use and rebuilt if ``TRITON_INTERPRET`` changes."""
    if not AVAILABLE:
        raise RuntimeError("triton is not installed: pip install 'artent_fast[triton]'")
    return _jitted(fn, interpreting())


def runnable_on(t: torch.Tensor) -> bool:
    """Whether a kernel can run on ``t``'s device: CUDA, or CPU under the interpreter."""
    return AVAILABLE and (t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()))


def check_runnable(t: torch.Tensor, name: str) -> None:
    if not runnable_on(t):
        raise RuntimeError(
            f"{name} is on {t.device}: triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 (set before triton is"
            " first imported) for CPU tensors" + ("" if AVAILABLE else "; triton is not installed")
        )
