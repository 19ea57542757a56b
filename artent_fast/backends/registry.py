"""The op registry behind :mod:`artent_fast.backends` (modelled on bitsandbytes' op registry).

Choice of kernel for one call:

- forced (``ARTENT_FAST_BACKEND``): that backend, then torch (with a warning once) where it has no kernel
  for the op or declines the input; a forced backend that cannot load at all raises
  :class:`BackendUnavailable` with the reason (automatic choices fall back, explicit ones fail loudly);
- autotuned ops (``AUTOTUNED``: eigvalsh on CUDA): every backend with a kernel that takes the input
  is timed once per (op, device, dtype, matrix shape, batch bucket) and the fastest is used from then
  on (:func:`tuned_choices` shows them; ``ARTENT_FAST_AUTOTUNE=0`` turns this off);
- otherwise the static order of :func:`candidates` (CUDA: cuda, triton, torch; CPU: torch), the
  first kernel that does not decline (``NotImplemented``) wins.
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

BACKENDS = ("torch", "triton", "cuda", "cupy")
# Modules that register kernels when imported; each import is tried once and may fail
# (no triton, no compiled extension, no cupy): the torch kernels always remain.
_BACKEND_MODULES = {
    "torch": "artent_fast.backends.torch_ops",
    "triton": "artent_fast.backends.triton_ops",
    "cuda": "artent_fast.backends.cuda_ops",
    "cupy": "artent_fast.backends.cupy_ops",
}
_KERNELS: dict[str, dict[str, Callable]] = {}
_LOADED: dict[str, bool] = {}
_ERRORS: dict[str, str] = {}  # backend -> why its module did not import
_WARNED: set[str] = set()
# (op, device type) whose kernel is chosen by measurement; everything else uses the static order
AUTOTUNED = {("eigvalsh", "cuda")}
_TUNED: dict[tuple, str] = {}  # tune key -> fastest backend measured
TUNE_REPEATS = 3
# How far (max abs difference over max abs value) a candidate's result may sit from the float64 torch
# result on a sample of the batch (the first TUNE_SAMPLE matrices) to be chosen by the autotune: speed
# alone is no reason to take a less accurate kernel. Seen on an H200 (float32, 33 matrices of 256x256):
# our Jacobi 3.5e-6, torch.linalg.eigvalsh 9.1e-5, cupy (cuSOLVER) 1.4e-4; float64: all under 1e-12.
TUNE_AGREEMENT = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 2e-5, torch.float64: 1e-11}
TUNE_SAMPLE = 4


class BackendUnavailable(RuntimeError):
    """A backend named explicitly (``ARTENT_FAST_BACKEND``) cannot load here; the message says why."""


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
        except Exception as exc:  # optional backend missing or broken: the torch path still works
            _LOADED[backend] = False
            _ERRORS[backend] = f"{type(exc).__name__}: {exc}"
    return _LOADED[backend]


def available_backends() -> list[str]:
    """Backends whose kernel module imported on this machine."""
    return [b for b in BACKENDS if _load(b)]


def load_errors() -> dict[str, str]:
    """Why each backend that is not available failed to import (``{backend: "ImportError: ..."}``)."""
    for b in BACKENDS:
        _load(b)
    return {b: _ERRORS.get(b, "did not load") for b in BACKENDS if not _LOADED[b]}


def kernels_of(op: str) -> dict[str, Callable]:
    """The registered kernels of ``op`` by backend (after trying to load every backend)."""
    for b in BACKENDS:
        _load(b)
    return dict(_KERNELS.get(op, {}))


def selected_backend() -> str | None:
    """The backend forced by ``ARTENT_FAST_BACKEND``, if any."""
    forced = os.environ.get("ARTENT_FAST_BACKEND", "").strip().lower() or None
    if forced is not None and forced not in BACKENDS:
        raise ValueError(f"ARTENT_FAST_BACKEND={forced!r} is not one of {BACKENDS}")
    return forced


def require_loaded(backend: str) -> None:
    """Raise :class:`BackendUnavailable` with the import error when ``backend`` cannot load here."""
    if not _load(backend):
        raise BackendUnavailable(
            f"ARTENT_FAST_BACKEND={backend}: the {backend} backend cannot load here ({_ERRORS.get(backend)}); "
            "unset ARTENT_FAST_BACKEND for the automatic choice"
        )


def candidates(device: torch.device, forced: str | None = None) -> list[str]:
    """Backends tried, in order, for a call on ``device`` (cupy runs only when forced or measured fastest)."""
    if forced is not None:
        return [forced, "torch"]
    if device.type == "cuda":
        return ["cuda", "triton", "torch"]
    return ["torch"]


def autotune_enabled() -> bool:
    return os.environ.get("ARTENT_FAST_AUTOTUNE", "1").strip() != "0"


def tune_key(op: str, device: torch.device, args: tuple) -> tuple | None:
    """(op, device, dtype, trailing two dims, batch bucket) of the first tensor argument."""
    x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if x is None or x.ndim < 2:
        return None
    batch = 1
    for s in x.shape[:-2]:
        batch *= int(s)
    bucket = 1 << max(0, (batch - 1).bit_length())  # next power of two
    return op, str(device), x.dtype, tuple(x.shape[-2:]), bucket


def tuned_choices() -> dict[str, str]:
    """The measured choices so far, readable: ``{"eigvalsh cuda:0 float32 128x128 batch<=1024": "cuda"}``."""
    return {
        f"{op} {dev} {str(dtype).removeprefix('torch.')} {'x'.join(map(str, dims))} batch<={bucket}": backend
        for (op, dev, dtype, dims, bucket), backend in _TUNED.items()
    }


def clear_tuned() -> None:
    _TUNED.clear()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def disagreement(out, ref) -> float | None:
    """max |out - ref| / max |ref| of two float tensors of one shape (NaN where only one is NaN counts as
    infinite); None when either is not a float tensor (nothing to compare)."""
    if not (isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor)) or not ref.is_floating_point():
        return None
    if out.shape != ref.shape:
        return math.inf
    a, b = out.detach().double(), ref.detach().to(out.device).double()
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = torch.where(both_nan, torch.zeros_like(a), (a - b).abs())
    scale = torch.where(torch.isnan(b), torch.zeros_like(b), b.abs()).max() if b.numel() else b.new_zeros(())
    worst = float(diff.max()) if diff.numel() else 0.0
    return worst / max(float(scale), torch.finfo(torch.float64).tiny) if worst == worst else math.inf


def _batch_sample(x: torch.Tensor, lead: int, k: int) -> torch.Tensor:
    """The first ``k`` items of ``x`` over its ``lead`` leading (batch) dims, flattened into one."""
    return x.reshape(-1, *x.shape[lead:])[:k]


def float64_reference(op: str, args: tuple, kwargs: dict) -> tuple[object, int] | None:
    """(the torch kernel's result on the first ``TUNE_SAMPLE`` matrices of the first tensor argument, in
    float64; the number of batch dims) for ops whose inputs are batches of matrices ``(..., a, b)``."""
    i, x = next(((i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)), (None, None))
    if x is None or x.ndim < 2 or not x.is_floating_point():
        return None
    lead = x.ndim - 2
    sample = _batch_sample(x.detach(), lead, TUNE_SAMPLE).double()
    return _KERNELS[op]["torch"](*args[:i], sample, *args[i + 1 :], **kwargs), lead


def measure(op: str, args: tuple, kwargs: dict, device: torch.device, names: list[str]) -> tuple[str | None, object]:
    """Time every backend in ``names`` that takes this input and is accurate on it: within
    ``TUNE_AGREEMENT`` of the float64 torch result on a sample of the batch. Return (fastest, its result).
    When no candidate is accurate enough, the most accurate one is taken (with a warning)."""
    kernels = _KERNELS.get(op, {})
    best, best_t, best_out = None, float("inf"), NotImplemented
    reference = float64_reference(op, args, kwargs) if "torch" in kernels else None
    rejected: list[tuple[float, str, object]] = []
    for name in names:
        fn = kernels.get(name) if _load(name) else None
        if fn is None:
            continue
        try:
            out = fn(*args, **kwargs)  # warm-up (compiles, plans); declines are skipped
        except Exception as exc:  # a candidate that fails here is not chosen; torch still answers
            warnings.warn(
                f"autotune: the {name} kernel for {op!r} failed ({type(exc).__name__}: {exc}); skipped",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if out is NotImplemented:
            continue
        tol = TUNE_AGREEMENT.get(getattr(out, "dtype", None))
        if reference is not None and tol is not None:
            ref, lead = reference
            err = disagreement(_batch_sample(out, lead, TUNE_SAMPLE), ref)
            if err is not None and not err <= tol:
                warnings.warn(
                    f"autotune: the {name} kernel for {op!r} is {err:.2e} off the float64 result "
                    f"(more than {tol:.0e} allowed for {str(out.dtype).removeprefix('torch.')}); not chosen",
                    RuntimeWarning,
                    stacklevel=3,
                )
                rejected.append((err, name, out))
                continue
        times = []
        for _ in range(TUNE_REPEATS):
            _sync(device)
            t = time.perf_counter()
            fn(*args, **kwargs)
            _sync(device)
            times.append(time.perf_counter() - t)
        t = statistics.median(times)
        if t < best_t:
            best, best_t, best_out = name, t, out
    if best is None and rejected:
        err, best, best_out = min(rejected, key=lambda r: r[0])
        warnings.warn(
            f"autotune: no kernel for {op!r} is within the tolerance here; taking the most accurate ({best}, "
            f"{err:.2e} off)",
            RuntimeWarning,
            stacklevel=3,
        )
    return best, best_out


def dispatch(op: str, *args, device: torch.device | None = None, **kwargs):
    """Run ``op`` with the best registered kernel for ``device`` (default: first tensor arg's)."""
    if device is None:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    _load("torch")
    kernels = _KERNELS.get(op, {})
    forced = selected_backend()
    if forced is not None:
        require_loaded(forced)
    if forced is None and (op, device.type) in AUTOTUNED and autotune_enabled() and not _capturing(device):
        key = tune_key(op, device, args)
        if key is not None:
            kernels = kernels_of(op)
            choice = _TUNED.get(key)
            if choice is None:
                choice, out = measure(op, args, kwargs, device, [b for b in BACKENDS if b in kernels])
                if choice is not None:
                    _TUNED[key] = choice
                    return out
            else:
                out = kernels[choice](*args, **kwargs)
                if out is not NotImplemented:
                    return out
    for backend in candidates(device, forced):
        fn = kernels.get(backend) if _load(backend) else None
        if fn is None:
            continue
        if backend == "torch" and forced not in (None, "torch"):
            warn_fallback(forced, op)
        result = fn(*args, **kwargs)
        if result is not NotImplemented:  # a kernel may decline shapes it does not cover
            return result
    raise KeyError(f"no kernel registered for op {op!r}")


def warn_fallback(forced: str, op: str) -> None:
    """Warn once per (backend, op) that a forced backend had nothing to run ``op`` here."""
    key = f"{forced}:{op}"
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(
            f"ARTENT_FAST_BACKEND={forced}: no usable {forced} kernel for {op!r} on this input; using torch",
            stacklevel=3,
        )
