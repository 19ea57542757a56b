"""An unreadable base reported once, FIFOs and link loops named, a full disk under
--out, pickles weights_only refuses, cut-short model files, attention on a non-finite forward."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from artent_fast.cli import main  # noqa: E402
from tests.test_sweep_helpers import model_tensors, save  # noqa: E402

SHAPES = {"self_attn.q_proj": (8, 12), "self_attn.v_proj": (4, 12)}


def sweep(*args: str) -> int:
    return main(["sweep", "--no-progress", *args])


def refused_pickle(path: Path, rng) -> None:
    """A pickled state dict that torch.load(weights_only=True) refuses (it holds a Namespace)."""
    torch.save({**model_tensors(rng, 1, SHAPES), "args": argparse.Namespace(lr=1.0)}, path)


# ---------------------------------------------------------------- an unreadable --base is reported once


def _truncated(folder: Path, rng) -> list[str]:
    save(folder, model_tensors(rng, 2, SHAPES))
    file = folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[:200])
    return []


def _huge_header(folder: Path, rng) -> list[str]:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    return []


def _pickle_not_allowed(folder: Path, rng) -> list[str]:
    folder.mkdir(parents=True)
    torch.save(model_tensors(rng, 2, SHAPES), folder / "pytorch_model.bin")
    return []


def _pickle_refused(folder: Path, rng) -> list[str]:
    folder.mkdir(parents=True)
    refused_pickle(folder / "pytorch_model.bin", rng)
    return ["--allow-pickle"]


@pytest.mark.parametrize("broken", [_truncated, _huge_header, _pickle_not_allowed, _pickle_refused])
def test_an_unreadable_base_is_one_error_not_one_per_tensor(tmp_path, rng, capsys, broken):
    extra = broken(tmp_path / "base", rng)
    tuned = []
    for step in (1, 2):  # two checkpoints of it: still the base's one error
        save(tmp_path / f"checkpoint-{step}", model_tensors(rng, 2, SHAPES))
        tuned.append(str(tmp_path / f"checkpoint-{step}"))
    out = tmp_path / "o"
    code = sweep("--base", str(tmp_path / "base"), "--tuned", *tuned, "--out", str(out), *extra)
    assert code == 1
    records = json.loads((out / "errors.json").read_text())
    assert len(records) == 1, records
    assert records[0]["file"].startswith(str(tmp_path / "base"))
    text = capsys.readouterr()
    assert "missing" not in text.out + text.err and "? [" not in text.out + text.err


# ---------------------------------------------------------------- FIFOs and link loops say what they are


def _fifo(path: Path) -> str:
    import os

    os.mkfifo(path)
    return "FIFO"


def _loop(path: Path) -> str:
    path.symlink_to(path.name)
    return "symbolic link loop"


def _broken_link(path: Path) -> str:
    path.symlink_to("nowhere")
    return "broken symbolic link"


ODD_PATHS = [_fifo, _loop, _broken_link]


@pytest.mark.parametrize("make", ODD_PATHS)
@pytest.mark.parametrize("flag", ["--tuned", "--base"])
def test_sweep_names_what_an_odd_checkpoint_path_is(tmp_path, rng, capsys, make, flag):
    odd = tmp_path / "odd"
    kind = make(odd)
    save(tmp_path / "m", model_tensors(rng, 1, SHAPES))
    good = ["--tuned", str(tmp_path / "m")] if flag == "--base" else []
    assert sweep(flag, str(odd), *good, "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert f"{odd}: " in err and kind in err and "does not exist" not in err.replace("which does not exist", "")


@pytest.mark.parametrize("make", [_fifo, _loop])  # a broken link's target is named, and does not exist
def test_a_weight_file_in_a_folder_that_is_odd_is_named(tmp_path, rng, capsys, make):
    (tmp_path / "m").mkdir()
    kind = make(tmp_path / "m" / "model.safetensors")
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert kind in err or (make is _loop and "too many levels of symbolic links" in err)  # said by confine


@pytest.mark.parametrize("make", ODD_PATHS)
def test_load_model_names_what_an_odd_model_path_is(tmp_path, make):
    from artent_fast.integrations.models import resolve

    odd = tmp_path / "model.gguf"
    kind = make(odd)
    with pytest.raises(ValueError, match=kind) as info:
        resolve(odd)
    assert str(odd) in str(info.value)


@pytest.mark.parametrize("make", ODD_PATHS)
def test_profile_input_names_what_an_odd_path_is(tmp_path, capsys, make):
    odd = tmp_path / "w.npy"
    kind = make(odd)
    assert main(["profile", "--input", str(odd)]) != 0
    err = capsys.readouterr().err
    assert kind in err and str(odd) in err and len(err.strip().splitlines()) == 1


def test_what_is_a_missing_path_is_still_file_not_found(tmp_path):
    from artent_fast.integrations.models import resolve

    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(tmp_path / "nothing.gguf")


# ---------------------------------------------------------------- a full disk under --out


@pytest.mark.parametrize("fail_at", [0, 2, "table"])
def test_a_full_disk_under_out_is_one_line_exit_1_and_the_parts_are_kept(tmp_path, rng, capsys, monkeypatch, fail_at):
    import errno

    from artent_fast import atomic
    from artent_fast.sweep import store

    save(tmp_path / "m", model_tensors(rng, 2, SHAPES))
    out = tmp_path / "o"
    real, parts = atomic.atomic_write, []

    def full(path, data):
        path = Path(path)
        last = fail_at == "table" and path.name.startswith("sweep.")
        if last or (path.parent.name == "parts" and len(parts) == fail_at):
            raise OSError(errno.ENOSPC, "No space left on device")
        if path.parent.name == "parts":
            parts.append(path)
        real(path, data)

    monkeypatch.setattr(store, "atomic_write", full)
    args = ("--tuned", str(tmp_path / "m"), "--out", str(out), "--batch", "1", "--format", "csv")
    assert sweep(*args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error" in line]) == 1, err
    assert err[-1].startswith(f"artent sweep: error: --out {out}: ") and "No space left on device" in err[-1]
    assert sorted(out.glob("parts/*")) == sorted(parts)  # what was written is kept, no temporary left
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(store, "atomic_write", real)
    assert sweep(*args) == 0  # and a rerun resumes from them
    assert f"skips {len(parts)} finished" in capsys.readouterr().err


# ---------------------------------------------------------------- a pickle weights_only refuses


def test_profile_on_a_refused_pickle_says_what_was_refused_and_why(tmp_path, rng, capsys):
    refused_pickle(tmp_path / "w.pt", rng)
    assert main(["profile", "--input", str(tmp_path / "w.pt"), "--tensor", "lm_head.weight"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"artent profile: error: --input {tmp_path / 'w.pt'}: refused by torch.load(weights_only")
    assert "argparse.Namespace" in line and "not an allowed global" in line


def test_sweep_on_a_refused_pickle_says_what_was_refused_in_one_line(tmp_path, rng):
    (tmp_path / "m").mkdir()
    refused_pickle(tmp_path / "m" / "pytorch_model.bin", rng)
    out = tmp_path / "o"
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out), "--allow-pickle") == 1
    (record,) = json.loads((out / "errors.json").read_text())
    assert "\n" not in record["error"] and "argparse.Namespace" in record["error"]
    assert record["error"].startswith("refused by torch.load(weights_only=True)")


# ---------------------------------------------------------------- load_model on files cut short


@pytest.mark.parametrize("keep", [0.003, 0.5, 0.999])
def test_load_model_on_a_gguf_cut_short_names_the_file(tmp_path, keep):
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from artent_fast.integrations.models import load_model
    from tests.integrations.test_models_loader import tiny_llama, write_tiny_gguf

    data = write_tiny_gguf(tmp_path / "full.gguf", tiny_llama()).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(ValueError, match="cut short or corrupt") as info:
        load_model(cut)
    assert str(info.value).startswith(f"{cut}: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [50, 0.5])
@pytest.mark.parametrize("shards", [1, 2])
def test_load_model_on_a_truncated_safetensors_file_names_the_file(tmp_path, keep, shards):
    pytest.importorskip("transformers")
    from artent_fast.integrations.models import load_model
    from tests.integrations.test_models_loader import tiny_llama

    tiny_llama().save_pretrained(tmp_path / "m", max_shard_size="40KB" if shards > 1 else "5GB")
    files = sorted((tmp_path / "m").glob("*.safetensors"))
    assert len(files) >= shards
    victim = files[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(ValueError, match="unreadable safetensors file") as info:
        load_model(tmp_path / "m")
    assert str(info.value).startswith(f"{victim}: ")


# ---------------------------------------------------------------- attention statistics on a non-finite forward


def test_attention_on_a_nan_forward_records_nan_and_keeps_the_neighbouring_steps(tmp_path):
    import warnings

    import artent_fast
    from artent_fast.tracking import read_history
    from tests.tracking.test_tracking import batch, lora, tiny_llama

    attention = pytest.importorskip("artent_fast.attention")
    model = lora(tiny_llama(layers=2))
    model.base_model.model.set_attn_implementation(attention.register_attention())
    embed = model.base_model.model.model.embed_tokens.weight
    with warnings.catch_warnings(), artent_fast.track(model, attention=True, out=tmp_path) as tracker:
        warnings.simplefilter("ignore")
        for step in range(4):
            saved = embed.detach().clone()
            if step == 1:  # the forward of the second step is NaN throughout
                with torch.no_grad():
                    embed.fill_(float("nan"))
            with torch.no_grad():
                model(input_ids=batch(step))
            with torch.no_grad():
                embed.copy_(saved)
            tracker.step()
    attn = [r for r in read_history(tmp_path) if r["kind"] == "attention"]
    by_step = {s: [r for r in attn if r["step"] == s] for s in (1, 2, 3, 4)}
    assert all(len(records) == 2 for records in by_step.values())  # every step's records, both layers
    for r in by_step[2]:
        assert r["entropy_mean"] is None and r["lse_mean"] is None  # NaN (null in JSON), not a made-up 0.0
        assert not r["entropies"]
    for s in (1, 3, 4):
        for r in by_step[s]:
            assert r["entropy_mean"] > 0 and np.isfinite(r["lse_mean"])
    assert all(r["entropies"] for r in by_step[3] + by_step[4])  # profiles requested after the NaN step


def test_cheap_stats_leave_out_masked_rows_and_never_make_up_a_zero():
    from artent_fast.attention.channel import cheap_stats

    inf = float("inf")
    got = cheap_stats({"lse": torch.tensor([1.0, -inf, 3.0]), "entropy": torch.tensor([0.5, 0.0, 1.5])})
    assert got["entropy_mean"].item() == 1.0 and got["lse_mean"].item() == 2.0  # a masked row is left out
    for lse, ent in [([1.0, float("nan")], [0.5, 0.5]), ([1.0, inf], [0.5, 0.5]), ([1.0, 2.0], [0.5, float("nan")])]:
        got = cheap_stats({"lse": torch.tensor(lse), "entropy": torch.tensor(ent)})
        assert torch.isnan(got["entropy_mean"]) and torch.isnan(got["lse_mean"])
    got = cheap_stats({"lse": torch.tensor([-inf, -inf]), "entropy": torch.zeros(2)})
    assert torch.isnan(got["entropy_mean"])  # no live row: nothing to average
