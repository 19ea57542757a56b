"""What the tracker measures: one *unit* per (module, adapter, part), able to read its update.

A unit reads either the factors of a low-rank update (``kind="lora"``: ``scale * B @ A``, never
multiplied out) or a materialised update (``kind="dense"``: DoRA, IA3 and other adapters whose
update is not low rank, and full fine-tuning as ``W - W0``); :mod:`artent_fast.updates.types`
says which adapter type reads which way. Every update is expressed in the layout of the base
layer's weight (what peft's ``get_delta_weight`` returns), so ``fan_in_fan_out`` layers (GPT-2
``Conv1D``) give the transposed matrix and LoRA and full fine-tuning of one module compare.

Every update is the change of the layer's effective weight since tracking started: when the
adapter's update was not zero then (peft's PiSSA, OLoRA, LoftQ, ..., ``init_lora_weights=False``,
an MPS layer with ``init="random"``), the unit keeps that start (``B0, A0`` for a factored update,
rank ``2 r`` afterwards: :func:`~artent_fast.core.update_algebra.change_factors`; ``D0`` for a dense one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from artent_fast.core.update_algebra import change_factors
from artent_fast.updates.types import AdapterType, Full, base_layer, same, sizes


@dataclass(frozen=True)
class Part:
    """A slice of a fused projection along its output features (e.g. the q of a fused QKV)."""

    name: str
    start: int
    stop: int


@dataclass
class Unit:
    """One tracked update. ``module`` is the canonical module name (:func:`artent_fast.patterns.module_name`);
    ``path`` the raw name in ``model.named_modules()``; ``reader`` the adapter type (None: full fine-tuning)."""

    module: str
    layer: nn.Module = field(repr=False)
    kind: str  # "lora" (factored) | "dense"
    source: str  # the adapter type's name (updates.types), or "snapshot" (full fine-tuning, W - W0)
    adapter: str | None = None
    part: Part | None = None
    fan_in_fan_out: bool = False
    w0: torch.Tensor | None = field(default=None, repr=False)
    path: str | None = field(default=None, repr=False)
    reader: AdapterType | None = field(default=None, repr=False)
    # the update when tracking started, when it was not zero: factors (B0, A0) in the base weight's
    # layout, or a dense D0; the measured update is then the change since that start
    start: tuple[torch.Tensor, ...] | None = field(default=None, repr=False)

    @property
    def update(self) -> str:
        """Which update is measured (the ``update`` field of records, docs/tracking.md).

        ``"BA"``: ``scale * B @ A``, the adapter's whole update (it started at zero); ``"BA-B0A0"``: its
        change since tracking started; ``"W-W0"``: full fine-tuning; ``"dora"``, ``"ia3"``, ``"delta"``:
        a dense adapter's whole update, with ``"-D0"`` appended for its change since tracking started.
        """
        if self.kind == "lora":
            return "BA" if self.start is None else "BA-B0A0"
        if self.source == "snapshot":
            return "W-W0"
        return self.source if self.start is None else f"{self.source}-D0"

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

    @property
    def shape(self) -> tuple[int, int] | None:
        """The update's shape in the base weight's layout, part included, from the layer's declared sizes
        (``out_features``/``in_features``: a packed 4-bit base weight is not looked at) or its weight."""
        found = sizes(self.layer)
        if found is None:
            return None
        out, inp = found
        if self.fan_in_fan_out and not isinstance(getattr(self.layer, "out_features", None), int):
            out, inp = inp, out  # a stored (in, out) weight
        if self.part is not None:
            out = self.part.stop - self.part.start
        return (inp, out) if self.fan_in_fan_out else (out, inp)

    @property
    def rank(self) -> int | None:
        """The inner dimension of a factored update's factors (doubled by a kept start); None for dense ones."""
        if self.kind != "lora":
            return None
        rank = self.reader.rank(self.layer, self.adapter)
        return 2 * rank if self.start is not None else rank

    def tensors(self) -> list[torch.Tensor]:
        """The tensors reading this unit touches, in the order reading passes them to ``full``."""
        if self.reader is not None:
            return self.reader.tensors(self.layer, self.adapter)
        weight = getattr(base_layer(self.layer), "weight", None)
        return [weight] if isinstance(weight, torch.Tensor) else []

    # -- reading -----------------------------------------------------------------------------------

    def whole_factors(self, full: Full = same) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
        """``(B, A, scale, merged)`` of the adapter's whole update, in the base weight's layout (no part,
        no start subtracted)."""
        B, A, scale = self.reader.factors(self.layer, self.adapter, full)
        merged = self.reader.merged(self.layer, self.adapter)
        if self.fan_in_fan_out and self.reader.transposes:  # the base weight is (in, out): (B @ A)^T
            B, A = A.mT, B.mT
        return B, A, scale, merged

    def factors(self, full: Full = same) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
        """``(B, A, scale, merged)`` with the update ``scale * B @ A`` in the base weight's layout.

        With a start ``(B0, A0)`` the factors are those of the change since tracking started,
        ``B @ A - B0 @ A0`` (float64, rank ``2 r``: see :func:`change_factors`).
        ``full`` turns a (possibly sharded) parameter into the whole tensor (see :mod:`artent_fast.parallel`).
        """
        B, A, scale, merged = self.whole_factors(full)
        B, A = self.slice_factors(B, A)
        if self.start is not None:
            B, A = change_factors(B, A, *self.slice_factors(*self.start))
        return B, A, scale, merged

    def whole_dense(self, full: Full = same) -> torch.Tensor:
        """A dense adapter's whole update (no part, no start subtracted), float32 or wider."""
        delta = self.reader.dense(self.layer, self.adapter, full)
        if delta.ndim != 2:
            raise ValueError(f"{self.label}: update has shape {tuple(delta.shape)}, not a matrix")
        return delta if delta.dtype in (torch.float32, torch.float64) else delta.float()

    def dense(self, full: Full = same) -> torch.Tensor:
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
            if delta.ndim != 2:
                raise ValueError(f"{self.label}: update has shape {tuple(delta.shape)}, not a matrix")
        else:
            delta = self.whole_dense(full)
            if self.start is not None:
                (d0,) = self.start
                delta = delta - d0.to(delta.device, delta.dtype)
        return self.slice(delta)

    def slice(self, delta: torch.Tensor) -> torch.Tensor:
        """Keep this unit's part (output features: rows, or columns when ``fan_in_fan_out``)."""
        if self.part is None:
            return delta
        if self.fan_in_fan_out:
            return delta[:, self.part.start : self.part.stop]
        return delta[self.part.start : self.part.stop]

    def slice_factors(self, B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep this unit's part of the factors of an update in the base weight's layout."""
        if self.part is None:
            return B, A
        if self.fan_in_fan_out:
            return B, A[:, self.part.start : self.part.stop]
        return B[self.part.start : self.part.stop], A
