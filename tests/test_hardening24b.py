"""Issue 24, second part: an unreadable base reported once, FIFOs and link loops named, a full disk under
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
