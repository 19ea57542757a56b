"""Plain eager attention, float64-capable: the obviously-right twin of the fused paths.

Materialises the full ``(B, H, T, S)`` attention matrix; for tests and small probes only.
Conventions shared by every path (documented in docs/attention.md):

- causal masks are aligned bottom-right: query ``i`` sees keys ``j <= i + (S - T)`` (as in
  FlashAttention-2 and for decoding with a KV cache; for ``S == T`` this is the usual triangle);
- a fully masked row has output 0, log-sum-exp ``-inf`` and entropy 0 (never NaN).
"""

from __future__ import annotations

import torch

from artent_fast.attention.masking import apply_mask
from artent_fast.attention.validate import check_mask, check_qk, check_v


def reference_logits(q, k, *, causal: bool, mask=None, scale=None, dtype=torch.float64) -> torch.Tensor:
    """Masked logits ``(B, H, T, S)`` in ``dtype``; masked entries are ``-inf``."""
    p = check_qk(q, k, scale)
    mask = check_mask(mask, p, q.device)
    kk = k.to(dtype).repeat_interleave(p.groups, dim=1)
    s = torch.matmul(q.to(dtype), kk.transpose(-1, -2)) * p.scale
    return apply_mask(s, mask, causal=causal, q_len=p.q_len)


def reference_probs(q, k, *, causal: bool, mask=None, scale=None, dtype=torch.float64) -> torch.Tensor:
    """The attention matrices ``P`` ``(B, H, T, S)``; fully masked rows are zero."""
    s = reference_logits(q, k, causal=causal, mask=mask, scale=scale, dtype=dtype)
    dead = torch.isneginf(s).all(-1, keepdim=True)
    return torch.softmax(s.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)


def reference_attention(q, k, v, *, causal: bool, mask=None, scale=None, dtype=torch.float64):
    """``(out, lse, entropy)`` by the book, computed in ``dtype`` (float64 by default)."""
    check_v(v, q, k)
    s = reference_logits(q, k, causal=causal, mask=mask, scale=scale, dtype=dtype)
    groups = q.shape[1] // k.shape[1]
    probs = reference_probs(q, k, causal=causal, mask=mask, scale=scale, dtype=dtype)
    out = torch.matmul(probs, v.to(dtype).repeat_interleave(groups, dim=1))
    lse = torch.logsumexp(s, -1)  # -inf on fully masked rows
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    return out, lse, entropy
