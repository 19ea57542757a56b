"""The runs of a findings experiment (FFT, the LoRA sweeps around one base setting, and MPS), planned from its
settings or read back from its results.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from experiments.settings import Settings


@dataclass
class Run:
    """One fine-tuning run: ``method`` is fft, lora or mps; ``axes`` says which sweeps it belongs to."""

    name: str
    method: str
    lr: float
    r: int = 0
    alpha: float = 0.0
    chi: int = 0
    axes: list[str] = field(default_factory=list)


def plan_runs(s: Settings, methods: Sequence[str]) -> list[Run]:
    """FFT at ``s.fft_lr`` (and each of ``s.fft_sweep``); LoRA at ``s.base_r, s.base_alpha, s.base_lr`` with rank
    (alpha / r fixed), alpha and learning rate varied one at a time (``s.ranks``, ``s.alphas``, ``s.lrs``); and MPS
    at the base setting with bond dimension ``s.mps_chi`` (0: the run is named ``mps`` and its chi is matched to
    LoRA's parameter count once the model is known). A setting shared by several sweeps is one run listing every
    axis it belongs to."""
    runs: dict[str, Run] = {}

    def lora(r: int, alpha: float, lr: float, axis: str) -> None:
        name = f"lora_r{r}_a{alpha:g}_lr{lr:g}"
        run = runs.setdefault(name, Run(name, "lora", lr, r=r, alpha=alpha))
        if axis not in run.axes:
            run.axes.append(axis)

    if "fft" in methods:  # one FFT run, or one per learning rate of the sweep (``s.fft_sweep``)
        lrs = sorted({s.fft_lr, *s.fft_sweep})
        for lr in lrs:
            name = "fft" if len(lrs) == 1 else f"fft_lr{lr:g}"
            runs[name] = Run(name, "fft", lr, axes=["fft_lr"] if len(lrs) > 1 else [])
    if "lora" in methods:
        for axis in ("base", "rank", "alpha", "lr"):  # the base setting belongs to every sweep
            lora(s.base_r, s.base_alpha, s.base_lr, axis)
        for r in s.ranks:
            lora(r, s.base_alpha * r / s.base_r, s.base_lr, "rank")  # alpha / r fixed: scale unchanged
        for a in s.alphas:
            lora(s.base_r, a, s.base_lr, "alpha")
        for lr in s.lrs:
            lora(s.base_r, s.base_alpha, lr, "lr")
    if "mps" in methods:
        name = f"mps_r{s.base_r}_chi{s.mps_chi}" if s.mps_chi else "mps"
        runs["mps"] = Run(name, "mps", s.base_lr, r=s.base_r, alpha=s.base_alpha, chi=s.mps_chi)
    return list(runs.values())


def runs_of(results: dict[str, Any]) -> list[Run]:
    """The runs of a results.json, in plan order (each run's entry starts with its :class:`Run` fields)."""
    names = {f.name for f in fields(Run)}
    return [Run(**{k: v for k, v in r.items() if k in names}) for r in results["runs"].values()]


def built_model(results: dict[str, Any]) -> bool:
    """Whether ``results`` come from the built model (one seed, one entry per run) rather than a pretrained
    model (``runs[name]["seeds"][seed]``)."""
    return "layout" in results
