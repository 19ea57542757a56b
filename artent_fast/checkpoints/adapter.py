"""peft adapter folders: what each saved adapter type's update is, read from its files.

LoRA (factor pairs, scaling ``lora_alpha/r`` or rsLoRA, per-module patterns, DoRA magnitudes, and the
initial adapter of one that did not start at zero: PiSSA, OLoRA, ...) is read by :class:`AdapterFolder`
itself; every other peft type is one small :class:`FileType` class below, which names its tensors,
checks its config and its start, and turns its tensors into the update's factors (through
:mod:`artent_fast.core.update_algebra`, as the tracker does) or, where the update has no useful low-rank
structure, into the dense update:

- ADALORA: ``lora_alpha / (r + 1e-5) * B (A * E)`` (``P Λ Q``), factored with rank ``r``;
- LOHA: ``alpha / r * (W1a W1b) * (W2a W2b)``, factored with rank ``r^2``;
- LOKR: ``alpha / r * kron(W1, W2)``, factored with rank ``k1 k2`` when that is below ``min(m, n)``, else dense;
- VERA: ``(λ_b * B[:out]) (λ_d * A[:, :in])`` (shared ``A``, ``B``), factored with rank ``r`` (needs the base);
- IA3: ``W * (l - 1)``, dense (needs the base).

Updates are in the ``(out, in)`` layout here, transposed to the base weight's under fan_in_fan_out.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from artent_fast.checkpoints.confine import Escape, confine, roots_of
from artent_fast.checkpoints.reader import ADAPTER_CONFIG, CheckpointError, WeightFiles
from artent_fast.core.update_algebra import (
    adalora_factors,
    full_rank_factors,
    hadamard_factors,
    ia3_change,
    kronecker_factors,
    vera_factors,
)

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
# DoRA's magnitude vector m (one entry per output feature): ``...q_proj.lora_magnitude_vector`` as peft saves it
_MAGNITUDE_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)*$")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# peft's init_lora_weights values whose adapter starts at B = 0 (its saved product is the whole update);
# the others (False, "pissa", "olora", "loftq", "corda", "eva", ...) start elsewhere: they are profiled against
# their initial adapter when it is given (--initial-adapter), and refused otherwise
ZERO_START_INITS = (True, "gaussian", None)


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its name in the base model, factor tensor names and the update's scale."""

    module: str
    a_name: str
    b_name: str
    rank: int
    alpha: float
    scale: float
    fan_in_fan_out: bool
    magnitude: str | None = None  # DoRA's magnitude vector
    a0_name: str | None = None  # the initial adapter's factors (in :attr:`AdapterFolder.initial`)
    b0_name: str | None = None

    @property
    def update(self) -> str:
        """Which update is measured, as the tracker's ``update`` field: ``"dora"`` (``W_dora - W``),
        ``"BA-B0A0"`` (the change since the initial adapter) or ``"BA"`` (the adapter's whole update)."""
        return "dora" if self.magnitude else "BA-B0A0" if self.a0_name else "BA"


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's per-module override: a key matches the module name or a dotted suffix of it."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def rank_and_alpha(config: dict[str, Any], module: str, alpha_key: str = "lora_alpha") -> tuple[int, float]:
    """``(r, alpha)`` of ``module``: ``r`` and ``alpha_key`` (``lora_alpha``; ``alpha`` for LoHa and LoKr),
    or their ``rank_pattern`` / ``alpha_pattern`` override (peft's defaults: 8 and 8)."""
    r = int(_pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8)))
    alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get(alpha_key, 8)))
    return r, alpha


def lora_scale(config: dict[str, Any], module: str) -> tuple[int, float, float]:
    """``(r, alpha, scale)`` of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA.

    ``config`` is assumed valid (see :func:`check_config`)."""
    r, alpha = rank_and_alpha(config, module)
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return r, alpha, scale


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rank_problem(v: Any) -> str | None:
    return None if _is_int(v) and v >= 1 else f"must be an integer >= 1, found {v!r}"


