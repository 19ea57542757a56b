"""peft LoRA adapter folders: factor pairs, scaling (lora_alpha/r or rsLoRA, per-module patterns)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artent_fast.sweep.reader import ADAPTER_CONFIG, CheckpointError, WeightFiles, weight_files

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


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
    """``(r, alpha, scale)`` of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    r = int(_pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8)))
    alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return r, alpha, scale


class AdapterFolder:
    """A peft adapter folder (adapter_config.json + adapter_model.safetensors), read lazily."""

    def __init__(self, path: str | Path, allow_pickle: bool = False):
        self.path = Path(path)
        config_path = self.path / ADAPTER_CONFIG
        try:
            self.config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(config_path, None, f"unreadable adapter config ({exc})") from exc
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(config_path, None, f"peft_type {peft_type} is not supported (LoRA only)")
        if self.config.get("use_dora"):
            raise CheckpointError(config_path, None, "DoRA adapters are not low rank: merge them and sweep the "
                                                     "merged model against its base (--base)")
        files = [self.path / f for f in ADAPTER_FILES if (self.path / f).is_file()]
        if not files:
            raise CheckpointError(self.path, None, f"no adapter weights ({' or '.join(ADAPTER_FILES)})")
        self.weights = WeightFiles(weight_files(files[0], allow_pickle), allow_pickle)
        if self.weights.file_errors:
            raise self.weights.file_errors[0]
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))

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
                errors.append(CheckpointError(file, pair["A"], f"{ADAPTER_CONFIG} says r={r} for {module} but "
                                                               f"lora_A has {a_shape[0]} rows"))
                continue
            found.append(LoraModule(module, pair["A"], pair["B"], r, alpha, scale, self.fan_in_fan_out))
        return found, errors

    def update_shape(self, mod: LoraModule) -> tuple[int, int]:
        """Shape of the update in the base weight's stored layout (transposed under fan_in_fan_out)."""
        m, n = self.weights.shape(mod.b_name)[0], self.weights.shape(mod.a_name)[1]
        return (n, m) if mod.fan_in_fan_out else (m, n)
