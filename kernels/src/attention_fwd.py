"""Triton FlashAttention-style forward that also returns each row's log-sum-exp and Shannon entropy.

One program computes a ``BLOCK_M`` block of query rows of one (batch, head) with an online
softmax over ``BLOCK_N`` key blocks, never materialising the ``T x S`` matrix. Logits are kept
in base-2 units (``exp2``). Besides the running max ``m`` and sum ``l`` it keeps
``t = sum_j 2^(s_j - m) (s_j - m)``, rescaled with ``m`` like ``l``; at the end
``lse = (m + log2 l) ln 2`` and ``H = (log2 l - t / l) ln 2``. That is one extra FMA and a
row sum per logit, which is why entropy capture is nearly free.

Supports causal masks (bottom-right aligned), any strided boolean or additive mask that
broadcasts to ``(B, H, T, S)`` (padding masks), grouped-query attention, head dims up to 256
(64 and 128 are the tuned cases) and fp16/bf16/fp32 inputs. Fully masked rows give out = 0,
lse = -inf, entropy = 0. The kernel is jitted on first use, so importing this module needs no
triton, and setting ``TRITON_INTERPRET=1`` before the first call runs it on CPU.
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
    logits,
    program_rows,
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
    "attention_fwd",
    "available",
    "default_blocks",
    "launch_configs",
    "launch_options",
]


# parameters grouped by kind: tensors, their strides, sizes, compile-time switches
def _attn_fwd(
    Q, K, V, O, LSE, ENT, M,
    sqb, sqh, sqt, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sot, sod, smb, smh, smt, sms,
    H, T, S, D, GROUPS, scale,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr, ENTROPY: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    b, h, hk, rows, cols, dd, row_ok, d_ok = program_rows(H, GROUPS, T, D, BLOCK_M, BLOCK_N, BLOCK_D)
    q = load_tile(Q + b * sqb + h * sqh, sqt, sqd, rows, dd, row_ok, d_ok, False)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    t_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    m_bh = M + b * smb + h * smh
    for n0 in range(0, key_end(T, S, BLOCK_M, CAUSAL), BLOCK_N):
        keys = n0 + cols
        key_ok = keys < S
        kt = load_tile(K + b * skb + hk * skh, sks, skd, keys, dd, key_ok, d_ok, True)
        # logits in base-2 units (BASE2): exp2 is the hardware exponential
        s, keep = logits(q, kt, scale, m_bh, smt, sms, rows, keys, row_ok, key_ok, S - T, CAUSAL, MASK_KIND, IEEE, True)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_safe)
        if ENTROPY:
            delta = tl.where(m_i == float("-inf"), 0.0, m_i - m_safe)
        z = tl.maximum(s - m_safe[:, None], -200.0)  # masked (-inf) -> -200: 2^-200 is exactly 0 in fp32
        p = tl.math.exp2(z)
        if ENTROPY:
            t_i = alpha * (t_i + delta * l_i) + tl.sum(p * z, 1)
        l_i = alpha * l_i + tl.sum(p, 1)
        v = load_tile(V + b * svb + hk * svh, svs, svd, keys, dd, key_ok, d_ok, False)
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, IEEE)
        m_i = m_new
    live = l_i > 0
    l_safe = tl.where(live, l_i, 1.0)
    m_fin = tl.where(m_i == float("-inf"), 0.0, m_i)
    lse = tl.where(live, (m_fin + tl.math.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    store_tile(O + b * sob + h * soh, sot, sod, rows, dd, row_ok, d_ok, acc / l_safe[:, None])
    stat = (b * H + h) * T + rows
    tl.store(LSE + stat, lse, mask=row_ok)
    if ENTROPY:
        ent = tl.where(live, (tl.math.log2(l_safe) - t_i / l_safe) * 0.6931471805599453, 0.0)
        tl.store(ENT + stat, ent, mask=row_ok)


def default_blocks(head_dim: int, dtype: torch.dtype, interpret: bool | None = None) -> tuple[int, int]:
    """``(BLOCK_M, BLOCK_N)`` that fit in an H100's shared memory (checked by compiling for sm_90)."""
    if interpreting() if interpret is None else interpret:
        return 16, 16
    if dtype == torch.float32 or head_dim > 128:
        return 64, 32
    return 128, 64 if head_dim <= 64 else 32


def launch_options(head_dim: int) -> dict[str, int]:
    return {"num_warps": 8 if head_dim > 64 else 4, "num_stages": 3 if head_dim <= 128 else 2}


def launch_configs() -> list[Launch]:
    """Every configuration :func:`attention_fwd` launches with on a GPU (default blocks), for ahead-of-time
    compiling: dtype, TF32 or not, head dim (as BLOCK_D), and the switches causal, mask kind and mask dtype,
    entropy (heaviest first)."""
    return unique(
        Launch.of(
            _attn_fwd,
            {**dict.fromkeys("QKVO", ptr(dt)), "LSE": "*fp32", "ENT": "*fp32", "M": ptr(mask_dt), "scale": "fp32"},
            {
                "CAUSAL": causal,
                "MASK_KIND": kind,
                "IEEE": ieee(dt, tf32),
                "ENTROPY": entropy,
                **dict(zip(("BLOCK_M", "BLOCK_N"), default_blocks(d, dt, interpret=False), strict=True)),
                "BLOCK_D": head_block(d),
            },
            launch_options(d),
            switches=("M", "CAUSAL", "MASK_KIND", "ENTROPY"),
        )
        for dt in DTYPES
        for tf32 in (False, True)
        for d in range(1, HEAD_DIM_MAX + 1)
        for causal in (True, False)
        for kind, mask_dt in mask_variants(dt)
        for entropy in (True, False)
    )


def attention_fwd(
    q,
    k,
    v,
    mask,
    *,
    causal: bool,
    scale: float,
    entropy: bool = True,
    block_m: int | None = None,
    block_n: int | None = None,
    allow_tf32: bool = False,
):
    """``(out, lse, entropy)`` for validated q ``(B, H, T, d)``, k/v ``(B, Hkv, S, d)``.

    ``mask``: None, or a bool/float tensor broadcastable to ``(B, H, T, S)`` (4 dims).
    ``entropy=False`` compiles the kernel without the entropy accumulator (entropy comes back
    None): the "same kernel without capture" of the benchmarks. The lse is always written (the backward needs it).
    """
    require("attention_fwd")
    check_inputs(q, v)
    b, h, t, d = q.shape
    s_len = k.shape[2]
    out = torch.empty_like(q)
    lse = torch.empty(b, h, t, device=q.device, dtype=torch.float32)
    ent = torch.empty(b, h, t, device=q.device, dtype=torch.float32) if entropy else lse
    bm, bn = default_blocks(d, q.dtype)
    bm, bn = block_m or bm, block_n or bn
    kind, mptr, mstr = mask_args(mask, (b, h, t, s_len))
    mptr = q if mptr is None else mptr
    grid = (triton.cdiv(t, bm), b * h)
    jit(_attn_fwd)[grid](
        q,
        k,
        v,
        out,
        lse,
        ent,
        mptr,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        *mstr,
        h,
        t,
        s_len,
        d,
        h // k.shape[1],
        scale,
        CAUSAL=causal,
        MASK_KIND=kind,
        IEEE=ieee(q.dtype, allow_tf32),
        ENTROPY=entropy,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_D=head_block(d),
        **launch_options(d),
    )
    return out, lse, (ent if entropy else None)
