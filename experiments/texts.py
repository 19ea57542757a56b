"""The text the models read, as token windows: generated sentences and arithmetic for the built model, the
English chatterbot corpus for a pretrained one; the one text-to-tokens step; fixed windows drawn by seed."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import torch

from artent_fast.testing.text import random_windows

WORDS = ("the cat", "a dog", "my sister", "the teacher", "our team", "a farmer", "the bird", "an old man")
VERBS = ("sees", "likes", "follows", "paints", "finds", "carries", "reads about", "waits for")
OBJECTS = ("the red ball", "a green hill", "the river", "an empty house", "the train", "a quiet song")


# -- the built model's text ------------------------------------------------------------------------
def pretrain_text(n: int, seed: int) -> str:
    """Pre-training corpus: simple sentences and addition lines ``a+b=c;``."""
    rng = random.Random(seed)
    parts = []
    for _ in range(n):
        if rng.random() < 0.5:
            parts.append(f"{rng.choice(WORDS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}.")
        else:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            parts.append(f"{a}+{b}={a + b};")
    return " ".join(parts)


def finetune_text(n: int, seed: int) -> str:
    """Fine-tuning task: a new skill in a familiar format, subtraction lines ``a-b=c;`` with ``a >= b``."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = sorted((rng.randint(0, 99), rng.randint(0, 99)), reverse=True)
        lines.append(f"{a}-{b}={a - b};")
    return " ".join(lines)


# -- a pretrained model's text ---------------------------------------------------------------------
def corpus_folder() -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the text corpus is the chatterbot-corpus package: pip install --no-deps chatterbot-corpus")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "english"


def corpus_pairs() -> list[tuple[str, str]]:
    """(question, answer) pairs of the English chatterbot corpus, in file order."""
    import yaml

    pairs = []
    for f in sorted(corpus_folder().glob("*.yml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            turns = [str(t).strip() for t in conv if isinstance(t, (str, int, float))]
            for q, a in zip(turns[:-1], turns[1:], strict=False):
                pairs.append((q, a))
    if not pairs:
        raise ValueError(f"no conversations found in {corpus_folder()}")
    return pairs


def corpus_text() -> tuple[str, str]:
    """(training text, held-out text): every 10th pair is held out."""
    pairs = corpus_pairs()
    fmt = [f"Question: {q}\nAnswer: {a}\n\n" for q, a in pairs]
    return "".join(t for i, t in enumerate(fmt) if i % 10), "".join(t for i, t in enumerate(fmt) if not i % 10)


# -- tokens and windows ----------------------------------------------------------------------------
def _draw(tokens: torch.Tensor, count: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    if len(tokens) <= seq_len:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than --seq-len {seq_len}")
    return random_windows(tokens, count, seq_len, gen)


def windows(tokens: torch.Tensor, count: int, seq_len: int, seed: int) -> torch.Tensor:
    """``count`` windows of ``seq_len`` tokens at random starts (drawn from ``seed``): (count, seq_len)."""
    return _draw(tokens, count, seq_len, torch.Generator().manual_seed(seed))


def fixed_batches(tokens: torch.Tensor, count: int, batch: int, seq_len: int, seed: int) -> list[torch.Tensor]:
    """The same ``count`` batches of ``batch`` windows for every run (same data, same order)."""
    gen = torch.Generator().manual_seed(seed)
    return [_draw(tokens, batch, seq_len, gen) for _ in range(count)]
