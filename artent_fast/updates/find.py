"""Finding the units to measure in a model: name patterns, adapter layers, fused projections, W0 snapshots."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artent_fast.checkpoints import open_weights
from artent_fast.parallel import full_tensor
from artent_fast.paths import not_usable
from artent_fast.patterns import check_patterns, matches, matches_any, module_name
from artent_fast.updates.types import AdapterType, adapter_type, adapters_of, base_weight
from artent_fast.updates.unit import Part, Unit

SplitSpec = int | Sequence[str] | Mapping[str, int]
# a dense adapter update smaller than this fraction of the weight when tracking starts counts as zero
# (DoRA's magnitude equals ||W||_row in the weight's precision, not exactly)
DENSE_START_TOLERANCE = 1e-6


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


def adapter_units(name: str, module: nn.Module) -> list[Unit]:
    """One unit per active adapter of ``module`` that this package reads (:mod:`artent_fast.updates.types`),
    each the adapter's whole update until :func:`read_starts` gives it its start."""
    fifo = is_fan_in_fan_out(module)
    units = []
    for adapter in adapters_of(module):
        reader = adapter_type(module, adapter)
        if reader is not None:
            kind = "lora" if reader.factored else "dense"
            units.append(Unit(name, module, kind, reader.name, adapter, fan_in_fan_out=fifo, reader=reader))
    return units


def module_units(
    name: str,
    module: nn.Module,
    *,
    base_weights: Mapping[str, torch.Tensor] | None = None,
    snapshot_device: Any = None,
) -> list[Unit]:
    """The units of one module: its adapters' (:func:`adapter_units`), or one full-fine-tuning unit
    (``W - W0``, ``W0`` from ``base_weights`` or a snapshot now) for a plain layer with a trainable 2-D
    weight; ``[]`` otherwise. An adapter's base weight is never read as an update (QLoRA: 4-bit)."""
    if adapters_of(module):
        return adapter_units(name, module)
    weight = base_weight(module)
    if weight is None or not weight.requires_grad:  # frozen plain layers: the update is always zero
        return []
    w0 = initial_weight(name, weight, base_weights, snapshot_device)
    return [Unit(name, module, "dense", "snapshot", fan_in_fan_out=is_fan_in_fan_out(module), w0=w0)]


def read_starts(units: Iterable[Unit], zero_init: Iterable[str] = ()) -> None:
    """Give each adapter unit its start (:func:`start_of`), read once per (layer, adapter) and shared by
    its parts; ``zero_init`` names adapters whose start is training's (a resumed run): they keep none."""
    zero_init, starts = set(zero_init), {}
    for unit in units:
        if unit.reader is None or unit.adapter in zero_init:
            continue
        key = (id(unit.layer), unit.adapter)
        if key not in starts:
            starts[key] = start_of(dataclasses.replace(unit, part=None), unit.reader)
        unit.start = starts[key]


def start_of(unit: Unit, reader: AdapterType) -> tuple[torch.Tensor, ...] | None:
    """The adapter's update now, kept when it is not zero: ``(B0, A0)`` (whole, in the base layout) or ``(D0,)``.

    The tracked update is the change of the effective weight since tracking started. peft's PiSSA,
    OLoRA, CorDA, EVA and LoftQ start with ``B0 A0 != 0`` (and move ``s B0 A0`` out of the base weight),
    ``init_lora_weights=False`` starts with random factors: their change is ``s (B A - B0 A0)``, not
    ``s B A``. With peft's default starts (``B = 0`` for LoRA, a zero factor for LoHa/LoKr, ``λ_b = 0``
    for VeRA, ``E = 0`` for AdaLoRA) the product is exactly zero and nothing is kept. A dense update is
    kept when it is above :data:`DENSE_START_TOLERANCE` of the weight. Every rank calls this in the
    same order (a sharded tensor is gathered by a collective).
    """
    with torch.no_grad():
        if reader.factored:
            B, A, _, _ = unit.whole_factors(full_tensor)
            B, A = B.double(), A.double()
            if not bool(torch.trace((B.mT @ B) @ (A @ A.mT)) != 0):  # ||B A||_F^2 = 0: the product is zero
                return None
            return B.clone(), A.clone()
        try:
            d0 = unit.whole_dense(full_tensor)
        except ValueError:  # a merged adapter: measuring it fails later, with its own message
            return None
        weight = base_weight(unit.layer)
        scale = float(weight.detach().float().norm()) if weight is not None and weight.device.type != "meta" else 0.0
        if float(d0.norm()) <= DENSE_START_TOLERANCE * scale:
            return None
        return (d0.clone(),)


