"""The op registry behind :mod:`artent_fast.backends` (modelled on bitsandbytes' op registry)."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable

import torch

BACKENDS = ("torch", "triton", "cuda")
# Modules that register kernels when imported; each import is tried once and may fail
# (no triton, no compiled extension): the torch kernels always remain.
_BACKEND_MODULES = {
    "torch": "artent_fast.backends.torch_ops",
    "triton": "artent_fast.backends.triton_ops",
    "cuda": "artent_fast.backends.cuda_ops",
}
_KERNELS: dict[str, dict[str, Callable]] = {}
_LOADED: dict[str, bool] = {}
_WARNED: set[str] = set()


def register_kernel(op: str, backend: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as ``backend``'s kernel for ``op``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")

    def deco(fn: Callable) -> Callable:
        _KERNELS.setdefault(op, {})[backend] = fn
        return fn

    return deco


def _load(backend: str) -> bool:
    if backend not in _LOADED:
        try:
            importlib.import_module(_BACKEND_MODULES[backend])
            _LOADED[backend] = True
        except Exception:  # optional backend missing or broken: the torch path still works
            _LOADED[backend] = False
    return _LOADED[backend]


def available_backends() -> list[str]:
    """Backends whose kernel module imported on this machine."""
    return [b for b in BACKENDS if _load(b)]


def selected_backend() -> str | None:
    """The backend forced by ``ARTENT_FAST_BACKEND``, if any."""
    forced = os.environ.get("ARTENT_FAST_BACKEND", "").strip().lower() or None
    if forced is not None and forced not in BACKENDS:
        raise ValueError(f"ARTENT_FAST_BACKEND={forced!r} is not one of {BACKENDS}")
    return forced


def _candidates(device: torch.device, forced: str | None) -> list[str]:
    if forced is not None:
        return [forced, "torch"]
    if device.type == "cuda":
        return ["cuda", "triton", "torch"]
    return ["torch"]


def dispatch(op: str, *args, device: torch.device | None = None, **kwargs):
    """Run ``op`` with the best registered kernel for ``device`` (default: first tensor arg's)."""
    if device is None:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    _load("torch")
    kernels = _KERNELS.get(op, {})
    forced = selected_backend()
    for backend in _candidates(device, forced):
        fn = kernels.get(backend) if _load(backend) else None
        if fn is None:
            continue
        if backend == "torch" and forced not in (None, "torch"):
            _warn_fallback(forced, op)
        result = fn(*args, **kwargs)
        if result is not NotImplemented:  # a kernel may decline shapes it does not cover
            return result
    raise KeyError(f"no kernel registered for op {op!r}")


def _warn_fallback(forced: str, op: str) -> None:
    """Warn once per (backend, op) that a forced backend had nothing to run ``op`` here."""
    key = f"{forced}:{op}"
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(
            f"ARTENT_FAST_BACKEND={forced}: no usable {forced} kernel for {op!r} on this input; using torch",
            stacklevel=3,
        )