def _alpha_problem(v: Any) -> str | None:
    if not _is_real(v):
        return f"must be a finite number, found {v!r}"
    return None if v != 0 else "is 0: the update would be zero"


def _real_problem(v: Any) -> str | None:
    return None if _is_real(v) else f"must be a finite number, found {v!r}"


class FileType:
    """How one peft type's saved adapter is read. Subclasses (one per ``peft_type``) name the config keys
    the sweep reads (checked by :func:`check_config`), the key saying how the adapter started, and, except
    LoRA's (read by :class:`AdapterFolder`), the tensors of each adapted module and its update."""

    peft_type = ""
    label = ""  # the name errors use
    numbers: tuple[tuple[str, Any], ...] = ()  # (key, check) of numeric config fields
    flags: tuple[str, ...] = ()  # true/false config fields
    patterns: tuple[tuple[str, Any], ...] = ()  # (rank_pattern / alpha_pattern, check of each value)
    init_key = "init_weights"
    start = ""  # what a non-zero init_key draws (for the refusal)
    base_needed: str | None = None  # why a sweep of it needs --base (None: it does not)
    key = re.compile("$^")  # a tensor name -> its module and role
    dense_update = "delta"  # the ``update`` column of a dense module of this type

    def zero_start(self, init: Any) -> bool:
        """Whether an adapter initialised with ``init`` (its config's ``init_key``) started at a zero update."""
        return bool(init)

    def check_folder(self, folder: AdapterFolder) -> None:
        """A CheckpointError when the folder as a whole cannot be swept."""

    def module(self, folder: AdapterFolder, module: str, roles: dict[str, str]) -> TypedModule:
        """The adapted ``module`` from its tensors (``role -> name``); a CheckpointError when they do not fit."""
        raise NotImplementedError

    def modules(self, folder: AdapterFolder) -> tuple[list[TypedModule], list[CheckpointError]]:
        """Every adapted module of the folder; one error per module whose tensors do not fit."""
        groups: dict[str, dict[str, str]] = {}
        for name in folder.weights.names():
            if match := self.key.match(name):
                groups.setdefault(match["module"], {})[match["role"]] = name
        found, errors = [], []
        for module, roles in groups.items():
            try:
                found.append(self.module(folder, module, roles))
            except CheckpointError as exc:
                errors.append(exc)
        return found, errors

    def shape_problem(self, folder: AdapterFolder, mod: TypedModule, shape: tuple[int, int]) -> str | None:
        """Why the update cannot have the ``(out, in)`` shape the base gives it (None: it can)."""
        return None

    def factors(self, t: dict[str, torch.Tensor], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, Q)`` with ``P @ Q`` the unscaled update in the ``(out, in)`` layout of ``shape``."""
        raise NotImplementedError(f"{self.label} updates are dense")

    def dense(self, t: dict[str, torch.Tensor], weight: torch.Tensor | None) -> torch.Tensor:
        """The unscaled update in the ``(out, in)`` layout (``weight``: the base weight, in that layout)."""
        raise NotImplementedError(f"{self.label} updates are factored")

    def config_problems(self, config: dict[str, Any]) -> list[tuple[str | None, str]]:
        """Every field the sweep uses, checked for type and range: ``[(key, problem)]``."""
        problems: list[tuple[str | None, str]] = []
        for key, check in self.numbers:
            if key in config and (problem := check(config[key])):
                problems.append((key, problem))
        for key in self.flags:
            if config.get(key) is not None and not isinstance(config[key], bool):
                problems.append((key, f"must be true or false, found {config[key]!r}"))
        for key, check in self.patterns:
            patterns = config.get(key)
            if patterns is None:
                continue
            if not isinstance(patterns, dict):
                kind = type(patterns).__name__
                problems.append((key, f"must be an object of module pattern -> value, found {kind}"))
                continue
            for pattern, value in patterns.items():
                try:
                    re.compile(rf"(.*\.)?({pattern})$")
                except re.error as exc:
                    problems.append((f"{key}[{pattern!r}]", f"is not a valid regular expression ({exc})"))
                    continue
                if problem := check(value):
                    problems.append((f"{key}[{pattern!r}]", problem))
        return problems


class Lora(FileType):
    """peft LoRA (DoRA, rsLoRA, PiSSA, ...): read by :class:`AdapterFolder` (factor pairs, magnitudes, starts)."""

    peft_type, label = "LORA", "LoRA"
    numbers = (("r", _rank_problem), ("lora_alpha", _alpha_problem))
    flags = ("use_rslora", "fan_in_fan_out", "use_dora")
    patterns = (("rank_pattern", _rank_problem), ("alpha_pattern", _alpha_problem))
    init_key = "init_lora_weights"

    def zero_start(self, init: Any) -> bool:
        return init in ZERO_START_INITS


LORA = Lora()


def _config_problems(config: Any, kind: FileType | None = None) -> list[tuple[str | None, str]]:
    """Every field the sweep uses of an adapter of ``kind`` (LoRA's when not given): ``[(key, problem)]``."""
    if not isinstance(config, dict):
        return [(None, f"must be a JSON object, found {type(config).__name__}")]
    problems: list[tuple[str | None, str]] = []
    if "peft_type" in config and not isinstance(config["peft_type"], str):
        problems.append(("peft_type", f"must be a string, found {config['peft_type']!r}"))
    return problems + (kind or LORA).config_problems(config)


def check_config(config: Any, path: Path, kind: FileType | None = None) -> dict[str, Any]:
    """``config`` if every field the sweep reads of an adapter of ``kind`` (LoRA's when not given) is well
    typed and in range, else one CheckpointError naming the file and the (first) bad key."""
    problems = _config_problems(config, kind)
    if problems:
        key, problem = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        where = f"key {key!r} " if key else "the config "
        raise CheckpointError(path, None, f"{where}{problem}{more}")
    return config


class AdapterFolder:
    """A peft adapter folder (adapter_config.json + adapter_model.safetensors), read lazily.

    The config and the weights are resolved inside the folder (symbolic links included) before they are read.
    ``initial``: the folder of the adapter as it was before training (as peft saves it), for one that did not
    start at zero: its update is then ``s (B A - B0 A0)``. Without it such an adapter is refused. ``starting``:
    this folder is itself such an initial adapter (its start is not checked)."""

    def __init__(
        self,
        path: str | Path,
        allow_pickle: bool = False,
        initial: str | Path | None = None,
        *,
        starting: bool = False,
    ):
        self.path = Path(path)
        roots = roots_of(self.path)
        folder = roots[0]
        try:
            config_path = confine(folder, ADAPTER_CONFIG, roots)
        except Escape as exc:
            raise CheckpointError(self.path / ADAPTER_CONFIG, None, f"{exc}; refused, not read") from exc
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(config_path, None, f"unreadable adapter config ({exc})") from exc
        self.config_path = config_path
        peft_type = config.get("peft_type", "LORA") if isinstance(config, dict) else "LORA"
        kind = FILE_TYPES.get(peft_type.upper()) if isinstance(peft_type, str) else LORA
        if kind is None:
            supported = ", ".join(t.peft_type for t in FILE_TYPES.values())
            raise CheckpointError(
                config_path, None, f"peft_type {peft_type.upper()} is not supported (supported: {supported})"
            )
        self.type: FileType = kind
        self.config = check_config(config, config_path, kind)
        self.dora = kind is LORA and bool(self.config.get("use_dora"))
        if not starting:
            self._check_start(initial is not None)
        files, shown = [], {}
        for name in ADAPTER_FILES:
            try:
                file = confine(folder, name, roots)
            except Escape as exc:
                raise CheckpointError(self.path / name, None, f"{exc}; refused, not read") from exc
            if file.is_file():
                files.append(file)
                shown[str(file)] = name
        if not files:
            raise CheckpointError(self.path, None, f"no adapter weights ({' or '.join(ADAPTER_FILES)})")
        self.weights = WeightFiles({str(files[0]): None}, allow_pickle, shown)
        if self.weights.file_errors:
            raise self.weights.file_errors[0]
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        self.initial = None if initial is None else AdapterFolder(initial, allow_pickle, starting=True)
        kind.check_folder(self)

        st = os.stat(config_path)  # scales and ranks come from the config: part of what a unit reads
        self.identity = (str(config_path), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))

    def _check_start(self, initial: bool) -> None:
        """A CheckpointError when the update cannot be read: an adapter that did not start at zero without its
        ``initial`` adapter, or a DoRA adapter with one."""
        kind, config_path = self.type, self.config_path
        init = self.config.get(kind.init_key, True)
        if initial and kind is not LORA:
            raise CheckpointError(
                config_path,
                None,
                f"an initial adapter (--initial-adapter) is for LoRA adapters that did not start at zero (PiSSA, "
                f"OLoRA, ...): sweep a {kind.label} adapter without one",
            )
        if kind is not LORA and not kind.zero_start(init):
            raise CheckpointError(
                config_path,
                None,
                f"{kind.init_key}={init!r}: this {kind.label} adapter did not start at zero ({kind.start}), so its "
                "saved update is not the change training made and its profile would be wrong; merge the adapter "
                "as saved before training and the trained one, and sweep the trained merged model against the "
                "initial merged one (--base)",
            )
        if initial and self.dora:
            raise CheckpointError(
                config_path,
                None,
                "a DoRA adapter with an initial adapter (--initial-adapter) is not supported: sweep it "
                "without one, against the base it was trained on (--base)",
            )
        elif not kind.zero_start(init) and not initial:
            raise CheckpointError(
                config_path,
                None,
                f"init_lora_weights={init!r}: this adapter did not start at zero (peft moved its starting product "
                "into the base weight), so s B A is not the weight's change since the start and its profile would "
                "be wrong; pass the adapter as saved before training with --initial-adapter DIR "
                "(initial_adapter=...: the update is then s (B A - B0 A0)), or save it with peft's "
                "path_initial_model_for_weight_conversion (a zero-start adapter of rank 2r), or merge it and "
                "sweep the merged model against the original base (--base)",
            )

    def _factor_pairs(self) -> dict[str, dict[str, str]]:
        """``{module: {"A": lora_A's name, "B": lora_B's name, "m": the DoRA magnitude's name}}`` (as found)."""
        pairs: dict[str, dict[str, str]] = {}
        for name in self.weights.names():
            match = _LORA_KEY.match(name)
            if match and "lora_embedding" not in name:
                pairs.setdefault(match["module"], {})[match["which"]] = name
            elif match := _MAGNITUDE_KEY.match(name):
                pairs.setdefault(match["module"], {})["m"] = name
        return pairs

    @property
    def base_needed(self) -> str | None:
        """Why a sweep of this adapter needs the base model (None: it does not)."""
        if self.dora:
            return "a DoRA adapter (use_dora): its update m / ||W + s B A||_row (W + s B A) - W needs the base weight W"
        return self.type.base_needed

    def modules(self) -> tuple[list[LoraModule] | list[TypedModule], list[CheckpointError]]:
        """Every adapted module: of a LoRA adapter, with both factors (and its magnitude for DoRA, its initial
        factors with an initial adapter); a lone, missing or mis-shaped factor is an error. Of another type,
        as its :class:`FileType` reads it."""
        if self.type is not LORA:
            return self.type.modules(self)
        starts = self.initial._factor_pairs() if self.initial is not None else {}
        found, errors = [], []
        for module, pair in self._factor_pairs().items():
            file = self.weights.file_of(next(iter(pair.values())))
            if not {"A", "B"} <= set(pair):
                if not pair.keys() & {"A", "B"}:  # a lone magnitude: its module has no factors
                    errors.append(CheckpointError(file, pair["m"], "DoRA magnitude without lora_A and lora_B"))
                    continue
                missing = "lora_B" if "A" in pair else "lora_A"
                errors.append(CheckpointError(file, f"{module}.{missing}.weight", "factor missing from the adapter"))
                continue
            a_shape, b_shape = self.weights.shape(pair["A"]), self.weights.shape(pair["B"])
            if len(a_shape) != 2 or len(b_shape) != 2 or b_shape[1] != a_shape[0]:
                errors.append(CheckpointError(file, pair["A"], f"lora_A {a_shape} and lora_B {b_shape} do not chain"))
                continue
            r, alpha, scale = lora_scale(self.config, module)
            if r != a_shape[0]:
                errors.append(
                    CheckpointError(
                        file, pair["A"], f"{ADAPTER_CONFIG} says r={r} for {module} but lora_A has {a_shape[0]} rows"
                    )
                )
                continue
            mod = LoraModule(module, pair["A"], pair["B"], r, alpha, scale, self.fan_in_fan_out)
            if self.dora:
                if "m" not in pair or self.weights.shape(pair["m"]) != (b_shape[0],):
                    found_m = f"has shape {self.weights.shape(pair['m'])}" if "m" in pair else "is missing"
                    errors.append(
                        CheckpointError(
                            file,
                            pair.get("m", f"{module}.lora_magnitude_vector"),
                            f"use_dora is true but the magnitude vector of {module} {found_m} (expected "
                            f"({b_shape[0]},), one entry per output feature)",
                        )
                    )
                    continue
                mod = replace(mod, magnitude=pair["m"])
            if self.initial is not None:
                start = starts.get(module, {})
                shapes = {k: self.initial.weights.shape(start[k]) for k in ("A", "B") if k in start}
                if shapes != {"A": a_shape, "B": b_shape}:
                    errors.append(
                        CheckpointError(
                            self.initial.weights.describe(),
                            start.get("A", f"{module}.lora_A.weight"),
                            f"the initial adapter {self.initial.path} has no factors of {module} shaped as the "
                            f"adapter's (lora_A {a_shape}, lora_B {b_shape}; found {shapes or 'none'})",
                        )
                    )
                    continue
                mod = replace(mod, a0_name=start["A"], b0_name=start["B"])
            found.append(mod)
        return found, errors

    def close(self) -> None:
        """Drop open file handles (of the initial adapter too)."""
        self.weights.close()
        if self.initial is not None:
            self.initial.close()

    def update_shape(self, mod: LoraModule) -> tuple[int, int]:
        """Shape of the update in the base weight's stored layout (transposed under fan_in_fan_out)."""
        m, n = self.weights.shape(mod.b_name)[0], self.weights.shape(mod.a_name)[1]
        return (n, m) if mod.fan_in_fan_out else (m, n)


