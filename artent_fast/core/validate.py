"""Input checks shared by every entry point: clear errors that name the argument at fault."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ZERO_POLICIES = ("raise", "nan")


def as_matrix(x: Any, name: str = "matrix", *, check_finite: bool = True) -> torch.Tensor:
    """Return ``x`` as a real floating tensor with at least 2 dims (low precision upcast to fp32).

    Accepts torch tensors, numpy arrays and anything exposing DLPack (cupy arrays, zero copy).
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        if hasattr(x, "__dlpack__"):
            x = torch.from_dlpack(x)
        else:
            raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} has complex dtype {x.dtype}: only real matrices are supported")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}: a floating-point matrix is required (cast it first)")
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dims (..., m, n), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if check_finite and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} has {bad} NaN or Inf entries")
    return x


def result_dtype(x: torch.Tensor) -> torch.dtype:
    """Profiles come back in float64 for float64 input, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_zero_policy(on_zero: str) -> None:
    if on_zero not in ZERO_POLICIES:
        raise ValueError(f"on_zero must be one of {ZERO_POLICIES}, got {on_zero!r}")


def handle_zero(norm_sq: torch.Tensor, on_zero: str, name: str) -> torch.Tensor:
    """Mask of matrices whose squared Frobenius norm is zero; raises under ``on_zero='raise'``.

    A zero matrix has no normalised state (SPEC 1.2), so its entropy is undefined: by default
    this is a ValueError naming the batch index; with ``on_zero='nan'`` the profile is NaN.
    """
    zero = norm_sq <= 0
    if on_zero == "raise" and bool(zero.any()):
        idx = [tuple(int(i) for i in ix) for ix in torch.nonzero(zero)][:5]
        where = f" at batch index {idx}" if norm_sq.ndim else ""
        raise ValueError(
            f"{name} is a zero matrix{where}: its entanglement entropy is undefined "
            "(pass on_zero='nan' to get NaN profiles instead)"
        )
    return zero


def check_positive_int(value: Any, name: str, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
