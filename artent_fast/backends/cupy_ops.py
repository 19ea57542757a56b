"""cupy kernels: batched ``eigvalsh`` through cuSOLVER (``cupy.linalg.eigvalsh``), zero-copy by DLPack.

Importing this module raises ImportError without cupy, so the registry skips the backend. The
kernel is never first in the static order: it runs when forced (``ARTENT_FAST_BACKEND=cupy``) or
when the registry's measured autotune finds it fastest for a shape (see registry.AUTOTUNED).
"""

from __future__ import annotations

import torch

from artent_fast.backends.registry import register_kernel
from artent_fast.extras import require

cupy = require("cupy", "the cupy backend", extra="cupy")

_DTYPES = (torch.float32, torch.float64)


@register_kernel("eigvalsh", "cupy")
def eigvalsh(x: torch.Tensor):
    """Eigenvalues (ascending) of CUDA symmetric float32/float64 matrices ``(..., n, n)``; declines the rest."""
    if x.device.type != "cuda" or x.dtype not in _DTYPES or x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        return NotImplemented
    if x.numel() == 0:
        return x.new_empty(*x.shape[:-1])
    stream = torch.cuda.current_stream(x.device).cuda_stream
    with cupy.cuda.Device(x.device.index), cupy.cuda.ExternalStream(stream):
        w = cupy.linalg.eigvalsh(cupy.from_dlpack(x.contiguous()))
        return torch.from_dlpack(w)
