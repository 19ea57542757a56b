"""Reading pickled checkpoints with ``torch.load(weights_only=True)``, one place: a file it refuses is one line
saying what was refused and why (torch's own message opens with paragraphs of advice and ends with the reason)."""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\.?$)", re.S)


class PickleRefused(ValueError):
    """A pickle that ``torch.load(weights_only=True)`` will not read: ``file: reason``."""

    def __init__(self, file: str | os.PathLike, reason: str):
        self.file, self.reason = str(file), reason
        super().__init__(f"{file}: {reason}")


def refusal(exc: BaseException) -> str | None:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line, or None when ``exc`` is no refusal."""
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" not in text:
        return None
    found = _REASON.search(text)
    reason = found.group(1) if found else text.strip().splitlines()[-1]
    reason = " ".join(reason.split())
    return (
        f"refused by torch.load(weights_only=True): {reason} (a pickle that needs more than tensors and plain "
        "containers could run code when loaded; save the tensors alone, e.g. with safetensors)"
    )


def load_weights_only(path: str | os.PathLike, **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True, **kwargs)``; a refusal is a ``PickleRefused`` naming the file."""
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except Exception as exc:
        why = refusal(exc)
        if why is None:
            raise
        raise PickleRefused(path, why) from None
