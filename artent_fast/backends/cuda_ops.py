"""CUDA kernels from the compiled extension ``artent_fast._cuda_jacobi`` (csrc/): batched eigvalsh.

The extension is optional (``ARTENT_FAST_BUILD_CUDA=1 pip install -e .`` or ``csrc/build.sh``);
without it this module raises ImportError and the registry skips the backend. A build elsewhere
can be named with ``ARTENT_FAST_CUDA_EXT=/path/to/_cuda_jacobi*.so``. The extension takes raw
device pointers and the current stream, so it never touches libtorch's ABI.

Policy: CUDA float32/float64 batches of ``MIN_N <= n <= MAX_N``; torch covers ``n < 32``
(cuSOLVER's batched Jacobi) and larger matrices. Forced (``ARTENT_FAST_BACKEND=cuda``) it takes
every ``n <= MAX_N``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import torch

from artent_fast.backends.registry import register_kernel, selected_backend

MIN_N = 32
MAX_N = 512
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


def load_extension() -> ModuleType:
    """The compiled module: installed in the package, or at ``$ARTENT_FAST_CUDA_EXT``; else ImportError."""
    path = os.environ.get("ARTENT_FAST_CUDA_EXT")
    if path:
        spec = importlib.util.spec_from_file_location("_cuda_jacobi", path)
        if spec is None or spec.loader is None or not os.path.isfile(path):
            raise ImportError(f"ARTENT_FAST_CUDA_EXT={path!r} is not a loadable extension module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module("artent_fast._cuda_jacobi")
    except ImportError as exc:
        raise ImportError(
            "the CUDA extension artent_fast._cuda_jacobi is not built (ARTENT_FAST_BUILD_CUDA=1 pip install -e . "
            f"or csrc/build.sh): {exc}"
        ) from exc


_ext = load_extension()


def covers(x: torch.Tensor) -> bool:
    """Whether the Jacobi kernel takes ``x`` (device, dtype, size policy; see module doc)."""
    if x.device.type != "cuda" or x.dtype not in _DTYPE_NAMES or x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        return False
    n = x.shape[-1]
    low = 1 if selected_backend() == "cuda" else MIN_N
    return low <= n <= min(MAX_N, int(_ext.MAX_N))


def jacobi_eigvalsh(x: torch.Tensor, *, max_sweeps: int = 20, tol: float = 0.0, force_global: bool = False):
    """Eigenvalues (ascending) of CUDA symmetric matrices ``(..., n, n)``; asynchronous, no host sync."""
    if x.device.type != "cuda":
        raise ValueError(f"x is on {x.device}; the CUDA eigensolver needs a CUDA tensor")
    if x.dtype not in _DTYPE_NAMES:
        raise TypeError(f"x has dtype {x.dtype}; the CUDA eigensolver takes float32 or float64")
    n = x.shape[-1]
    work = x.reshape(-1, n, n).clone(memory_format=torch.contiguous_format)  # scratch: the kernel overwrites it
    out = torch.empty(work.shape[0], n, dtype=x.dtype, device=x.device)
    if work.shape[0]:
        with torch.cuda.device(x.device):
            stream = torch.cuda.current_stream(x.device).cuda_stream
            _ext.eigvalsh_batched(
                work.data_ptr(),
                out.data_ptr(),
                work.shape[0],
                n,
                _DTYPE_NAMES[x.dtype],
                stream,
                max_sweeps,
                tol,
                force_global,
            )
    return out.reshape(*x.shape[:-2], n)


@register_kernel("eigvalsh", "cuda")
def eigvalsh(x: torch.Tensor):
    """Batched Jacobi eigenvalues for the sizes in :func:`covers`; declines the rest."""
    if not covers(x):
        return NotImplemented
    return jacobi_eigvalsh(x)
