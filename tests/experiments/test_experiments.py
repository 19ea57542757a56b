"""experiments/paper_findings.py: the --quick run writes the whole report; run planning and options."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from artent_fast.testing.models import moved, tiny_llama_config
from experiments import cardy, doc_blocks, findings, nulls, paper_findings, report, verdicts
from experiments.run_plan import plan_runs, runs_of
from experiments.settings import settings

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "paper_findings.py"


def test_plan_covers_every_sweep_once():
    pf = paper_findings
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
    pf = paper_findings
    with pytest.raises(SystemExit):
        pf.main(["--quick", "--methods", "lora,dora", "--out", str(tmp_path)])


@pytest.mark.slow
def test_quick_run_writes_the_report(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("matplotlib")
    pytest.importorskip("safetensors")
    pf = paper_findings
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
    assert {"valley", "floor", "rank", "alpha", "lr", "fft", "cardy", "nohair", "mps"} <= {
        f["key"] for f in results["findings"]
    }
    v = verdicts  # one seed: no seed spread, so nothing better than inconclusive
    assert all(f["verdict"] in (v.NOT_REPRODUCED, v.INCONCLUSIVE, v.PENDING) for f in results["findings"])
    assert all("null" in p or "note" in p for f in results["findings"] for p in f["parts"])
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
            assert set(entry["spectrum_null"]) == (set() if run["method"] == "fft" else {"q_proj", "v_proj"})
            if run["method"] == "lora":  # a rank-r update cannot exceed ln r at the row/column bond
                for kind, prof in entry["mean_final"].items():
                    rs = results["row_sites"][kind]
                    assert prof[rs - 1] <= math.log(run["r"]) + 1e-6, (name, kind)
                    assert max(entry["spectrum_null"][kind]["rank"]) <= run["r"]
    assert {"lowrank", "cardy"} <= set(results["nulls"])
    v = verdicts
    for f in results["findings"]:
        assert f["verdict"] in (v.REPRODUCED, v.NOT_REPRODUCED, v.INCONCLUSIVE, v.PENDING)
        assert f["criterion"] in results["criteria"].values() and f["source"] in ("paper", "ours")
        assert f["parts"], f["key"]
        for p in f["parts"]:  # every part has its null beside it, or says that it is pending
            assert p["verdict"] == v.PENDING or {"null", "null_sd", "noise", "effect"} <= set(p), (f["key"], p)
            if "effect" in p:
                assert p["noise"] > 0 and math.isfinite(p["effect"])
        if f["key"] in ("valley", "valley_spectrum", "floor", "fft", "cardy", "mps"):
            assert f["verdict"] == v.combine([p["verdict"] for p in f["parts"]])


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One quick real-text run on a tiny LLaMA folder (all methods, 3 seeds), shared by the tests below."""
    transformers = pytest.importorskip("transformers")
    tmp = tmp_path_factory.mktemp("real")
    cfg = tiny_llama_config(vocab_size=96, num_attention_heads=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp / "model")
    pf = paper_findings
    return pf, tmp, _real_quick(pf.main, str(tmp / "model"), tmp / "report")


@pytest.mark.slow
def test_model_folder_runs_the_real_text_experiment(real_run):
    pf, tmp, results = real_run
    _check_real(results, {"fft", "lora", "mps"})
    assert results["trained_layers"] == [1] and results["shapes"] == {"q_proj": [32, 32], "v_proj": [32, 32]}
    mps = next(r for r in results["runs"].values() if r["method"] == "mps")
    lora = next(r for r in results["runs"].values() if "base" in r["axes"])
    assert mps["seeds"]["0"]["trainable"] <= lora["seeds"]["0"]["trainable"]
    keys = {f["key"] for f in results["findings"]}
    assert {"valley", "valley_spectrum", "floor", "rank", "fft", "cardy", "nohair", "mps"} <= keys
    assert len(results["nohair"]) == 3
    # the same-method floor: every model of a pair against itself at another seed
    members = {n for pair in results["nohair"] for n in pair.split(" vs ")}
    assert set(results["nohair_floor"]) == members
    assert all(set(v) == {"0 vs 1", "0 vs 2", "1 vs 2"} for v in results["nohair_floor"].values())
    report = (tmp / "report" / "report.md").read_text()
    assert "| finding | source | criterion | effects (parts) | verdict |" in report


