"""Lightning callback: entanglement tracking every N optimizer steps, scalars through ``LightningModule.log``."""

from __future__ import annotations

import os
from typing import Any

from artent_fast.extras import is_installed, optional_imports
from artent_fast.parallel import distributed_ready
from artent_fast.tracking import Tracker, track
from artent_fast.tracking.records import summarise

# lightning, else the older package name pytorch_lightning
_LIGHTNING = "lightning" if is_installed("lightning") or not is_installed("pytorch_lightning") else "pytorch_lightning"
with optional_imports(_LIGHTNING, "artent_fast.integrations.lightning", extra="lightning"):
    if _LIGHTNING == "lightning":
        from lightning.pytorch.callbacks import Callback
    else:
        from pytorch_lightning.callbacks import Callback


class ArtentCallback(Callback):
    """Tracks the ``LightningModule`` being fit; keyword arguments go to :func:`artent_fast.track`.

    Steps are ``trainer.global_step`` (optimizer steps, so gradient accumulation is respected).
    New scalars are logged with ``pl_module.log_dict`` and reach the Trainer's loggers; the history
    goes to ``<default_root_dir>/artent/history.jsonl`` unless ``out=`` says otherwise. Logged: the
    per-module scalars and model-level summaries per target kind (``artent/q_proj/valley_depth_mean``,
    ``..._min``, ``artent/q_proj/row_col_entropy_mean``); ``per_module=False`` logs the summaries only,
    ``log=False`` nothing. Under a distributed strategy (DDP, FSDP) every rank tracks (the ranks
    share the work), rank 0 writes the file and scalars are logged from rank 0.
    """

    def __init__(self, *, log: bool = True, per_module: bool = True, **track_kwargs: Any) -> None:
        if "optimizer" in track_kwargs:
            raise TypeError("ArtentCallback counts the Trainer's steps itself: do not pass optimizer=")
        self.log = log
        self.per_module = per_module
        self.track_kwargs = track_kwargs
        self.tracker: Tracker | None = None
        self._last_step = -1

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is None and (trainer.is_global_zero or distributed_ready()):
            options = dict(self.track_kwargs)
            options.setdefault("out", os.path.join(trainer.default_root_dir, "artent"))
            self.tracker = track(tracked_model(trainer, pl_module), **options)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.tracker is None or trainer.global_step == self._last_step:
            return  # not the main process, or a micro-batch inside gradient accumulation
        self._last_step = trainer.global_step
        self.tracker.step(trainer.global_step)
        scalars = self.tracker.pop_scalars()
        if self.log and scalars:
            values = {**summarise(scalars), **(scalars if self.per_module else {})}
            pl_module.log_dict(values, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.tracker.close()


def tracked_model(trainer: Any, pl_module: Any) -> Any:
    """``pl_module``, or the strategy's FSDP wrapper around it (FSDP1 flat parameters are read through the wrapper)."""
    wrapped = getattr(trainer, "model", None)
    if (
        wrapped is not None
        and wrapped is not pl_module
        and any(type(m).__name__ == "FullyShardedDataParallel" for m in wrapped.modules())
    ):
        return wrapped
    return pl_module
