"""Text to the token tensor a small causal LM trains on, and random windows of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def tokens_of(
    text: str, tokenizer: Any, vocab_size: int, *, on_fallback: Callable[[], object] | None = None
) -> torch.Tensor:
    """``text`` as a 1-D LongTensor of token ids below ``vocab_size``.

    With a ``tokenizer`` (a Hugging Face one: ``tokenizer(text)["input_ids"]``), its ids inside the vocabulary,
    when there are more than one per 20 characters; else (no tokenizer, or one that yields (almost) no usable
    tokens) the UTF-8 bytes of ``text`` modulo ``vocab_size``. ``on_fallback()`` is called when a tokenizer
    was given but bytes are used instead.
    """
    if tokenizer is not None:
        ids = [i for i in tokenizer(text)["input_ids"] if 0 <= i < vocab_size]
        if len(ids) > len(text) // 20:
            return torch.tensor(ids, dtype=torch.long)
        if on_fallback is not None:
            on_fallback()
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long) % vocab_size


def random_windows(tokens: torch.Tensor, count: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` windows of ``seq_len`` tokens at random starts (drawn from ``generator``), as a
    ``(count, seq_len)`` batch; ``tokens`` must be longer than ``seq_len``."""
    starts = torch.randint(0, len(tokens) - seq_len, (count,), generator=generator).tolist()
    return torch.stack([tokens[s : s + seq_len] for s in starts])
