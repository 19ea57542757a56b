"""peft LoRA adapter folders: factor pairs, scaling (lora_alpha/r or rsLoRA, per-module patterns), DoRA
magnitudes, and the initial adapter of one that did not start at zero (PiSSA, OLoRA, ...)."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from artent_fast.checkpoints.confine import Escape, confine, roots_of
from artent_fast.checkpoints.reader import ADAPTER_CONFIG, CheckpointError, WeightFiles

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
        self.config = check_config(config, config_path)
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(config_path, None, f"peft_type {peft_type} is not supported (LoRA only)")
        self.dora = bool(self.config.get("use_dora"))
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

        st = os.stat(config_path)  # scales and ranks come from the config: part of what a unit reads
        self.identity = (str(config_path), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))

    def _check_start(self, initial: bool) -> None:
        """A CheckpointError when the update cannot be read: an adapter that did not start at zero without its
        ``initial`` adapter, or a DoRA adapter with one."""
        init, config_path = self.config.get("init_lora_weights", True), self.config_path
        if initial and self.dora:
            raise CheckpointError(
                config_path,
                None,
                "a DoRA adapter with an initial adapter (--initial-adapter) is not supported: sweep it "
                "without one, against the base it was trained on (--base)",
            )
        elif init not in ZERO_START_INITS and not initial:
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

    def modules(self) -> tuple[list[LoraModule], list[CheckpointError]]:
        """Every adapted module with both factors (and its magnitude for DoRA, its initial factors with an
        initial adapter); a lone, missing or mis-shaped factor is an error."""
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
