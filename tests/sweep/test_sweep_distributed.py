"""`torchrun --nproc-per-node=2 -m artent_fast.sweep` on CPU (gloo): same table as one process, work split."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # torchrun launches
pytest.importorskip("safetensors")

from artent_fast.sweep import read_table, run_sweep  # noqa: E402
from artent_fast.testing.synthetic import make_synthetic  # noqa: E402
from tests.test_sweep_helpers import rows_by_module  # noqa: E402


def _torchrun(args: list[str], nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "artent_fast.sweep",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_gloo_two_ranks_match_single_process(tmp_path):
    paths = make_synthetic(tmp_path / "ck", scale="1/128", layers=4, steps=(10, 20), kinds=("full", "lora"))
    out = tmp_path / "dist"
    args = [
        "--base",
        str(paths["base"][0]),
        "--tuned",
        str(tmp_path / "ck" / "full"),
        "--tuned",
        str(tmp_path / "ck" / "lora"),
        "--out",
        str(out),
        "--batch",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    proc = _torchrun(args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[rank 0]" in proc.stderr and "[rank 1]" in proc.stderr
    # ranks share one stderr pipe: each rank's report must still stand on a line of its own
    ran = {int(rank): int(n) for rank, n in re.findall(r"^\[rank (\d+)\] units: (\d+) run", proc.stderr, re.M)}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world"] == 2 and set(ran) == {0, 1}, proc.stderr
    assert ran[0] > 0 and ran[1] > 0 and ran[0] + ran[1] == len(manifest["units"]), proc.stderr
    single = run_sweep(
        [tmp_path / "ck" / "full", tmp_path / "ck" / "lora"],
        tmp_path / "one",
        base=paths["base"][0],
        batch=2,
        progress=False,
        verbose=False,
        device="cpu",
    )
    assert single.ok
    a, b = read_table(out), read_table(tmp_path / "one")
    assert len(a["entropy"]) == len(b["entropy"]) > 0
    for ckpt in set(b["checkpoint"]):
        got, want = rows_by_module(a, ckpt), rows_by_module(b, ckpt)
        assert got.keys() == want.keys()
        for module in want:
            np.testing.assert_allclose(got[module], want[module], atol=1e-12, err_msg=f"{ckpt} {module}")
    # the same command again finds every unit finished on both ranks
    again = _torchrun(args)
    assert again.returncode == 0, again.stderr
    assert "units: 0 run" in again.stderr and len(read_table(out)["entropy"]) == len(b["entropy"])


def test_errors_reach_every_rank_exit_code(tmp_path):
    paths = make_synthetic(tmp_path / "ck", scale="1/128", layers=2, steps=(10,), kinds=("full",))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"garbage")
    proc = _torchrun(
        [
            "--base",
            str(paths["base"][0]),
            "--tuned",
            str(paths["full"][0]),
            "--tuned",
            str(broken),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert proc.returncode != 0
    assert "broken/model.safetensors: unreadable safetensors file" in proc.stderr
    assert len(rows_by_module(read_table(tmp_path / "o"))) == 4
