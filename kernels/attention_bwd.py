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

from ._support import MASK_ADD, MASK_BOOL, MASK_NONE, available, interpreting, jit, mask_args, require, tl, triton

__all__ = ["MASK_ADD", "MASK_BOOL", "MASK_NONE", "attention_bwd", "available", "backward_blocks"]


def _dkdv(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    M,
    sqb,
    sqh,
    sqt,
    sqd,
    skb,
    skh,
    sks,
    skd,
    svb,
    svh,
    svs,
    svd,
    sob,
    soh,
    sot,
    sod,
    smb,
    smh,
    smt,
    sms,
    H,
    HK,
    T,
    S,
    D,
    GROUPS,
    scale,
    CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HK
    hk = pid_bh % HK
    keys = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    key_ok = keys < S
    d_ok = dd < D
    kv_mask = key_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * skb + hk * skh + keys[:, None] * sks + dd[None, :] * skd, mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + hk * svh + keys[:, None] * svs + dd[None, :] * svd, mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    offset = S - T
    lo = 0
    if CAUSAL:
        lo = tl.maximum(pid_n * BLOCK_N - offset, 0) // BLOCK_M * BLOCK_M
    for g in range(0, GROUPS):
        h = hk * GROUPS + g
        for m0 in range(lo, T, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            row_ok = rows < T
            qd_mask = row_ok[:, None] & d_ok[None, :]
            q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dd[None, :] * sqd, mask=qd_mask, other=0.0)
            do = tl.load(DO + b * sob + h * soh + rows[:, None] * sot + dd[None, :] * sod, mask=qd_mask, other=0.0)
            stat = (b * H + h) * T + rows
            lse = tl.load(LSE + stat, mask=row_ok, other=float("inf"))
            lse = tl.where(lse == float("-inf"), float("inf"), lse)
            delta = tl.load(DELTA + stat, mask=row_ok, other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
            else:
                s = tl.dot(q, tl.trans(k)) * scale
            keep = row_ok[:, None] & key_ok[None, :]
            if CAUSAL:
                keep = keep & (keys[None, :] <= rows[:, None] + offset)
            if MASK_KIND == 1:
                mk = tl.load(M + b * smb + h * smh + rows[:, None] * smt + keys[None, :] * sms, mask=keep, other=0)
                keep = keep & (mk != 0)
            if MASK_KIND == 2:
                bias = tl.load(M + b * smb + h * smh + rows[:, None] * smt + keys[None, :] * sms, mask=keep, other=0.0)
                s = s + bias.to(tl.float32)
            p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
            if IEEE:
                dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision="ieee")
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            else:
                dv += tl.dot(tl.trans(p.to(do.dtype)), do)
                dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            if IEEE:
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision="ieee")
            else:
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    tl.store(
        DK + b * skb + hk * skh + keys[:, None] * sks + dd[None, :] * skd,
        (dk * scale).to(DK.dtype.element_ty),
        mask=kv_mask,
    )
    tl.store(
        DV + b * svb + hk * svh + keys[:, None] * svs + dd[None, :] * svd, dv.to(DV.dtype.element_ty), mask=kv_mask
    )


def _dq(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    M,
    sqb,
    sqh,
    sqt,
    sqd,
    skb,
    skh,
    sks,
    skd,
    svb,
    svh,
    svs,
    svd,
    sob,
    soh,
    sot,
    sod,
    smb,
    smh,
    smt,
    sms,
    H,
    T,
    S,
    D,
    GROUPS,
    scale,
    CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUPS
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    row_ok = rows < T
    d_ok = dd < D
    qd_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + dd[None, :] * sqd, mask=qd_mask, other=0.0)
    do = tl.load(DO + b * sob + h * soh + rows[:, None] * sot + dd[None, :] * sod, mask=qd_mask, other=0.0)
    stat = pid_bh * T + rows
    lse = tl.load(LSE + stat, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    delta = tl.load(DELTA + stat, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    offset = S - T
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M + offset)
    for n0 in range(0, hi, BLOCK_N):
        keys = n0 + cols
        key_ok = keys < S
        kv_mask = key_ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + hk * skh + keys[:, None] * sks + dd[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + hk * svh + keys[:, None] * svs + dd[None, :] * svd, mask=kv_mask, other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            s = tl.dot(q, tl.trans(k)) * scale
        keep = row_ok[:, None] & key_ok[None, :]
        if CAUSAL:
            keep = keep & (keys[None, :] <= rows[:, None] + offset)
        if MASK_KIND == 1:
            mk = tl.load(M + b * smb + h * smh + rows[:, None] * smt + keys[None, :] * sms, mask=keep, other=0)
            keep = keep & (mk != 0)
        if MASK_KIND == 2:
            bias = tl.load(M + b * smb + h * smh + rows[:, None] * smt + keys[None, :] * sms, mask=keep, other=0.0)
            s = s + bias.to(tl.float32)
        p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
        if IEEE:
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        else:
            dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        if IEEE:
            dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
        else:
            dq += tl.dot(ds.to(k.dtype), k)
    tl.store(
        DQ + b * sqb + h * sqh + rows[:, None] * sqt + dd[None, :] * sqd,
        (dq * scale).to(DQ.dtype.element_ty),
        mask=qd_mask,
    )


def backward_blocks(head_dim: int, dtype: torch.dtype, interpret: bool = False) -> tuple[int, int]:
    """``(BLOCK_M, BLOCK_N)`` that fit in an H100's shared memory (checked by compiling for sm_90)."""
    if interpret:
        return 16, 16
    if head_dim > 128:
        return 32, 32
    if dtype == torch.float32:
        return (32, 64) if head_dim > 64 else (64, 64)
    return (64, 64) if head_dim > 64 else (128, 64)


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
    b, h, t, d = q.shape
    hk, s_len = k.shape[1], k.shape[2]
    if v.shape[-1] != d:
        raise ValueError(f"the Triton attention backward needs v's head_dim equal to q's, got {v.shape[-1]} vs {d}")
    delta = (dout.float() * out.float()).sum(-1).contiguous()
    lse = lse.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    kind, mptr, mstr = mask_args(mask, (b, h, t, s_len))
    mptr = q if mptr is None else mptr
    interp = interpreting()
    bm, bn = backward_blocks(d, q.dtype, interp)
    bm, bn = block_m or bm, block_n or bn
    bd = max(16, triton.next_power_of_2(d))
    ieee = q.dtype == torch.float32 and not allow_tf32
    dkdv, dq_kernel = jit(_dkdv), jit(_dq)
    common = (*q.stride(), *k.stride(), *v.stride(), *dout.stride(), *mstr)
    launch = {"num_warps": 8 if d > 64 else 4, "num_stages": 2}
    dkdv[(triton.cdiv(s_len, bn), b * hk)](
        q,
        k,
        v,
        dout,
        lse,
        delta,
        dk,
        dv,
        mptr,
        *common,
        h,
        hk,
        t,
        s_len,
        d,
        h // hk,
        scale,
        CAUSAL=causal,
        MASK_KIND=kind,
        IEEE=ieee,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_D=bd,
        **launch,
    )
    dq_kernel[(triton.cdiv(t, bm), b * h)](
        q,
        k,
        v,
        dout,
        lse,
        delta,
        dq,
        mptr,
        *common,
        h,
        t,
        s_len,
        d,
        h // hk,
        scale,
        CAUSAL=causal,
        MASK_KIND=kind,
        IEEE=ieee,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_D=bd,
        **launch,
    )
    return dq, dk, dv
