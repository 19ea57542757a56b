"""The tracker never kills training: full disks, NaN steps, cut or shared history files (issue 11)."""

from __future__ import annotations

import errno
import json
import warnings

import pytest
import torch
from torch import nn

import artent_fast
from artent_fast.testing.models import moved, tiny_llama_config
from artent_fast.tracking import read_history


class TwoLayer(nn.Module):
    """Plain full fine-tuning of two linear layers: no peft needed."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.q_proj = nn.Linear(16, 12, bias=False)
        self.v_proj = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        return self.q_proj(x).sum() + self.v_proj(x).sum()


def nudge(model: nn.Module, seed: int) -> None:
    """One 'optimizer step': a small random change of every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def reference(matrix: torch.Tensor) -> list[float]:
    return artent_fast.entanglement_profile(matrix.detach().double(), method="naive").tolist()


class FullDisk:
    """A file object that fails like a full disk: on ``write``/``flush`` (``when="write"``) or only at close."""

    def __init__(self, real, when: str = "write") -> None:
        self.real, self.when, self.closed_calls = real, when, 0

    def write(self, text):
        if self.when == "write":
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(text)

    def flush(self):
        if self.when in ("write", "close"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.flush()

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.closed_calls += 1
        self.real.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    @property
    def closed(self):
        return self.real.closed


@pytest.mark.parametrize("when", ["write", "close"])
def test_full_disk_is_reported_once_and_never_raises(tmp_path, when):
    model = TwoLayer()
    tracker = artent_fast.track(model, every=1, dense_every=1, out=tmp_path)
    real = tracker._file._file
    fake = tracker._file._file = FullDisk(real, "close" if when == "close" else "write")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracker:  # the with block must not raise
            for step in range(1, 4):
                nudge(model, step)
                tracker.step()
    disk = [w for w in caught if "history file" in str(w.message)]
    assert len(disk) == 1, [str(w.message) for w in caught]  # reported once
    assert tracker.io_error is not None and "No space left" in tracker.io_error
    assert len(tracker.history()) == 6  # measuring went on in memory
    assert real.closed and fake.closed_calls == 1  # the handle was released
    tracker.close()  # idempotent, still no exception


def test_full_disk_from_os_fsync_at_close(tmp_path, monkeypatch):
    model = TwoLayer()
    tracker = artent_fast.track(model, dense_every=1, out=tmp_path)
    nudge(model, 1)
    tracker.step()
    handle = tracker._file._file

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("artent_fast.tracking.records.os.fsync", no_space)
    with pytest.warns(RuntimeWarning, match="cannot write the history file"):
        tracker.close()
    assert handle.closed and tracker.io_error is not None
    assert len(read_history(tmp_path)) == 2  # what was flushed before stays readable


def test_transient_nan_update_is_skipped_and_measuring_resumes(tmp_path):
    model = TwoLayer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "stopped tracking", no eigh failure warning
        tracker = artent_fast.track(model, dense_every=1, out=tmp_path)
        w0 = {n: m.weight.detach().clone() for n, m in model.named_children()}
        nudge(model, 1)
        tracker.step()
        saved = model.q_proj.weight.detach().clone()
        with torch.no_grad():
            model.q_proj.weight[3, 5] = float("nan")  # one bad step
            model.v_proj.weight[0, 0] = float("inf")
        tracker.step()
        with torch.no_grad():
            model.q_proj.weight.copy_(saved)  # finite again
            model.v_proj.weight[0, 0] = 0.0
        nudge(model, 3)
        tracker.step()
        tracker.close()
    assert tracker.skipped == 2 and not tracker.dropped
    steps = {(r["step"], r["module"]) for r in tracker.history()}
    assert steps == {(1, "q_proj"), (1, "v_proj"), (3, "q_proj"), (3, "v_proj")}
    last = {r["module"]: r for r in tracker.history() if r["step"] == 3}
    for name in ("q_proj", "v_proj"):
        want = reference(getattr(model, name).weight - w0[name])
        assert last[name]["entropies"] == pytest.approx(want, abs=1e-5)
    assert all(all(e == e for e in r["entropies"]) for r in read_history(tmp_path))


def test_transient_nan_in_lora_factors_is_skipped():
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    config = tiny_llama_config(num_hidden_layers=1)
    torch.manual_seed(0)
    model = peft.get_peft_model(
        transformers.LlamaForCausalLM(config),
        peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    tracker = artent_fast.track(model, out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    layer = tracker.units[0].layer
    tracker.step()
    saved = layer.lora_B["default"].weight.detach().clone()
    with torch.no_grad():
        layer.lora_B["default"].weight[0, 0] = float("nan")
    tracker.step()
    with torch.no_grad():
        layer.lora_B["default"].weight.copy_(saved)
    tracker.step()
    steps = sorted(r["step"] for r in tracker.history())  # waits for the worker thread's measurements
    assert tracker.skipped == 1 and not tracker.dropped
    assert steps == [1, 1, 2, 3, 3]


def test_repeated_real_failures_drop_the_module(monkeypatch):
    model = TwoLayer()
    tracker = artent_fast.track(model, dense_every=1, out=None)
    bad = next(u for u in tracker.units if u.module == "q_proj")
    original = bad.dense
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return original(*args)

    bad.dense = flaky
    with pytest.warns(RuntimeWarning, match="failed at step 1"):
        for step in range(1, 3):
            nudge(model, step)
            tracker.step()
    assert not tracker.dropped and tracker.skipped == 1  # one failure: skipped, not dropped

    def broken(*_args):
        raise RuntimeError("broken for good")

    bad.dense = broken
    with pytest.warns(RuntimeWarning, match="stopped tracking q_proj after 3 failures"):
        for step in range(3, 7):
            nudge(model, step)
            tracker.step()
    assert "q_proj" in tracker.dropped and [u.module for u in tracker.units] == ["v_proj"]


def test_resume_after_a_cut_last_line_starts_a_new_line_and_continues_steps(tmp_path):
    model = TwoLayer()
    with artent_fast.track(model, dense_every=1, out=tmp_path) as tracker:
        for step in range(1, 4):
            nudge(model, step)
            tracker.step()
    path = tmp_path / "history.jsonl"
    with path.open("a") as f:
        f.write('{"step": 4, "module": "q_pr')  # the crash
    with pytest.warns(RuntimeWarning, match="removed a last line cut by a crash"):
        resumed = artent_fast.track(model, dense_every=1, out=tmp_path, resume=True)
    assert resumed.current_step == 3  # the step count continues from the file
    for step in range(4, 6):
        nudge(model, step)
        resumed.step()
    resumed.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cut line left behind
        records = read_history(path)
    keys = [(r["step"], r["module"]) for r in records]
    assert len(keys) == len(set(keys)) == 10  # no (step, module) twice
    assert sorted({s for s, _ in keys}) == [1, 2, 3, 4, 5]
    for line in path.read_text().splitlines():
        json.loads(line)  # every line a record of its own
    assert len(resumed.history()) == 10  # the resumed history holds the file's records too


def test_resume_with_explicit_global_steps_never_duplicates(tmp_path):
    model = TwoLayer()
    with artent_fast.track(model, dense_every=1, out=tmp_path) as tracker:
        for step in range(1, 6):
            nudge(model, step)
            tracker.step(step)
    # a Trainer resumed from its checkpoint at step 3 replays steps 4 and 5, then goes on
    with artent_fast.track(model, dense_every=1, out=tmp_path, resume=True) as resumed:
        for step in range(4, 8):
            nudge(model, step)
            resumed.step(step)
    keys = [(r["step"], r["module"]) for r in read_history(tmp_path)]
    assert len(keys) == len(set(keys)) == 14


def test_read_history_cut_last_line_warns_corrupt_middle_line_errors(tmp_path):
    good = [{"step": i, "module": "m", "kind": "dense", "entropies": [0.1, None]} for i in (1, 2, 3)]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"step": 4, "mod')
    with pytest.warns(RuntimeWarning, match=r"line 4 \(the last\) is cut"):
        records = read_history(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    lines = [json.dumps(r) for r in good]
    path.write_text("\n".join([lines[0], '{"step": 2, "mod', lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"h.jsonl: line 2 is not a JSON record"):
        read_history(path)
    path.write_text("\n".join([lines[0], "[1, 2]", lines[2]]) + "\n")  # JSON, but not a record
    with pytest.raises(ValueError, match="line 2"):
        read_history(path)


def test_two_trackers_on_one_out_do_not_overwrite_each_other(tmp_path):
    model = TwoLayer()
    first = artent_fast.track(model, dense_every=1, out=tmp_path)
    nudge(model, 1)
    first.step()
    with pytest.raises(RuntimeError, match="in use by another tracker"):
        artent_fast.track(TwoLayer(1), dense_every=1, out=tmp_path)
    with pytest.raises(RuntimeError, match="out: history file"):
        artent_fast.track(TwoLayer(1), dense_every=1, out=tmp_path / "history.jsonl", resume=True)
    first.close()
    assert len(read_history(tmp_path)) == 2  # the second tracker did not truncate the first's file
    second = artent_fast.track(model, dense_every=1, out=tmp_path, resume=True)  # the lock is released
    second.close()


def test_help_shows_the_real_signature():
    import inspect

    params = inspect.signature(artent_fast.track).parameters
    assert {"model", "optimizer", "targets", "every", "out", "resume", "distributed"} <= set(params)
    assert "every" in artent_fast.track.__doc__


def test_out_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ValueError, match="out: cannot open the history file"):
        artent_fast.track(TwoLayer(), out=tmp_path / "taken")
