"""Tensor and folder names: steps, layers, modules and target patterns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "v_proj")
# Every 2-D weight is "linear" except embeddings, the output head and norms (as peft's "all-linear").
_NOT_LINEAR = re.compile(r"(embed|lm_head|wte|wpe|norm|ln_|layernorm)", re.IGNORECASE)
_STEP = re.compile(r"(?:checkpoint|global_step|step|ckpt|epoch)[-_]?(\d+)", re.IGNORECASE)
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_ANY_INDEX = re.compile(r"\.(\d+)\.")


def parse_step(path: str | Path) -> int | None:
    """Training step from a folder name like ``checkpoint-500`` (the last such part of the path), else None."""
    for part in reversed(Path(path).parts):
        match = _STEP.search(part)
        if match:
            return int(match.group(1))
    return None


def parse_layer(module: str) -> int | None:
    """Layer index from ``model.layers.12.self_attn.q_proj`` (or ``h.3``, ``blocks.7`` ...), else None."""
    match = _LAYER.search(module) or _ANY_INDEX.search(module)
    return int(match.group(1)) if match else None


def module_name(tensor: str) -> str:
    """The tensor name without its trailing ``.weight``."""
    return tensor[: -len(".weight")] if tensor.endswith(".weight") else tensor


def is_target(module: str, patterns: Sequence[str] | None) -> bool:
    """True if ``module`` matches one of the regex ``patterns`` (searched); ``None`` means all linear layers."""
    if patterns is None:
        return not _NOT_LINEAR.search(module)
    return any(re.search(p, module) for p in patterns)
