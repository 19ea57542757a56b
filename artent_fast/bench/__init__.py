"""``artent bench``: how fast is this on my machine, and which backend does it use?

One module per table (core, eigvalsh, attention, tracking, sweep), the self-check, the machine
description, the size plans and the runner; ``benchmarks/`` scripts are thin wrappers over these.
"""

from artent_fast.bench.runner import run_bench

__all__ = ["run_bench"]
