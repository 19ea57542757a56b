"""A progress bar with ETA: tqdm when installed, else a plain line on stderr every few seconds."""

from __future__ import annotations

import sys
import time

from artent_fast.extras import optional


class Progress:
    """``update(n)`` after each finished piece of work (weighted by cost); ``close()`` at the end."""

    def __init__(self, total: float, desc: str = "sweep", enabled: bool = True, unit: str = "matrix"):
        self.total, self.desc, self.enabled, self.done = total, desc, enabled, 0.0
        self.start = self._last = time.monotonic()
        self._bar = None
        if enabled:
            if optional("tqdm", "progress bars", extra="progress") is not None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: float = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (time.monotonic() - self._last > 2 or self.done >= self.total):
            self._last = time.monotonic()
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        frac = self.done / self.total if self.total else 1.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        return f"{self.desc}: {self.done:g}/{self.total:g} ({100 * frac:.0f}%) elapsed {elapsed:.0f}s ETA {eta:.0f}s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
