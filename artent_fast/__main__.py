"""``python -m artent_fast``: the ``artent`` command line, for environments without the console script."""

import sys

from artent_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
