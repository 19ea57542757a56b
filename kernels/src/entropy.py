"""Entropies of batched spectra, fused: clamp, normalise, xlogy / power / max and sum in one pass pair.

Torch reference: the registry's torch kernel ``artent_fast.backends.torch_ops.entropy`` (the one definition).

One program per spectrum (row of ``values``): the first pass sums the clamped values (skipped when
``total`` is given), the second accumulates ``-p ln p`` (alpha = 1), ``p^alpha`` (Renyi) or the
maximum (alpha = inf). Float64 stays float64; other dtypes compute in float32.
"""

from __future__ import annotations

import math

import torch

from ._support import DTYPES, Launch, check_runnable, interpreting, jit, ptr, tl, unique

MODE_VN, MODE_RENYI, MODE_MIN = 0, 1, 2


def _entropy_kernel(
    V,
    TOTAL,
    OUT,
    n,
    sv_row,
    sv_col,
    alpha,
    inv_log_base,
    MODE: tl.constexpr,
    HAS_TOTAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    acc_ty = tl.float64 if V.dtype.element_ty == tl.float64 else tl.float32
    cols = tl.arange(0, BLOCK)
    base = V + row * sv_row
    if HAS_TOTAL:
        total = tl.load(TOTAL + row).to(acc_ty)
    else:
        run = tl.zeros([BLOCK], acc_ty)
        for c0 in range(0, n, BLOCK):
            c = c0 + cols
            v = tl.load(base + c * sv_col, mask=c < n, other=0.0).to(acc_ty)
            run += tl.where(v < 0, 0.0, v)  # clamp that keeps NaN (tl.maximum may drop it)
        total = tl.sum(run, axis=0)
    run = tl.zeros([BLOCK], acc_ty)  # p >= 0, so 0 is also the identity of the max
    for c0 in range(0, n, BLOCK):
        c = c0 + cols
        v = tl.load(base + c * sv_col, mask=c < n, other=0.0).to(acc_ty)
        p = tl.where(v < 0, 0.0, v) / total
        if MODE == 0:
            run += tl.where(p > 0, -p * tl.log(tl.where(p > 0, p, 1.0)), tl.where(p == p, 0.0, p))
        elif MODE == 1:
            run += tl.where(p > 0, tl.exp(alpha * tl.log(tl.where(p > 0, p, 1.0))), tl.where(p == p, 0.0, p))
        else:
            run = tl.maximum(run, p, propagate_nan=tl.PropagateNan.ALL)
    if MODE == 0:
        s = tl.sum(run, axis=0)
    elif MODE == 1:
        s = tl.log(tl.sum(run, axis=0)) / (1.0 - alpha)
    else:
        s = -tl.log(tl.max(run, axis=0))
    tl.store(OUT + row, (s * inv_log_base).to(OUT.dtype.element_ty))


def entropy(
    values: torch.Tensor, total: torch.Tensor | None = None, *, alpha: float = 1.0, base: float = math.e
) -> torch.Tensor:
    """Entropy of each spectrum ``values[..., :]`` (von Neumann for alpha=1, Renyi, min-entropy for inf)."""
    if values.dtype not in DTYPES:
        raise TypeError(f"values has dtype {values.dtype}; the entropy kernel takes {DTYPES}")
    if values.ndim < 1:
        raise ValueError("values must have a last (spectrum) dimension")
    check_runnable(values, "values")
    lead, n = values.shape[:-1], values.shape[-1]
    v2 = values.reshape(-1, n)
    rows = v2.shape[0]
    out = torch.empty(rows, dtype=values.dtype, device=values.device)
    if total is not None:
        total = torch.broadcast_to(total, lead).reshape(rows).to(values.dtype).contiguous()
    if rows == 0:
        return out.reshape(lead)
    if n == 0:  # empty spectrum: NaN, like the reference (0 / 0)
        return out.fill_(float("nan")).reshape(lead)
    mode = MODE_VN if alpha == 1 else (MODE_MIN if math.isinf(alpha) else MODE_RENYI)
    block = _block(n, interpreting())
    jit(_entropy_kernel)[(rows,)](
        v2,
        total if total is not None else v2,
        out,
        n,
        v2.stride(0),
        v2.stride(1),
        float(alpha) if mode == MODE_RENYI else 1.0,
        1.0 / math.log(base),
        MODE=mode,
        HAS_TOTAL=total is not None,
        BLOCK=block,
    )
    return out.reshape(lead)


def _block(n: int, interpret: bool) -> int:
    """Values per step of a spectrum of ``n``: the next power of two, 16 to 1024."""
    return 16 if interpret else min(1024, max(16, 1 << (n - 1).bit_length()))


def launch_configs() -> list[Launch]:
    """Every configuration :func:`entropy` launches with on a GPU (dtype, mode, given total, block; default
    warps and stages), for ahead-of-time compiling. Switches: the mode and whether the total is given."""
    return unique(
        Launch.of(
            _entropy_kernel,
            {"V": ptr(dt), "TOTAL": ptr(dt), "OUT": ptr(dt), "alpha": "fp32", "inv_log_base": "fp32"},
            {"MODE": mode, "HAS_TOTAL": has_total, "BLOCK": _block(n, False)},
            {},
            switches=("MODE", "HAS_TOTAL"),
        )
        for dt in DTYPES
        for n in range(1, 2049)
        for has_total in (False, True)
        for mode in (MODE_RENYI, MODE_VN, MODE_MIN)
    )
