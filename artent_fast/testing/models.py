"""Tiny LLaMA models built from a config (no downloads): the one place their shapes are written down.

:data:`TINY_LLAMA` is small enough for any CPU test; every other model (the demo's, the benchmarks', the
experiments') is it with overrides: ``tiny_llama_config(hidden_size=256, num_hidden_layers=4)``.
Needs ``transformers`` (the hf extra), imported when a config is built.
"""

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
    """A ``transformers.LlamaConfig`` of :data:`TINY_LLAMA` with ``overrides`` (any ``LlamaConfig`` field)."""
    import transformers

    return transformers.LlamaConfig(**{**TINY_LLAMA, **overrides})


def tiny_llama(**overrides: Any):
    """A ``transformers.LlamaForCausalLM`` of ``tiny_llama_config(**overrides)``, initialised from torch's
    current random state (seed it first for a reproducible model)."""
    import transformers

    return transformers.LlamaForCausalLM(tiny_llama_config(**overrides))


def moved(model, seed: int = 0) -> None:
    """Every LoRA factor moved at random (B off zero), as training would after tracking started."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor on a one-rank mesh: all local
                local.add_(torch.randn(local.shape, generator=gen, dtype=p.dtype) * 0.1)


def cpu_training_args(output_dir: Any, cls: Any = None, **overrides: Any):
    """Arguments for a short, quiet CPU run of the transformers ``Trainer``: batches of 4, a log every 2
    steps, no reports, no checkpoints, no progress bar. ``cls``: another arguments class (``trl.SFTConfig``);
    ``overrides`` (any of its fields) win."""
    import transformers

    defaults = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "logging_steps": 2,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    return (cls or transformers.TrainingArguments)(**{**defaults, **overrides})
