"""``Tracker``: entanglement profiles of weight updates measured while a model trains (docs/definitions.md §2)."""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import math
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artent_fast.extras import optional_imports
from artent_fast.parallel import full_tensor
from artent_fast.patterns import module_name
from artent_fast.tracking import compute
from artent_fast.tracking.compute import DENSE_CHUNK_ELEMENTS, Launcher, chunks, group, lowrank_key
from artent_fast.tracking.dist.exchange import Outcome, broadcast, check_agreement, exchange
from artent_fast.tracking.dist.gather import Gathering, read_due
from artent_fast.tracking.dist.wrappers import gathered, is_zero3, refuse_unsupported, refuse_zero3_dense, whole_model
from artent_fast.tracking.records import HistoryFile, Meta, history_path, summary_fields
from artent_fast.tracking.schedule import Tracked, plan, tracking_group
from artent_fast.tracking.sinks import Scalars, Sink, TensorBoard, open_tensorboard
from artent_fast.updates import Unit
from artent_fast.updates.find import SplitSpec, find_units, read_starts, zero_initialised_adapters
from artent_fast.updates.types import same

MAX_PENDING_JOBS = 256  # CUDA: measurements queued and not yet read back; beyond this, steps are skipped
MAX_PENDING_BACKGROUND = 2  # CPU worker thread: beyond this many, a due step waits for the oldest (no step lost)
MAX_FAILURES = 3  # consecutive failed measurements of one unit before it is dropped


def is_compiling() -> bool:
    """True inside a ``torch.compile`` trace (the tracker never runs there)."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def hookable_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The optimizer whose post-step hooks fire at each real optimizer step.

    A wrapper that does not run its own hooks (accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``) holds the torch optimizer as ``.optimizer`` or ``._optimizer``; its
    ``step()`` calls that one's only on real steps (not while accumulating gradients, not on a
    step the gradient scaler skips), so the hook goes there.
    """
    seen = optimizer
    for _ in range(8):  # wrappers of wrappers, never a cycle
        if isinstance(seen, torch.optim.Optimizer) and hasattr(seen, "_optimizer_step_post_hooks"):
            return seen
        inner = getattr(seen, "optimizer", None) or getattr(seen, "_optimizer", None)
        if inner is None or inner is seen:
            break
        seen = inner
    raise TypeError(
        f"optimizer= must be a torch.optim.Optimizer or a wrapper holding one as .optimizer "
        f"(e.g. accelerate's AcceleratedOptimizer), got {type(optimizer).__name__}; "
        f"or leave it out and call tracker.step() after each optimizer step"
    )


