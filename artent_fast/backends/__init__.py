"""Op registry: each op has a default torch kernel and optional per-backend kernels.

One registry for every op: the engine ops (``eigvalsh``, ``gram``, ``partial_trace``,
``partial_trace_chain``, ``entropy``; torch kernels in :mod:`artent_fast.backends.torch_ops`, the only
torch code of each) and ``attention`` (kernels registered by :mod:`artent_fast.attention`, dispatched by
:func:`artent_fast.fused_attention`). The core calls ops through the typed wrappers of
:mod:`artent_fast.backends.ops` (or :func:`dispatch`); backends (Triton, CUDA, cupy) register faster
kernels for the devices they support. ``ARTENT_FAST_BACKEND=torch|triton|cuda|cupy`` forces one
backend (falling back to torch, with a warning once, where the forced backend has no kernel for an input; raising
:class:`BackendUnavailable` with the reason when it cannot load at all). ``eigvalsh`` on CUDA is
chosen by measurement (see :mod:`artent_fast.backends.registry`).
"""

from artent_fast.backends import ops
from artent_fast.backends.registry import (
    BackendUnavailable,
    available_backends,
    dispatch,
    load_errors,
    register_kernel,
    selected_backend,
    tuned_choices,
)

__all__ = [
    "BackendUnavailable",
    "available_backends",
    "dispatch",
    "load_errors",
    "ops",
    "register_kernel",
    "selected_backend",
    "tuned_choices",
]
