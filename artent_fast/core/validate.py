"""Input checks shared by every entry point: clear errors that name the argument at fault."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

ZERO_POLICIES = ("raise", "nan")


def _from_numpy(x: np.ndarray, name: str) -> torch.Tensor:
    """``torch.from_numpy`` that also takes negative strides and non-native byte order (by copying)."""
    if x.dtype.kind == "c":
        raise TypeError(f"{name} has complex dtype {x.dtype}: only real matrices are supported")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} has dtype {x.dtype}: a floating-point matrix is required (cast it first)")
    if x.dtype.itemsize > 8:  # long double: no torch dtype
        raise TypeError(f"{name} has dtype {x.dtype}: use float16, float32 or float64")
    if not x.dtype.isnative or any(s < 0 for s in x.strides):
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    return torch.from_numpy(x)


def as_matrix(x: Any, name: str = "matrix", *, check_finite: bool = True) -> torch.Tensor:
    """Return ``x`` as a real floating tensor with at least 2 dims (low precision upcast to fp32).

    Accepts torch tensors, numpy arrays (any strides or byte order) and anything exposing DLPack
    (cupy arrays, zero copy).
    """
    if isinstance(x, np.ndarray):
        x = _from_numpy(x, name)
    elif not isinstance(x, torch.Tensor):
        if hasattr(x, "__dlpack__"):
            x = torch.from_dlpack(x)
        else:
            raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    check_kind(x, name)
    if x.is_complex():
        raise TypeError(f"{name} has complex dtype {x.dtype}: only real matrices are supported")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}: a floating-point matrix is required (cast it first)")
    if x.dtype.itemsize < 2:  # float8 (e4m3, e5m2, their fnuz forms), e8m0: no linear algebra in torch
        raise TypeError(
            f"{name} has dtype {x.dtype}: 8-bit floats are not supported (upcast with .float() first, "
            "after applying the tensor's scale)"
        )
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dims (..., m, n), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if check_finite and not bool(torch.isfinite(x).all()):
        raise ValueError(nonfinite_message(x, name))
    return x


def nonfinite_message(x: torch.Tensor, name: str) -> str | None:
    """``"{name} has N NaN or Inf entries (a NaN, b +Inf, c -Inf; the first at index (i, j))"``, or None when
    every entry of ``x`` is finite."""
    x = x.detach()
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if not count:
        return None
    nan, pos = int(torch.isnan(x).sum()), int(torch.isposinf(x).sum())
    first = tuple(int(i) for i in torch.nonzero(bad)[0])
    return (
        f"{name} has {count} NaN or Inf entries ({nan} NaN, {pos} +Inf, {count - nan - pos} -Inf; "
        f"the first at index {first})"
    )


@contextlib.contextmanager
def naming_nonfinite(**inputs: torch.Tensor) -> Iterator[None]:
    """Turn a solver's failure (``torch.linalg.LinAlgError``: "failed to converge") on inputs that were not
    scanned (``check_finite=False``) into a ValueError naming the input and its non-finite entries. A failure
    on finite inputs is raised as it was."""
    try:
        yield
    except RuntimeError as exc:
        for name, x in inputs.items():
            message = nonfinite_message(x, name)
            if message is not None:
                raise ValueError(
                    f"{message}: the profile is undefined there (check_finite=False skipped the scan; the "
                    f"solver failed: {str(exc).splitlines()[0][:120]})"
                ) from exc
        raise


def check_kind(x: torch.Tensor, name: str) -> None:
    """A TypeError naming ``name`` for a tensor with no dense values to read: sparse (COO, CSR, CSC, BSR, BSC)
    or nested layouts, and the meta device (shapes only)."""
    if x.layout != torch.strided:
        kind = str(x.layout).removeprefix("torch.")
        raise TypeError(
            f"{name} is a {kind} tensor: only dense (strided) matrices are supported; pass {name}.to_dense() "
            "if it fits in memory"
        )
    if x.is_nested:
        raise TypeError(f"{name} is a nested tensor: only dense (strided) matrices are supported")
    if x.device.type == "meta":
        raise TypeError(
            f"{name} is on the meta device (a shape with no values, e.g. a model built under init_empty_weights): "
            "load its weights first"
        )


def unit_scale(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` divided by its largest absolute entry over ``dims`` (zero slices stay zero).

    Profiles are scale invariant; squaring entries of 1e154 (float64) overflows and of 1e-170
    underflows, so every path brings its input to max-abs 1 first (a division: it moves entries
    by at most one rounding, and the scale is a constant for autograd, which is exact for a
    scale-invariant function). Subnormal maxima are divided by the smallest normal number instead,
    which still leaves squares far from underflow.
    """
    amax = x.detach().abs().amax(dim=dims, keepdim=True)
    return x / amax.clamp_min(torch.finfo(x.dtype).tiny)


def result_dtype(x: torch.Tensor) -> torch.dtype:
    """Profiles come back in float64 for float64 input, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_zero_policy(on_zero: str) -> None:
    if on_zero not in ZERO_POLICIES:
        raise ValueError(f"on_zero must be one of {ZERO_POLICIES}, got {on_zero!r}")


def handle_zero(norm_sq: torch.Tensor, on_zero: str, name: str) -> torch.Tensor:
    """Mask of matrices whose squared Frobenius norm is zero; raises under ``on_zero='raise'``.

    A zero matrix has no normalised state (docs/definitions.md §1.2), so its entropy is undefined: by default
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


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int (numpy integer scalars accepted); TypeError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def check_positive_int(value: Any, name: str, *, allow_none: bool = True) -> int | None:
    """``value`` as a positive Python int (numpy integers accepted), or None where allowed."""
    if value is None and allow_none:
        return None
    try:
        out = as_int(value, name)
    except TypeError:
        out = None
    if out is None or out < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return out


def as_real(value: Any, name: str) -> float:
    """``value`` as a float (numpy scalars, 0-d real arrays and tensors too); else a TypeError naming ``name``."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        return float(value)
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not (value.is_complex() or value.dtype == torch.bool):
        return float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_finite_real(value: Any, name: str) -> float:
    out = as_real(value, name)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out
