"""experiments/paper_findings.py: the --quick run writes the whole report; run planning and options."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.models import tiny_llama_config

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
    for axis, values, key in (
        ("rank", s.ranks + [s.base_r], "r"),
        ("alpha", s.alphas + [s.base_alpha], "alpha"),
        ("lr", s.lrs + [s.base_lr], "lr"),
    ):
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
    for fig in (
        "internal_rank.png",
        "internal_alpha.png",
        "internal_lr.png",
        "internal_step_lora.png",
        "internal_step_fft.png",
        "external.png",
        "nohair.png",
        "loss.png",
    ):
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


def _real_quick(pf_main, model: str, out: Path, *extra: str) -> dict:
    pytest.importorskip("peft")
    pytest.importorskip("chatterbot_corpus")  # the real text
    pytest.importorskip("yaml")
    main_out = pf_main(["--quick", "--model", model, "--steps", "4", "--threads", "1", "--out", str(out), *extra])
    assert main_out == out
    return json.loads((out / "results.json").read_text())


def _check_real(results: dict, methods: set[str], seeds: int = 3) -> None:
    runs = results["runs"]
    assert {r["method"] for r in runs.values()} == methods
    assert results["top_view_max_diff"] < 1e-4  # the cached-prefix path gives the full model's logits
    for name, run in runs.items():
        assert sorted(run["seeds"]) == [str(s) for s in range(seeds)], name
        for entry in run["seeds"].values():
            assert len(entry["losses"]) == 4 and all(math.isfinite(x) for x in entry["losses"])
            final = entry["summary"][max(entry["summary"], key=int)]
            assert set(final) == {"q_proj", "v_proj"}
            if run["method"] == "lora":  # a rank-r update cannot exceed ln r at the row/column bond
                for kind, prof in entry["mean_final"].items():
                    rs = results["row_sites"][kind]
                    assert prof[rs - 1] <= math.log(run["r"]) + 1e-6, (name, kind)
    for f in results["findings"]:
        assert f["verdict"] in ("reproduced", "not reproduced", "inconclusive")
        assert len(f["per_seed"]) == seeds and f["criterion"] in results["criteria"].values()
        want = "reproduced" if all(f["per_seed"]) else "not reproduced" if not any(f["per_seed"]) else "inconclusive"
        assert f["verdict"] == want


def test_model_folder_runs_the_real_text_experiment(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = tiny_llama_config(vocab_size=96, num_attention_heads=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "model")
    pf = _script()
    results = _real_quick(pf.main, str(tmp_path / "model"), tmp_path / "report")
    _check_real(results, {"fft", "lora", "mps"})
    assert results["trained_layers"] == [1] and results["shapes"] == {"q_proj": [32, 32], "v_proj": [32, 32]}
    mps = next(r for r in results["runs"].values() if r["method"] == "mps")
    lora = next(r for r in results["runs"].values() if "base" in r["axes"])
    assert mps["seeds"]["0"]["trainable"] <= lora["seeds"]["0"]["trainable"]  # matched, never more
    keys = {f["key"] for f in results["findings"]}
    assert {"valley", "pinned", "rank", "cardy", "nohair", "mps"} <= keys
    assert len(results["nohair"]) == 3
    assert (tmp_path / "report" / "report.md").read_text().count("reproduced") >= 1


def test_gguf_file_runs_the_real_text_experiment(tmp_path):
    pytest.importorskip("gguf")
    from test_models_loader import tiny_llama, write_tiny_gguf

    folder = tmp_path / "g"
    folder.mkdir()
    write_tiny_gguf(folder / "tiny.gguf", tiny_llama(4))
    pf = _script()
    results = _real_quick(
        pf.main, str(folder / "tiny.gguf"), tmp_path / "report", "--methods", "lora,mps", "--seeds", "3"
    )
    _check_real(results, {"lora", "mps"})
    assert results["shapes"] == {"q_proj": [32, 32], "v_proj": [16, 32]}


def test_real_experiment_argument_errors(tmp_path):
    pf = _script()
    with pytest.raises(SystemExit):
        pf.main(["--quick", "--model", str(tmp_path), "--methods", "lora,dora", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        pf.main(["--quick", "--model", str(tmp_path), "--steps", "0", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="neither config.json"):
        pf.main(["--quick", "--model", str(tmp_path), "--out", str(tmp_path / "r")])


def test_real_plan_and_criteria_are_written_before_the_run():
    sys.path.insert(0, str(SCRIPT.parent))
    import real_findings as rf

    s = rf.settings(quick=False)
    runs = rf.plan_runs(s, ["fft", "lora", "mps"])
    ranks = sorted({r.r for r in runs if "rank" in r.axes})
    assert ranks[0] == 4 and ranks[-1] == 64 and len(s.seeds) >= 3
    assert {r.alpha for r in runs if "alpha" in r.axes} >= {4.0, 16.0, 64.0}
    assert len({r.lr for r in runs if "lr" in r.axes}) >= 3
    assert all(r.alpha / r.r == s.base_alpha / s.base_r for r in runs if "rank" in r.axes)
    assert rf.verdict([True, True, True]) == "reproduced" and rf.verdict([False] * 3) == "not reproduced"
    assert rf.verdict([True, False, True]) == "inconclusive"
    assert rf.spearman([1, 2, 3, 4], [0.1, 0.5, 0.7, 2.0]) == pytest.approx(1.0)
    assert rf.spearman([1, 2, 3], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
