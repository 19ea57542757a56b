"""``Tracker``: entanglement profiles of weight updates measured while a model trains (SPEC section 2)."""

from __future__ import annotations

import functools
import importlib
import math
import warnings
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artent_fast.api import sites
from artent_fast.tracking.compute import DENSE_CHUNK_ELEMENTS, Launcher, chunks, group, measure_dense, measure_lowrank
from artent_fast.tracking.records import HistoryFile, history_path, record_label, summary_fields
from artent_fast.tracking.targets import SplitSpec, find_units
from artent_fast.tracking.units import Unit

SCALARS = ("row_col_entropy", "valley_depth", "peak_entropy")
MAX_PENDING_JOBS = 256  # CUDA: measurements queued and not yet read back; beyond this, steps are skipped

def is_compiling() -> bool:
    """True inside a ``torch.compile`` trace (the tracker never runs there)."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


@functools.lru_cache(maxsize=256)
def row_sites(m: int, n: int) -> int:
    return sites(m, n).row_sites

class Tracker:
    """Measures the entanglement profile of each tracked update every ``every`` optimizer steps.

    Build it with :func:`artent_fast.track`. Steps arrive from the optimizer's post-step hook
    (``optimizer=``), from the HF/Lightning callbacks, or from explicit :meth:`step` calls.
    Records go to :meth:`history`, to ``out`` (JSON lines, flushed every step) and, optionally,
    to TensorBoard. Errors never stop training: a failing module is reported once and dropped
    (``strict=True`` re-raises instead).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        targets: str | Iterable[str] = ("q_proj", "v_proj"),
        every: int = 1,
        dense_every: int | None = None,
        out: str | Path | None = "artent_track",
        resume: bool = False,
        attention: bool = False,
        strict: bool = False,
        tensorboard: Any = None,
        image_every: int | None = None,
        split: Mapping[str, SplitSpec] | None = None,
        base_weights: Mapping[str, torch.Tensor] | str | Path | None = None,
        snapshot_device: Any = None,
    ) -> None:
        for name, value in (("every", every), ("dense_every", dense_every), ("image_every", image_every)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.every = every
        self.dense_every = dense_every or 10 * every
        self.image_every = image_every or 10 * every
        self.strict = strict
        self.targets = (targets,) if isinstance(targets, str) else tuple(targets)
        self.units: list[Unit] = find_units(model, self.targets, split=split, base_weights=base_weights,
                                            snapshot_device=snapshot_device)
        if not self.units and not attention:
            linear = [n for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
                      and m.weight.ndim == 2][:6]
            raise ValueError(f"targets {self.targets} match no trainable 2-D layer or peft adapter of the model; "
                             f"module names look like {linear}")
        self.dropped: dict[str, str] = {}  # label -> why it stopped being tracked
        self.skipped = 0  # zero (or non-finite) updates measured and not recorded (the zero-update policy)
        self.lagged = 0  # due steps not measured because the side stream was MAX_PENDING_JOBS behind (CUDA)
        self._step = 0
        self._records: list[dict] = []
        self._jobs: deque = deque()
        self._launcher = Launcher()
        self._latest: dict[str, float] = {}
        self._closed = False
        self._broken: str | None = None
        self._file = HistoryFile(history_path(out), resume=resume) if out is not None else None
        self._tb, self._tb_owned = open_tensorboard(tensorboard)
        self._channel = open_attention_channel(model) if attention else None
        self._hook = None
        if optimizer is not None:
            self._hook = optimizer.register_step_post_hook(lambda *_args, **_kwargs: self.step())

    # -- public --------------------------------------------------------------------------------------

    @property
    def current_step(self) -> int:
        return self._step

    @property
    def snapshot_bytes(self) -> int:
        """Memory held by full-fine-tuning ``W0`` snapshots (one copy of each tracked weight)."""
        seen = {id(u.w0): u.w0 for u in self.units if u.w0 is not None}
        return sum(t.numel() * t.element_size() for t in seen.values())

    def step(self, global_step: int | None = None) -> None:
        """Count one optimizer step (or set the count to ``global_step``) and measure what is due.

        Cheap when nothing is due. Skipped inside ``torch.compile`` regions. On CUDA the
        measurement is queued on a side stream and recorded at a later step (or at :meth:`close`).
        """
        if self._closed or self._broken or is_compiling():
            return
        self._step = self._step + 1 if global_step is None else int(global_step)
        try:
            self._collect(wait=False)
            lora_due = self._step % self.every == 0
            dense_due = self._step % self.dense_every == 0
            if (lora_due or dense_due) and len(self._jobs) >= MAX_PENDING_JOBS:
                self.lagged += 1  # the side stream is behind: skip this step rather than block training
            elif lora_due or dense_due:
                self._launch(lora_due, dense_due)
                self._collect(wait=False)
            if self._channel is not None and (lora_due or dense_due):
                self._drain_attention()
                request = getattr(self._channel, "request_profile", None)
                if request is not None:
                    request()  # the next captured forward also computes attention profiles
        except Exception as exc:
            self._fail(exc)

    def history(self, as_frame: bool | None = None) -> Any:
        """The records so far: a pandas DataFrame when pandas is installed (``as_frame=None``), else a list of dicts.

        ``as_frame=False`` always gives the list; ``as_frame=True`` requires pandas.
        """
        records = [dict(r) for r in self._records]
        if as_frame is False:
            return records
        try:
            import pandas as pd
        except ImportError:
            if as_frame:
                raise ImportError("history(as_frame=True) needs pandas: pip install 'artent_fast[tables]'") from None
            return records
        return pd.DataFrame.from_records(records)

    def pop_scalars(self) -> dict[str, float]:
        """Latest scalars per unit since the last call (``artent/<module>/<row_col_entropy|valley_depth|...>``)."""
        out, self._latest = self._latest, {}
        return out

    def plot(self, what: str = "profile", path: str | Path | None = None, **kwargs: Any):
        """A figure of the history: ``"profile"`` (with theory), ``"heatmap"`` (bond x step) or ``"valley"``."""
        from artent_fast.plotting import tracking as figures

        draw = {"profile": figures.plot_tracked_profile, "heatmap": figures.plot_bond_heatmap,
                "valley": figures.plot_valley_depth}.get(what)
        if draw is None:
            raise ValueError(f"what must be 'profile', 'heatmap' or 'valley', got {what!r}")
        return draw(self.history(as_frame=False), path=path, **kwargs)

    def close(self) -> None:
        """Finish pending measurements, drain attention records, flush and close the outputs. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._hook is not None:
            self._hook.remove()
        try:
            if not self._broken:
                self._collect(wait=True)
                if self._channel is not None:
                    self._drain_attention()
        except Exception as exc:
            self._fail(exc)
        finally:
            disable = getattr(self._channel, "disable", None)
            if disable is not None:
                disable(self.model)
            if self._file is not None:
                self._file.close()
            if self._tb is not None:
                self._tb.flush()
                if self._tb_owned:
                    self._tb.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        kinds = {k: sum(u.kind == k for u in self.units) for k in ("lora", "dense")}
        return (f"Tracker({len(self.units)} units {kinds}, every={self.every}, dense_every={self.dense_every}, "
                f"step={self._step}, records={len(self._records)})")

    # -- internals -----------------------------------------------------------------------------------

    def _launch(self, lora_due: bool, dense_due: bool) -> None:
        lowrank, dense = [], []
        for unit in list(self.units):
            try:
                if unit.kind == "lora" and lora_due:
                    B, A, scale, merged = unit.factors()
                    meta = {"shape": [B.shape[0], A.shape[1]], "rank": B.shape[1],
                            "scaling": scale, "row_sites": row_sites(B.shape[0], A.shape[1]), "merged": merged}
                    lowrank.append((unit, meta, (B * scale, A)))
                elif unit.kind == "dense" and dense_due:
                    W = unit.dense()
                    dense.append((unit, {"shape": list(W.shape), "row_sites": row_sites(*W.shape)}, (W,)))
            except Exception as exc:
                self._drop(unit, exc)
        for items in group(lowrank):
            self._run(items, measure_lowrank)
        for items in group(dense):
            for chunk in chunks(items, DENSE_CHUNK_ELEMENTS):
                self._run(chunk, measure_dense)

    def _run(self, items: list, measure) -> None:
        units, metas, tensors = zip(*items, strict=True)
        try:
            stacked = [torch.stack(ts) for ts in zip(*tensors, strict=True)]
            self._jobs.append(self._launcher.run(self._step, list(units), list(metas), stacked, measure))
        except Exception as exc:
            if len(items) > 1 and not self.strict:  # find the unit at fault, keep the others
                for item in items:
                    self._run([item], measure)
            else:
                self._drop(units[0], exc)

    def _collect(self, *, wait: bool) -> None:
        records: list[dict] = []
        while self._jobs:
            job = self._jobs[0]
            if not job.ready():
                if not wait:
                    break
                job.wait()
            self._jobs.popleft()
            for unit, meta, entropies in zip(job.units, job.meta, job.values.tolist(), strict=True):
                if all(math.isnan(e) for e in entropies):
                    self.skipped += 1  # zero update (e.g. peft's B = 0 before the first step): no record
                    continue
                record = {"step": job.step, **unit.key(), **meta, "entropies": entropies}
                records.append({**record, **summary_fields(entropies, meta["row_sites"])})
        self._emit(records)

    def _drain_attention(self) -> None:
        records = []
        for raw in self._channel.drain():
            record = dict(raw)
            record["step"] = self._step
            record.setdefault("kind", "attention")
            records.append(record)
        self._emit(records)

    def _emit(self, records: list[dict]) -> None:
        if not records:
            return
        self._records.extend(records)
        if self._file is not None:
            self._file.write(records)
        for r in records:
            if r.get("kind") in ("lora", "dense"):
                label = record_label(r)
                self._latest.update({f"artent/{label}/{k}": r[k] for k in SCALARS})
        if self._tb is not None:
            try:
                self._write_tensorboard(records)
            except Exception as exc:
                if self.strict:
                    raise
                warnings.warn(f"artent_fast.track: TensorBoard output stopped: {exc!r}", RuntimeWarning, stacklevel=3)
                self._tb = None

    def _write_tensorboard(self, records: list[dict]) -> None:
        profiles: dict[int, dict[str, list[float]]] = {}
        for r in records:
            if r.get("kind") not in ("lora", "dense"):
                continue
            label = record_label(r)
            for key in SCALARS:
                if r[key] == r[key]:
                    self._tb.add_scalar(f"artent/{label}/{key}", r[key], r["step"])
            if r["step"] % self.image_every == 0:
                profiles.setdefault(r["step"], {})[label] = r["entropies"]
        for step, curves in profiles.items():
            from artent_fast.plotting.profile import plot_profile

            fig = plot_profile(curves, title=f"entanglement profiles, step {step}")
            self._tb.add_figure("artent/profiles", fig, step, close=True)

    def _drop(self, unit: Unit, exc: Exception) -> None:
        if self.strict:
            raise exc
        if unit in self.units:
            self.units.remove(unit)
        self.dropped[unit.label] = repr(exc)
        warnings.warn(f"artent_fast.track: stopped tracking {unit.label}: {exc!r}", RuntimeWarning, stacklevel=4)

    def _fail(self, exc: Exception) -> None:
        if self.strict:
            raise exc
        self._broken = repr(exc)
        warnings.warn(f"artent_fast.track: tracking stopped (training goes on): {exc!r}", RuntimeWarning,
                      stacklevel=3)

def open_tensorboard(tensorboard: Any) -> tuple[Any, bool]:
    """``(writer, owned)``: a SummaryWriter for a log dir path, or the writer passed in, or ``(None, False)``."""
    if tensorboard is None or tensorboard is False:
        return None, False
    if hasattr(tensorboard, "add_scalar"):
        return tensorboard, False
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError("tensorboard= needs the tensorboard package: pip install 'artent_fast[tensorboard]'") from exc
    return SummaryWriter(log_dir=str(tensorboard)), True

def open_attention_channel(model: nn.Module) -> Any:
    """The attention side channel (issue 4's ``artent_fast.attention.channel``), enabled on ``model``."""
    try:
        channel = importlib.import_module("artent_fast.attention.channel")
    except ModuleNotFoundError as exc:
        if exc.name not in ("artent_fast.attention", "artent_fast.attention.channel"):
            raise
        raise ImportError("track(attention=True): attention capture is unavailable "
                          "(artent_fast.attention.channel is not part of this installation)") from exc
    if not callable(getattr(channel, "drain", None)):
        raise ImportError("track(attention=True): artent_fast.attention.channel has no drain(): capture unavailable")
    enable = getattr(channel, "enable", None)
    if enable is not None:
        enable(model)
    return channel

def track(model: nn.Module, **kwargs: Any) -> Tracker:
    """Track the entanglement of ``model``'s weight updates during training; see :class:`Tracker` and docs/tracking.md.

    ``tracker = artent_fast.track(model, optimizer=opt)`` then train as usual; or
    ``with artent_fast.track(model) as tracker: ... tracker.step()``.
    """
    return Tracker(model, **kwargs)

track.__signature__ = None  # let help() show Tracker's keywords via the docstring