def find_units(
    model: nn.Module,
    targets: Iterable[str],
    *,
    split: Mapping[str, SplitSpec] | None = None,
    base_weights: Mapping[str, torch.Tensor] | str | Path | None = None,
    snapshot_device: Any = None,
    resume: bool = False,
    starts: bool = True,
) -> list[Unit]:
    """Every unit of ``model`` whose module name matches one of ``targets`` (see :func:`module_units`),
    with their starts (:func:`read_starts`) unless ``starts=False``.

    ``base_weights`` (a mapping or a ``.safetensors`` path) gives full-fine-tuning units their ``W0``
    (else a snapshot of the weight now); ``split`` cuts fused projections into parts; ``resume``: an
    adapter whose peft config says it started at zero continues the resumed history (``s B A``).
    """
    base_weights = as_base_weights(base_weights)
    patterns = check_patterns(targets, "targets")
    units: list[Unit] = []
    owners: list[str] = []  # adapter layers already taken: their sub-modules are not separate targets
    for path, module in model.named_modules():
        name = module_name(path)
        if not matches_any(name, patterns):
            continue
        if any(name.startswith(owner + ".") for owner in owners):
            continue
        if adapters_of(module):
            owners.append(name)
        new = module_units(name, module, base_weights=base_weights, snapshot_device=snapshot_device)
        spec = split_for(name, split) if new else None
        if spec is not None:
            if any(u.source == "mps" for u in new):
                raise ValueError(f"split for {name}: an MPS Adaptation layer is measured whole (no fused parts)")
            out_features = getattr(module, "out_features", None) if adapters_of(module) else None
            if out_features is None:  # a plain layer (or an adapter that does not say): its weight's shape
                weight = base_weight(module)
                out_features = None if weight is None else weight.shape[1] if new[0].fan_in_fan_out else weight.shape[0]
            if not isinstance(out_features, int):
                raise ValueError(f"split for {name}: the module has no 2-D weight (or out_features) to split")
            new = [dataclasses.replace(u, part=p) for u in new for p in parse_parts(spec, out_features, name)]
        for unit in new:
            unit.path = path
        units += new
    if starts:
        read_starts(units, zero_initialised_adapters(model) if resume else ())
    return units


def zero_initialised_adapters(model: nn.Module) -> set[str]:
    """Adapters whose peft config says the update started at zero (``init_lora_weights`` True or
    ``"gaussian"``; ``init_weights`` True for LoHa, LoKr, IA3 and VeRA)."""
    for module in model.modules():
        configs = getattr(module, "peft_config", None)
        if isinstance(configs, Mapping):
            return {
                name
                for name, c in configs.items()
                if getattr(c, "init_lora_weights", getattr(c, "init_weights", None)) in (True, "gaussian")
            }
    return set()


def as_base_weights(base_weights: Mapping[str, torch.Tensor] | str | Path | None) -> Mapping | None:
    """A mapping as given, or a lazy, read-only view of a ``.safetensors`` checkpoint path."""
    if base_weights is None or isinstance(base_weights, Mapping):
        return base_weights
    path = Path(base_weights)
    if path.suffix != ".safetensors":
        raise ValueError(f"base_weights: expected a mapping or a .safetensors path, got {base_weights!r}")
    if not path.is_file():
        raise not_usable(f"base_weights checkpoint {path}", path)
    return open_weights(path)


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
