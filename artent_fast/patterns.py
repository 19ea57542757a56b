"""Module-name patterns: the one matcher behind ``track(targets=...)``, ``artent sweep --target``,
``compare_models(targets=...)`` and ``adapters.mps.apply(targets=...)``.

A pattern is one of

- a name component or dotted suffix: ``"q_proj"`` matches ``model.layers.0.self_attn.q_proj``,
  ``"self_attn.q_proj"`` matches it too, ``"proj"`` does not (whole components only);
- a glob (``*``, ``?``, ``[...]``), matched against the full name and against its last component:
  ``"*_proj"``, ``"model.layers.1[0-5].*"``;
- ``"re:<regex>"``: a regular expression that must match the FULL name (``re.fullmatch``).

A pattern that is not a non-empty string, or a ``re:`` pattern that does not compile, is refused
with an error naming the argument (before any work), never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

REGEX_PREFIX = "re:"
# Name components that wrappers insert into ``named_modules()`` (DDP, FSDP1, torch.compile, checkpointing),
# and peft's wrapping prefix: none of them is part of a module's name in the base model.
WRAPPER_COMPONENTS = ("module", "_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module")
PEFT_PREFIX = "base_model.model."


def module_name(path: str) -> str:
    """The canonical name of a module: its name in the base model, as a checkpoint stores it.

    ``path`` (a ``named_modules()`` name, a record's label) without the components DDP, FSDP1,
    ``torch.compile`` and activation checkpointing insert, and without peft's ``base_model.model.``:
    ``base_model.model.module.model.layers.0.self_attn.q_proj`` -> ``model.layers.0.self_attn.q_proj``.
    Tracker histories, sweep tables and model comparisons all name modules so, and join on it.
    """
    name = ".".join(p for p in path.split(".") if p not in WRAPPER_COMPONENTS)
    return name.removeprefix(PEFT_PREFIX)


GLOB_CHARS = "*?["


def matches(name: str, pattern: str) -> bool:
    """Whether module ``name`` is named by ``pattern`` (see the module docstring)."""
    if pattern.startswith(REGEX_PREFIX):
        return re.fullmatch(pattern[len(REGEX_PREFIX) :], name) is not None
    last = name.rsplit(".", 1)[-1]
    if any(ch in pattern for ch in GLOB_CHARS):
        return fnmatchcase(name, pattern) or fnmatchcase(last, pattern)
    return last == pattern or name == pattern or name.endswith("." + pattern)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether module ``name`` is named by one of ``patterns`` (each as in :func:`matches`)."""
    return any(matches(name, p) for p in patterns)


def check_patterns(patterns: str | Sequence[str], argument: str = "targets") -> list[str]:
    """``patterns`` as a list, each checked: a TypeError/ValueError naming ``argument`` for a bad one."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise ValueError(f"{argument} is empty: pass module-name patterns such as ('q_proj', 'v_proj')")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{argument} must hold strings, got {pattern!r}")
        if not pattern:
            raise ValueError(f"{argument}: an empty pattern names nothing")
        if pattern.startswith(REGEX_PREFIX):
            try:
                re.compile(pattern[len(REGEX_PREFIX) :])
            except re.error as exc:
                raise ValueError(f"{argument}: {pattern!r} is not a valid regular expression ({exc})") from None
    return patterns
