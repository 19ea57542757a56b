"""Fused attention with entropy capture, and the external entanglement of attention matrices (docs/definitions.md §3).

- :func:`fused_attention`: attention output plus each row's log-sum-exp and Shannon entropy
  (Triton kernel on CUDA, torch elsewhere).
- :func:`attention_profile`, :func:`attention_cardy`: entanglement profiles of every head's
  attention matrix and their Calabrese-Cardy fits.
- :func:`register_attention`: the "artent" implementation for transformers models; captured
  statistics land on :mod:`artent_fast.attention.channel`.
"""

from __future__ import annotations

from artent_fast.attention.external import AttentionCardy, attention_cardy, attention_profile
from artent_fast.attention.fused import fused_attention
from artent_fast.attention.hf import register_attention
from artent_fast.attention.reference import reference_attention, reference_probs

__all__ = [
    "AttentionCardy",
    "fused_attention",
    "attention_cardy",
    "attention_profile",
    "reference_attention",
    "reference_probs",
    "register_attention",
]