class Tracker:
    """Measures the entanglement profile of each tracked update every ``every`` optimizer steps.

    Build it with :func:`artent_fast.track`. Steps arrive from the optimizer's post-step hook
    (``optimizer=``), from the HF/Lightning callbacks, or from explicit :meth:`step` calls.
    Records go to :meth:`history`, to ``out`` (JSON lines, flushed as they arrive) and, optionally,
    to TensorBoard. Errors never stop training: non-finite or zero updates are skipped
    (``skipped``), a module that fails ``MAX_FAILURES`` measurements in a row is reported once and
    dropped (``dropped``), an I/O error is reported once (``io_error``) and the file stops growing;
    ``strict=True`` re-raises measuring errors instead. Under ``torch.distributed`` every rank
    builds its tracker and the ranks share the work (see ``artent_fast.tracking.dist``).
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
        distributed: bool | None = None,
        background: bool | None = None,
    ) -> None:
        """Arguments (all keywords but ``model``):

        optimizer: register a post-step hook, so every ``optimizer.step()`` is a step (a wrapper such as
            accelerate's ``AcceleratedOptimizer``: on the optimizer it wraps, see :func:`hookable_optimizer`).
        targets: module-name patterns (last name component, dotted suffix, glob, or ``"re:<regex>"``).
        every: measure LoRA (factored) updates every N steps. dense_every: dense updates (default 10 * every).
        out: folder (gets ``history.jsonl``) or ``.jsonl`` path, locked while the tracker writes; None: memory only.
        resume: append to an existing history, continuing its step count (no (step, module) twice).
        attention: also record attention profiles from the side channel (rank 0 only when distributed).
        strict: re-raise measuring errors instead of skipping/dropping the module.
        tensorboard: a log dir or SummaryWriter. image_every: steps between profile images (default 10 * every).
        split: fused projections, e.g. ``{"c_attn": ("q", "k", "v")}``.
        base_weights: ``W0`` for full fine-tuning (mapping or ``.safetensors`` path) instead of a snapshot.
        snapshot_device: where ``W0`` snapshots live (e.g. ``"cpu"``).
        distributed: None (default): share the work across ranks when ``torch.distributed`` is initialised
            with more than one rank; True: require it; False: each process tracks on its own.
        background: measure CPU updates on a worker thread of the tracker's own, overlapping training
            (records then arrive at a later step, at ``history()`` or at ``close()``). None (default): on,
            unless ``strict`` or distributed (there results are exchanged at the step); False: on the
            training thread.
        """
        check_arguments(model, every=every, dense_every=dense_every, image_every=image_every)
        hooked = hookable_optimizer(optimizer) if optimizer is not None else None
        refuse_unsupported(model)
        group_info = tracking_group(distributed)
        self.rank, self.world = group_info if group_info is not None else (0, 1)
        self.distributed = group_info is not None
        if background is not None and not isinstance(background, bool):
            raise TypeError(f"background must be True, False or None, got {background!r}")
        if background and (self.distributed or strict):
            why = "with strict=True"
            if self.distributed:
                why = "under torch.distributed (results are exchanged at the step)"
            raise ValueError(f"background=True: measuring on a worker thread is not available {why}")
        self.model = model
        self.every = every
        self.dense_every = dense_every or 10 * every
        self.image_every = image_every or 10 * every
        self.strict = strict
        self.targets = (targets,) if isinstance(targets, str) else tuple(targets)
        find = functools.partial(
            find_units,
            model,
            self.targets,
            split=split,
            base_weights=base_weights,
            snapshot_device=snapshot_device,
            resume=resume,
        )
        self._zero3 = zero3 = any(is_zero3(p) for p in model.parameters())  # decided once, not per step
        if zero3:  # ZeRO-3: units found without reading them, dense ones refused before anything is gathered
            units = find(starts=False)
            refuse_zero3_dense(units)
        with whole_model(model):  # FSDP1, ZeRO-3: units are found on the whole parameters, W0 copied whole
            if zero3:
                read_starts(units, zero_initialised_adapters(model) if resume else ())
            else:
                units = find()
            self._tracked = plan(units, self.world)  # widths, costs and owners from the whole shapes
        if self.distributed:  # before any error of one rank's own: the others would wait for it in a collective
            check_agreement(
                {"every": self.every, "dense_every": self.dense_every, "strict": self.strict},
                [(t.unit.label, t.unit.kind, t.width) for t in self._tracked],
                self.targets,
            )
        if not units and not attention:
            raise no_units_error(model, self.targets)
        dense = sum(u.kind == "dense" for u in units)
        if dense and dense_every is None and self.dense_every != self.every and self.rank == 0:
            warnings.warn(  # once, here: the schedule of full updates is otherwise silent
                f"artent_fast.track: {dense} full (dense) update(s) are measured every {self.dense_every} steps "
                f"(dense_every defaults to 10 * every; {len(units) - dense} factored unit(s) every {self.every}); "
                f"pass dense_every=N to change it",
                ScheduleNotice,
                stacklevel=3,
            )
        self.dropped: dict[str, str] = {}  # label -> why it stopped being tracked
        self.skipped = 0  # (step, unit) measurements not recorded: zero or non-finite update, or a failure
        self.lagged = 0  # due steps not measured because the side stream was MAX_PENDING_JOBS behind (CUDA)
        self.failures: dict[str, int] = {}  # label -> consecutive failed measurements (reset by a good one)
        self._step = 0
        self._resumed_step = 0  # steps up to this one are already in the resumed history file
        self._records: list[dict] = []
        self._jobs: deque = deque()
        self._launcher = Launcher(background=not (self.distributed or strict) if background is None else background)
        self._closed = False
        self._broken: str | None = None
        if self.distributed:
            for t in self._tracked:
                t.gathering = Gathering(model, t.unit)
                if t.owner != self.rank and not t.gathering.everyone_reads:
                    t.unit.w0 = None  # only the owner keeps a whole W0 snapshot
        self._file = self._open_history(out, resume)
        self._scalars = Scalars()
        self._sinks: list[Sink] = [sink for sink in (self._file, self._scalars) if sink is not None]
        writer, owned = open_tensorboard(tensorboard) if self.rank == 0 else (None, False)
        if writer is not None:
            self._sinks.append(TensorBoard(writer, owned=owned, image_every=self.image_every, strict=strict))
        self._channel = open_attention_channel(model) if attention and self.rank == 0 else None
        self._hook = None
        if hooked is not None:
            self._hook = hooked.register_step_post_hook(lambda *_args, **_kwargs: self.step())
        # a program that ends without close(): still record (and write) what the worker thread measured
        self._at_exit = functools.partial(_wait_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    # -- public --------------------------------------------------------------------------------------

    @property
    def units(self) -> list[Unit]:
        """The units tracked (those dropped after repeated failures left out), in the same order on every rank."""
        return [t.unit for t in self._tracked if t.live]

    @property
    def current_step(self) -> int:
        return self._step

    @property
    def io_error(self) -> str | None:
        """The first I/O error of the history file (e.g. a full disk), or None; training went on."""
        return self._file.error if self._file is not None else None

    @property
    def snapshot_bytes(self) -> int:
        """Memory held by full-fine-tuning ``W0`` snapshots on this process (one copy of each tracked weight)."""
        seen = {id(u.w0): u.w0 for u in self.units if u.w0 is not None}
        local = [t.to_local() if hasattr(t, "to_local") else t for t in seen.values()]
        return sum(t.numel() * t.element_size() for t in local)

    def step(self, global_step: int | None = None) -> None:
        """Count one optimizer step (or set the count to ``global_step``) and measure what is due.

        Cheap when nothing is due (and then, under ``torch.distributed``, no communication).
        Skipped inside ``torch.compile`` regions. The measurement of a snapshot taken here runs off
        the training thread (CUDA: a side stream; CPU: the tracker's worker thread, unless
        ``background=False``) and is recorded at a later step, at :meth:`history` or at :meth:`close`;
        under ``torch.distributed`` it is measured and exchanged at the step itself.
        """
        if self._closed or self._broken or is_compiling():
            return
        self._step = self._step + 1 if global_step is None else int(global_step)
        try:
            if self._step <= self._resumed_step:
                return  # already in the resumed history file: never record a (step, module) twice
            lora_due = self._step % self.every == 0
            dense_due = self._step % self.dense_every == 0
            if not self.distributed:
                self._step_local(lora_due, dense_due)
            elif lora_due or dense_due:
                self._step_distributed(lora_due, dense_due)
            if self._channel is not None and (lora_due or dense_due):
                self._drain_attention()
                request = getattr(self._channel, "request_profile", None)
                if request is not None:
                    request()  # the next captured forward also computes attention profiles
        except Exception as exc:
            self._fail(exc)

    def history(self, as_frame: bool = False) -> Any:
        """The records so far, as a list of dicts (one per measured unit and step); ``as_frame=True``: a DataFrame.

        Measurements still running (worker thread, CUDA side stream) are waited for first. Under
        ``torch.distributed`` every rank holds every rank's records (rank 0 also writes the file).
        """
        self._settle_pending()
        records = [dict(r) for r in self._records]
        if not as_frame:
            return records
        with optional_imports("pandas", "history(as_frame=True)", extra="tables"):
            import pandas as pd
        return pd.DataFrame.from_records(records)

    def pop_scalars(self) -> dict[str, float]:
        """Latest scalars per unit since the last call (``artent/<module>/<row_col_entropy|valley_depth|...>``).

        Waits for measurements still running, as :meth:`history` does.
        """
        self._settle_pending()
        return self._scalars.pop()

    def wait(self) -> None:
        """Wait for the measurements still running (worker thread, CUDA side stream) and record them.

        :meth:`history`, :meth:`pop_scalars` and :meth:`close` do this themselves.
        """
        self._settle_pending()

    def _settle_pending(self) -> None:
        if self._jobs and not self._broken and not self._closed:
            try:
                self._collect(wait=True)
            except Exception as exc:
                self._fail(exc)

    def plot(self, what: str = "profile", path: str | Path | None = None, **kwargs: Any):
        """A figure of the history: ``"profile"`` (with theory), ``"heatmap"`` (bond x step) or ``"valley"``."""
        from artent_fast.plotting import tracking as figures

        draw = {
            "profile": figures.plot_tracked_profile,
            "heatmap": figures.plot_bond_heatmap,
            "valley": figures.plot_valley_depth,
        }.get(what)
        if draw is None:
            raise ValueError(f"what must be 'profile', 'heatmap' or 'valley', got {what!r}")
        return draw(self.history(), path=path, **kwargs)

    def __del__(self) -> None:
        # A tracker dropped without close() (garbage collected while measuring in the background): finish and
        # write what was measured, as close() does, rather than lose it. Never raises (a finaliser).
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Finish pending measurements, drain attention records, flush and close the outputs. Idempotent.

        Never raises for I/O (a full disk is reported in :attr:`io_error`); releases the file and its lock.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
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
            try:
                disable = getattr(self._channel, "disable", None)
                if disable is not None:
                    disable(self.model)
            finally:
                self._launcher.close()
                for sink in self._sinks:
                    sink.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        kinds = {k: sum(u.kind == k for u in self.units) for k in ("lora", "dense")}
        where = f", rank={self.rank}/{self.world}" if self.distributed else ""
        return (
            f"Tracker({len(self.units)} units {kinds}, every={self.every}, dense_every={self.dense_every}, "
            f"step={self._step}, records={len(self._records)}{where})"
        )

    # -- internals -----------------------------------------------------------------------------------

    def _open_history(self, out: str | Path | None, resume: bool) -> HistoryFile | None:
        """Rank 0 opens (and locks) the file; under torch.distributed the others learn the resumed step or the error."""
        file, error, previous = None, None, []
        if out is not None and self.rank == 0:
            try:
                file = HistoryFile(history_path(out), resume=resume)
                previous = file.previous
                file.previous = []
            except Exception as exc:
                error = exc
        if self.distributed and out is not None:
            shared = broadcast(
                (repr(error) if error is not None else None, max((int(r.get("step", 0)) for r in previous), default=0))
            )
            if error is None and shared[0] is not None:
                raise RuntimeError(f"artent_fast.track: rank 0 could not open the history file: {shared[0]}")
            self._resumed_step = shared[1]
        else:
            self._resumed_step = max((int(r.get("step", 0)) for r in previous), default=0)
        if error is not None:
            raise error
        self._records.extend(previous)
        self._step = self._resumed_step
        return file

    def _due(self, lora_due: bool, dense_due: bool) -> list[Tracked]:
        return [t for t in self._tracked if t.due(lora_due, dense_due)]

    def _read(self, tracked: Tracked, full=same) -> tuple[Tracked, Meta, tuple[torch.Tensor, ...]]:
        unit = tracked.unit
        if unit.kind == "lora":
            B, A, scale, merged = unit.factors(full)
            meta = Meta(B.shape[0], A.shape[1], B.shape[1], scale, merged)
            if scale == 0 or not math.isfinite(scale):  # profiles are scale invariant: only these change them
                B = B * scale
            return tracked, meta, (B, A)
        W = unit.dense(full)
        return tracked, Meta(*W.shape), (W,)

    def _step_local(self, lora_due: bool, dense_due: bool) -> None:
        """Record what was measured since; launch the measurement of what is due (side stream, worker thread)."""
        self._collect(wait=False)
        if not (lora_due or dense_due):
            return
        if sum(j.background for j in self._jobs) >= MAX_PENDING_BACKGROUND:
            self._collect(wait=True, keep=MAX_PENDING_BACKGROUND - 1)  # bounded queue, no step lost
        if len(self._jobs) >= MAX_PENDING_JOBS:
            self.lagged += 1  # the side stream is behind: skip this step rather than block training
        else:
            self._launch(lora_due, dense_due)
            self._collect(wait=False)

    def _launch(self, lora_due: bool, dense_due: bool) -> None:
        items, due = [], self._due(lora_due, dense_due)
        zero3 = [p for t in due for p in t.unit.tensors() if is_zero3(p)] if self._zero3 else []  # ZeRO-3, one process
        with gathered(zero3):
            for tracked in due:
                try:  # a DTensor on one process: whole; ZeRO-3's gathered data: cloned before it goes
                    items.append(self._read(tracked, torch.clone if zero3 else full_tensor))
                except Exception as exc:
                    self._fault(tracked, exc)
        self._submit(items, self._fault)

    def _submit(self, items: list, on_error) -> None:
        """Queue batched measurements of ``items``; ``on_error(tracked, exc)`` for a failing unit.

        LoRA units of one rank and device form one measurement whatever their shapes; dense updates
        one per shape (in chunks of at most ``DENSE_CHUNK_ELEMENTS``).
        """
        lowrank = [it for it in items if it[0].factored]
        dense = [it for it in items if not it[0].factored]
        for batch in group(lowrank, lowrank_key):
            self._run(batch, compute.snapshot_lowrank, compute.lowrank_measure, on_error)
        for batch in group(dense):
            for chunk in chunks(batch, DENSE_CHUNK_ELEMENTS):
                self._run(chunk, compute.snapshot_dense, compute.dense_measure, on_error)

    def _run(self, items: list, snapshot, measure_for, on_error) -> None:
        """Snapshot ``items`` (on the training stream) and launch ``measure_for(their tensors)`` on them."""
        tracked, metas, tensors = zip(*items, strict=True)
        try:
            inputs = snapshot(tensors)
            self._jobs.append(self._launcher.run(self._step, list(tracked), list(metas), inputs, measure_for(tensors)))
        except Exception as exc:
            if len(items) > 1 and not self.strict:  # find the unit at fault, keep the others
                for item in items:
                    self._run([item], snapshot, measure_for, on_error)
            else:
                on_error(tracked[0], exc)

    def _finished(self, *, wait: bool, keep: int = 0):
        """``(step, tracked, meta, entropies)`` of the jobs done, in order; ``wait``: until at most ``keep`` remain."""
        while len(self._jobs) > keep:
            job = self._jobs[0]
            if not job.ready():
                if not wait:
                    break
                job.wait()
            self._jobs.popleft()
            try:
                values = job.result().tolist()
            except Exception as exc:  # raised on the worker thread
                self._background_failed(job, exc)
                continue
            for tracked, meta, entropies in zip(job.units, job.meta, values, strict=True):
                yield job.step, tracked, meta, entropies[: meta.bonds]  # rows may be NaN padded after the last bond

    def _background_failed(self, job, exc: Exception) -> None:
        """A measurement failed on the worker thread: its units fail this step, and measuring moves to the
        training thread (where a failing batch is split to find the unit at fault)."""
        if self._launcher.background:
            self._launcher.background = False
            self._warn(f"measuring moved to the training thread after a failure on the worker thread: {exc!r}")
        for tracked in job.units:
            self._fault(tracked, exc)

    def _collect(self, *, wait: bool, keep: int = 0) -> None:
        records = []
        for step, tracked, meta, entropies in self._finished(wait=wait, keep=keep):
            record = self._settle(step, tracked, meta, entropies)
            if record is not None:
                records.append(record)
        self._emit(records)

    def _settle(self, step: int, tracked: Tracked, meta: Meta, entropies: list[float]) -> dict | None:
        """A measured profile: its record, or None when it is skipped (zero or non-finite update)."""
        unit = tracked.unit
        self.failures.pop(unit.label, None)
        if all(math.isnan(e) for e in entropies):
            self.skipped += 1  # zero update (peft's B = 0 before the first step) or a non-finite one
            return None
        record = {"step": step, **unit.key(), "update": unit.update, **meta.fields(), "entropies": entropies}
        return {**record, **summary_fields(entropies, meta.row_sites)}

    def _step_distributed(self, lora_due: bool, dense_due: bool) -> None:
        """Read (gathering sharded units in a fixed order), measure this rank's share, exchange, record."""
        due = self._due(lora_due, dense_due)
        items: list = []
        outcomes: list[Outcome] = []
        try:
            read_due(due, self.rank, self._read, items, outcomes)
            self._submit(items, lambda tracked, exc: outcomes.append(Outcome(tracked.index, error=repr(exc))))
            for _, tracked, meta, entropies in self._finished(wait=True):
                outcomes.append(Outcome(tracked.index, meta, entropies))
        except Exception as exc:  # never leave the other ranks waiting in the exchange below
            done = {o.index for o in outcomes}
            outcomes += [Outcome(t.index, error=repr(exc)) for t, *_ in items if t.index not in done]
        records = []
        for outcome in exchange(due, outcomes):
            tracked = self._tracked[outcome.index]
            if not tracked.live:
                continue
            if outcome.error is not None:
                self._fault(tracked, RuntimeError(outcome.error))  # the error says on which rank it happened
                continue
            record = self._settle(self._step, tracked, outcome.meta, outcome.entropies)
            if record is not None:
                records.append(record)
        self._emit(records)

    def _drain_attention(self) -> None:
        records = []
        for raw in self._channel.drain():
            record = dict(raw)
            record["step"] = self._step
            record.setdefault("kind", "attention")
            if isinstance(record.get("module"), str):  # the names of the unwrapped model, as for updates
                record["module"] = module_name(record["module"])
            records.append(record)
        self._emit(records)

    def _emit(self, records: list[dict]) -> None:
        if not records:
            return
        self._records.extend(records)
        for sink in self._sinks:
            sink.write(records)  # never raises for I/O: the history file keeps its error in io_error

    def _fault(self, tracked: Tracked, exc: Exception) -> None:
        """A failed reading or measurement: skip this step; drop the unit after MAX_FAILURES in a row."""
        if self.strict:
            raise exc
        label = tracked.unit.label
        count = self.failures.get(label, 0) + 1
        self.failures[label] = count
        if count < MAX_FAILURES:
            self.skipped += 1
            if count == 1:
                self._warn(
                    f"measuring {label} failed at step {self._step}, step skipped (dropped after "
                    f"{MAX_FAILURES} failures in a row): {exc!r}"
                )
            return
        tracked.live = False
        self.failures.pop(label, None)
        self.dropped[label] = repr(exc)
        self._warn(f"stopped tracking {label} after {MAX_FAILURES} failures in a row: {exc!r}")

    def _fail(self, exc: Exception) -> None:
        if self.strict:
            raise exc
        self._broken = repr(exc)
        self._warn(f"tracking stopped (training goes on): {exc!r}")

    def _warn(self, message: str) -> None:
        if self.rank == 0:
            warnings.warn(f"artent_fast.track: {message}", RuntimeWarning, stacklevel=4)


def check_arguments(model: nn.Module, **periods: int | None) -> None:
    """Checks of the arguments that need no work: ``periods`` positive ints (or None), ``model`` a module."""
    for name, value in periods.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def no_units_error(model: nn.Module, targets: tuple[str, ...]) -> ValueError:
    """The error of targets that match nothing, with a few of the model's 2-D layer names to choose from."""
    linear = [
        n
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2
    ][:6]
    return ValueError(
        f"targets {targets} match no trainable 2-D layer or peft adapter of the model; module names look like {linear}"
    )


def _wait_at_exit(ref: weakref.ref) -> None:
    tracker = ref()
    if tracker is not None:
        tracker.wait()


class ScheduleNotice(UserWarning):
    """What :func:`track` will measure when, where a default makes it differ from ``every`` (shown once)."""


def open_attention_channel(model: nn.Module) -> Any:
    """The attention side channel (``artent_fast.attention.channel``), enabled on ``model``."""
    try:
        channel = importlib.import_module("artent_fast.attention.channel")
    except ModuleNotFoundError as exc:
        if exc.name not in ("artent_fast.attention", "artent_fast.attention.channel"):
            raise
        raise ImportError(
            "track(attention=True): attention capture is unavailable "
            "(artent_fast.attention.channel is not part of this installation)"
        ) from exc
    if not callable(getattr(channel, "drain", None)):
        raise ImportError("track(attention=True): artent_fast.attention.channel has no drain(): capture unavailable")
    subscribe = getattr(channel, "subscribe", None)
    if subscribe is not None:
        return subscribe(model)  # a queue of this tracker's own: other trackers never take its records
    enable = getattr(channel, "enable", None)
    if enable is not None:
        enable(model)
    return channel


def track(model: nn.Module, **kwargs: Any) -> Tracker:
    """Track the entanglement of ``model``'s weight updates during training; returns a :class:`Tracker`.

    ``tracker = artent_fast.track(model, optimizer=opt)`` then train as usual; or
    ``with artent_fast.track(model) as tracker: ... tracker.step()``. Under ``torchrun`` call it on
    every rank (DDP, FSDP2, FSDP1 with ``use_orig_params=True``). See docs/tracking.md.
    """
    return Tracker(model, **kwargs)


def _track_signature() -> inspect.Signature:
    init = inspect.signature(Tracker.__init__)
    params = [p for name, p in init.parameters.items() if name != "self"]
    return init.replace(parameters=params, return_annotation="Tracker")


track.__signature__ = _track_signature()  # help(track) shows Tracker's keywords
if track.__doc__ and Tracker.__init__.__doc__:  # docstrings are stripped under python -OO
    track.__doc__ += "\n    " + Tracker.__init__.__doc__
