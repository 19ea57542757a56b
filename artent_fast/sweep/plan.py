"""Planning: which matrices to profile, grouped by shape into work units (from file headers only)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from artent_fast.checkpoints import (
    FILE_TYPES,
    AdapterFolder,
    CheckpointError,
    NameMap,
    TypedModule,
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
    peft_type: str | None = None  # another adapter type than LoRA (checkpoints.adapter.FILE_TYPES)...
    tensors: tuple[tuple[str, str], ...] = ()  # ... and the (role, name) of the tensors it reads


# fields an Item of a LoRA adapter or a dense checkpoint leaves at their default: left out of its unit's id,
# which stays as it was before other adapter types were read
_NEW_FIELDS = {"peft_type": None, "tensors": ()}


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
    update), ``dora`` (a DoRA adapter's ``W_dora - W``), ``BA`` (a LoRA adapter's ``s B A``, and any factored
    adapter's update), ``BA-B0A0`` (its change since its initial adapter, ``s (B A - B0 A0)``), ``ia3`` (an
    IA3 adapter's ``W * (l - 1)``) or ``delta`` (a dense LoKr's ``s kron(W1, W2)``)."""
    if item.peft_type is not None:
        return "BA" if kind == "lora" else FILE_TYPES[item.peft_type].dense_update
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


def _base_tensor(adapter: AdapterFolder, base: WeightFiles, to_base: NameMap, module: str, errors) -> str | None:
    """The base weight of an adapted module, or None with the error said (when the base's own does not)."""
    base_tensor = f"{to_base(module)}.weight"
    if base_tensor in base:
        return base_tensor
    if base.unexplained_absence(base_tensor):  # else the base's own error explains it
        errors.append(
            CheckpointError(
                base.describe(),
                base_tensor,
                f"the adapter {adapter.path} adapts a module the base does not have "
                f"(module names: {to_base.describe()})",
            ).record()
        )
    return None


def _shape_error(adapter: AdapterFolder, tensor: str, shape, base: WeightFiles, base_tensor: str, why: str = ""):
    return CheckpointError(
        adapter.weights.file_of(tensor),
        tensor,
        f"adapter update shape {shape} does not match the base weight {base_tensor} {base.shape(base_tensor)}"
        f"{why}: wrong base model?",
    ).record()


def _typed_item(
    adapter: AdapterFolder, mod: TypedModule, base: WeightFiles | None, to_base: NameMap, errors
) -> tuple | None:
    """``(kind, key, item)`` of a module of another adapter type than LoRA: its shape completed (and checked)
    from the base's, factored (kind ``lora``) or dense (``dW``)."""
    first = mod.tensors[0][1]
    out, inp = mod.shape
    base_tensor = None
    if base is not None:
        base_tensor = _base_tensor(adapter, base, to_base, mod.module, errors)
        if base_tensor is None:
            return None
        stored = base.shape(base_tensor)
        given = (inp, out) if mod.fan_in_fan_out else (out, inp)
        if len(stored) != 2 or any(g not in (None, s) for g, s in zip(given, stored, strict=True)):
            shown = tuple("?" if g is None else g for g in given)
            errors.append(_shape_error(adapter, first, shown, base, base_tensor))
            return None
        out, inp = stored[::-1] if mod.fan_in_fan_out else stored
        if problem := adapter.type.shape_problem(adapter, mod, (out, inp)):
            errors.append(_shape_error(adapter, first, (out, inp), base, base_tensor, f" ({problem})"))
            return None
    shape = (inp, out) if mod.fan_in_fan_out else (out, inp)
    item = Item(
        mod.module,
        first,
        base_tensor,
        rank=mod.rank,
        scale=mod.scale,
        fan_in_fan_out=mod.fan_in_fan_out,
        peft_type=mod.peft_type,
        tensors=mod.tensors,
    )
    return ("lora", (*shape, mod.rank), item) if mod.rank is not None else ("dW", shape, item)


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
        if isinstance(mod, TypedModule):
            if (found := _typed_item(adapter, mod, base, to_base, errors)) is not None:
                items.append(found)
            continue
        shape = adapter.update_shape(mod)
        base_tensor = None
        if base is not None:
            base_tensor = _base_tensor(adapter, base, to_base, mod.module, errors)
            if base_tensor is None:
                continue
            if base.shape(base_tensor) != shape:
                errors.append(_shape_error(adapter, mod.a_name, shape, base, base_tensor))
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
                if adapter.base_needed and base is None:
                    adapter.close()
                    raise CheckpointError(
                        ckpt,
                        None,
                        f"{adapter.base_needed}: pass the model it was trained on with --base DIR (base=...)",
                    )
                if adapter.base_needed and base_files is None:
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
            seen += [adapter.weights.identity(t) for _, t in item.tensors]
            if adapter.initial is not None and item.a0_tensor is not None:
                seen.append(adapter.initial.identity)
                seen += [adapter.initial.weights.identity(t) for t in (item.a0_tensor, item.b0_tensor) if t]
        else:
            seen.append(source.weights.identity(item.tensor))  # type: ignore[union-attr]
        if item.base_tensor is not None and unit.kind == "dW":
            seen.append(source.base.identity(item.base_tensor))  # type: ignore[union-attr]
    return list({json.dumps(s, default=str): s for s in seen}.values())


def _id_fields(item: Item) -> dict[str, Any]:
    return {k: v for k, v in asdict(item).items() if k not in _NEW_FIELDS or v != _NEW_FIELDS[k]}


def unit_id(unit: WorkUnit, base: str | None, settings: dict[str, Any], identities: list[Any] = ()) -> str:
    """Stable id of a unit's work: same inputs (files unchanged since) and settings, same id, so reruns find
    finished parts; a checkpoint rewritten in place gets new ids and is recomputed."""
    key = {
        "checkpoint": str(Path(unit.checkpoint).resolve()),
        "base": str(Path(base).resolve()) if base else None,
        "kind": unit.kind,
        "shape": unit.shape,
        "items": [_id_fields(i) for i in unit.items],
        "settings": settings,
        "read": list(identities),
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
