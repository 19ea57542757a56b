"""Op registry: each op has a default torch kernel and optional per-backend kernels.

The core calls ops through :func:`dispatch`; backends (Triton, CUDA) register faster kernels
for the devices they support. ``ARTENT_FAST_BACKEND=torch|triton|cuda`` forces one backend
(falling back to torch, with a warning once, where the forced backend has no kernel or is
unavailable).
"""

from artent_fast.backends.registry import available_backends, dispatch, register_kernel, selected_backend

__all__ = ["available_backends", "dispatch", "register_kernel", "selected_backend"]
