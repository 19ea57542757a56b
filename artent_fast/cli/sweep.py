"""``artent sweep``: entanglement profiles of every target matrix of checkpoints (see docs/sweep.md)."""

from __future__ import annotations

import argparse

from artent_fast.cli._common import add_command
from artent_fast.sweep.options import DESCRIPTION, EPILOG, add_arguments, run_from_args

HELP = "profiles of every target matrix of checkpoints, adapters or updates"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "sweep", HELP, DESCRIPTION, EPILOG)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args)