@pytest.mark.slow
def test_real_run_resumes_from_kept_runs(real_run, capsys):
    pf, tmp, results = real_run
    capsys.readouterr()
    again = _real_quick(pf.main, str(tmp / "model"), tmp / "report")
    printed = capsys.readouterr().out
    assert printed.count("kept from the previous run") == 24  # 8 runs x 3 seeds, none trained again
    for name, run in results["runs"].items():
        for seed, entry in run["seeds"].items():
            assert again["runs"][name]["seeds"][seed]["losses"] == entry["losses"], (name, seed)
    assert again["nohair"] == results["nohair"]


def _final(entry: dict) -> dict:
    return entry["summary"][max(entry["summary"], key=int)]


def _judged(results: dict, key: str) -> list[dict]:
    runs = runs_of(results)
    return [f for f in findings.findings(results, runs) if f["key"] == key]


def _gaps(results: dict, name: str, x: str, y: str) -> dict:
    return findings.stored_gaps(results["runs"][name]["seeds"][x], results["runs"][name]["seeds"][y])


def _null_equals_measurement(results: dict, key: str, effect: float) -> dict:
    """A copy of ``results`` where the measurements of finding ``key`` are set to their null (plus ``effect``
    when nonzero, with a little seed spread): effect 0 must never read as reproduced, a clear effect must."""
    import copy

    r = copy.deepcopy(results)
    if key == "fft":  # every LoRA run equal to the base one, FFT equal to it too (or clearly away)
        runs = r["runs"].values()
        base = next(run for run in runs if "base" in run["axes"])
        for run in runs:
            for s, entry in run["seeds"].items():
                for kind, v in _final(entry).items():
                    ref = _final(base["seeds"][s])[kind]
                    shift = effect if run["method"] == "fft" else 0.0
                    v.update(center=ref["center"] + shift, valley_depth=ref["valley_depth"] + shift)
        return r
    jitter = 0.01 if effect else 0.0
    lora = [run for run in r["runs"].values() if run["method"] == "lora"]
    for run in lora:
        for s, entry in run["seeds"].items():
            for kind, v in _final(entry).items():
                null = r["nulls"]["lowrank"][kind][str(run["r"])]
                v["valley_depth"] = statistics.fmean(null["depth"]) + effect + jitter * int(s)
                entry["spectrum_null"][kind]["depth"] = v["valley_depth"] - effect - jitter * int(s)
    base = next(run for run in lora if "base" in run["axes"])
    for pair, by_seed in r["nohair"].items():
        a, b = pair.split(" vs ")
        same = [_gaps(r, n, x, y) for n in (a, b) for x, y in (("0", "1"), ("0", "2"), ("1", "2"))]
        rel = statistics.fmean(v["summary"]["rel_distance"] for n in (a, b) for v in r["nohair_floor"][n].values())
        for s, v in by_seed.items():
            v["summary"].update(
                internal_gap=statistics.fmean(g["internal_gap"] for g in same) + effect + jitter * int(s),
                external_gap=statistics.fmean(g["external_gap"] for g in same),
                rel_distance=rel,
            )
    mps = next(run for run in r["runs"].values() if run["method"] == "mps")
    for s, entry in mps["seeds"].items():
        entry["eval_loss"] = r["base_eval_loss"] - effect - jitter * int(s)
    for entry in base["seeds"].values():
        entry["eval_loss"] = r["base_eval_loss"] - effect
    return r


@pytest.mark.slow
@pytest.mark.parametrize("key", ["valley", "valley_spectrum", "fft", "nohair", "mps"])
def test_null_equal_to_the_measurement_is_never_reproduced(real_run, key):
    v = verdicts
    found = _judged(_null_equals_measurement(real_run[2], key, effect=0.0), key)
    assert found
    for f in found:  # no-hair: the internal profiles do not differ beyond the floor, so the pair cannot test it
        want = v.INCONCLUSIVE if key == "nohair" else v.NOT_REPRODUCED
        assert f["verdict"] == want != v.REPRODUCED, (key, f["parts"])


@pytest.mark.slow
@pytest.mark.parametrize("key", ["valley", "valley_spectrum", "fft", "nohair", "mps"])
def test_a_clear_effect_is_reproduced(real_run, key):
    v = verdicts
    found = _judged(_null_equals_measurement(real_run[2], key, effect=5.0), key)
    assert found
    for f in found:
        assert f["verdict"] == v.REPRODUCED, (key, f["parts"])


