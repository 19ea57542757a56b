"""One small class per adapter type: how its update is read from a live layer.

An adapter type says whether it owns an adapter of a layer, which parameters reading it touches
(in the order reading passes them to ``full``), and its update: *factored* types give
``(B, A, scale)`` with the update ``scale * B @ A`` (never multiplied out), *dense* types give the
materialised change of the layer's weight. Tensors are in the order the adapter multiplies them;
``transposes`` says whether that product is the transpose of the base weight's stored layout
under ``fan_in_fan_out`` (peft's ``transpose(..., fan_in_fan_out)``) or already in it (LoHa and
LoKr reshape to the base weight's shape).

=========  ========  ================================================================
type       path      update
=========  ========  ================================================================
lora       factored  ``s B A`` (peft LoRA, rsLoRA, PiSSA/OLoRA/... after their start)
adalora    factored  ``s / (ranknum + 1e-5) * B (A * E)`` (``P Λ Q``, rank ``r``)
loha       factored  ``s (B1 A1) * (B2 A2)``: face-splitting factors of rank ``r1 r2``
lokr       factored  ``s kron(W1, W2) = s kron(U1, U2) kron(V1, V2)`` when ``k1 k2 < min(m, n)``
vera       factored  ``(λ_b * B_shared) (λ_d * A_shared)``, rank of the shared matrices
mps        factored  ``s B A_mps`` (MPS Adaptation, :mod:`artent_fast.adapters.mps`)
dora       dense     ``m / ||W + s B A||_row * (W + s B A) - W``
ia3        dense     ``W * (l - 1)`` (the learned vector rescales rows or columns)
delta      dense     peft's ``get_delta_weight`` (any other tuner: OFT, BOFT, LoKr/LoHa on convolutions, ...)
=========  ========  ================================================================

Every update is the change since tracking started: :class:`artent_fast.updates.unit.Unit` keeps
the start when it is not zero (see there).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from artent_fast.adapters.mps import MPSLinear, contract_cores
from artent_fast.core.update_algebra import (
    adalora_factors,
    dora_change,
    full_rank_factors,
    hadamard_factors,
    ia3_change,
    kronecker_factors,
    vera_factors,
)

Full = Callable[[torch.Tensor], torch.Tensor]
Factors = tuple[torch.Tensor, torch.Tensor, float]


def same(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself (parameters that are whole on this process)."""
    return tensor


