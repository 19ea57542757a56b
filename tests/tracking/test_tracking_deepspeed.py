"""DeepSpeed ZeRO-3 (CPU accelerator, gloo, 2 ranks under torchrun): factored adapters tracked exactly.

DeepSpeed is in the ``dev`` extra (``deepspeed``); it is not imported here (its accelerator detection runs
at import): the workers import it with ``DS_ACCELERATOR=cpu``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from artent_fast.tracking import read_history

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (dev extra)")

WORKER = Path(__file__).with_name("dist_deepspeed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def torchrun(out: Path, kind: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(WORKER), str(out), kind]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lora", "loha", "trainer"])
def test_zero3_factored_adapters_match_the_float64_change(tmp_path, kind):
    res = torchrun(tmp_path, kind)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    history = read_history(tmp_path / "history.jsonl")
    last = {r["module"]: r for r in history if r["step"] == 3}
    for rank in (0, 1):  # every rank computed the same reference from its own gathered factors
        reference = json.loads((tmp_path / f"reference{rank}.json").read_text())
        assert set(last) == set(reference)
        for module, want in reference.items():
            assert last[module]["entropies"] == pytest.approx(want, abs=1e-6), module
            assert last[module]["update"] == "BA"
    if kind == "trainer":  # the HF Trainer's own DeepSpeed path: the callback's scalars in its logs, every step
        assert len(json.loads((tmp_path / "logged0.json").read_text())) == 3


@pytest.mark.slow
def test_zero3_dense_updates_are_refused_with_the_reason(tmp_path):
    res = torchrun(tmp_path, "dora")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    text = (tmp_path / "refused0.txt").read_text()
    assert "ZeRO-3" in text and "dense" in text and "q_proj" in text
