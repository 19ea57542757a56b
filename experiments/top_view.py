"""Training only the top layers of a pretrained model: the hidden states entering the first trained layer are
computed once (every layer below is frozen) and the top layers, norm and head run from them."""

from __future__ import annotations

import statistics
from typing import Any

import torch


def decoder(model) -> Any:
    """The ``LlamaModel``-like inner module (with ``.layers``) of a plain, peft or MPS-adapted model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model


@torch.no_grad()
def prefix_states(model, ids: torch.Tensor, first: int, chunk: int = 8) -> torch.Tensor:
    """Hidden states entering decoder layer ``first`` (the frozen prefix's output), computed once."""
    out = []
    for i in range(0, len(ids), chunk):
        hs = model(input_ids=ids[i : i + chunk], output_hidden_states=True).hidden_states
        out.append(hs[first])
    return torch.cat(out)


class TopView:
    """Run only the trained top layers (plus norm and head) of ``model`` from cached hidden states."""

    def __init__(self, model, first: int):
        self.model, self.inner = model, decoder(model)
        self.outer = hasattr(self.inner, "_full_layers")  # nested inside another view of the same model
        full = self.inner._full_layers if self.outer else self.inner.layers
        self.full, self.top = full, torch.nn.ModuleList(list(full)[first:])

    def __enter__(self):
        if not self.outer:
            self.inner._full_layers = self.full
        self.inner.layers = self.top
        return self

    def __exit__(self, *exc):
        if self.outer:
            return
        self.inner.layers = self.full
        del self.inner._full_layers

    def logits(self, h: torch.Tensor, keep: int, **kw) -> Any:
        return self.model(inputs_embeds=h, logits_to_keep=keep, use_cache=False, **kw)


def window_loss(view: TopView, h: torch.Tensor, ids: torch.Tensor, scored: int) -> torch.Tensor:
    """Next-token loss on the last ``scored`` tokens of each window (the rest of the window is their context)."""
    scored = min(scored, ids.shape[1] - 1)
    logits = view.logits(h, scored + 1).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, -scored:].reshape(-1))


@torch.no_grad()
def held_out_loss(model, data: dict[str, torch.Tensor], first: int, scored: int) -> float:
    """The mean window loss over the held-out windows (``data["eval_h"]``, ``data["eval_ids"]``), 4 at a time."""
    with TopView(model, first) as view:
        return statistics.fmean(
            float(window_loss(view, data["eval_h"][i : i + 4], data["eval_ids"][i : i + 4], scored))
            for i in range(0, len(data["eval_h"]), 4)
        )


def check_top_view(model, ids: torch.Tensor, h: torch.Tensor, first: int) -> float:
    """The cut model must give the full model's logits (the plain twin of the cached path)."""
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -5:]
        with TopView(model, first) as view:
            top = view.logits(h, 5).logits
    diff = float((full - top).abs().max())
    if not diff <= 1e-3 * max(1.0, float(full.abs().max())):
        raise RuntimeError(f"the cached-prefix forward differs from the full model by {diff:g}")
    return diff