@dataclass(frozen=True)
class TypedModule:
    """One adapted module of an adapter of another type than LoRA: the tensors its :class:`FileType` reads
    (``(role, name)``), the update's ``(out, in)`` shape (None where only the base says: VeRA's inputs,
    IA3's), the rank of its factors (None: dense) and its scale."""

    module: str
    peft_type: str
    tensors: tuple[tuple[str, str], ...]
    shape: tuple[int | None, int | None]
    rank: int | None
    scale: float = 1.0
    fan_in_fan_out: bool = False


_PREFIX = r"^(?:base_model\.model\.)?(?P<module>.+)\."


def _shapes(folder: AdapterFolder, module: str, roles: dict[str, str], needed: tuple[str, ...], prefix: str) -> dict:
    """``role -> shape`` of the ``needed`` roles (a CheckpointError naming the first missing one)."""
    for role in needed:
        if role not in roles:
            file = folder.weights.file_of(next(iter(roles.values())))
            raise CheckpointError(file, f"{module}.{prefix}{role}", "missing from the adapter")
    return {role: folder.weights.shape(roles[role]) for role in needed}


def _chain_error(folder: AdapterFolder, roles: dict[str, str], shapes: dict, prefix: str) -> CheckpointError:
    first = roles[next(iter(shapes))]
    found = ", ".join(f"{prefix}{role} {shape}" for role, shape in shapes.items())
    return CheckpointError(folder.weights.file_of(first), first, f"{found} do not chain")


