"""The "artent" attention implementation for transformers (5.x AttentionInterface).

``register_attention()`` registers the attention function and, under the same name, the
boolean mask builder (``sdpa_mask``: True = keep, None for a plain causal mask); without the
mask registration transformers would silently drop padding masks. After that,
``LlamaForCausalLM(config)`` with ``config._attn_implementation = "artent"``,
``from_pretrained(..., attn_implementation="artent")`` or ``model.set_attn_implementation("artent")``
run on :func:`artent_fast.fused_attention`, and captured statistics go to the side channel.
"""

from __future__ import annotations

import torch

from artent_fast.attention import channel
from artent_fast.attention.fused import fused_attention
from artent_fast.extras import optional_imports

NAME = "artent"


def artent_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; returns ``(out (B, T, H, d), None)``."""
    if kwargs.get("softcap") is not None:
        raise ValueError("the 'artent' attention does not support softcap; use attn_implementation='eager'")
    if kwargs.get("position_bias") is not None:
        raise ValueError("the 'artent' attention does not support position_bias; use attn_implementation='eager'")
    q_len, kv_len = query.shape[2], key.shape[2]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # as in transformers' sdpa integration: a mask, when given, already holds the causal pattern
    causal = bool(q_len > 1 and attention_mask is None and is_causal)
    if causal and kv_len > q_len:  # prefill into an empty static cache: the keys past q_len are unused
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    mask = attention_mask
    if mask is not None and mask.shape[-1] != key.shape[2]:
        mask = mask[..., : key.shape[2]]
    out, stats = fused_attention(query, key, value, causal=causal, mask=mask, scale=scaling, dropout_p=float(dropout))
    if channel.is_enabled(module):
        channel.capture(module, query, key, stats, causal=causal, mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register_attention(name: str = NAME) -> str:
    """Register ``name`` with transformers' AttentionInterface and AttentionMaskInterface; returns it."""
    with optional_imports("transformers", "register_attention() (needs transformers >= 4.48)", extra="hf"):
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(name, artent_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
