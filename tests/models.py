"""Tiny models the tests build from configs (no downloads)."""

from __future__ import annotations

from typing import Any

import torch

# A 2-layer LLaMA small enough for any CPU test: GQA (4 query heads, 2 key/value heads), 64 positions.
TINY_LLAMA = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def tiny_llama_config(**overrides: Any):
    """A ``transformers.LlamaConfig`` of :data:`TINY_LLAMA` with ``overrides``."""
    import transformers

    return transformers.LlamaConfig(**{**TINY_LLAMA, **overrides})


def moved(model, seed: int = 0) -> None:
    """Every LoRA factor moved at random (B off zero), as training would after tracking started."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor on a one-rank mesh: all local
                local.add_(torch.randn(local.shape, generator=gen, dtype=p.dtype) * 0.1)
