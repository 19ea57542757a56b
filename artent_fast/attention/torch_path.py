"""The torch attention path (CPU, and GPUs without Triton): exact softmax over query blocks.

:func:`torch_attention` is the registry's torch kernel of the op ``attention``
(:mod:`artent_fast.backends.registry`), the one that every other backend falls back to.

Each block of query rows sees all keys at once (a ``(rows, S)`` tile per head), so the softmax
needs no online rescaling; the block height keeps the tile under ``tile_bytes``. For small
``T`` this is one block, i.e. plain materialising attention. Gradients flow through autograd.
The statistics (log-sum-exp, row entropy) are detached monitoring values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from artent_fast.attention.masking import apply_mask
from artent_fast.attention.validate import Problem
from artent_fast.backends.registry import register_kernel

TILE_BYTES = 64 * 2**20


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def grouped_mask(mask: torch.Tensor | None, p: Problem) -> torch.Tensor | None:
    """``(Bm, Hm, T, S)`` -> ``(Bm, Hkv|1, G|1, T, S)`` to match grouped queries."""
    if mask is None:
        return None
    bm, hm, tm, sm = mask.shape
    if hm == 1:
        return mask.unsqueeze(2)
    return mask.reshape(bm, p.kv_heads, p.groups, tm, sm)


def block_logits(q_blk, k, mask_blk, row0: int, p: Problem, causal: bool) -> torch.Tensor:
    """Scaled, masked logits of query rows ``row0 ..`` (grouped layout); masked entries are -inf."""
    s = torch.matmul(q_blk, k.transpose(-1, -2)) * p.scale
    return apply_mask(s, mask_blk, causal=causal, q_len=p.q_len, row0=row0)


def safe_softmax(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, lse)`` of logits rows; rows with no finite logit give P = 0 and lse = -inf.

    Fused ``logsumexp`` and ``softmax``; dead rows are patched only when there are any (a
    host check: this is the CPU path).
    """
    lse = torch.logsumexp(s.detach(), -1, keepdim=True)
    dead = torch.isneginf(lse)
    if bool(dead.any()):
        probs = torch.softmax(s.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    else:
        probs = torch.softmax(s, -1)
    return probs, lse.squeeze(-1)


def row_blocks(p: Problem, itemsize: int, tile_bytes: int = TILE_BYTES) -> int:
    per_row = max(1, p.batch * p.heads * p.kv_len * itemsize * 3)  # logits, exp, probs
    return max(1, min(p.q_len, tile_bytes // per_row))


def mask_rows(mask: torch.Tensor | None, r0: int, r1: int) -> torch.Tensor | None:
    if mask is None:
        return None
    return mask if mask.shape[-2] == 1 else mask[..., r0:r1, :]


@register_kernel("attention", "torch")
def torch_attention(
    q, k, v, p: Problem, mask, causal: bool, dropout_p: float = 0.0, training: bool = True, entropy: bool = True
):
    """``(out, lse, entropy or None)``; out in q's dtype, statistics in float32 (float64 for float64).

    Grouped-query heads share their key/value head without copies: the ``G`` query heads of a
    group are stacked along the rows of one ``(G * rows, d) @ (d, S)`` product.
    """
    work = work_dtype(q.dtype)
    qg = q.to(work).reshape(p.batch, p.kv_heads, p.groups, p.q_len, p.head_dim)
    kt = k.to(work).transpose(-1, -2)
    vw = v.to(work)
    mg = grouped_mask(mask, p)
    outs, lses, ents = [], [], []
    step = row_blocks(p, torch.finfo(work).bits // 8)
    for r0 in range(0, p.q_len, step):
        r1 = min(p.q_len, r0 + step)
        rows = r1 - r0
        qb = qg[..., r0:r1, :].reshape(p.batch, p.kv_heads, p.groups * rows, p.head_dim)
        s = (torch.matmul(qb, kt) * p.scale).reshape(p.batch, p.kv_heads, p.groups, rows, p.kv_len)
        s = apply_mask(s, mask_rows(mg, r0, r1), causal=causal, q_len=p.q_len, row0=r0)
        probs, lse = safe_softmax(s)
        used = F.dropout(probs, dropout_p, training=training) if dropout_p > 0 else probs
        out = torch.matmul(used.reshape(p.batch, p.kv_heads, p.groups * rows, p.kv_len), vw)
        outs.append(out.reshape(p.batch, p.kv_heads, p.groups, rows, v.shape[-1]))
        lses.append(lse)
        if entropy:
            with torch.no_grad():
                pd = probs.detach()
                ents.append(-torch.special.xlogy(pd, pd).sum(-1))
    out = (outs[0] if len(outs) == 1 else torch.cat(outs, -2)).reshape(p.batch, p.heads, p.q_len, v.shape[-1])
    lse = (lses[0] if len(lses) == 1 else torch.cat(lses, -1)).reshape(p.batch, p.heads, p.q_len)
    ent = None
    if entropy:
        ent = (ents[0] if len(ents) == 1 else torch.cat(ents, -1)).reshape(p.batch, p.heads, p.q_len)
    return out.to(q.dtype), lse, ent


def backward_from_lse(q, k, v, out, dout, lse, p: Problem, mask, causal: bool):
    """Gradients ``(dq, dk, dv)`` from the stored log-sum-exp (FlashAttention-2's recurrence, in torch).

    ``P = exp(S - lse)``, ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - rowsum(dO * O))``,
    ``dQ = scale dS K``, ``dK = scale dS^T Q``; query blocks bound the memory like the forward.
    """
    work = work_dtype(q.dtype)
    shape5 = (p.batch, p.kv_heads, p.groups, p.q_len)
    qg = q.to(work).reshape(*shape5, p.head_dim)
    dog = dout.to(work).reshape(*shape5, v.shape[-1])
    og = out.to(work).reshape(*shape5, v.shape[-1])
    lg = lse.to(work).reshape(*shape5, 1)
    lg = torch.where(torch.isfinite(lg), lg, torch.full_like(lg, float("inf")))  # dead rows: P = 0
    kg, vg = k.to(work).unsqueeze(2), v.to(work).unsqueeze(2)
    mg = grouped_mask(mask, p)
    dq = torch.empty_like(qg)
    dk = torch.zeros(p.batch, p.kv_heads, p.kv_len, p.head_dim, dtype=work, device=q.device)
    dv = torch.zeros(p.batch, p.kv_heads, p.kv_len, v.shape[-1], dtype=work, device=q.device)
    step = row_blocks(p, torch.finfo(work).bits // 8)
    for r0 in range(0, p.q_len, step):
        r1 = min(p.q_len, r0 + step)
        s = block_logits(qg[..., r0:r1, :], kg, mask_rows(mg, r0, r1), r0, p, causal)
        probs = torch.exp(s - lg[..., r0:r1, :])
        do = dog[..., r0:r1, :]
        dv += torch.matmul(probs.transpose(-1, -2), do).sum(2)
        dp = torch.matmul(do, vg.transpose(-1, -2))
        delta = (do * og[..., r0:r1, :]).sum(-1, keepdim=True)
        ds = probs * (dp - delta)
        dq[..., r0:r1, :] = torch.matmul(ds, kg) * p.scale
        dk += torch.matmul(ds.transpose(-1, -2), qg[..., r0:r1, :]).sum(2) * p.scale
    return dq.reshape(q.shape).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
