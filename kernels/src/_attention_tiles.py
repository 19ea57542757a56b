"""Triton device functions shared by the attention forward (attention_fwd.py) and backward (attention_bwd.py).

Tensors are ``(B, heads, rows, d)``; the helpers take the pointer of one (batch, head) slice and its row
and d strides. A tile is a block of rows (or keys) by the ``BLOCK_D`` head-dim lanes, zero outside the
valid ranges. The logit tile and its
keep mask (range, causal alignment, bool or additive mask) are written once here, so the backward
recomputes exactly the forward's tile. These are inlined into the kernels by triton.
"""

from __future__ import annotations

import torch

from ._support import device_function, tl

DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the attention kernels take (float32 accumulation)
HEAD_DIM_MAX = 256


def head_block(head_dim: int) -> int:
    """``BLOCK_D``: the head-dim lanes of a tile (the next power of two, at least 16 for ``tl.dot``)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def ieee(dtype: torch.dtype, allow_tf32: bool) -> bool:
    """The kernels' ``IEEE`` switch: full float32 products for float32 inputs unless TF32 is allowed."""
    return dtype == torch.float32 and not allow_tf32


def check_inputs(q: torch.Tensor, v: torch.Tensor) -> None:
    """TypeError/ValueError unless q's dtype and head dim (v's equal to it) are ones the kernels take."""
    if q.dtype not in DTYPES:
        raise TypeError(f"the Triton attention kernels take {DTYPES}, got {q.dtype}")
    d = q.shape[-1]
    if d > HEAD_DIM_MAX or v.shape[-1] != d:
        raise ValueError(
            f"the Triton attention kernels support head_dim <= {HEAD_DIM_MAX} with v's equal to q's, got"
            f" {d} and {v.shape[-1]}"
        )


@device_function
def program_rows(H, GROUPS, T, D, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """The query block and head a ``(row blocks, B * H)`` program owns:
    ``(b, h, hk, rows, cols, dd, row_ok, d_ok)`` (``cols``: the key offsets within a key block)."""
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dd = tl.arange(0, BLOCK_D)
    return b, h, h // GROUPS, rows, tl.arange(0, BLOCK_N), dd, rows < T, dd < D


@device_function
def key_end(T, S, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """Where the keys the program's query block can see end (all of them, or up to its causal diagonal)."""
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (tl.program_id(0) + 1) * BLOCK_M + S - T)
    return hi


@device_function
def load_tile(X, sr, sd, r, dd, r_ok, d_ok, TRANSPOSED: tl.constexpr):
    """``X[r, :]`` as an ``(r, d)`` tile, or its ``(d, r)`` transpose loaded as such (row stride ``sr``)."""
    if TRANSPOSED:
        x = tl.load(X + r[None, :] * sr + dd[:, None] * sd, mask=r_ok[None, :] & d_ok[:, None], other=0.0)
    else:
        x = tl.load(X + r[:, None] * sr + dd[None, :] * sd, mask=r_ok[:, None] & d_ok[None, :], other=0.0)
    return x


@device_function
def store_tile(X, sr, sd, r, dd, r_ok, d_ok, x):
    """``X[r, :] = x`` (cast to X's dtype) where in range."""
    tl.store(X + r[:, None] * sr + dd[None, :] * sd, x.to(X.dtype.element_ty), mask=r_ok[:, None] & d_ok[None, :])


@device_function
def dot(a, b, IEEE: tl.constexpr):
    """``a @ b`` accumulated in float32; ``IEEE``: full float32 products (no TF32)."""
    if IEEE:
        c = tl.dot(a, b, input_precision="ieee")
    else:
        c = tl.dot(a, b)
    return c


@device_function
def logits(
    q, kt, scale, M, smt, sms, rows, keys, row_ok, key_ok, offset,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr, BASE2: tl.constexpr,
):  # fmt: skip
    """``(s, keep)``: the logit tile ``q kt * scale`` plus an additive mask (both times log2(e) when ``BASE2``:
    base-2 units for ``exp2``), and which entries count (in range, causal bottom-right aligned with
    ``offset = S - T``, bool mask set)."""
    if BASE2:
        s = dot(q, kt, IEEE) * (scale * 1.4426950408889634)
    else:
        s = dot(q, kt, IEEE) * scale
    keep = row_ok[:, None] & key_ok[None, :]
    if CAUSAL:
        keep = keep & (keys[None, :] <= rows[:, None] + offset)
    if MASK_KIND != 0:
        mptrs = M + rows[:, None] * smt + keys[None, :] * sms
        if MASK_KIND == 1:
            keep = keep & (tl.load(mptrs, mask=keep, other=0) != 0)
        if MASK_KIND == 2:
            bias = tl.load(mptrs, mask=keep, other=0.0).to(tl.float32)
            if BASE2:
                bias = bias * 1.4426950408889634
            s = s + bias
    return s, keep


@device_function
def row_stats(LSE, DELTA, stat, row_ok):
    """``(lse, delta)`` of the backward's rows; a dead row's lse (-inf) becomes +inf so that its P is 0."""
    lse = tl.load(LSE + stat, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    return lse, tl.load(DELTA + stat, mask=row_ok, other=0.0)


@device_function
def probs_and_dscores(
    q, k, v, do, lse, delta, scale, M, smt, sms, rows, keys, row_ok, key_ok, offset,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """The backward's ``(P, dS)`` of one tile: ``P = exp(S - lse)`` (0 where masked), ``dS = P (dO V^T - delta)``."""
    s, keep = logits(
        q, tl.trans(k), scale, M, smt, sms, rows, keys, row_ok, key_ok, offset, CAUSAL, MASK_KIND, IEEE, False
    )
    p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0)
    return p, p * (dot(do, tl.trans(v), IEEE) - delta[:, None])
