"""Planning: which matrices to profile, grouped by shape into work units (from file headers only)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from artent_fast.parallel import matrix_cost
from artent_fast.sweep.adapter import AdapterFolder
from artent_fast.sweep.confine import Escape, confine, roots_of
from artent_fast.sweep.names import NameMap, choose_name_map, is_target, module_name, parse_step
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
        for files in (self.weights, self.base, self.adapter.weights if self.adapter else None):
            if files is not None:
                files.close()


@dataclass
class Plan:
    units: list[WorkUnit] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    name_maps: dict[str, str] = field(default_factory=dict)  # checkpoint -> how its names map to the base's


def natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _children(run: Path, errors: list[dict[str, Any]]) -> list[Path]:
    """A run folder's ``checkpoint-*`` sub-folders; one that is a link leaving the run folder is refused."""
    roots = roots_of(run)
    out = []
    for child in run.iterdir():
        if parse_step(child.name) is None:
            continue
        if child.is_symlink():
            try:
                target = confine(roots[0], child.name, roots)
            except Escape as exc:
                errors.append(CheckpointError(run, child.name, f"{exc}; refused, not read").record())
                continue
            if target.is_dir():
                out.append(child)
        elif child.is_dir():
            out.append(child)
    return out


def expand_checkpoints(paths: list[str], errors: list[dict[str, Any]] | None = None) -> list[str]:
    """Each path as given; a run folder without weights expands to its ``checkpoint-*`` children by step."""
    errors = [] if errors is None else errors
    out: list[str] = []
    for path in paths:
        p = Path(path)
        children = _children(p, errors) if p.is_dir() and not has_weights(p) else []
        if children:
            out += [str(c) for c in sorted(children, key=lambda c: (parse_step(c.name), c.name))]
        else:
            out.append(str(path))
    return list(dict.fromkeys(out))  # a checkpoint given twice is swept once


def _has(files: WeightFiles) -> Callable[[str], bool]:
    return lambda module: f"{module}.weight" in files


def _base_modules(base: WeightFiles) -> list[str]:
    return [module_name(n) for n in base.names() if n.endswith(".weight")]


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
        to_base = choose_name_map(mine, _has(base), _base_modules(base))
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
        to_base = choose_name_map([mod.module for mod in mods], _has(base), _base_modules(base))
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
        items.append(
            (
                "lora",
                (*shape, mod.rank),
                Item(mod.module, mod.a_name, base_tensor, mod.b_name, mod.rank, mod.scale, mod.fan_in_fan_out),
            )
        )
    return items


def build_plan(
    checkpoints: list[str], *, base: str | None, targets, batch: int, allow_pickle: bool, settings: dict[str, Any]
) -> Plan:
    """Open every checkpoint's headers, pick target matrices, group them by shape into units of ``batch``."""
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
                adapter = AdapterFolder(ckpt, allow_pickle)
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
    for item in unit.items:
        if source.adapter is not None:
            seen += [
                source.adapter.identity,
                source.adapter.weights.identity(item.tensor),
                source.adapter.weights.identity(item.b_tensor or item.tensor),
            ]
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
