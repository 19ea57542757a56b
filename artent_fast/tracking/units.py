"""What the tracker measures: one *unit* per (module, adapter, part), each able to read its update.

A unit reads either the factors of a low-rank update (``kind="lora"``: ``scale * B @ A``, never
multiplied out) or a materialised update (``kind="dense"``: DoRA and other adapters whose update is
not low rank, and full fine-tuning as ``W - W0``). Every update is expressed in the layout of the
base layer's weight (what peft's ``get_delta_weight`` returns), so ``fan_in_fan_out`` layers
(GPT-2 ``Conv1D``) give the transposed matrix and LoRA and full fine-tuning of one module compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


def same(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself (parameters that are whole on this process)."""
    return tensor


@dataclass(frozen=True)
class Part:
    """A slice of a fused projection along its output features (e.g. the q of a fused QKV)."""

    name: str
    start: int
    stop: int


@dataclass
class Unit:
    """One tracked update. ``module`` is the name in ``model.named_modules()`` without wrapper components
    (``module.``, ``_fsdp_wrapped_module.``, ``_orig_mod.``, ``_checkpoint_wrapped_module.``); ``path`` the raw name."""

    module: str
    layer: nn.Module = field(repr=False)
    kind: str  # "lora" | "dense"
    source: str  # "lora" (factors), "delta" (adapter's get_delta_weight), "dora", "snapshot" (W - W0)
    adapter: str | None = None
    part: Part | None = None
    fan_in_fan_out: bool = False
    w0: torch.Tensor | None = field(default=None, repr=False)
    path: str | None = field(default=None, repr=False)  # name in the wrapped model, when it differs

    @property
    def label(self) -> str:
        """A short unique name: module, then ``[part]``, then ``@adapter`` unless it is peft's ``default``."""
        text = self.module
        if self.part is not None:
            text += f"[{self.part.name}]"
        if self.adapter not in (None, "default"):
            text += f"@{self.adapter}"
        return text

    def key(self) -> dict:
        """The fields that identify this unit in a record."""
        out: dict = {"module": self.module, "kind": self.kind}
        if self.adapter is not None:
            out["adapter"] = self.adapter
        if self.part is not None:
            out["part"] = self.part.name
        return out

    # -- reading -----------------------------------------------------------------------------------

    def factors(
        self, full: Callable[[torch.Tensor], torch.Tensor] = same
    ) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
        """``(B, A, scale, merged)`` with the update ``scale * B @ A`` in the base weight's layout.

        ``full`` turns a (possibly sharded) parameter into the whole tensor (see ``tracking.distributed``).
        """
        layer, name = self.layer, self.adapter
        B = full(layer.lora_B[name].weight.detach())  # (out, r)
        A = full(layer.lora_A[name].weight.detach())  # (r, in)
        if self.part is not None:
            B = B[self.part.start : self.part.stop]
        scale = float(layer.scaling[name])
        merged = name in getattr(layer, "merged_adapters", ())
        if self.fan_in_fan_out:  # the base weight is (in, out): the update is (B @ A)^T
            return A.mT, B.mT, scale, merged
        return B, A, scale, merged

    def dense(self, full: Callable[[torch.Tensor], torch.Tensor] = same) -> torch.Tensor:
        """The materialised update (float32 or wider) in the base weight's layout.

        For a sharded weight with a snapshot sharded alike, the difference is taken shard by shard
        and only that one matrix is gathered by ``full``.
        """
        if self.source == "snapshot":
            W = self.layer.weight.detach()
            wide = torch.float64 if W.dtype == torch.float64 else torch.float32
            if type(W) is not type(self.w0):  # e.g. a sharded weight and a full W0 from base_weights
                W = full(W)
            delta = full(W.to(wide) - self.w0.to(W.device, wide))
        elif self.source == "dora":
            delta = full(dora_delta(self.layer, self.adapter))
        else:
            delta = full(self.layer.get_delta_weight(self.adapter).detach())
        if delta.ndim != 2:
            raise ValueError(f"{self.label}: update has shape {tuple(delta.shape)}, not a matrix")
        delta = delta if delta.dtype in (torch.float32, torch.float64) else delta.float()
        return self.slice(delta)

    def slice(self, delta: torch.Tensor) -> torch.Tensor:
        """Keep this unit's part (output features: rows, or columns when ``fan_in_fan_out``)."""
        if self.part is None:
            return delta
        if self.fan_in_fan_out:
            return delta[:, self.part.start : self.part.stop]
        return delta[self.part.start : self.part.stop]


def dora_delta(layer: nn.Module, adapter: str) -> torch.Tensor:
    """``W_dora - W`` for a DoRA adapter: ``m / ||W + s B A||_row * (W + s B A) - W`` (peft's merge, no caching)."""
    from peft.utils.other import transpose

    if adapter in getattr(layer, "merged_adapters", ()):
        raise ValueError(f"DoRA adapter {adapter!r} is merged: its update can no longer be separated from W")
    fifo = bool(getattr(layer, "fan_in_fan_out", False))
    W = layer.get_base_layer().weight.detach().float()
    delta = layer.get_delta_weight(adapter).detach().float()
    magnitude = layer.lora_magnitude_vector[adapter]
    norm = magnitude.get_weight_norm(W, transpose(delta, fifo), scaling=1).detach()
    factor = transpose((magnitude.weight.detach().float() / norm).view(-1, 1), fifo)
    return factor * (W + delta) - W