def base_layer(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def base_weight(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(base_layer(module), "weight", None)
    return weight if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def shape_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """A parameter's whole shape: DeepSpeed ZeRO-3 keeps it in ``ds_shape`` (its data is this rank's part)."""
    return tuple(getattr(tensor, "ds_shape", tensor.shape))


def sizes(module: nn.Module) -> tuple[int, int] | None:
    """``(out_features, in_features)`` as the layer declares them (a sharded or packed weight's shape is not
    the layer's), else from a 2-D base weight."""
    out, inp = getattr(module, "out_features", None), getattr(module, "in_features", None)
    if isinstance(out, int) and isinstance(inp, int):
        return out, inp
    weight = base_weight(module)
    return None if weight is None else tuple(weight.shape)


def entry(container: object, adapter: str) -> torch.Tensor | None:
    """``container[adapter]`` as a tensor: a parameter, or the weight of a module (``nn.Linear``)."""
    if not hasattr(container, "keys") or adapter not in container.keys():
        return None
    item = container[adapter]
    item = getattr(item, "weight", item)
    return item if isinstance(item, torch.Tensor) else None


def entries(module: nn.Module, adapter: str, *names: str) -> list[torch.Tensor] | None:
    """The named per-adapter tensors of ``module``, or None when one is missing."""
    found = [entry(getattr(module, n, None), adapter) for n in names]
    return None if any(t is None for t in found) else found


class AdapterType:
    """How one kind of adapter's update is read (subclasses: one per peft tuner family)."""

    name: str = ""
    factored: bool = True
    transposes: bool = True  # the product is (B @ A)^T of the stored layout under fan_in_fan_out

    def owns(self, module: nn.Module, adapter: str) -> bool:
        raise NotImplementedError

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        """The tensors reading this update touches, in the order it passes them to ``full``."""
        raise NotImplementedError

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        raise NotImplementedError(f"{self.name} updates are dense")

    def rank(self, module: nn.Module, adapter: str) -> int:
        """The inner dimension of the factors (from the parameters' shapes; nothing is read)."""
        raise NotImplementedError(f"{self.name} updates are dense")

    def dense(self, module: nn.Module, adapter: str, full: Full = same) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} updates are factored")

    def merged(self, module: nn.Module, adapter: str) -> bool:
        return adapter in getattr(module, "merged_adapters", ())


class Lora(AdapterType):
    name = "lora"

    def owns(self, module: nn.Module, adapter: str) -> bool:
        if not isinstance(getattr(module, "lora_A", None), nn.ModuleDict) or not hasattr(module, "scaling"):
            return False
        if adapter in (getattr(module, "lora_variant", {}) or {}):  # DoRA and other variants
            return False
        pair = entries(module, adapter, "lora_B", "lora_A")
        return pair is not None and all(len(shape_of(t)) == 2 for t in pair)

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return [module.lora_B[adapter].weight, module.lora_A[adapter].weight]

    def rank(self, module: nn.Module, adapter: str) -> int:
        return shape_of(module.lora_A[adapter].weight)[0]

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        B, A = (full(t.detach()) for t in self.tensors(module, adapter))
        return B, A, float(module.scaling[adapter])


class AdaLora(AdapterType):
    name = "adalora"

    def owns(self, module: nn.Module, adapter: str) -> bool:
        found = entries(module, adapter, "lora_B", "lora_A", "lora_E")
        return found is not None and hasattr(module, "ranknum") and all(len(shape_of(t)) == 2 for t in found)

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return [module.lora_B[adapter], module.lora_A[adapter], module.lora_E[adapter]]

    def rank(self, module: nn.Module, adapter: str) -> int:
        return shape_of(module.lora_A[adapter])[0]

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        B, A, E = (full(t.detach()) for t in self.tensors(module, adapter))
        scale = float(module.scaling[adapter]) / (float(module.ranknum[adapter]) + 1e-5)
        return *adalora_factors(B, A, E), scale


class LoHa(AdapterType):
    name = "loha"
    transposes = False

    def owns(self, module: nn.Module, adapter: str) -> bool:
        found = entries(module, adapter, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        cp = entry(getattr(module, "hada_t1", None), adapter) is not None  # convolutions' CP form: dense
        return found is not None and not cp and all(len(shape_of(t)) == 2 for t in found) and sizes(module) is not None

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return entries(module, adapter, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    def rank(self, module: nn.Module, adapter: str) -> int:
        w1a, _, w2a, _ = self.tensors(module, adapter)
        return shape_of(w1a)[1] * shape_of(w2a)[1]

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        B1, A1, B2, A2 = (full(t.detach()) for t in self.tensors(module, adapter))
        return *hadamard_factors(B1, A1, B2, A2), float(module.scaling[adapter])


class LoKr(AdapterType):
    """Factored while the Kronecker rank ``k1 k2`` is below ``min(m, n)``; a denser LoKr is read densely."""

    name = "lokr"
    transposes = False

    def halves(self, module: nn.Module, adapter: str) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        w1 = entries(module, adapter, "lokr_w1") or entries(module, adapter, "lokr_w1_a", "lokr_w1_b")
        w2 = entries(module, adapter, "lokr_w2") or entries(module, adapter, "lokr_w2_a", "lokr_w2_b")
        return None if w1 is None or w2 is None else (w1, w2)

    def owns(self, module: nn.Module, adapter: str) -> bool:
        halves, shape = self.halves(module, adapter), sizes(module)
        if halves is None or shape is None or entry(getattr(module, "lokr_t2", None), adapter) is not None:
            return False
        if any(len(shape_of(t)) != 2 for half in halves for t in half):
            return False
        return self.rank(module, adapter) < min(shape)

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        w1, w2 = self.halves(module, adapter)
        return [*w1, *w2]

    def rank(self, module: nn.Module, adapter: str) -> int:
        ranks = [min(shape_of(h[0])) if len(h) == 1 else shape_of(h[0])[1] for h in self.halves(module, adapter)]
        return ranks[0] * ranks[1]

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        w1, w2 = self.halves(module, adapter)
        pairs = [
            full_rank_factors(full(h[0].detach())) if len(h) == 1 else tuple(full(t.detach()) for t in h)
            for h in (w1, w2)
        ]
        return *kronecker_factors(*pairs), float(module.scaling[adapter])


class Vera(AdapterType):
    name = "vera"

    def owns(self, module: nn.Module, adapter: str) -> bool:
        return entries(module, adapter, "vera_lambda_b", "vera_lambda_d", "vera_B", "vera_A") is not None

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return entries(module, adapter, "vera_lambda_b", "vera_lambda_d", "vera_B", "vera_A")

    def rank(self, module: nn.Module, adapter: str) -> int:
        return shape_of(module.vera_A[adapter])[0]

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        lambda_b, lambda_d, B, A = (full(t.detach()) for t in self.tensors(module, adapter))
        shape = (module.out_features, module.in_features)
        return *vera_factors(lambda_b, lambda_d, B.to(lambda_b.device), A.to(lambda_d.device), shape), 1.0


class Mps(AdapterType):
    """MPS Adaptation: ``B`` and ``A_mps`` contracted from the cores in float64 (an ``r x d_in`` matrix:
    cheap), so that the small change of a product since the start is not lost to the contraction's round-off."""

    name = "mps"
    transposes = False

    def owns(self, module: nn.Module, adapter: str) -> bool:
        return isinstance(module, MPSLinear)

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return [module.B, *module.cores]

    def rank(self, module: nn.Module, adapter: str) -> int:
        return shape_of(module.B)[1]

    def factors(self, module: nn.Module, adapter: str, full: Full = same) -> Factors:
        with torch.no_grad():
            B = full(module.B.detach())
            A = contract_cores([full(c.detach()).double() for c in module.cores])
        return B, A, float(module.scale)

    def merged(self, module: nn.Module, adapter: str) -> bool:
        return bool(module.merged)


class Dora(AdapterType):
    name = "dora"
    factored = False

    def owns(self, module: nn.Module, adapter: str) -> bool:
        return bool((getattr(module, "use_dora", {}) or {}).get(adapter, False)) and hasattr(module, "get_delta_weight")

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return []

    def dense(self, module: nn.Module, adapter: str, full: Full = same) -> torch.Tensor:
        if self.merged(module, adapter):
            raise ValueError(f"DoRA adapter {adapter!r} is merged: its update can no longer be separated from W")
        fifo = bool(getattr(module, "fan_in_fan_out", False))
        delta = module.get_delta_weight(adapter).detach()
        magnitude = module.lora_magnitude_vector[adapter].weight.detach()
        return full(dora_change(base_weight(module).detach(), delta, magnitude, fifo))


class Ia3(AdapterType):
    """``W * l``: the change ``W * (l - 1)`` (``l`` scales output rows, or input columns for feed-forward layers)."""

    name = "ia3"
    factored = False

    def owns(self, module: nn.Module, adapter: str) -> bool:
        return entry(getattr(module, "ia3_l", None), adapter) is not None and base_weight(module) is not None

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return [base_weight(module), module.ia3_l[adapter]]

    def dense(self, module: nn.Module, adapter: str, full: Full = same) -> torch.Tensor:
        if self.merged(module, adapter):
            raise ValueError(f"IA3 adapter {adapter!r} is merged: its update can no longer be separated from W")
        W, scaling = (full(t.detach()) for t in self.tensors(module, adapter))
        if bool(getattr(module, "fan_in_fan_out", False)):
            scaling = scaling.mT
        wide = torch.float64 if W.dtype == torch.float64 else torch.float32
        return ia3_change(W.to(wide), scaling)


class Delta(AdapterType):
    """Any other peft tuner: its ``get_delta_weight``, in the base weight's layout."""

    name = "delta"
    factored = False

    def owns(self, module: nn.Module, adapter: str) -> bool:
        return hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")

    def tensors(self, module: nn.Module, adapter: str) -> list[torch.Tensor]:
        return []

    def dense(self, module: nn.Module, adapter: str, full: Full = same) -> torch.Tensor:
        return full(module.get_delta_weight(adapter).detach())


# the first that owns an adapter reads it: structured types before the generic fallbacks
ADAPTER_TYPES: tuple[AdapterType, ...] = (Mps(), Lora(), AdaLora(), LoHa(), LoKr(), Vera(), Dora(), Ia3(), Delta())


def holds(module: nn.Module, adapter: str | None) -> bool:
    """Whether ``module`` has parameters of ``adapter`` (an active adapter may live on other layers only)."""
    names = getattr(module, "adapter_layer_names", None)
    if adapter is None or names is None:
        return True
    return any(adapter in (getattr(module, n, None) or {}) for n in names)


def adapter_type(module: nn.Module, adapter: str | None) -> AdapterType | None:
    """The type that reads ``adapter`` of ``module`` (None: not an adapter this package reads)."""
    if not holds(module, adapter):
        return None
    return next((t for t in ADAPTER_TYPES if t.owns(module, adapter)), None)


def adapters_of(module: nn.Module) -> list[str | None]:
    """The active adapters of a peft tuner layer (``[None]`` for an MPS Adaptation layer), else ``[]``."""
    if isinstance(module, MPSLinear):
        return [None]
    if hasattr(module, "active_adapters") and hasattr(module, "base_layer"):
        return list(module.active_adapters)
    return []