@pytest.mark.slow
def test_cardy_against_a_null_equal_to_the_measurement(real_run):
    """Every run's external profile set to one profile P and the null set to P's own fit: not reproduced."""
    import copy

    v = verdicts
    results = copy.deepcopy(real_run[2])
    prof = [math.log(1 + l) for l in range(1, 32)]
    for run in results["runs"].values():
        for entry in run["seeds"].values():
            entry["external"] = {"1": [[prof]]}
    fit = cardy.cardy_forms(prof)
    results["nulls"]["cardy"] = {"same": {"r2": [fit["r2"]] * 4, "delta_aic": [fit["delta_aic"]] * 4}}
    (f,) = _judged(results, "cardy")
    assert f["verdict"] == v.NOT_REPRODUCED and all(p["effect"] == 0 for p in f["parts"])


@pytest.mark.slow
def test_gguf_file_runs_the_real_text_experiment(tmp_path):
    pytest.importorskip("gguf")
    from tests.integrations.test_models_loader import tiny_llama, write_tiny_gguf

    folder = tmp_path / "g"
    folder.mkdir()
    write_tiny_gguf(folder / "tiny.gguf", tiny_llama(4))
    pf = paper_findings
    results = _real_quick(
        pf.main, str(folder / "tiny.gguf"), tmp_path / "report", "--methods", "lora,mps", "--seeds", "3"
    )
    _check_real(results, {"lora", "mps"})
    assert results["shapes"] == {"q_proj": [32, 32], "v_proj": [16, 32]}


