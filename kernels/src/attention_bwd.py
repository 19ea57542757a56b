"""Triton FlashAttention-2 backward for kernels/attention_fwd.py, from the stored log-sum-exp.

``P = exp(S - lse)`` is recomputed tile by tile, never stored:
``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - delta)`` with ``delta = rowsum(dO * O)``,
``dQ = scale dS K``, ``dK = scale dS^T Q``. Two kernels: one program per key block accumulates
dK and dV over every query block of every query head in its GQA group (no atomics), one
program per query block accumulates dQ over the key blocks. Masks, causal alignment and
fully masked rows (lse = -inf, P = 0) follow the forward. Jitted on first use: importing this
module needs no triton; ``TRITON_INTERPRET=1`` set before triton is imported runs it on CPU.
"""

from __future__ import annotations

import torch

from ._attention_tiles import (
    DTYPES,
    HEAD_DIM_MAX,
    check_inputs,
    dot,
    head_block,
    ieee,
    key_end,
    load_tile,
    probs_and_dscores,
    program_rows,
    row_stats,
    store_tile,
)
from ._support import (
    Launch,
    available,
    interpreting,
    jit,
    mask_args,
    mask_variants,
    ptr,
    require,
    tl,
    triton,
    unique,
)

__all__ = [
    "attention_bwd",
    "available",
    "backward_blocks",
    "backward_options",
    "launch_configs",
]


