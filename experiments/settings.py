"""The settings of a findings experiment: one :class:`Settings`, its presets for each model source, and
the dictionary that ``results.json`` stores under ``"settings"``.

The built model (a small LLaMA pre-trained here) and a pretrained model (SmolLM2, ``--model``) share the
sweep settings (steps, checkpoints, batch, window length, LoRA ranks/alphas/learning rates, FFT learning
rates); a few fields belong to one source only, and :func:`stored` writes the fields of the run's source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SWEEP = ("ranks", "alphas", "lrs", "base_r", "base_alpha", "base_lr", "fft_lr")  # the LoRA sweeps and FFT's lr
# the fields results.json stores, in its order, per model source (``Settings.pretrained``)
STORED = {
    False: ("quick", "steps", "pretrain_steps", "batch", "seq_len", "checkpoints", *SWEEP, "mps_chi", "eval_batches"),
    True: (
        "quick",
        "seeds",
        "steps",
        "checkpoints",
        "batch",
        "seq_len",
        "train_layers",
        "pool",
        "eval_windows",
        "probe_windows",
        *SWEEP,
        "scored",
        "fft_sweep",
        "long",
    ),  # fmt: skip
}


@dataclass
class Settings:
    pretrained: bool  # the model source: False, a small LLaMA built here; True, a pretrained model (--model)
    quick: bool
    steps: int  # fine-tuning steps per run
    checkpoints: int  # internal (and, pretrained, external) profiles are measured at this many steps
    batch: int
    seq_len: int
    ranks: list[int]  # the LoRA rank sweep (alpha / r fixed)
    alphas: list[float]
    lrs: list[float]
    base_r: int  # the base LoRA setting every sweep goes through
    base_alpha: float
    base_lr: float
    fft_lr: float
    fft_sweep: list[float] = field(default_factory=list)  # more FFT learning rates: FFT at LoRA's loss
    seeds: list[int] = field(default_factory=lambda: [0])
    # the built model only
    pretrain_steps: int = 0
    mps_chi: int = 0  # 0: matched to LoRA's parameter count when the model is known (pretrained)
    eval_batches: int = 4
    # a pretrained model only
    train_layers: int = 0  # q_proj and v_proj of the last train_layers decoder layers are trained
    pool: int = 0  # training windows, cached at the first trained layer
    eval_windows: int = 0
    probe_windows: int = 0
    scored: int = 16  # the next-token loss is taken on the last ``scored`` tokens of each window
    long: bool = False  # the long-run preset (base LoRA r=8 and r=64, 1000 steps, 2 seeds)


def settings(
    quick: bool, steps: int | None = None, seeds: int | None = None, long: bool = False, *, pretrained: bool = False
) -> Settings:
    """The presets. Built model: full (200 steps) or ``quick``. Pretrained model: the full run (FFT at 4 learning
    rates, the LoRA sweeps, MPS; 100 steps, 3 seeds), ``quick`` (a smoke test) or ``long`` (LoRA r=8 and r=64
    only, 1000 steps, checkpoints every 100, 2 seeds: does the centre approach ln r, does c settle?).
    ``steps`` and (pretrained only) ``seeds`` override the preset."""
    if not pretrained:
        shared = dict(pretrained=False, quick=quick, batch=8, base_r=8, base_alpha=16.0, base_lr=2e-3)
        if quick:
            s = Settings(
                **shared, steps=24, pretrain_steps=30, seq_len=32, checkpoints=3, ranks=[2, 8], alphas=[8.0, 32.0],
                lrs=[5e-4, 8e-3], fft_lr=1e-3, mps_chi=4,
            )  # fmt: skip
        else:
            s = Settings(
                **shared, steps=200, pretrain_steps=600, seq_len=64, checkpoints=4, ranks=[2, 4, 8, 16],
                alphas=[4.0, 16.0, 64.0], lrs=[5e-4, 2e-3, 8e-3], fft_lr=5e-4, mps_chi=8,
            )  # fmt: skip
        seeds = None  # one seed (--seed): the built model's runs are not repeated
    elif quick:
        s = Settings(
            True, True, steps=8, checkpoints=2, batch=2, seq_len=32, ranks=[2, 4], alphas=[4.0, 16.0],
            lrs=[1e-3, 1e-2], base_r=4, base_alpha=8.0, base_lr=3e-3, fft_lr=1e-3, seeds=[0, 1, 2],
            train_layers=1, pool=24, eval_windows=4, probe_windows=2,
        )  # fmt: skip
    elif long:
        s = Settings(
            True, False, steps=1000, checkpoints=10, batch=2, seq_len=64, ranks=[64], alphas=[], lrs=[], base_r=8,
            base_alpha=16.0, base_lr=2e-3, fft_lr=1e-4, seeds=[0, 1], train_layers=2, pool=200, eval_windows=16,
            probe_windows=2, long=True,
        )  # fmt: skip
    else:
        s = Settings(
            True, False, steps=100, checkpoints=4, batch=2, seq_len=64, ranks=[4, 16, 64], alphas=[4.0, 64.0],
            lrs=[5e-4, 8e-3], base_r=8, base_alpha=16.0, base_lr=2e-3, fft_lr=1e-4, fft_sweep=[3e-4, 1e-3, 3e-3],
            seeds=[0, 1, 2], train_layers=2, pool=200, eval_windows=16, probe_windows=2,
        )  # fmt: skip
    if steps is not None:
        s.steps = steps
    if seeds is not None:
        s.seeds = list(range(seeds))
    return s


def stored(s: Settings) -> dict[str, Any]:
    """The settings as results.json stores them: the fields of the run's model source."""
    d = asdict(s)
    return {k: d[k] for k in STORED[s.pretrained]}


def checkpoints(s: Settings) -> list[int]:
    """The steps at which profiles are measured: ``s.checkpoints`` of them, evenly spread, the last step last."""
    return sorted({max(1, round(s.steps * (i + 1) / s.checkpoints)) for i in range(s.checkpoints)})
