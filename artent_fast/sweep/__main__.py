"""``python -m artent_fast.sweep ...`` and ``torchrun --nproc-per-node=N -m artent_fast.sweep ...``: an entry
point only; the command line is :func:`artent_fast.cli.sweep.main` (an entry-point module may import the CLI)."""

import sys

from artent_fast.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
