"""``artent sweep`` and ``python -m artent_fast.sweep`` (what torchrun launches): the sweep's flags, in one place.

Entanglement profiles of every target matrix of checkpoints; see docs/sweep.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from artent_fast.atomic import OutFullError
from artent_fast.checkpoints.names import DEFAULT_TARGETS
from artent_fast.cli._common import HelpFormatter, add_command
from artent_fast.sweep import run_sweep

HELP = "profiles of every target matrix of checkpoints, adapters or updates"
DESCRIPTION = (
    "Entanglement profiles of every target matrix of Hugging Face checkpoints, peft LoRA adapters, or "
    "fine-tuning updates dW = W_tuned - W_base, into one tidy table (sweep.parquet or sweep.csv) with a "
    "manifest and per-unit parts; resumable, and sharded across ranks under torchrun. Only files inside each "
    "checkpoint folder are read; pickled files only with --allow-pickle. See docs/sweep.md."
)
EPILOG = "exit codes: 0 all swept, 1 some inputs had errors (listed; the table holds every good row), 2 bad arguments"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="*", help="model or adapter folders (same as --tuned)")
    p.add_argument(
        "--tuned",
        "--model",
        action="append",
        default=[],
        metavar="DIR",
        help="a checkpoint: HF model folder, peft adapter folder, or a run folder of checkpoint-* (repeatable)",
    )
    p.add_argument(
        "--base",
        metavar="DIR",
        help="base model: dense checkpoints are swept as dW = W_tuned - W_base; "
        "adapters are checked against it (default: none, the weights "
        "themselves are swept)",
    )
    p.add_argument(
        "--initial-adapter",
        metavar="DIR",
        help="the adapter as saved before training, for adapters that did not start at zero (PiSSA, OLoRA, "
        "LoftQ, init_lora_weights=false): their update s (B A - B0 A0) is swept (default: none, such adapters "
        "are refused)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder (table, parts, manifest); created if absent, must not be a file",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="PATTERN",
        help=f"module name pattern, repeatable: a name component or dotted suffix, a glob, or re:<regex> "
        f"matched against the full name (default: {' '.join(DEFAULT_TARGETS)})",
    )
    p.add_argument(
        "--all-linear",
        action="store_true",
        help="every linear weight (attention and MLP projections); exclusive with --target",
    )
    p.add_argument("--batch", type=int, default=4, help="matrices per work unit, batched on the device")
    p.add_argument(
        "--device", help="cpu, cuda, cuda:N (default: cuda when available, else cpu); under torchrun cuda:LOCAL_RANK"
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also read pickled .bin checkpoints (torch.load(weights_only=True)); off by default",
    )
    p.add_argument("--alpha", type=float, default=1.0, help="Renyi index, > 0 (1: von Neumann, inf: min-entropy)")
    p.add_argument(
        "--log-base",
        type=float,
        default=math.e,
        help="logarithm base of the entropies, > 0 and != 1 (e: nats, 2: bits)",
    )
    p.add_argument(
        "--format",
        dest="table_format",
        choices=("auto", "parquet", "csv"),
        default="auto",
        help="table format (auto: Parquet when pyarrow is installed, else CSV)",
    )
    p.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the next work unit in a thread while one computes (default: on for CUDA)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="sweep into an --out that holds a sweep with other settings (alpha, log base, base, targets, "
        "checkpoints), replacing its table; without it that is refused",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the sweep; exit code 1 when any error was recorded (the table still holds every good row)."""
    if args.all_linear and args.target:
        raise ValueError("--all-linear and --target are exclusive")
    targets = None if args.all_linear else (args.target or list(DEFAULT_TARGETS))
    try:
        result = run_sweep(
            [*args.checkpoints, *args.tuned],
            args.out,
            base=args.base,
            initial_adapter=args.initial_adapter,
            targets=targets,
            batch=args.batch,
            device=args.device,
            allow_pickle=args.allow_pickle,
            alpha=args.alpha,
            log_base=args.log_base,
            table_format=args.table_format,
            progress=not args.no_progress,
            prefetch=args.prefetch,
            overwrite=args.overwrite,
        )
    except ImportError as exc:  # a missing optional extra (pyarrow, safetensors): one line, exit 2
        raise ValueError(str(exc)) from None
    except OutFullError as exc:  # a full disk under --out: one line, exit 1 (a rerun resumes)
        print(f"artent sweep: error: {exc}", file=sys.stderr)
        return 1
    return 1 if result.errors else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "sweep", HELP, DESCRIPTION, EPILOG)
    add_arguments(p)
    p.set_defaults(func=run_from_args)


def main(argv: list[str] | None = None) -> int:
    """``python -m artent_fast.sweep ...`` and ``torchrun --nproc-per-node=N -m artent_fast.sweep ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m artent_fast.sweep", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"artent sweep: error: {exc}", file=sys.stderr)
        return 2