# parameters grouped by kind: tensors, their strides (DO: so*), sizes, compile-time switches
def _dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, M,
    sqb, sqh, sqt, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sot, sod, smb, smh, smt, sms,
    H, HK, T, S, D, GROUPS, scale,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    b = tl.program_id(1) // HK
    hk = tl.program_id(1) % HK
    keys = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    key_ok = keys < S
    d_ok = dd < D
    k = load_tile(K + b * skb + hk * skh, sks, skd, keys, dd, key_ok, d_ok, False)
    v = load_tile(V + b * svb + hk * svh, svs, svd, keys, dd, key_ok, d_ok, False)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    offset = S - T
    lo = 0
    if CAUSAL:
        lo = tl.maximum(pid_n * BLOCK_N - offset, 0) // BLOCK_M * BLOCK_M
    for g in range(0, GROUPS):
        h = hk * GROUPS + g
        m_bh = M + b * smb + h * smh
        for m0 in range(lo, T, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            row_ok = rows < T
            q = load_tile(Q + b * sqb + h * sqh, sqt, sqd, rows, dd, row_ok, d_ok, False)
            do = load_tile(DO + b * sob + h * soh, sot, sod, rows, dd, row_ok, d_ok, False)
            lse, delta = row_stats(LSE, DELTA, (b * H + h) * T + rows, row_ok)
            p, ds = probs_and_dscores(
                q,
                k,
                v,
                do,
                lse,
                delta,
                scale,
                m_bh,
                smt,
                sms,
                rows,
                keys,
                row_ok,
                key_ok,
                offset,
                CAUSAL,
                MASK_KIND,
                IEEE,
            )
            dv += dot(tl.trans(p.to(do.dtype)), do, IEEE)
            dk += dot(tl.trans(ds.to(q.dtype)), q, IEEE)
    store_tile(DK + b * skb + hk * skh, sks, skd, keys, dd, key_ok, d_ok, dk * scale)
    store_tile(DV + b * svb + hk * svh, svs, svd, keys, dd, key_ok, d_ok, dv)


def _dq(
    Q, K, V, DO, LSE, DELTA, DQ, M,
    sqb, sqh, sqt, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sot, sod, smb, smh, smt, sms,
    H, T, S, D, GROUPS, scale,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    b, h, hk, rows, cols, dd, row_ok, d_ok = program_rows(H, GROUPS, T, D, BLOCK_M, BLOCK_N, BLOCK_D)
    q = load_tile(Q + b * sqb + h * sqh, sqt, sqd, rows, dd, row_ok, d_ok, False)
    do = load_tile(DO + b * sob + h * soh, sot, sod, rows, dd, row_ok, d_ok, False)
    lse, delta = row_stats(LSE, DELTA, (b * H + h) * T + rows, row_ok)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    m_bh = M + b * smb + h * smh
    offset = S - T
    for n0 in range(0, key_end(T, S, BLOCK_M, CAUSAL), BLOCK_N):
        keys = n0 + cols
        key_ok = keys < S
        k = load_tile(K + b * skb + hk * skh, sks, skd, keys, dd, key_ok, d_ok, False)
        v = load_tile(V + b * svb + hk * svh, svs, svd, keys, dd, key_ok, d_ok, False)
        _, ds = probs_and_dscores(
            q, k, v, do, lse, delta, scale, m_bh, smt, sms, rows, keys, row_ok, key_ok, offset, CAUSAL, MASK_KIND, IEEE
        )
        dq += dot(ds.to(k.dtype), k, IEEE)
    store_tile(DQ + b * sqb + h * sqh, sqt, sqd, rows, dd, row_ok, d_ok, dq * scale)


def backward_blocks(head_dim: int, dtype: torch.dtype, interpret: bool = False) -> tuple[int, int]:
    """``(BLOCK_M, BLOCK_N)`` that fit in an H100's shared memory (checked by compiling for sm_90)."""
    if interpret:
        return 16, 16
    if head_dim > 128:
        return 32, 32
    if dtype == torch.float32:
        return (32, 64) if head_dim > 64 else (64, 64)
    return (64, 64) if head_dim > 64 else (128, 64)


def backward_options(head_dim: int) -> dict[str, int]:
    return {"num_warps": 8 if head_dim > 64 else 4, "num_stages": 2}


def launch_configs() -> list[Launch]:
    """Every configuration :func:`attention_bwd` launches ``_dkdv`` and ``_dq`` with on a GPU (default blocks),
    for ahead-of-time compiling: dtype, TF32 or not, head dim (as BLOCK_D), and the switches causal, mask kind
    and mask dtype (heaviest first)."""
    return unique(
        Launch.of(
            kernel,
            {
                **dict.fromkeys(("Q", "K", "V", "DO", "DK", "DV", "DQ"), ptr(dt)),
                **dict.fromkeys(("LSE", "DELTA"), "*fp32"),
                "M": ptr(mask_dt),
                "scale": "fp32",
            },
            {
                "CAUSAL": causal,
                "MASK_KIND": kind,
                "IEEE": ieee(dt, tf32),
                **dict(zip(("BLOCK_M", "BLOCK_N"), backward_blocks(d, dt), strict=True)),
                "BLOCK_D": head_block(d),
            },
            backward_options(d),
            switches=("M", "CAUSAL", "MASK_KIND"),
        )
        for kernel in (_dkdv, _dq)
        for dt in DTYPES
        for tf32 in (False, True)
        for d in range(1, HEAD_DIM_MAX + 1)
        for causal in (True, False)
        for kind, mask_dt in mask_variants(dt)
    )


def attention_bwd(
    q,
    k,
    v,
    out,
    dout,
    lse,
    mask,
    *,
    causal: bool,
    scale: float,
    block_m: int | None = None,
    block_n: int | None = None,
    allow_tf32: bool = False,
):
    """``(dq, dk, dv)`` for the forward ``out = attention(q, k, v)`` with row log-sum-exp ``lse``."""
    require("attention_bwd")
    q, k, v, dout = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous()
    check_inputs(q, v)
    b, h, t, d = q.shape
    hk, s_len = k.shape[1], k.shape[2]
    delta = (dout.float() * out.float()).sum(-1).contiguous()
    lse = lse.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    kind, mptr, mstr = mask_args(mask, (b, h, t, s_len))
    mptr = q if mptr is None else mptr
    interp = interpreting()
    bm, bn = backward_blocks(d, q.dtype, interp)
    bm, bn = block_m or bm, block_n or bn
    inputs = (q, k, v, dout, lse, delta)
    strides = (*q.stride(), *k.stride(), *v.stride(), *dout.stride(), *mstr)
    consts = {"CAUSAL": causal, "MASK_KIND": kind, "IEEE": ieee(q.dtype, allow_tf32), "BLOCK_M": bm, "BLOCK_N": bn}
    consts["BLOCK_D"] = head_block(d)
    launch = backward_options(d)
    jit(_dkdv)[(triton.cdiv(s_len, bn), b * hk)](
        *inputs, dk, dv, mptr, *strides, h, hk, t, s_len, d, h // hk, scale, **consts, **launch
    )
    jit(_dq)[(triton.cdiv(t, bm), b * h)](
        *inputs, dq, mptr, *strides, h, t, s_len, d, h // hk, scale, **consts, **launch
    )
    return dq, dk, dv
