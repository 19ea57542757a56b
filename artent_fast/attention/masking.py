"""The one torch-side masking rule of every attention path (the Triton kernels carry their own copy).

Logits ``s`` (``(..., rows, S)``) get the user mask (boolean: ``False`` masks; float: added) and, when
``causal``, the bottom-right aligned causal pattern: query ``i`` sees keys ``j <= i + (S - T)``
(as in FlashAttention-2 and for decoding with a KV cache; the usual triangle when ``S == T``).
Masked entries become ``-inf``.
"""

from __future__ import annotations

import torch


def causal_keep(rows: int, kv_len: int, q_len: int, device: torch.device, row0: int = 0) -> torch.Tensor:
    """Boolean ``(rows, S)`` causal pattern of query rows ``row0 .. row0 + rows`` of a ``T = q_len`` problem."""
    i = torch.arange(row0, row0 + rows, device=device).unsqueeze(-1)
    return torch.arange(kv_len, device=device) <= i + (kv_len - q_len)


def apply_mask(s: torch.Tensor, mask: torch.Tensor | None, *, causal: bool, q_len: int, row0: int = 0) -> torch.Tensor:
    """``s`` with the user ``mask`` (broadcastable to ``s``) and the causal pattern applied."""
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(s.dtype)
    if causal:
        s = s.masked_fill(~causal_keep(s.shape[-2], s.shape[-1], q_len, s.device, row0), float("-inf"))
    return s
