"""Hugging Face ``Trainer`` callback: entanglement tracking every N optimizer steps, scalars in the Trainer's logs."""

from __future__ import annotations

import os
from typing import Any

from artent_fast.extras import optional_imports
from artent_fast.parallel import distributed_ready
from artent_fast.tracking import Tracker, track
from artent_fast.tracking.records import summarise

with optional_imports("transformers", "artent_fast.integrations.hf", extra="hf"):
    from transformers import TrainerCallback


class ArtentCallback(TrainerCallback):
    """Tracks the model the Trainer trains; keyword arguments go to :func:`artent_fast.track`.

    Steps are the Trainer's ``global_step`` (optimizer steps). At each ``on_log`` a few model-level
    summaries (per target kind: mean and min valley depth, mean row/column-bond entropy, e.g.
    ``artent/q_proj/valley_depth_mean``) are added to the Trainer's ``logs``, so the console stays
    readable and every reporter that runs after this callback (W&B, TensorBoard, MLflow, ...) gets
    them; ``per_module=True`` adds the per-module scalars (``artent/<module>/row_col_entropy``,
    ``valley_depth``, ``peak_entropy``) to the logs as well. Summaries and per-module scalars
    always land in ``trainer.state.log_history`` (so in ``trainer_state.json``). :meth:`attach`
    puts the callback first so that all reporters see its scalars. The history goes to
    ``<output_dir>/artent/history.jsonl`` unless ``out=`` says otherwise. Under ``torchrun``
    every rank tracks (the ranks share the work) and rank 0 writes the file.
    """

    def __init__(self, *, per_module: bool = False, **track_kwargs: Any) -> None:
        if "optimizer" in track_kwargs:
            raise TypeError("ArtentCallback counts the Trainer's steps itself: do not pass optimizer=")
        self.per_module = per_module
        self.track_kwargs = track_kwargs
        self.tracker: Tracker | None = None

    @classmethod
    def attach(cls, trainer: Any, **track_kwargs: Any) -> ArtentCallback:
        """Create the callback and register it before the Trainer's reporters (so they all see its scalars)."""
        callback = cls(**track_kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.tracker is not None or model is None:
            return
        if not state.is_world_process_zero and not distributed_ready():
            return  # several processes without torch.distributed: only the main one tracks
        options = dict(self.track_kwargs)
        options.setdefault("out", os.path.join(args.output_dir, "artent"))
        self.tracker = track(model, **options)

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tracker is None or logs is None:
            return
        scalars = self.tracker.pop_scalars()
        if not scalars:
            return
        summary = summarise(scalars)
        logs.update(summary)
        if self.per_module:
            logs.update(scalars)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update({**summary, **scalars})  # the Trainer copied logs there before on_log
        else:
            state.log_history.append({**summary, **scalars, "step": state.global_step})

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.close()
