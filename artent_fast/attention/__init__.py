"""Fused attention with entropy capture, and the external entanglement of attention matrices (docs/definitions.md §3).

- :func:`attention`: attention output plus each row's log-sum-exp and Shannon entropy
  (Triton kernel on CUDA, torch elsewhere).
- :func:`attention_profile`, :func:`attention_cardy`: entanglement profiles of every head's
  attention matrix and their Calabrese-Cardy fits.
- :func:`register_attention`: the "artent" implementation for transformers models; captured
  statistics land on :mod:`artent_fast.attention.channel`.
"""

from __future__ import annotations

import sys
import types

from artent_fast.attention.fused import attention
from artent_fast.attention.hf import register_attention
from artent_fast.attention.profile import AttentionCardy, attention_cardy, attention_profile
from artent_fast.attention.reference import reference_attention, reference_probs

__all__ = [
    "AttentionCardy",
    "attention",
    "attention_cardy",
    "attention_profile",
    "reference_attention",
    "reference_probs",
    "register_attention",
]


class _CallableModule(types.ModuleType):
    """Importing any submodule binds ``artent_fast.attention`` to this package, shadowing the lazily
    exported function of the same name; making the package callable keeps
    ``artent_fast.attention(q, k, v, ...)`` working either way."""

    def __call__(self, *args, **kwargs):
        return attention(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
