"""The one training loop of the findings experiment (AdamW, no weight decay, one step per batch), and the
held-out loss of a model over token batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def fit(
    model,
    lr: float,
    batches: Iterable[Any],
    loss_of: Callable[[Any], torch.Tensor],
    *,
    on_step: Callable[[int], None] | None = None,
    tracker_factory: Callable[[Any, Any], Any] | None = None,
) -> tuple[list[float], Any]:
    """AdamW on the trainable parameters of ``model``, one step per item of ``batches`` (``loss_of(item)`` is its
    loss), ``on_step(step)`` after each step; ``tracker_factory(model, optimizer)`` starts a tracker that is closed
    at the end. Returns (the per-step losses, the tracker or None); the model is left in eval mode."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    tracker = tracker_factory(model, opt) if tracker_factory else None
    model.train()
    losses = []
    try:
        for step, batch in enumerate(batches, 1):
            loss = loss_of(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step:
                on_step(step)
    finally:
        if tracker is not None:
            tracker.close()
    model.eval()
    return losses, tracker


def lm_loss(model, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The next-token loss of ``model`` on a batch of token ids (every position scored)."""

    def loss(ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(device)
        return model(input_ids=ids, labels=ids).loss

    return loss


@torch.no_grad()
def eval_loss(model, batches: list[torch.Tensor], device: str) -> float:
    model.eval()
    return sum(float(lm_loss(model, device)(b)) for b in batches) / len(batches)
