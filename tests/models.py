"""Tiny models the tests build from configs (no downloads)."""

from __future__ import annotations

from typing import Any

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
