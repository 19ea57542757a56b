"""peft LoRA adapter folders: factor pairs, scaling (lora_alpha/r or rsLoRA, per-module patterns)."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artent_fast.checkpoints.confine import Escape, confine, roots_of
from artent_fast.checkpoints.reader import ADAPTER_CONFIG, CheckpointError, WeightFiles

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# peft's init_lora_weights values whose adapter starts at B = 0 (its saved product is the whole update);
# the others (False, "pissa", "olora", "loftq", "corda", "eva", ...) start elsewhere and are refused
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


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's per-module override: a key matches the module name or a dotted suffix of it."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scale(config: dict[str, Any], module: str) -> tuple[int, float, float]:
    """``(r, alpha, scale)`` of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA.

    ``config`` is assumed valid (see :func:`check_config`)."""
    r = int(_pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8)))
    alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
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


def _config_problems(config: Any) -> list[tuple[str | None, str]]:
    """Every field the sweep uses, checked for type and range: ``[(key, problem)]``."""
    if not isinstance(config, dict):
        return [(None, f"must be a JSON object, found {type(config).__name__}")]
    problems: list[tuple[str | None, str]] = []
    if "peft_type" in config and not isinstance(config["peft_type"], str):
        problems.append(("peft_type", f"must be a string, found {config['peft_type']!r}"))
    for key, check in (("r", _rank_problem), ("lora_alpha", _alpha_problem)):
        if key in config and (problem := check(config[key])):
            problems.append((key, problem))
    for key in ("use_rslora", "fan_in_fan_out", "use_dora"):
        if config.get(key) is not None and not isinstance(config[key], bool):
            problems.append((key, f"must be true or false, found {config[key]!r}"))
    for key, check in (("rank_pattern", _rank_problem), ("alpha_pattern", _alpha_problem)):
        patterns = config.get(key)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            problems.append((key, f"must be an object of module pattern -> value, found {type(patterns).__name__}"))
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


def check_config(config: Any, path: Path) -> dict[str, Any]:
    """``config`` if every field the sweep reads is well typed and in range, else one CheckpointError
    naming the file and the (first) bad key."""
    problems = _config_problems(config)
    if problems:
        key, problem = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        where = f"key {key!r} " if key else "the config "
        raise CheckpointError(path, None, f"{where}{problem}{more}")
    return config


class AdapterFolder:
    """A peft adapter folder (adapter_config.json + adapter_model.safetensors), read lazily.

    The config and the weights are resolved inside the folder (symbolic links included) before they are read."""

    def __init__(self, path: str | Path, allow_pickle: bool = False):
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
        self.config = check_config(config, config_path)
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(config_path, None, f"peft_type {peft_type} is not supported (LoRA only)")
        if self.config.get("use_dora"):
            raise CheckpointError(
                config_path,
                None,
                "DoRA adapters are not low rank: merge them and sweep the merged model against its base (--base)",
            )
        init = self.config.get("init_lora_weights", True)
        if init not in ZERO_START_INITS:
            raise CheckpointError(
                config_path,
                None,
                f"init_lora_weights={init!r}: this adapter did not start at zero (peft moved its starting product "
                "into the base weight), so s B A is not the weight's change since the start and its profile would "
                "be wrong; save it with peft's path_initial_model_for_weight_conversion (a zero-start adapter of "
                "rank 2r), or merge it and sweep the merged model against the original base (--base)",
            )
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

        st = os.stat(config_path)  # scales and ranks come from the config: part of what a unit reads
        self.identity = (str(config_path), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))

    def modules(self) -> tuple[list[LoraModule], list[CheckpointError]]:
        """Every adapted module with both factors; a lone or mis-shaped factor is an error."""
        pairs: dict[str, dict[str, str]] = {}
        for name in self.weights.names():
            match = _LORA_KEY.match(name)
            if match and "lora_embedding" not in name:
                pairs.setdefault(match["module"], {})[match["which"]] = name
        found, errors = [], []
        for module, pair in pairs.items():
            file = self.weights.file_of(next(iter(pair.values())))
            if set(pair) != {"A", "B"}:
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
            found.append(LoraModule(module, pair["A"], pair["B"], r, alpha, scale, self.fan_in_fan_out))
        return found, errors

    def update_shape(self, mod: LoraModule) -> tuple[int, int]:
        """Shape of the update in the base weight's stored layout (transposed under fan_in_fan_out)."""
        m, n = self.weights.shape(mod.b_name)[0], self.weights.shape(mod.a_name)[1]
        return (n, m) if mod.fan_in_fan_out else (m, n)
