"""Tensor and folder names: steps, layers, modules and target patterns."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from artent_fast.patterns import check_patterns, matches_any

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
    """True if ``module`` is named by one of ``patterns`` (:mod:`artent_fast.patterns`); ``None``: all linear layers."""
    if patterns is None:
        return not _NOT_LINEAR.search(module)
    return matches_any(module, patterns)


# ``base_model_prefix`` of transformers' model classes: a task-head model (``*ForSequenceClassification``...)
# stores the bare model under it (``bert.encoder...``), the bare model's own checkpoint does not.
KNOWN_PREFIXES = (
    "model",
    "transformer",
    "bert",
    "roberta",
    "deberta",
    "distilbert",
    "electra",
    "albert",
    "gpt_neox",
    "mpnet",
    "xlnet",
    "funnel",
    "longformer",
    "bart",
    "t5",
    "encoder",
    "decoder",
)


@dataclass(frozen=True)
class NameMap:
    """How a module name of a checkpoint becomes the base's: strip or add one ``base_model_prefix``."""

    strip: str = ""
    add: str = ""

    def __call__(self, module: str) -> str:
        if self.strip:
            return module.removeprefix(self.strip + ".")
        return f"{self.add}.{module}" if self.add else module

    def describe(self) -> str:
        if self.strip:
            return f"strip prefix '{self.strip}.'"
        return f"add prefix '{self.add}.'" if self.add else "same names"


def choose_name_map(modules: Sequence[str], base_tensors: Collection[str]) -> NameMap:
    """The mapping (as transformers does when it loads a checkpoint into a model with or without a task head:
    add or strip the ``base_model_prefix``) under which most ``modules`` have a ``.weight`` among the base's
    ``base_tensors``; names unchanged when that is as good. Prefixes tried: the known ones and the first name
    part of either side."""
    base_tensors = set(base_tensors)
    base_modules = [module_name(n) for n in base_tensors if n.endswith(".weight")]

    def base_has(module: str) -> bool:
        return f"{module}.weight" in base_tensors

    firsts = {m.split(".", 1)[0] for m in [*modules, *base_modules] if "." in m}
    prefixes = sorted(set(KNOWN_PREFIXES) | firsts)
    candidates = [NameMap()] + [NameMap(strip=p) for p in prefixes] + [NameMap(add=p) for p in prefixes]
    best, best_hits = NameMap(), sum(map(base_has, modules))
    if best_hits == len(modules):
        return best
    for mapping in candidates[1:]:
        hits = sum(base_has(mapping(m)) for m in modules)
        if hits > best_hits:
            best, best_hits = mapping, hits
    return best


def check_targets(patterns: Sequence[str] | None) -> list[str] | None:
    """The target patterns, checked once: a bad one is a ValueError naming ``--target`` (before any work)."""
    return None if patterns is None else check_patterns(patterns, "--target")