def test_real_experiment_argument_errors(tmp_path):
    pf = paper_findings
    with pytest.raises(SystemExit):
        pf.main(["--quick", "--model", str(tmp_path), "--methods", "lora,dora", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        pf.main(["--quick", "--model", str(tmp_path), "--steps", "0", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="neither config.json"):
        pf.main(["--quick", "--model", str(tmp_path), "--out", str(tmp_path / "r")])


def test_real_plan_and_criteria_are_written_before_the_run():
    s = settings(quick=False, pretrained=True)
    runs = plan_runs(s, ["fft", "lora", "mps"])
    ranks = sorted({r.r for r in runs if "rank" in r.axes})
    assert ranks[0] == 4 and ranks[-1] == 64 and len(s.seeds) >= 3
    assert {r.alpha for r in runs if "alpha" in r.axes} >= {4.0, 16.0, 64.0}
    assert len({r.lr for r in runs if "lr" in r.axes}) >= 3
    assert all(r.alpha / r.r == s.base_alpha / s.base_r for r in runs if "rank" in r.axes)
    assert set(findings.CRITERIA) >= {
        "valley",
        "valley_spectrum",
        "rank",
        "alpha",
        "lr",
        "fft",
        "cardy",
        "nohair",
        "mps",
    }
    ffts = sorted(r.lr for r in runs if r.method == "fft")
    assert ffts == [1e-4, 3e-4, 1e-3, 3e-3] and len({r.name for r in runs}) == len(runs)  # FFT at LoRA's loss
    long = plan_runs(settings(quick=False, long=True, pretrained=True), ["lora"])
    assert sorted(r.r for r in long) == [8, 64] and settings(False, long=True, pretrained=True).steps == 1000


def test_fft_at_matched_loss_is_the_one_compared():
    runs = plan_runs(settings(quick=False, pretrained=True), ["fft", "lora"])
    loss = {"fft_lr0.0001": 2.13, "fft_lr0.0003": 2.05, "fft_lr0.001": 1.96, "fft_lr0.003": 1.70}
    base = next(r.name for r in runs if "base" in r.axes)
    results = {"runs": {r.name: {"seeds": {"0": {"eval_loss": loss.get(r.name, 1.97)}}} for r in runs}}
    assert results["runs"][base]["seeds"]["0"]["eval_loss"] == 1.97
    assert findings.matched_fft(results, runs) == "fft_lr0.001"
    assert findings.nohair_pairs(runs, results)[0] == ("fft_lr0.001", base)


def test_verdict_rule():
    v = verdicts
    same = v.judge([1.0, 1.1, 0.9], [1.0, 1.1, 0.9], floor=0.05)
    assert same["effect"] == 0 and same["verdict"] == v.NOT_REPRODUCED
    clear = v.judge([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], floor=0.05)
    assert clear["effect"] == pytest.approx(1.0 / math.hypot(0.1, 0.1)) and clear["verdict"] == v.REPRODUCED
    assert v.judge([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], floor=0.05, direction=-1)["verdict"] == v.NOT_REPRODUCED
    assert v.judge([1.2, 1.3, 1.1], [1.0, 1.1, 0.9], floor=0.05)["verdict"] == v.INCONCLUSIVE  # effect 1.4
    assert v.judge([5.0], [1.0, 1.1, 0.9], floor=0.05)["verdict"] == v.INCONCLUSIVE  # one seed: at most this
    assert v.judge([5.0, 5.1], None, floor=0.05)["verdict"] == v.PENDING
    assert v.judge([1.0, 1.0], [1.0, 1.0], floor=0.05)["noise"] == 0.05  # never below the floor
    assert v.combine([v.REPRODUCED, v.REPRODUCED]) == v.REPRODUCED
    assert v.combine([v.REPRODUCED, v.NOT_REPRODUCED]) == v.INCONCLUSIVE
    assert v.combine([v.REPRODUCED, v.PENDING]) == v.PENDING
    flat = [[1.0, 1.05, 0.95], [1.0, 0.95, 1.05], [1.02, 0.98, 1.0]]
    assert v.dependence(flat, 0.05)["verdict"] == v.NOT_REPRODUCED
    steep = [[1.0, 1.05, 0.95], [2.0, 1.95, 2.05], [3.0, 3.05, 2.95]]
    assert v.dependence(steep, 0.05)["verdict"] == v.REPRODUCED


def test_nulls_of_random_matrices():
    """The nulls that made the old criteria pass by construction: a random rank-8 product has a deep valley
    (about 1.6 nats at 576 x 576), and random causal softmax matrices fit the Cardy form with r2 above 0.85."""
    null = nulls.lowrank_null(576, 576, 8, samples=4)
    assert 1.4 < statistics.fmean(null["depth"]) < 1.9
    assert statistics.fmean(null["center"]) == pytest.approx(math.log(8) - 8 / 576, abs=0.05)
    spec = nulls.spectrum_null([3.0, 2.0, 1.0, 0.5], 64, 64, samples=3)  # same spectrum: same centre entropy
    p = torch.tensor([9.0, 4.0, 1.0, 0.25], dtype=torch.float64) / 14.25
    assert spec["center"] == pytest.approx([float(-(p * p.log()).sum())] * 3, abs=1e-9)
    cn = nulls.cardy_null(64, 4, samples=3)
    assert statistics.fmean(cn["causal_softmax_1"]["r2"]) > 0.85 and set(cn) >= {"gaussian", "causal_softmax_2"}


def test_cardy_forms_open_and_periodic():
    """The open-chain and periodic forms share the regressor up to a constant: same r2, c_open = 2 c_periodic;
    a profile made by the open form is fitted exactly and preferred to the line."""
    import artent_fast

    n = 12
    prof = [(1.5 / 6) * math.log(2 * n / math.pi * math.sin(math.pi * k / n)) + 0.3 for k in range(1, n)]
    f = cardy.cardy_forms(prof)
    assert f["c_open"] == pytest.approx(1.5) and f["c_periodic"] == pytest.approx(0.75)
    assert f["r2"] == pytest.approx(1) and f["delta_aic"] > 0
    assert float(artent_fast.fit_cardy(torch.tensor(prof), boundary="open").c) == pytest.approx(1.5)
    assert float(artent_fast.fit_cardy(torch.tensor(prof)).r2) == pytest.approx(f["r2"])
    assert cardy.cardy_forms([0.1 * k for k in range(1, n)], edges=False)["delta_aic"] < 0


def test_docs_verdicts_come_from_results_json():
    """README and docs/findings.md carry the verdict lists generated from the committed results.json files
    (python experiments/real_report.py experiments/smollm2 --docs README.md docs/findings.md rewrites them)."""
    root = SCRIPT.parents[1]
    seen = set()
    for doc in ("README.md", "docs/findings.md"):
        blocks = doc_blocks.doc_blocks((root / doc).read_text())
        assert blocks, doc
        for path, text in blocks:
            results = json.loads((root / path).read_text())
            assert text == report.summary_markdown(results), (doc, path)
            seen.add(path)
    assert seen == {"experiments/smollm2/results.json", "experiments/tiny/results.json"}


def test_cardy_context_study_writes_fits_beside_nulls(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("chatterbot_corpus")
    pytest.importorskip("yaml")
    from experiments import cardy_context

    v = verdicts
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(tiny_llama_config(vocab_size=96, num_attention_heads=2)).save_pretrained(
        tmp_path / "m"
    )
    args = ["--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--lengths", "16,32", "--windows", "2"]
    cardy_context.main([*args, "--block", "1", "--samples", "2", "--threads", "1"])
    res = json.loads((tmp_path / "o" / "cardy_context.json").read_text())
    assert [s["t"] for s in res["lengths"]] == [16, 32]
    for s in res["lengths"]:
        assert len(s["block_fits"]) == 2 and set(s["block_fits"][0]) == {"edges", "no_edges"}
        for key in ("r2", "delta_aic"):
            j = s["block_verdicts"][key]
            assert j["null_name"] in s["null"]["block"] and j["verdict"] in (
                v.REPRODUCED,
                v.NOT_REPRODUCED,
                v.INCONCLUSIVE,
            )
    assert "| 32 |" in (tmp_path / "o" / "cardy_context.md").read_text()


def test_cardy_context_fine_tuned_block_equal_to_the_base_is_not_a_change():
    from experiments import cardy_context

    v = verdicts
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(1, 32, dtype=torch.float64)
    page = torch.log(torch.sin(math.pi * t / 32))
    base = [
        cardy_context.fits((page + 0.05 * torch.randn(31, generator=gen, dtype=torch.float64)).tolist())
        for _ in range(4)
    ]
    same = cardy_context.against_base([base, base, base], base)
    assert set(same) == {"r2", "delta_aic", "r2_no_edges", "delta_aic_no_edges"}
    assert all(j["verdict"] == v.NOT_REPRODUCED and j["effect"] < 1e-9 for j in same.values())
    # a block that became a volume law (a line) in every seed: the Cardy fit drops far beyond seed noise
    line = [
        [
            cardy_context.fits((0.1 * t + 0.05 * torch.randn(31, generator=gen, dtype=torch.float64)).tolist())
            for _ in range(4)
        ]
        for _ in range(3)
    ]
    for j in cardy_context.against_base(line, base).values():
        assert j["verdict"] == v.REPRODUCED and j["measured"] < j["null"]


def test_cardy_context_rebuilds_the_fine_tuned_models_from_their_state(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("chatterbot_corpus")
    pytest.importorskip("yaml")
    from dataclasses import asdict

    from experiments import cardy_context
    from experiments.measure import target_pattern
    from experiments.models import adapt, load_pretrained
    from experiments.pretrained import save_state
    from experiments.run_plan import Run

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(tiny_llama_config(vocab_size=96, num_attention_heads=2)).save_pretrained(
        tmp_path / "m"
    )
    out = tmp_path / "o"
    base, _, _ = load_pretrained(str(tmp_path / "m"))
    run = Run("lora_r2_a4_lr0.01", "lora", 0.01, r=2, alpha=4.0, axes=["base"])
    other = Run("lora_r4_a8_lr0.01", "lora", 0.01, r=4, alpha=8.0, axes=["rank"])
    pattern = target_pattern([1])
    for seed in (0, 1):
        save_state(out, run.name, seed, adapt(base, run, pattern, seed))  # untrained: B = 0, the base model
        trained = adapt(base, other, pattern, seed)
        moved(trained, seed)  # as if trained: the state must be loaded for the block to change
        save_state(out, other.name, seed, trained)
    results = {
        "model": str(tmp_path / "m"),
        "trained_layers": [1],
        "pattern": pattern,
        "settings": {"seeds": [0, 1]},
        "runs": {r.name: {**asdict(r), "seeds": {}} for r in (run, other)},
    }
    (out / "results.json").write_text(json.dumps(results))
    args = ["--model", str(tmp_path / "m"), "--out", str(out), "--lengths", "16,32", "--windows", "2"]
    cardy_context.main([*args, "--block", "1", "--samples", "2", "--runs", f"{run.name},{other.name}"])
    res = json.loads((out / "cardy_context.json").read_text())
    tuned = res["tuned"]
    assert list(tuned["runs"]) == [run.name, other.name] and tuned["top_view_max_diff"] < 1e-6
    for s, base_s in zip(tuned["runs"][run.name]["lengths"], res["lengths"], strict=True):
        assert len(s["block_fits"]) == 2 and len(s["block_fits"][0]) == 2  # seeds x windows
        assert all(j["verdict"] == verdicts.NOT_REPRODUCED for j in s["base_verdicts"].values())
        assert s["null_verdicts"]["r2"]["null_name"] in base_s["null"]["block"]
        assert torch.tensor(s["block_profiles"]).sub(torch.tensor(base_s["block_profiles"])).abs().max() < 1e-6
    for s, base_s in zip(tuned["runs"][other.name]["lengths"], res["lengths"], strict=True):
        assert torch.tensor(s["block_profiles"]).sub(torch.tensor(base_s["block_profiles"])).abs().max() > 1e-3
    assert "## The fine-tuned block" in (out / "cardy_context.md").read_text()
    with pytest.raises(SystemExit):
        cardy_context.main([*args, "--block", "1", "--samples", "2", "--runs", "fft"])