def _rank_check(folder: AdapterFolder, module: str, name: str, r: int, found: int, what: str) -> None:
    if r != found:
        raise CheckpointError(
            folder.weights.file_of(name), name, f"{ADAPTER_CONFIG} says r={r} for {module} but {what} has {found}"
        )


class AdaLoraFile(FileType):
    """``lora_alpha / (r + 1e-5) * B (A * E)``: peft's ``scaling / (ranknum + 1e-5)``, where ``ranknum`` (not
    saved) is the rank peft loads the module with, the rows of the saved ``lora_A`` (``init_r``, or what the
    rank allocation kept: peft saves the kept rows only)."""

    peft_type, label = "ADALORA", "AdaLoRA"
    numbers = (("lora_alpha", _real_problem),)
    flags = ("fan_in_fan_out",)
    init_key, start = "init_lora_weights", "peft draws E at random unless init_lora_weights is true"
    key = re.compile(_PREFIX + r"lora_(?P<role>[ABE])$")

    def module(self, folder: AdapterFolder, module: str, roles: dict[str, str]) -> TypedModule:
        shapes = _shapes(folder, module, roles, ("B", "A", "E"), "lora_")
        b, a, e = shapes.values()
        if any(len(x) != 2 for x in (b, a, e)) or not b[1] == a[0] == e[0] or e[1] != 1:
            raise _chain_error(folder, roles, shapes, "lora_")
        r = a[0]
        alpha = float(folder.config.get("lora_alpha", 8))
        scale = (alpha if alpha > 0 else float(r)) / (r + 1e-5)
        tensors = tuple((role, roles[role]) for role in ("B", "A", "E"))
        return TypedModule(module, self.peft_type, tensors, (b[0], a[1]), max(r, 1), scale, folder.fan_in_fan_out)

    def factors(self, t: dict[str, torch.Tensor], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return adalora_factors(t["B"], t["A"], t["E"])


class LoHaFile(FileType):
    """``alpha / r * (W1a W1b) * (W2a W2b)``, factored with rank ``r^2`` (:func:`hadamard_factors`)."""

    peft_type, label = "LOHA", "LoHa"
    numbers = (("r", _rank_problem), ("alpha", _alpha_problem))
    patterns = (("rank_pattern", _rank_problem), ("alpha_pattern", _alpha_problem))
    start = "peft draws every factor at random unless init_weights is true"
    key = re.compile(_PREFIX + r"hada_(?P<role>w1_a|w1_b|w2_a|w2_b|t1|t2)$")
    ROLES = ("w1_a", "w1_b", "w2_a", "w2_b")

    def module(self, folder: AdapterFolder, module: str, roles: dict[str, str]) -> TypedModule:
        if roles.keys() & {"t1", "t2"}:
            name = roles.get("t1") or roles["t2"]
            raise CheckpointError(
                folder.weights.file_of(name),
                name,
                "a convolution's LoHa (use_effective_conv2d: CP factors) is not a matrix update: not supported",
            )
        shapes = _shapes(folder, module, roles, self.ROLES, "hada_")
        w1a, w1b, w2a, w2b = shapes.values()
        if any(len(x) != 2 for x in shapes.values()) or not (w1a[1] == w1b[0] and w2a[1] == w2b[0]):
            raise _chain_error(folder, roles, shapes, "hada_")
        if w1a[0] != w2a[0] or w1b[1] != w2b[1]:
            raise _chain_error(folder, roles, shapes, "hada_")
        r, alpha = rank_and_alpha(folder.config, module, "alpha")
        _rank_check(folder, module, roles["w1_a"], r, w1a[1], "hada_w1_a's columns")
        _rank_check(folder, module, roles["w2_a"], r, w2a[1], "hada_w2_a's columns")
        tensors = tuple((role, roles[role]) for role in self.ROLES)
        return TypedModule(module, self.peft_type, tensors, (w1a[0], w1b[1]), r * r, alpha / r)

    def factors(self, t: dict[str, torch.Tensor], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:

        return hadamard_factors(t["w1_a"], t["w1_b"], t["w2_a"], t["w2_b"])


class LoKrFile(FileType):
    """``alpha / r * kron(W1, W2)``, each half whole or a product ``W_a W_b``: factored with rank ``k1 k2``
    (:func:`kronecker_factors`; a whole half's rank is its smaller side) when ``k1 k2 < min(m, n)``, else
    dense (``update`` ``delta``, as the tracker reads such a LoKr)."""

    peft_type, label = "LOKR", "LoKr"
    numbers = (("r", _rank_problem), ("alpha", _alpha_problem))
    patterns = (("rank_pattern", _rank_problem), ("alpha_pattern", _alpha_problem))
    start = "peft draws every factor at random unless init_weights is true or 'lycoris'"
    key = re.compile(_PREFIX + r"lokr_(?P<role>w1|w1_a|w1_b|w2|w2_a|w2_b|t2)$")

    def module(self, folder: AdapterFolder, module: str, roles: dict[str, str]) -> TypedModule:
        if "t2" in roles:
            raise CheckpointError(
                folder.weights.file_of(roles["t2"]),
                roles["t2"],
                "a convolution's LoKr (use_effective_conv2d: a CP core) is not a matrix update: not supported",
            )
        tensors, sides, ranks = [], [], []
        for half in ("w1", "w2"):
            needed = (half,) if half in roles else (f"{half}_a", f"{half}_b")
            shapes = _shapes(folder, module, roles, needed, "lokr_")
            if any(len(x) != 2 for x in shapes.values()) or (
                len(needed) == 2 and shapes[needed[0]][1] != shapes[needed[1]][0]
            ):
                raise _chain_error(folder, roles, shapes, "lokr_")
            rows, cols = shapes[needed[0]][0], shapes[needed[-1]][1]
            sides.append((rows, cols))
            ranks.append(min(rows, cols) if len(needed) == 1 else shapes[needed[0]][1])
            tensors += [(role, roles[role]) for role in needed]
        r, alpha = rank_and_alpha(folder.config, module, "alpha")
        for half, k in zip(("w1", "w2"), ranks, strict=True):
            if f"{half}_a" in roles:
                _rank_check(folder, module, roles[f"{half}_a"], r, k, f"lokr_{half}_a's columns")
        shape = (sides[0][0] * sides[1][0], sides[0][1] * sides[1][1])
        rank = ranks[0] * ranks[1] if ranks[0] * ranks[1] < min(shape) else None
        return TypedModule(module, self.peft_type, tuple(tensors), shape, rank, alpha / r)

    @staticmethod
    def _halves(t: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [full_rank_factors(t[h]) if h in t else (t[f"{h}_a"], t[f"{h}_b"]) for h in ("w1", "w2")]

    def factors(self, t: dict[str, torch.Tensor], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:

        return kronecker_factors(*self._halves(t))

    def dense(self, t: dict[str, torch.Tensor], weight: torch.Tensor | None) -> torch.Tensor:
        (U1, V1), (U2, V2) = self._halves(t)
        return torch.kron(U1 @ V1, U2 @ V2)


_VERA_SHARED = re.compile(r"^(?:base_model\.)?vera_(?P<role>[AB])$")


class VeraFile(FileType):
    """``(λ_b * B[:out]) (λ_d * A[:, :in])``, factored with rank ``r``. The shared ``vera_A``, ``vera_B`` are in
    the adapter file when peft saved it with ``save_projection=True`` (its default); without them the adapter
    is refused (peft regenerates them from ``projection_prng_key`` with torch's generator, sized by the base's
    widest adapted layer: not reproduced here). A layer's input size is not in the adapter: it needs the base."""

    peft_type, label = "VERA", "VeRA"
    numbers = (("r", _rank_problem),)
    flags = ("fan_in_fan_out", "save_projection")
    start = "its scaling vector λ_b starts at one unless init_weights is true"
    key = re.compile(_PREFIX + r"vera_lambda_(?P<role>[bd])$")
    base_needed = (
        "a VeRA adapter: a layer's input size is not saved in it (the shared vera_A is as wide as the widest "
        "adapted layer), so its update (λ_b * B[:out]) (λ_d * A[:, :in]) needs the base's shapes"
    )

    def shared(self, folder: AdapterFolder) -> dict[str, str]:
        return {m["role"]: n for n in folder.weights.names() if (m := _VERA_SHARED.match(n))}

    def check_folder(self, folder: AdapterFolder) -> None:
        if set(self.shared(folder)) != {"A", "B"}:
            raise CheckpointError(
                folder.weights.describe(),
                "base_model.vera_A",
                "the shared VeRA matrices vera_A and vera_B are not in the adapter (it was saved with "
                "save_projection=False): they cannot be regenerated here (peft draws them from "
                "projection_prng_key with torch's generator, sized by the base's layers); save the adapter "
                "with save_projection=True",
            )

    def module(self, folder: AdapterFolder, module: str, roles: dict[str, str]) -> TypedModule:
        shapes = _shapes(folder, module, roles, ("b", "d"), "vera_lambda_")
        shared = self.shared(folder)
        shapes |= {role: folder.weights.shape(shared[role]) for role in ("B", "A")}
        b, d, B, A = shapes.values()
        if len(b) != 1 or len(d) != 1 or len(B) != 2 or len(A) != 2 or not d[0] == A[0] == B[1] or b[0] > B[0]:
            found = ", ".join(f"{role} {shape}" for role, shape in shapes.items())
            name = roles["b"]
            raise CheckpointError(
                folder.weights.file_of(name),
                name,
                f"vera_lambda_b, vera_lambda_d, vera_B, vera_A: {found} do not chain",
            )
        tensors = (("b", roles["b"]), ("d", roles["d"]), ("B", shared["B"]), ("A", shared["A"]))
        return TypedModule(module, self.peft_type, tensors, (b[0], None), d[0], 1.0, folder.fan_in_fan_out)

    def shape_problem(self, folder: AdapterFolder, mod: TypedModule, shape: tuple[int, int]) -> str | None:
        width = folder.weights.shape(dict(mod.tensors)["A"])[1]
        return None if shape[1] <= width else f"the base layer has {shape[1]} inputs but vera_A only {width} columns"

    def factors(self, t: dict[str, torch.Tensor], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return vera_factors(t["b"], t["d"], t["B"], t["A"], shape)


class Ia3File(FileType):
    """``W * (l - 1)``: dense, against the base weight ``W``; ``l`` is ``(out, 1)`` (rescaled outputs) or
    ``(1, in)`` (a feed-forward module's rescaled inputs), transposed under fan_in_fan_out as peft merges it."""

    peft_type, label = "IA3", "IA3"
    flags = ("fan_in_fan_out",)
    init_key, start = "init_ia3_weights", "peft draws l at random unless init_ia3_weights is true"
    key = re.compile(_PREFIX + r"ia3_(?P<role>l)$")
    base_needed = "an IA3 adapter: its update W * (l - 1) needs the base weight W"
    dense_update = "ia3"

    def module(self, folder: AdapterFolder, module: str, roles: dict[str, str]) -> TypedModule:
        shape = folder.weights.shape(roles["l"])
        if len(shape) != 2 or 1 not in shape:
            raise CheckpointError(
                folder.weights.file_of(roles["l"]),
                roles["l"],
                f"ia3_l has shape {shape}: not a linear layer's (out, 1) or (1, in) vector (convolutions are "
                "not supported)",
            )
        update = (shape[0], None) if shape[1] == 1 else (None, shape[1])
        return TypedModule(module, self.peft_type, (("l", roles["l"]),), update, None, 1.0, folder.fan_in_fan_out)

    def dense(self, t: dict[str, torch.Tensor], weight: torch.Tensor | None) -> torch.Tensor:
        return ia3_change(weight, t["l"])


FILE_TYPES: dict[str, FileType] = {
    t.peft_type: t for t in (LORA, AdaLoraFile(), LoHaFile(), LoKrFile(), VeraFile(), Ia3File())
}
