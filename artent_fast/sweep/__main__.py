"""``python -m artent_fast.sweep ...`` and ``torchrun --nproc-per-node=N -m artent_fast.sweep ...``."""

from __future__ import annotations

import argparse
import sys

from artent_fast.cli._common import HelpFormatter
from artent_fast.sweep.options import DESCRIPTION, EPILOG, add_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
