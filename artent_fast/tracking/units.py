"""What the tracker measures: one *unit* per (module, adapter, part), each able to read its update.

A unit reads either the factors of a low-rank update (``kind="lora"``: ``scale * B @ A``, never
multiplied out; for an adapter that did not start at zero, e.g. peft's PiSSA or OLoRA, the change
since tracking started, ``scale * (B @ A - B0 @ A0)``, factored with rank at most ``2 r``) or a
materialised update (``kind="dense"``: DoRA and other adapters whose update is not low rank, and
full fine-tuning as ``W - W0``). Every update is expressed in the layout of the
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
    source: str  # "lora" (factors), "mps" (MPS Adaptation), "delta" (get_delta_weight), "dora", "snapshot" (W - W0)
    adapter: str | None = None
    part: Part | None = None
    fan_in_fan_out: bool = False
    w0: torch.Tensor | None = field(default=None, repr=False)
    path: str | None = field(default=None, repr=False)  # name in the wrapped model, when it differs
    # LoRA factors when tracking started, kept when B0 != 0 (the update is then the change since that start)
    b0: torch.Tensor | None = field(default=None, repr=False)
    a0: torch.Tensor | None = field(default=None, repr=False)

    @property
    def update(self) -> str:
        """Which update is measured (the ``update`` field of records, docs/tracking.md).

        ``"BA"``: ``scale * B @ A``, the adapter's whole update (it started at zero); ``"BA-B0A0"``: its
        change since tracking started; ``"W-W0"``: full fine-tuning; ``"delta"``: the adapter's
        ``get_delta_weight``; ``"dora"``: DoRA's ``W_dora - W``.
        """
        if self.kind == "lora":
            return "BA" if self.b0 is None else "BA-B0A0"
        return {"snapshot": "W-W0"}.get(self.source, self.source)

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

        With a snapshot ``(b0, a0)`` the factors are those of the change since tracking started,
        ``B @ A - B0 @ A0`` (float64, rank ``2 r``: see :func:`change_factors`).
        ``full`` turns a (possibly sharded) parameter into the whole tensor (see ``tracking.distributed``).
        """
        layer, name = self.layer, self.adapter
        if self.source == "mps":  # MPS Adaptation: B (out, r) and A_mps (r, in), contracted from the cores
            B, A = mps_factors(layer, full)
            scale, merged = float(layer.scale), bool(layer.merged)
        else:
            B = full(layer.lora_B[name].weight.detach())  # (out, r)
            A = full(layer.lora_A[name].weight.detach())  # (r, in)
            scale, merged = float(layer.scaling[name]), name in getattr(layer, "merged_adapters", ())
        B0 = self.b0
        if self.part is not None:
            B = B[self.part.start : self.part.stop]
            B0 = B0[self.part.start : self.part.stop] if B0 is not None else None
        if B0 is not None:
            B, A = change_factors(B, A, B0, self.a0)
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


def is_mps_layer(module: nn.Module) -> bool:
    """An MPS Adaptation layer (:class:`artent_fast.adapters.mps.MPSLinear`): ``B`` and the cores of ``A_mps``."""
    has_b = isinstance(getattr(module, "B", None), nn.Parameter)
    return has_b and hasattr(module, "cores") and hasattr(module, "a_mps")


def mps_factors(
    layer: nn.Module, full: Callable[[torch.Tensor], torch.Tensor] = same
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A_mps)`` of an MPS Adaptation layer, ``A_mps`` contracted from the (whole) cores in float64 (an
    ``r x d_in`` matrix: cheap), so that the small change of a product since the start is not lost to the
    contraction's round-off."""
    from artent_fast.adapters.mps import contract_cores

    with torch.no_grad():
        return full(layer.B.detach()), contract_cores([full(c.detach()).double() for c in layer.cores])


def change_factors(
    B: torch.Tensor, A: torch.Tensor, B0: torch.Tensor, A0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(P, Q)`` of ``B @ A - B0 @ A0`` (float64, rank ``2 r``), free of cancellation.

    ``P @ Q = [B - B0, B0] @ [A; A - A0] = (B - B0) A + B0 (A - A0)``: the differences are exact in
    float64 for float32 (or narrower) factors, and each term is of the size of the change, so the
    small change of a large product (PiSSA's ``B0 A0`` holds the base weight's principal part) is not
    lost to round-off as it would be in ``[B, -B0] @ [A; A0]``. Each column of ``P`` and row of ``Q``
    is then rescaled to equal norms (the product is unchanged), and a pair whose term is zero is
    zeroed, so an unchanged adapter gives zero factors (a zero update).
    """
    wide = torch.float64
    B, A = B.to(wide), A.to(wide)
    B0, A0 = B0.to(B.device, wide), A0.to(A.device, wide)
    P = torch.cat([B - B0, B0], dim=1)  # (m, 2r)
    Q = torch.cat([A, A - A0], dim=0)  # (2r, n)
    left, right = P.norm(dim=0), Q.norm(dim=1)
    dead = (left == 0) | (right == 0)
    live = ~dead & torch.isfinite(left) & torch.isfinite(right) & (left > 0)  # NaN/Inf pairs stay as they are
    c = torch.where(live, right / torch.where(live, left, 1.0), 1.0).sqrt()
    one = torch.ones((), dtype=wide, device=P.device)
    return torch.where(dead, 0.0, c) * P, torch.where(dead, 0.0, one / c).unsqueeze(-1) * Q


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
