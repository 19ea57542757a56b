"""Finding the units to track in a model: name patterns, peft adapters, fused projections, W0 snapshots."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artent_fast.parallel import full_tensor
from artent_fast.paths import not_usable
from artent_fast.patterns import check_patterns, matches, module_name
from artent_fast.tracking.units import Part, Unit, is_mps_layer, mps_factors

SplitSpec = int | Sequence[str] | Mapping[str, int]


def is_lora_layer(module: nn.Module) -> bool:
    return isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and hasattr(module, "scaling")


def is_peft_tuner_layer(module: nn.Module) -> bool:
    return hasattr(module, "get_delta_weight") and hasattr(module, "active_adapters") and hasattr(module, "base_layer")


def base_weight(module: nn.Module) -> torch.Tensor | None:
    layer = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = getattr(layer, "weight", None)
    return weight if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def is_fan_in_fan_out(module: nn.Module) -> bool:
    """True when the weight is stored ``(in, out)``: peft's flag, or a transformers ``Conv1D`` (GPT-2)."""
    if hasattr(module, "fan_in_fan_out"):
        return bool(module.fan_in_fan_out)
    return type(module).__name__ == "Conv1D"


def parse_parts(spec: SplitSpec, out_features: int, where: str) -> list[Part]:
    """``3`` or ``("q", "k", "v")`` (equal slices) or ``{"q": 2048, "k": 512, "v": 512}`` (sizes)."""
    if isinstance(spec, int):
        spec = [str(i) for i in range(spec)]
    if isinstance(spec, Mapping):
        sizes = [(str(k), int(v)) for k, v in spec.items()]
    else:
        names = [str(s) for s in spec]
        if not names or out_features % len(names):
            raise ValueError(f"split for {where}: {out_features} output features do not divide into {len(names)} parts")
        sizes = [(n, out_features // len(names)) for n in names]
    if sum(s for _, s in sizes) != out_features or any(s <= 0 for _, s in sizes):
        raise ValueError(f"split for {where}: part sizes {dict(sizes)} do not add up to {out_features} output features")
    parts, start = [], 0
    for name, size in sizes:
        parts.append(Part(name, start, start + size))
        start += size
    return parts


def split_for(name: str, split: Mapping[str, SplitSpec] | None) -> SplitSpec | None:
    for pattern, spec in (split or {}).items():
        if matches(name, pattern):
            return spec
    return None


def find_units(
    model: nn.Module,
    targets: Iterable[str],
    *,
    split: Mapping[str, SplitSpec] | None = None,
    base_weights: Mapping[str, torch.Tensor] | str | Path | None = None,
    snapshot_device: Any = None,
    resume: bool = False,
) -> list[Unit]:
    """Every unit of ``model`` whose module name matches one of ``targets``.

    peft LoRA layers give one unit per active adapter (factored, or dense for DoRA and other
    variants); a factored adapter whose ``B`` is not zero now (PiSSA, OLoRA, LoftQ, ...,
    ``init_lora_weights=False``, or one trained before) keeps a copy of its factors ``B0, A0``, and
    its update is the change since now (see :func:`start_factors`); other peft tuner layers give
    dense units on ``get_delta_weight``; plain layers with a trainable 2-D weight give
    full-fine-tuning units whose ``W0`` is snapshotted now (or taken from
    ``base_weights``: a mapping or a ``.safetensors`` path). Frozen plain layers are not tracked:
    their update is always zero.
    """
    base_weights = as_base_weights(base_weights)
    patterns = check_patterns(targets, "targets")
    units: list[Unit] = []
    zero_init = zero_initialised_adapters(model) if resume else set()
    owners: list[str] = []  # peft layers already taken: their sub-modules are not separate targets
    for path, module in model.named_modules():
        name = module_name(path)
        if not any(matches(name, p) for p in patterns):
            continue
        if any(name.startswith(owner + ".") for owner in owners):
            continue
        fifo = is_fan_in_fan_out(module)
        tuner = is_lora_layer(module) or is_peft_tuner_layer(module)
        mps = is_mps_layer(module)
        # an adapter's base weight is never read (QLoRA: a packed 4-bit tensor, see docs/tracking.md)
        weight = None if tuner or mps else base_weight(module)
        if mps:  # MPS Adaptation: factored, B @ A_mps (B = 0 at start unless init="random")
            owners.append(name)
            b0, a0 = mps_factors(module) if bool((module.B != 0).any()) else (None, None)
            new = [Unit(name, module, "lora", "mps", b0=None if b0 is None else b0.clone(), a0=a0)]
        elif tuner:
            owners.append(name)
            new = adapter_units(name, module, fifo, zero_init)
        elif weight is not None and weight.requires_grad:
            w0 = initial_weight(name, weight, base_weights, snapshot_device)
            new = [Unit(name, module, "dense", "snapshot", fan_in_fan_out=fifo, w0=w0)]
        else:
            continue
        spec = split_for(name, split)
        if spec is not None:
            if mps:
                raise ValueError(f"split for {name}: an MPS Adaptation layer is measured whole (no fused parts)")
            out_features = getattr(module, "out_features", None) if tuner else None
            if out_features is None:  # a plain layer (or an adapter that does not say): its weight's shape
                weight = base_weight(module)
                out_features = None if weight is None else weight.shape[1] if fifo else weight.shape[0]
            if not isinstance(out_features, int):
                raise ValueError(f"split for {name}: the module has no 2-D weight (or out_features) to split")
            new = [replace_part(u, p) for u in new for p in parse_parts(spec, out_features, name)]
        for unit in new:
            unit.path = path
        units += new
    return units


def adapter_units(name: str, module: nn.Module, fifo: bool, zero_init: set[str] = frozenset()) -> list[Unit]:
    units = []
    variants = getattr(module, "lora_variant", {}) or {}
    for adapter in module.active_adapters:
        use_dora = bool(getattr(module, "use_dora", {}).get(adapter, False))
        lora_A = getattr(module, "lora_A", {})
        factored = (
            adapter in lora_A
            and adapter not in variants
            and getattr(lora_A[adapter], "weight", None) is not None
            and lora_A[adapter].weight.ndim == 2
            and module.lora_B[adapter].weight.ndim == 2
        )
        if factored:
            b0, a0 = start_factors(module, adapter, adapter in zero_init)
            units.append(Unit(name, module, "lora", "lora", adapter=adapter, fan_in_fan_out=fifo, b0=b0, a0=a0))
        elif use_dora:
            units.append(Unit(name, module, "dense", "dora", adapter=adapter, fan_in_fan_out=fifo))
        elif hasattr(module, "get_delta_weight"):
            units.append(Unit(name, module, "dense", "delta", adapter=adapter, fan_in_fan_out=fifo))
    return units


def start_factors(module: nn.Module, adapter: str, zero_init: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(B0, A0)``: copies of the adapter's factors now, whole, when ``B0 != 0``; else ``(None, None)``.

    The tracked update is the change of the effective weight since tracking started. peft's PiSSA,
    OLoRA, CorDA, EVA and LoftQ start with ``B0 != 0`` (and move ``s B0 A0`` out of the base weight),
    ``init_lora_weights=False`` starts with random ``B0``: their change is ``s (B A - B0 A0)``, not
    ``s B A``. With ``B0 = 0`` (peft's default and ``"gaussian"``) the two are equal and nothing is
    kept. ``zero_init`` (``resume=True`` with an adapter whose config says it started at zero): the
    start is training's, so ``s B A`` continues the resumed history. Every rank calls this in the same
    order (a sharded factor is gathered by a collective).
    """
    if zero_init:
        return None, None
    B = full_tensor(module.lora_B[adapter].weight.detach())
    if not bool((B != 0).any()):
        return None, None
    A = full_tensor(module.lora_A[adapter].weight.detach())
    return B.clone(), A.clone()


def zero_initialised_adapters(model: nn.Module) -> set[str]:
    """Adapters whose peft config says ``B`` started at zero (``init_lora_weights`` True or ``"gaussian"``)."""
    for module in model.modules():
        configs = getattr(module, "peft_config", None)
        if isinstance(configs, Mapping):
            return {name for name, c in configs.items() if getattr(c, "init_lora_weights", None) in (True, "gaussian")}
    return set()


def replace_part(unit: Unit, part: Part) -> Unit:
    return dataclasses.replace(unit, part=part)


class CheckpointWeights(Mapping):
    """Read-only, lazy view of a ``.safetensors`` file (tensors are read one at a time, when asked for)."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise not_usable(f"base_weights checkpoint {self.path}", self.path)
        self._file = safe_open(str(self.path), framework="pt")
        self._keys = list(self._file.keys())

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def as_base_weights(base_weights: Mapping[str, torch.Tensor] | str | Path | None) -> Mapping | None:
    """A mapping as given, or a lazy view of a ``.safetensors`` checkpoint path."""
    if base_weights is None or isinstance(base_weights, Mapping):
        return base_weights
    if Path(base_weights).suffix != ".safetensors":
        raise ValueError(f"base_weights: expected a mapping or a .safetensors path, got {base_weights!r}")
    return CheckpointWeights(base_weights)


def initial_weight(
    name: str, weight: torch.Tensor, base_weights: Mapping[str, torch.Tensor] | None, device: Any
) -> torch.Tensor:
    """``W0``: from ``base_weights`` (keys ``name`` or ``name.weight``) or a copy of the weight now."""
    if base_weights is not None:
        for key in (name + ".weight", name):
            if key in base_weights:
                w0 = torch.as_tensor(base_weights[key])
                if tuple(w0.shape) != tuple(weight.shape):
                    raise ValueError(
                        f"base_weights[{key!r}] has shape {tuple(w0.shape)}, the weight {tuple(weight.shape)}"
                    )
                return w0.detach().to(device or weight.device)
    return weight.detach().to(device or weight.device, copy=True)
