import sys

from artent_fast.cli import main

sys.exit(main())
