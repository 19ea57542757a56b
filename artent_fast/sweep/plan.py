"""Planning: which matrices to profile, grouped by shape into work units (from file headers only)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from artent_fast.sweep.adapter import AdapterFolder
from artent_fast.sweep.names import is_target, module_name, parse_step
from artent_fast.sweep.reader import CheckpointError, WeightFiles, has_weights, is_adapter, open_weights


@dataclass(frozen=True)
class Item:
    """One matrix to profile: a weight, a dense update ``tuned - base``, or a LoRA factor pair."""

    module: str
    tensor: str  # tensor name in the tuned/model folder (lora_A's name for adapters)
    base_tensor: str | None = None
    b_tensor: str | None = None  # lora_B's name for adapters
    rank: int | None = None
    scale: float = 1.0
    fan_in_fan_out: bool = False


@dataclass
class Unit:
    """A batch of same-shape matrices from one checkpoint: the unit of work, resume and sharding."""

    checkpoint: str
    step: int | None
    kind: str  # "weight" | "dW" | "lora"
    shape: tuple[int, int]
    items: list[Item]
    id: str = ""
    cost: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "checkpoint": self.checkpoint, "step": self.step, "kind": self.kind,
                "shape": list(self.shape), "modules": [i.module for i in self.items]}


@dataclass
class Source:
    """An opened checkpoint (model folder or adapter) and, for updates, its base."""

    path: str
    weights: WeightFiles | None = None
    adapter: AdapterFolder | None = None
    base: WeightFiles | None = None

    def close(self) -> None:
        for files in (self.weights, self.base, self.adapter.weights if self.adapter else None):
            if files is not None:
                files.close()


@dataclass
class Plan:
    units: list[Unit] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def expand_checkpoints(paths: list[str]) -> list[str]:
    """Each path as given; a run folder without weights expands to its ``checkpoint-*`` children by step."""
    out: list[str] = []
    for path in paths:
        p = Path(path)
        children = [c for c in p.iterdir() if c.is_dir() and parse_step(c.name) is not None] if p.is_dir() else []
        if children and not has_weights(p):
            out += [str(c) for c in sorted(children, key=lambda c: (parse_step(c.name), c.name))]
        else:
            out.append(str(path))
    return list(dict.fromkeys(out))  # a checkpoint given twice is swept once


def _base_name(base: WeightFiles, module: str) -> str | None:
    for candidate in (f"{module}.weight", f"{module.removeprefix('model.')}.weight", f"model.{module}.weight"):
        if candidate in base:
            return candidate
    return None


def _dense_items(ckpt: str, weights: WeightFiles, base: WeightFiles | None, targets, errors) -> list[tuple]:
    items = []
    for name in list(weights.broken) + (list(base.broken) if base else []):
        if name.endswith(".weight") and is_target(module_name(name), targets):
            errors.append((weights.broken.get(name) or base.broken[name]).record())  # type: ignore[union-attr]
    for name in weights.names():
        module = module_name(name)
        shape = weights.shape(name)
        if not name.endswith(".weight") or len(shape) != 2 or not is_target(module, targets):
            continue
        if base is None:
            items.append(("weight", shape, Item(module, name)))
            continue
        if name not in base:
            if name not in base.broken:
                errors.append(CheckpointError(base.describe(), name, f"missing from the base (present in {ckpt})")
                              .record())
            continue
        if base.shape(name) != shape:
            errors.append(CheckpointError(weights.file_of(name), name, f"shape {shape} does not match the base's "
                                          f"{base.shape(name)} ({base.file_of(name)})").record())
            continue
        items.append(("dW", shape, Item(module, name, base_tensor=name)))
    if base is not None and not weights.file_errors:  # with an unreadable file, absent names are already explained
        for name in base.names():
            if (name.endswith(".weight") and len(base.shape(name)) == 2 and is_target(module_name(name), targets)
                    and name not in weights and name not in weights.broken):
                errors.append(CheckpointError(ckpt, name, "missing tensor (present in the base)").record())
    return items


def _lora_items(adapter: AdapterFolder, base: WeightFiles | None, targets, errors) -> list[tuple]:
    mods, errs = adapter.modules()
    errors += [e.record() for e in errs]
    items = []
    for mod in mods:
        if not is_target(mod.module, targets):
            continue
        shape = adapter.update_shape(mod)
        base_tensor = None
        if base is not None:
            base_tensor = _base_name(base, mod.module)
            if base_tensor is None:
                errors.append(CheckpointError(base.describe(), f"{mod.module}.weight",
                                              f"the adapter {adapter.path} adapts a module the base does not have")
                              .record())
                continue
            if base.shape(base_tensor) != shape:
                errors.append(CheckpointError(adapter.weights.file_of(mod.a_name), mod.a_name,
                                              f"adapter update shape {shape} does not match the base weight "
                                              f"{base_tensor} {base.shape(base_tensor)}: wrong base model?").record())
                continue
        items.append(("lora", (*shape, mod.rank), Item(mod.module, mod.a_name, base_tensor, mod.b_name, mod.rank,
                                                        mod.scale, mod.fan_in_fan_out)))
    return items


def unit_cost(kind: str, shape: tuple[int, int], rank: int | None, count: int) -> float:
    """Rough flop count: a dense profile costs about one Gram of the matrix, a factored one (m + n) r^2."""
    m, n = shape
    if kind == "lora":
        return count * (m + n) * (rank or 1) ** 2 + count * (m + n) * (rank or 1) * 64
    return count * m * n * min(m, n)


def build_plan(checkpoints: list[str], *, base: str | None, targets, batch: int, allow_pickle: bool,
               settings: dict[str, Any]) -> Plan:
    """Open every checkpoint's headers, pick target matrices, group them by shape into units of ``batch``."""
    plan = Plan()
    base_files = None
    if base is not None:
        try:
            base_files = open_weights(base, allow_pickle)
            plan.errors += [e.record() for e in base_files.file_errors]
        except CheckpointError as exc:
            plan.errors.append(exc.record())
    for ckpt in expand_checkpoints(checkpoints):
        known_errors = len(plan.errors)
        try:
            if is_adapter(ckpt):
                adapter = AdapterFolder(ckpt, allow_pickle)
                source = Source(ckpt, adapter=adapter, base=base_files)
                found = _lora_items(adapter, base_files, targets, plan.errors)
            else:
                if base is not None and base_files is None:
                    raise CheckpointError(ckpt, None, f"needs the base {base}, which could not be read")
                weights = open_weights(ckpt, allow_pickle)
                plan.errors += [e.record() for e in weights.file_errors]
                source = Source(ckpt, weights=weights, base=base_files)
                found = _dense_items(ckpt, weights, base_files, targets, plan.errors)
        except CheckpointError as exc:
            plan.errors.append(exc.record())
            continue
        if not found and len(plan.errors) == known_errors:
            plan.errors.append(CheckpointError(ckpt, None, f"no target matrices (targets: {targets or 'all-linear'})")
                               .record())
        plan.sources[ckpt] = source
        groups: dict[tuple, list[Item]] = {}
        for kind, key, item in found:
            groups.setdefault((kind, key), []).append(item)
        step = parse_step(ckpt)
        for (kind, key), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            items.sort(key=lambda i: natural_key(i.module))
            for start in range(0, len(items), batch):
                chunk = items[start:start + batch]
                unit = Unit(ckpt, step, kind, (key[0], key[1]), chunk)
                unit.cost = unit_cost(kind, unit.shape, chunk[0].rank, len(chunk))
                unit.id = unit_id(unit, base if kind != "weight" else None, settings)
                plan.units.append(unit)
    return plan


def unit_id(unit: Unit, base: str | None, settings: dict[str, Any]) -> str:
    """Stable id of a unit's work: same inputs and settings, same id (so reruns find finished parts)."""
    key = {"checkpoint": str(Path(unit.checkpoint).resolve()), "base": str(Path(base).resolve()) if base else None,
           "kind": unit.kind, "shape": unit.shape, "items": [asdict(i) for i in unit.items], "settings": settings}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
