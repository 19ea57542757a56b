"""Where the tracker's records go: the history file, the latest scalars, TensorBoard; one protocol for all.

A sink's ``write`` and ``close`` never raise for I/O (training goes on); a sink that fails keeps or
reports its own error. Figures for TensorBoard are drawn here (matplotlib, when there is one).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Protocol

from artent_fast.extras import optional_imports
from artent_fast.tracking.records import SCALARS, UPDATE_KINDS, record_label


class Sink(Protocol):
    """Receives each batch of new records (:class:`artent_fast.tracking.records.HistoryFile` is the JSON lines sink)."""

    def write(self, records: Sequence[dict]) -> None: ...

    def close(self) -> None: ...


class Scalars:
    """The latest scalars per unit (``artent/<label>/<name>``), taken by :meth:`pop`."""

    def __init__(self) -> None:
        self.latest: dict[str, float] = {}

    def write(self, records: Sequence[dict]) -> None:
        for r in records:
            if r.get("kind") in UPDATE_KINDS:
                label = record_label(r)
                self.latest.update({f"artent/{label}/{k}": r[k] for k in SCALARS})

    def pop(self) -> dict[str, float]:
        out, self.latest = self.latest, {}
        return out

    def close(self) -> None:
        pass


class TensorBoard:
    """Scalars per unit and step, and a figure of the profiles every ``image_every`` steps, to a SummaryWriter.

    A failing writer stops this output with one warning (training goes on); ``strict``: a failure that is
    not an ``OSError`` is raised.
    """

    def __init__(self, writer: Any, *, owned: bool, image_every: int, strict: bool = False) -> None:
        self.writer, self.owned, self.image_every, self.strict = writer, owned, image_every, strict

    def write(self, records: Sequence[dict]) -> None:
        if self.writer is None:
            return
        try:
            self._write(records)
        except Exception as exc:
            if self.strict and not isinstance(exc, OSError):
                raise
            _warn(f"TensorBoard output stopped (training goes on): {exc!r}")
            self.writer = None

    def _write(self, records: Sequence[dict]) -> None:
        profiles: dict[int, dict[str, list[float]]] = {}
        for r in records:
            if r.get("kind") not in UPDATE_KINDS:
                continue
            label = record_label(r)
            for key in SCALARS:
                if r[key] == r[key]:
                    self.writer.add_scalar(f"artent/{label}/{key}", r[key], r["step"])
            if r["step"] % self.image_every == 0:
                profiles.setdefault(r["step"], {})[label] = r["entropies"]
        for step, curves in profiles.items():
            # plotting is a layer above tracking and needs matplotlib (optional): imported when a figure is due
            from artent_fast.plotting.profile_figure import plot_profile

            fig = plot_profile(curves, title=f"entanglement profiles, step {step}")
            self.writer.add_figure("artent/profiles", fig, step, close=True)

    def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.flush()
            if self.owned:
                self.writer.close()
        except Exception as exc:
            _warn(f"TensorBoard output could not be closed (training goes on): {exc!r}")
        self.writer = None


def open_tensorboard(tensorboard: Any) -> tuple[Any, bool]:
    """``(writer, owned)``: a SummaryWriter for a log dir path, or the writer passed in, or ``(None, False)``."""
    if tensorboard is None or tensorboard is False:
        return None, False
    if hasattr(tensorboard, "add_scalar"):
        return tensorboard, False
    with optional_imports("tensorboard", "tensorboard=", extra="tensorboard"):
        from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(tensorboard)), True


def _warn(message: str) -> None:
    warnings.warn(f"artent_fast.track: {message}", RuntimeWarning, stacklevel=5)
