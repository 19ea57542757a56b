"""Hugging Face ``Trainer`` callback: entanglement tracking every N optimizer steps, scalars in the Trainer's logs."""

from __future__ import annotations

import os
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise ImportError("artent_fast.integrations.hf needs transformers: pip install 'artent_fast[hf]'") from exc

from artent_fast.tracking import Tracker, track


class ArtentCallback(TrainerCallback):
    """Tracks the model the Trainer trains; keyword arguments go to :func:`artent_fast.track`.

    Steps are the Trainer's ``global_step`` (optimizer steps). At each ``on_log`` the latest
    scalars (``artent/<module>/row_col_entropy``, ``valley_depth``, ``peak_entropy``) are added to
    the Trainer's ``logs``, so every reporter that runs after this callback (W&B, TensorBoard,
    MLflow, ...) receives them; :meth:`attach` puts the callback first so that all of them do.
    The history goes to ``<output_dir>/artent/history.jsonl`` unless ``out=`` says otherwise.
    Only the main process tracks.
    """

    def __init__(self, **track_kwargs: Any) -> None:
        if "optimizer" in track_kwargs:
            raise TypeError("ArtentCallback counts the Trainer's steps itself: do not pass optimizer=")
        self.track_kwargs = track_kwargs
        self.tracker: Tracker | None = None

    @classmethod
    def attach(cls, trainer: Any, **track_kwargs: Any) -> ArtentCallback:
        """Create the callback and register it before the Trainer's reporters (so they all see its scalars)."""
        callback = cls(**track_kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.tracker is None and state.is_world_process_zero and model is not None:
            options = dict(self.track_kwargs)
            options.setdefault("out", os.path.join(args.output_dir, "artent"))
            self.tracker = track(model, **options)

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tracker is not None and logs is not None:
            logs.update(self.tracker.pop_scalars())

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.close()
