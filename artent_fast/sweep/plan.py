"""Planning: which matrices to profile, grouped by shape into work units (from file headers only)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from artent_fast.checkpoints import (
    AdapterFolder,
    CheckpointError,
    NameMap,
    WeightFiles,
    choose_name_map,
    expand_checkpoints,
    is_adapter,
    is_target,
    module_name,
    open_weights,
    parse_step,
)
from artent_fast.parallel import matrix_cost
from artent_fast.sweep.store import OLD_UPDATES


@dataclass(frozen=True)
class Item:
    """One matrix to profile: a weight, a dense update ``tuned - base`` (or a DoRA adapter's ``W_dora - W``),
    or a LoRA factor pair (less its initial pair, for an adapter that did not start at zero)."""

    module: str
    tensor: str  # tensor name in the tuned/model folder (lora_A's name for adapters)
    base_tensor: str | None = None
    b_tensor: str | None = None  # lora_B's name for adapters
    rank: int | None = None
    scale: float = 1.0
    fan_in_fan_out: bool = False
    magnitude: str | None = None  # DoRA's magnitude vector
    a0_tensor: str | None = None  # the initial adapter's lora_A, lora_B
    b0_tensor: str | None = None


@dataclass
class WorkUnit:
    """A batch of same-shape matrices from one checkpoint: the unit of work, resume and sharding."""

    checkpoint: str
    step: int | None
    kind: str  # "weight" | "dW" | "lora"
    shape: tuple[int, int]
    items: list[Item]
    id: str = ""
    cost: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "kind": self.kind,
            "shape": list(self.shape),
            "modules": [i.module for i in self.items],
        }


@dataclass
class Source:
    """An opened checkpoint (model folder or adapter) and, for updates, its base."""

    path: str
    weights: WeightFiles | None = None
    adapter: AdapterFolder | None = None
    base: WeightFiles | None = None

    def close(self) -> None:
        for files in (self.weights, self.base, self.adapter):
            if files is not None:
                files.close()


@dataclass
class Plan:
    units: list[WorkUnit] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    name_maps: dict[str, str] = field(default_factory=dict)  # checkpoint -> how its names map to the base's


def update_of(kind: str, item: Item) -> str:
    """The ``update`` column (the tracker's records' ``update`` field): ``W`` (a weight), ``W-W0`` (a dense
    update), ``dora`` (a DoRA adapter's ``W_dora - W``), ``BA`` (a LoRA adapter's ``s B A``) or ``BA-B0A0``
    (its change since its initial adapter, ``s (B A - B0 A0)``)."""
    if item.magnitude is not None:
        return "dora"
    if item.a0_tensor is not None:
        return "BA-B0A0"
    return OLD_UPDATES[kind]


def natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _dense_items(
    ckpt: str, weights: WeightFiles, base: WeightFiles | None, targets, errors, maps: dict[str, str]
) -> list[tuple]:
    items = []
    to_base = NameMap()
    if base is not None:
        mine = [
            module_name(n)
            for n in weights.names()
            if n.endswith(".weight") and len(weights.shape(n)) == 2 and is_target(module_name(n), targets)
        ]
        to_base = choose_name_map(mine, base.names())
        maps[ckpt] = to_base.describe()
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
        base_name = f"{to_base(module)}.weight"
        if base_name not in base:
            if base.unexplained_absence(base_name):  # an unreadable base is reported once, not per tensor
                errors.append(
                    CheckpointError(base.describe(), base_name, f"missing from the base (present in {ckpt})").record()
                )
            continue
        if base.shape(base_name) != shape:
            errors.append(
                CheckpointError(
                    weights.file_of(name),
                    name,
                    f"shape {shape} does not match the base's {base.shape(base_name)} ({base.file_of(base_name)})",
                ).record()
            )
            continue
        items.append(("dW", shape, Item(module, name, base_tensor=base_name)))
    if base is not None and not weights.file_errors:  # with an unreadable file, absent names are already explained
        covered = {f"{to_base(module_name(n))}.weight" for n in [*weights.names(), *weights.broken]}
        for name in base.names():
            if (
                name.endswith(".weight")
                and len(base.shape(name)) == 2
                and is_target(module_name(name), targets)
                and name not in covered
            ):
                errors.append(CheckpointError(ckpt, name, "missing tensor (present in the base)").record())
    return items


def _lora_items(
    ckpt: str, adapter: AdapterFolder, base: WeightFiles | None, targets, errors, maps: dict[str, str]
) -> list[tuple]:
    mods, errs = adapter.modules()
    errors += [e.record() for e in errs]
    mods = [mod for mod in mods if is_target(mod.module, targets)]
    to_base = NameMap()
    if base is not None:
        to_base = choose_name_map([mod.module for mod in mods], base.names())
        maps[ckpt] = to_base.describe()
    items = []
    for mod in mods:
        shape = adapter.update_shape(mod)
        base_tensor = None
        if base is not None:
            base_tensor = f"{to_base(mod.module)}.weight"
            if base_tensor not in base:
                if not base.unexplained_absence(base_tensor):  # the base's own error explains it
                    continue
                errors.append(
                    CheckpointError(
                        base.describe(),
                        base_tensor,
                        f"the adapter {adapter.path} adapts a module the base does not have "
                        f"(module names: {to_base.describe()})",
                    ).record()
                )
                continue
            if base.shape(base_tensor) != shape:
                errors.append(
                    CheckpointError(
                        adapter.weights.file_of(mod.a_name),
                        mod.a_name,
                        f"adapter update shape {shape} does not match the base weight "
                        f"{base_tensor} {base.shape(base_tensor)}: wrong base model?",
                    ).record()
                )
                continue
        item = Item(
            mod.module,
            mod.a_name,
            base_tensor,
            mod.b_name,
            mod.rank,
            mod.scale,
            mod.fan_in_fan_out,
            mod.magnitude,
            mod.a0_name,
            mod.b0_name,
        )
        if mod.magnitude is not None:  # DoRA: not low rank, profiled dense (rank: none)
            items.append(("dW", shape, replace(item, rank=None)))
        elif mod.a0_name is not None:  # s (B A - B0 A0): factored with rank 2r
            items.append(("lora", (*shape, 2 * mod.rank), replace(item, rank=2 * mod.rank)))
        else:
            items.append(("lora", (*shape, mod.rank), item))
    return items


def build_plan(
    checkpoints: list[str],
    *,
    base: str | None,
    targets,
    batch: int,
    allow_pickle: bool,
    settings: dict[str, Any],
    initial_adapter: str | None = None,
) -> Plan:
    """Open every checkpoint's headers, pick target matrices, group them by shape into units of ``batch``.

    ``initial_adapter``: the folder of the adapters' initial adapter (for adapters that did not start at zero)."""
    plan = Plan()
    base_files = None
    if base is not None:
        try:
            base_files = open_weights(base, allow_pickle)
            plan.errors += [e.record() for e in base_files.file_errors]
        except CheckpointError as exc:
            plan.errors.append(exc.record())
    for ckpt in expand_checkpoints(checkpoints, plan.errors):
        known_errors = len(plan.errors)
        try:
            if is_adapter(ckpt):
                adapter = AdapterFolder(ckpt, allow_pickle, initial_adapter)
                if adapter.dora and base is None:
                    adapter.close()
                    raise CheckpointError(
                        ckpt,
                        None,
                        "a DoRA adapter (use_dora): its update m / ||W + s B A||_row (W + s B A) - W needs the base "
                        "weight W: pass the model it was trained on with --base DIR (base=...)",
                    )
                if adapter.dora and base_files is None:
                    continue  # the base's one error says why no update of it is profiled
                source = Source(ckpt, adapter=adapter, base=base_files)
                found = _lora_items(ckpt, adapter, base_files, targets, plan.errors, plan.name_maps)
            else:
                if base is not None and base_files is None:
                    continue  # the base's one error says why no update of it is profiled
                weights = open_weights(ckpt, allow_pickle)
                plan.errors += [e.record() for e in weights.file_errors]
                source = Source(ckpt, weights=weights, base=base_files)
                found = _dense_items(ckpt, weights, base_files, targets, plan.errors, plan.name_maps)
        except CheckpointError as exc:
            plan.errors.append(exc.record())
            continue
        base_broken = base_files is not None and bool(base_files.file_errors)
        if not found and len(plan.errors) == known_errors and not base_broken:
            plan.errors.append(
                CheckpointError(ckpt, None, f"no target matrices (targets: {targets or 'all-linear'})").record()
            )
        plan.sources[ckpt] = source
        groups: dict[tuple, list[Item]] = {}
        for kind, key, item in found:
            groups.setdefault((kind, key), []).append(item)
        step = parse_step(ckpt)
        for (kind, key), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            items.sort(key=lambda i: natural_key(i.module))
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                unit = WorkUnit(ckpt, step, kind, (key[0], key[1]), chunk)
                unit.cost = len(chunk) * matrix_cost(kind, unit.shape, chunk[0].rank)
                unit.id = unit_id(unit, base if kind != "weight" else None, settings, read_by(unit, source))
                plan.units.append(unit)
    return plan


def read_by(unit: WorkUnit, source: Source) -> list[Any]:
    """The identity (file, size, mtime, ctime, inode) of everything a unit reads, as planned."""
    seen: list[Any] = []
    adapter = source.adapter
    for item in unit.items:
        if adapter is not None:
            seen.append(adapter.identity)
            seen += [adapter.weights.identity(t) for t in (item.tensor, item.b_tensor, item.magnitude) if t]
            if adapter.initial is not None and item.a0_tensor is not None:
                seen.append(adapter.initial.identity)
                seen += [adapter.initial.weights.identity(t) for t in (item.a0_tensor, item.b0_tensor) if t]
        else:
            seen.append(source.weights.identity(item.tensor))  # type: ignore[union-attr]
        if item.base_tensor is not None and unit.kind == "dW":
            seen.append(source.base.identity(item.base_tensor))  # type: ignore[union-attr]
    return list({json.dumps(s, default=str): s for s in seen}.values())


def unit_id(unit: WorkUnit, base: str | None, settings: dict[str, Any], identities: list[Any] = ()) -> str:
    """Stable id of a unit's work: same inputs (files unchanged since) and settings, same id, so reruns find
    finished parts; a checkpoint rewritten in place gets new ids and is recomputed."""
    key = {
        "checkpoint": str(Path(unit.checkpoint).resolve()),
        "base": str(Path(base).resolve()) if base else None,
        "kind": unit.kind,
        "shape": unit.shape,
        "items": [asdict(i) for i in unit.items],
        "settings": settings,
        "read": list(identities),
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
