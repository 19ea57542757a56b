"""experiments/paper_findings.py: the --quick run writes the whole report; run planning and options."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "paper_findings.py"


def _script():
    spec = importlib.util.spec_from_file_location("paper_findings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_plan_covers_every_sweep_once():
    pf = _script()
    s = pf.settings(quick=True, steps=None)
    runs = pf.plan_runs(s, ["fft", "lora", "mps"])
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    assert {r.method for r in runs} == {"fft", "lora", "mps"}
    base = [r for r in runs if "base" in r.axes]
    assert len(base) == 1 and set(base[0].axes) >= {"base", "rank", "alpha", "lr"}  # shared by all three sweeps
    for axis, values, key in (("rank", s.ranks + [s.base_r], "r"), ("alpha", s.alphas + [s.base_alpha], "alpha"),
                              ("lr", s.lrs + [s.base_lr], "lr")):
        assert sorted({getattr(r, key) for r in runs if axis in r.axes}) == sorted(set(values)), axis
    assert [r.method for r in pf.plan_runs(s, ["mps"])] == ["mps"]


def test_unknown_method_is_an_error(tmp_path):
    pf = _script()
    with pytest.raises(SystemExit):
        pf.main(["--quick", "--methods", "lora,dora", "--out", str(tmp_path)])


def test_quick_run_writes_the_report(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("matplotlib")
    pytest.importorskip("safetensors")
    pf = _script()
    threads = torch.get_num_threads()
    out = pf.main(["--quick", "--out", str(tmp_path / "report"), "--threads", "1", "--seed", "1"])
    assert torch.get_num_threads() == threads  # restored
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for section in ("## Findings", "## Runs", "## No-hair comparisons", "## Figures"):
        assert section in report
    for fig in ("internal_rank.png", "internal_alpha.png", "internal_lr.png", "internal_step_lora.png",
                "internal_step_fft.png", "external.png", "nohair.png", "loss.png"):
        assert (out / fig).stat().st_size > 5000, fig
        assert f"]({fig})" in report
    assert set(results["runs"]) == {r.name for r in pf.plan_runs(pf.settings(True, None), ["fft", "lora", "mps"])}
    claims = [f["claim"] for f in results["findings"]]
    assert any("valley" in c for c in claims) and any("Cardy" in c for c in claims)
    assert all(f["verdict"] in (True, False) for f in results["findings"])
    row_sites = results["layout"][2]
    for name, run in results["runs"].items():
        assert len(run["mean_final"]) == 11  # 64 x 64: 12 sites
        assert run["center"] == run["mean_final"][row_sites - 1]
        if run["method"] == "lora":  # a rank-r update cannot exceed ln r at the row/column bond
            assert run["center"] <= torch.log(torch.tensor(float(run["r"]))).item() + 1e-6, name
            assert run["tracker_max_diff"] is not None and run["tracker_max_diff"] < 1e-4, name
    assert results["runs"]["mps_r8_chi4"]["trainable"] < results["runs"]["lora_r8_a16_lr0.002"]["trainable"]
    assert len(results["nohair"]) == 3


def test_local_model_folder_and_method_subset(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("matplotlib")
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "model")
    pf = _script()
    out = pf.main(["--quick", "--model", str(tmp_path / "model"), "--methods", "lora,mps", "--steps", "4",
                   "--no-track", "--threads", "1", "--out", str(tmp_path / "report")])
    results = json.loads((out / "results.json").read_text())
    assert results["layout"][:2] == [32, 32]
    assert {r["method"] for r in results["runs"].values()} == {"lora", "mps"}
    assert all(len(r["losses"]) == 4 for r in results["runs"].values())
    assert "from " + str(tmp_path / "model") in results["description"]
    assert (out / "report.md").exists()
