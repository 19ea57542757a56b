"""`artent sweep`: rows equal the core profiles of the tensors; shards, adapters, resume, bad inputs, pickle."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from artent_fast import lowrank_profile, page_curve, prime_factors, random_lowrank_profile  # noqa: E402
from artent_fast.checkpoints.adapter import lora_scale  # noqa: E402
from artent_fast.checkpoints.names import is_target  # noqa: E402
from artent_fast.cli import main  # noqa: E402
from artent_fast.parallel import shard  # noqa: E402
from artent_fast.sweep import parse_layer, parse_step, read_table, run_sweep  # noqa: E402
from artent_fast.testing.models import moved, tiny_llama_config  # noqa: E402
from artent_fast.testing.synthetic import llama8b_shapes, make_synthetic, write_lora_adapter  # noqa: E402
from tests.test_sweep_helpers import model_tensors, peft_config, ref, rows_by_module, save  # noqa: E402

ATOL = 2e-5


def sweep(*args: str) -> int:
    return main(["sweep", "--no-progress", *args])


@pytest.mark.parametrize("shape_q,shape_v", [((16, 24), (8, 24)), ((12, 18), (6, 18)), ((32, 32), (10, 32))])
def test_single_model_rows_equal_reference_profiles(tmp_path, rng, shape_q, shape_v):
    tensors = model_tensors(
        rng, 3, {"self_attn.q_proj": shape_q, "self_attn.v_proj": shape_v, "self_attn.k_proj": shape_v}
    )
    save(tmp_path / "run" / "checkpoint-300", tensors)
    assert sweep("--tuned", str(tmp_path / "run" / "checkpoint-300"), "--out", str(tmp_path / "o"), "--batch", "2") == 0
    table = read_table(tmp_path / "o")
    units = json.loads((tmp_path / "o" / "manifest.json").read_text())["units"]
    assert sorted(len(u["modules"]) for u in units) == [1, 1, 2, 2]  # one shape per unit, batches of 2
    got = rows_by_module(table)
    assert sorted(got) == sorted(f"model.layers.{i}.self_attn.{p}" for i in range(3) for p in ("q_proj", "v_proj"))
    for module, profile in got.items():
        np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL, err_msg=module)
    assert set(table["step"]) == {300} and set(table["kind"]) == {"weight"}
    assert set(table["layer"]) == {0, 1, 2} and set(table["theory_kind"]) == {"page"}
    q_rows = [i for i, m in enumerate(table["module"]) if m == "model.layers.0.self_attn.q_proj"]
    np.testing.assert_allclose([table["theory"][i] for i in q_rows], page_curve(*shape_q).numpy(), rtol=1e-9)
    center = [table["bond"][i] for i in q_rows if table["row_col_bond"][i]]
    assert center == [len(prime_factors(shape_q[0]))]  # the row/column bond, 1-based


def test_dense_update_against_sharded_base_all_linear(tmp_path, rng):
    shapes = {
        "self_attn.q_proj": (16, 16),
        "self_attn.o_proj": (16, 16),
        "mlp.up_proj": (28, 16),
        "mlp.down_proj": (16, 28),
    }
    base = model_tensors(rng, 2, shapes, dtype=torch.bfloat16)
    tuned = {
        k: (v.float() + 0.1 * torch.from_numpy(rng.standard_normal(v.shape)).float()).to(torch.bfloat16)
        if v.ndim == 2
        else v
        for k, v in base.items()
    }
    save(tmp_path / "base", base, shards=3)
    save(tmp_path / "ft" / "checkpoint-20", tuned, shards=2)
    save(tmp_path / "ft" / "checkpoint-100", base, shards=1)  # an untouched checkpoint: dW = 0
    code = sweep(
        "--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "ft"), "--out", str(tmp_path / "o"), "--all-linear"
    )
    assert code == 0
    table = read_table(tmp_path / "o")
    assert set(table["kind"]) == {"dW"} and sorted(set(table["step"])) == [20, 100]
    got = rows_by_module(table, str(tmp_path / "ft" / "checkpoint-20"))
    assert len(got) == 8  # embeddings, norms and lm_head are not linear targets
    for module, profile in got.items():
        dw = tuned[module + ".weight"].float() - base[module + ".weight"].float()
        np.testing.assert_allclose(profile, ref(dw), atol=ATOL, err_msg=module)
    zero = rows_by_module(table, str(tmp_path / "ft" / "checkpoint-100"))
    assert all(np.isnan(p).all() for p in zero.values())  # a zero update has no state: NaN by policy


@pytest.mark.parametrize("fan_in_fan_out", [False, True])
def test_adapter_rows_equal_lowrank_profile(tmp_path, rng, fan_in_fan_out):
    m, n, r = 24, 16, 3
    base_shape = (n, m) if fan_in_fan_out else (m, n)
    base = model_tensors(rng, 2, {"self_attn.q_proj": base_shape, "self_attn.v_proj": base_shape})
    save(tmp_path / "base", base)
    factors = {}
    for layer in range(2):
        for p in ("q_proj", "v_proj"):
            mod = f"model.layers.{layer}.self_attn.{p}"
            rank = 5 if (p == "v_proj" and layer == 1) else r
            factors[f"base_model.model.{mod}.lora_A.weight"] = torch.from_numpy(rng.standard_normal((rank, n))).float()
            factors[f"base_model.model.{mod}.lora_B.weight"] = torch.from_numpy(rng.standard_normal((m, rank))).float()
    save(tmp_path / "adapter", factors, stem="adapter_model")
    config = peft_config(
        r, fan_in_fan_out=fan_in_fan_out, rank_pattern={"layers.1.self_attn.v_proj": 5}, alpha_pattern={"v_proj": 4}
    )
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    code = sweep("--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "adapter"), "--out", str(tmp_path / "o"))
    assert code == 0
    table = read_table(tmp_path / "o")
    got = rows_by_module(table)
    assert len(got) == 4 and set(table["kind"]) == {"lora"}
    for module, profile in got.items():
        B = factors[f"base_model.model.{module}.lora_B.weight"].double()
        A = factors[f"base_model.model.{module}.lora_A.weight"].double()
        dw = B @ A
        if fan_in_fan_out:
            dw = dw.T
        np.testing.assert_allclose(profile, ref(dw), atol=ATOL, err_msg=module)
        np.testing.assert_allclose(
            profile, lowrank_profile(*((A.T, B.T) if fan_in_fan_out else (B, A))).numpy(), atol=ATOL
        )
        rank = B.shape[1]
        rows = [i for i, mod in enumerate(table["module"]) if mod == module]
        assert {table["rank"][i] for i in rows} == {rank}
        expect = random_lowrank_profile(*base_shape, rank, method="analytic").numpy()
        np.testing.assert_allclose([table["theory"][i] for i in rows], expect, rtol=1e-9)


def test_lora_scale_patterns_and_rslora():
    cfg = peft_config(8, lora_alpha=16, rank_pattern={"v_proj": 4}, alpha_pattern={"layers.3.self_attn.q_proj": 2})
    assert lora_scale(cfg, "model.layers.0.self_attn.q_proj") == (8, 16.0, 2.0)
    assert lora_scale(cfg, "model.layers.3.self_attn.q_proj") == (8, 2.0, 0.25)
    assert lora_scale(cfg, "model.layers.0.self_attn.v_proj") == (4, 16.0, 4.0)
    assert lora_scale(cfg, "model.layers.0.self_attn.xv_proj")[0] == 8  # a dotted suffix, not a substring
    assert lora_scale({**cfg, "use_rslora": True}, "model.layers.0.self_attn.q_proj")[2] == pytest.approx(16 / 8**0.5)


def test_real_peft_adapter_matches_delta_weight(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_llama_config(intermediate_size=48))
    model.save_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True)
    pm = peft.get_peft_model(model, lora)
    moved(pm)  # as after training: B != 0
    pm.save_pretrained(tmp_path / "adapter")
    assert (
        sweep("--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "adapter"), "--out", str(tmp_path / "o")) == 0
    )
    got = rows_by_module(read_table(tmp_path / "o"))
    assert len(got) == 4
    for name, module in pm.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and hasattr(module, "get_delta_weight"):
            key = name.removeprefix("base_model.model.")
            np.testing.assert_allclose(got[key], ref(module.get_delta_weight("default").detach()), atol=ATOL)


# The sweep's CLI with each part write slowed down (patched in the child, as monkeypatch would), so the
# test can kill it mid-way deterministically; with delay 0 it is the plain CLI.
_SLOW_SWEEP = """
import sys, time
import artent_fast.sweep.runner as runner
delay = float(sys.argv[1])
real = runner.write_part
def slow(*args, **kwargs):
    real(*args, **kwargs)
    time.sleep(delay)
runner.write_part = slow
from artent_fast.cli.sweep import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    make_synthetic(tmp_path / "ck", scale="1/128", layers=6, steps=(10,), kinds=("lora",))
    cli = [
        "--tuned",
        str(tmp_path / "ck" / "lora"),
        "--base",
        str(tmp_path / "ck" / "base"),
        "--out",
        str(tmp_path / "o"),
        "--batch",
        "1",
        "--no-progress",
    ]
    args = [sys.executable, "-c", _SLOW_SWEEP, "0.25", *cli]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = tmp_path / "o" / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.json")}
    assert 3 <= len(done_before) < 12, "the run should have been killed mid-way"
    assert not (tmp_path / "o" / "sweep.parquet").exists()
    rerun = subprocess.run(
        [sys.executable, "-m", "artent_fast.sweep", *cli], env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"skips {len(done_before)} finished" in rerun.stderr
    for name, mtime in done_before.items():  # finished parts were not redone
        assert (parts / name).stat().st_mtime_ns == mtime
    table = read_table(tmp_path / "o")
    got = rows_by_module(table)  # asserts every (module, bond) row appears once
    assert len(got) == 12 and len(table["entropy"]) == 6 * 9 + 6 * 7  # q 32x32: 9 bonds, v 8x32: 7 bonds
    fresh = run_sweep(
        [tmp_path / "ck" / "lora"], tmp_path / "o2", base=tmp_path / "ck" / "base", progress=False, verbose=False
    )
    assert fresh.ok
    again = rows_by_module(read_table(tmp_path / "o2"))
    for module, profile in got.items():
        np.testing.assert_allclose(profile, again[module], atol=1e-12)


def test_bad_inputs_are_listed_and_the_rest_goes_on(tmp_path, rng, capsys):
    shapes = {"self_attn.q_proj": (8, 16), "self_attn.v_proj": (4, 16)}
    base = model_tensors(rng, 3, shapes)
    save(tmp_path / "base", base)
    tuned = dict(base)
    tuned = {k: v + 1 if v.ndim == 2 else v for k, v in base.items()}
    del tuned["model.layers.1.self_attn.q_proj.weight"]  # missing tensor
    tuned["model.layers.2.self_attn.v_proj.weight"] = torch.randn(4, 8)  # mismatched shape
    save(tmp_path / "t1", tuned)
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    adapter = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(2, 12),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(8, 2),
    }
    save(tmp_path / "t3", adapter, stem="adapter_model")
    (tmp_path / "t3" / "adapter_config.json").write_text(json.dumps(peft_config(2)))
    code = sweep(
        "--base",
        str(tmp_path / "base"),
        "--tuned",
        str(tmp_path / "t1"),
        "--tuned",
        str(tmp_path / "t2"),
        "--tuned",
        str(tmp_path / "t3"),
        "--out",
        str(tmp_path / "o"),
    )
    err = capsys.readouterr().err
    assert code == 1
    errors = json.loads((tmp_path / "o" / "errors.json").read_text())
    assert len(errors) == 4, errors
    text = "\n".join(f"{e['file']} [{e['tensor']}] {e['error']}" for e in errors)
    assert "t1 [model.layers.1.self_attn.q_proj.weight] missing tensor" in text
    assert "model.layers.2.self_attn.v_proj.weight] shape (4, 8) does not match" in text
    assert "t2/model.safetensors [None] unreadable safetensors file" in text
    assert "does not match the base weight model.layers.0.self_attn.q_proj.weight" in text
    assert "4 error(s)" in err and "missing tensor" in err
    got = rows_by_module(read_table(tmp_path / "o"))
    assert sorted(got) == sorted(
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.v_proj",
            "model.layers.2.self_attn.q_proj",
        ]
    )


def test_nonfinite_tensor_is_an_error_naming_it(tmp_path, rng):
    tensors = model_tensors(rng, 2, {"self_attn.q_proj": (8, 8)})
    tensors["model.layers.1.self_attn.q_proj.weight"][3, 3] = float("nan")
    save(tmp_path / "m", tensors)
    result = run_sweep([tmp_path / "m"], tmp_path / "o", progress=False, verbose=False)
    assert [(e["tensor"], e["error"]) for e in result.errors] == [
        ("model.layers.1.self_attn.q_proj.weight", "NaN or Inf entries")
    ]
    assert list(rows_by_module(read_table(tmp_path / "o"))) == ["model.layers.0.self_attn.q_proj"]


def test_pickle_only_behind_the_flag(tmp_path, rng, capsys):
    tensors = model_tensors(rng, 2, {"self_attn.q_proj": (8, 12)})
    (tmp_path / "m").mkdir()
    torch.save(tensors, tmp_path / "m" / "pytorch_model.bin")
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(tmp_path / "o")) == 1
    assert "--allow-pickle" in capsys.readouterr().err
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(tmp_path / "o2"), "--allow-pickle") == 0
    got = rows_by_module(read_table(tmp_path / "o2"))
    for module, profile in got.items():
        np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL)


def test_csv_output_equals_parquet(tmp_path, rng):
    pytest.importorskip("pyarrow")
    save(tmp_path / "m", model_tensors(rng, 2, {"self_attn.q_proj": (6, 10), "self_attn.v_proj": (6, 10)}))
    run_sweep([tmp_path / "m"], tmp_path / "a", progress=False, verbose=False)
    run_sweep([tmp_path / "m"], tmp_path / "b", progress=False, verbose=False, table_format="csv")
    a, b = read_table(tmp_path / "a" / "sweep.parquet"), read_table(tmp_path / "b" / "sweep.csv")
    assert a.keys() == b.keys()
    for col in a:
        if col in ("entropy", "theory"):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-12)
        else:
            assert a[col] == b[col], col


def test_targets_and_names():
    assert is_target("model.layers.0.self_attn.q_proj", ["q_proj", "v_proj"])
    assert not is_target("model.layers.0.self_attn.k_proj", ["q_proj", "v_proj"])
    assert is_target("model.layers.0.mlp.down_proj", None) and not is_target("model.embed_tokens", None)
    assert not is_target("lm_head", None) and not is_target("model.layers.0.input_layernorm", None)
    assert parse_step("runs/a/checkpoint-500") == 500 and parse_step("global_step1200") == 1200
    assert parse_step("final") is None
    assert parse_layer("model.layers.12.self_attn.q_proj") == 12 and parse_layer("transformer.h.3.attn") == 3
    assert parse_layer("lm_head") is None


def test_greedy_sharding_longest_first():
    costs = [5.0, 1.0, 9.0, 3.0, 3.0, 7.0, 2.0]
    parts = shard(costs, 3)
    assert sorted(i for p in parts for i in p) == list(range(len(costs)))
    loads = [sum(costs[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(costs)  # LPT bound
    assert [p[0] for p in parts] == [2, 5, 0]  # the three longest start first, one per rank
    assert shard(costs, 1) == [sorted(range(7), key=lambda i: -costs[i])]


def test_synthetic_llama8b_shapes(tmp_path):
    full = llama8b_shapes()
    assert len(full) == 32 * 7
    assert full["model.layers.0.self_attn.q_proj.weight"] == (4096, 4096)
    assert full["model.layers.31.self_attn.k_proj.weight"] == (1024, 4096)
    assert full["model.layers.5.mlp.gate_proj.weight"] == (14336, 4096)
    assert full["model.layers.5.mlp.down_proj.weight"] == (4096, 14336)
    small = llama8b_shapes("1/16", layers=2)
    assert small["model.layers.1.mlp.up_proj.weight"] == (896, 256)
    with pytest.raises(ValueError, match="scale"):
        llama8b_shapes("1/3")
    folder = write_lora_adapter(
        tmp_path / "a", {"model.layers.0.self_attn.q_proj.weight": (8, 4)}, rank=2, lora_alpha=4, fan_in_fan_out=True
    )
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert f.get_slice("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").get_shape() == [2, 8]


def test_memory_report_and_largest_matrix(tmp_path, rng):
    save(tmp_path / "m", model_tensors(rng, 2, {"self_attn.q_proj": (64, 32)}, dtype=torch.bfloat16))
    result = run_sweep([tmp_path / "m"], tmp_path / "o", progress=False, verbose=False)
    assert result.largest_matrix == 64 * 32 * 2 and result.peak_rss >= result.start_rss > 0
    assert result.io_s >= 0 and result.compute_s > 0


def test_plot_from_sweep_table(tmp_path, rng):
    pytest.importorskip("matplotlib")
    from artent_fast.plotting.sweep import valley_depths

    make_synthetic(tmp_path / "ck", scale="1/128", layers=2, steps=(10, 30), kinds=("lora",))
    run_sweep([tmp_path / "ck" / "lora"], tmp_path / "o", progress=False, verbose=False)
    assert main(["plot", "--in", str(tmp_path / "o"), "--out", str(tmp_path / "fig")]) == 0
    names = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert "valley_depth.png" in names and any(n.startswith("heatmap_q_proj") for n in names)
    assert any(n.startswith("profiles_v_proj") for n in names)
    table = read_table(tmp_path / "o")
    depths = valley_depths(table)
    rows = [
        i
        for i, (m, s) in enumerate(zip(table["module"], table["step"], strict=True))
        if m == "model.layers.0.self_attn.q_proj" and s == 30
    ]
    c = next(table["bond"][i] for i in rows if table["row_col_bond"][i])
    s = {table["bond"][i]: table["entropy"][i] for i in rows}
    layer1 = [
        i
        for i, (m, st) in enumerate(zip(table["module"], table["step"], strict=True))
        if m == "model.layers.1.self_attn.q_proj" and st == 30
    ]
    s1 = {table["bond"][i]: table["entropy"][i] for i in layer1}
    expect = ((s[c - 1] + s[c + 1]) / 2 - s[c] + (s1[c - 1] + s1[c + 1]) / 2 - s1[c]) / 2
    assert dict(depths[("q_proj", "lora")])[30] == pytest.approx(expect)
    assert math.isfinite(expect)


def test_prefetch_thread_gives_the_same_rows(tmp_path, rng):
    shapes = {"self_attn.q_proj": (12, 20), "self_attn.v_proj": (4, 20)}
    base = model_tensors(rng, 3, shapes)
    save(tmp_path / "base", base)
    save(tmp_path / "t", {k: v + 0.5 * torch.randn_like(v) if v.ndim == 2 else v for k, v in base.items()})
    kwargs = {"base": tmp_path / "base", "batch": 1, "progress": False, "verbose": False}
    assert run_sweep([tmp_path / "t"], tmp_path / "a", prefetch=True, **kwargs).ok
    assert (
        sweep(
            "--base",
            str(tmp_path / "base"),
            "--tuned",
            str(tmp_path / "t"),
            "--out",
            str(tmp_path / "b"),
            "--batch",
            "1",
            "--no-prefetch",
        )
        == 0
    )
    a, b = rows_by_module(read_table(tmp_path / "a")), rows_by_module(read_table(tmp_path / "b"))
    assert a.keys() == b.keys() and len(a) == 6
    for module in a:
        np.testing.assert_array_equal(a[module], b[module])


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_failing_unit_is_reported_and_the_rest_goes_on(tmp_path, rng, monkeypatch, prefetch):
    import artent_fast.sweep.compute as compute

    save(tmp_path / "m", model_tensors(rng, 2, {"self_attn.q_proj": (8, 8), "self_attn.v_proj": (4, 8)}))
    real = compute.entanglement_profile

    def flaky(x, **kw):
        if x.shape[-2] == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(x, **kw)

    monkeypatch.setattr(compute, "entanglement_profile", flaky)
    result = run_sweep([tmp_path / "m"], tmp_path / "o", progress=False, verbose=False, prefetch=prefetch)
    assert len(result.errors) == 1 and "out of memory (simulated)" in result.errors[0]["error"]
    assert sorted(rows_by_module(read_table(tmp_path / "o"))) == [f"model.layers.{i}.self_attn.q_proj" for i in (0, 1)]
    monkeypatch.setattr(compute, "entanglement_profile", real)  # fixed: the rerun redoes only the failed unit
    again = run_sweep([tmp_path / "m"], tmp_path / "o", progress=False, verbose=False, prefetch=prefetch)
    assert again.ok and again.ran == 1 and again.skipped == 1
    assert len(rows_by_module(read_table(tmp_path / "o"))) == 4


_MEMORY_SCRIPT = """
import sys
from artent_fast.sweep import run_sweep
from artent_fast.sweep.memory import current_rss_bytes, peak_rss_bytes, reset_peak
warm, big, out = sys.argv[1:4]
assert run_sweep([warm], out + "_warm", batch=1, progress=False, verbose=False).ok
reset_peak()  # where unsupported the warm-up's peak counts too: the bound is only harder to meet
baseline = current_rss_bytes()
result = run_sweep([big], out, batch=1, progress=False, verbose=False)
assert result.ok, result.errors
print(peak_rss_bytes() - baseline, result.largest_matrix)
"""


@pytest.mark.slow
def test_peak_host_memory_stays_within_a_few_matrices(tmp_path, rng):
    shape, layers = (4096, 128), 24  # 2 MiB per float32 matrix, 96 MiB of targets in the model
    small = {f"model.layers.0.self_attn.{p}.weight": torch.randn(shape) for p in ("q_proj", "v_proj")}
    save(tmp_path / "warm", small)
    big = {
        f"model.layers.{i}.self_attn.{p}.weight": torch.from_numpy(rng.standard_normal(shape)).float()
        for i in range(layers)
        for p in ("q_proj", "v_proj")
    }
    save(tmp_path / "big", big, shards=2)
    del big
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "warm"), str(tmp_path / "big"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    growth, largest = map(int, proc.stdout.split())
    assert largest == 4096 * 128 * 4
    # batch 1: one matrix read, its float32 and float64 working copies and the core's temporaries (about 8
    # matrices measured), independent of the model's size (48 matrices here)
    assert growth < 16 * largest, f"peak RSS grew by {growth / 2**20:.0f} MiB for 2 MiB matrices (model: 96 MiB)"


def test_progress_fallback_prints_eta(monkeypatch, capsys):
    from artent_fast.sweep.progress import Progress

    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    bar = Progress(4, desc="sweep")
    assert bar._bar is None
    bar.update(1)
    bar.update(3)  # the last update always prints
    bar.close()
    err = capsys.readouterr().err
    assert "sweep: 4/4 (100%)" in err and "ETA 0s" in err


def test_duplicate_checkpoints_and_exclusive_options(tmp_path, rng, capsys):
    save(tmp_path / "m", model_tensors(rng, 1, {"self_attn.q_proj": (4, 6)}))
    assert sweep("--tuned", str(tmp_path / "m"), str(tmp_path / "m"), "--out", str(tmp_path / "o")) == 0
    assert len(read_table(tmp_path / "o")["entropy"]) == 3  # 4x6: 2*2 | 2*3 -> 4 sites, 3 bonds, once
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--all-linear", "--target", "x") == 2
    assert "exclusive" in capsys.readouterr().err
    assert sweep("--out", str(tmp_path / "o")) == 2


@pytest.mark.slow
def test_without_pyarrow_or_tqdm_the_table_is_csv(tmp_path, rng):
    tensors = model_tensors(rng, 2, {"self_attn.v_proj": (6, 12)})
    save(tmp_path / "m", tensors)
    script = (
        "import sys\nfor name in ('pyarrow', 'pyarrow.parquet', 'tqdm', 'tqdm.auto', 'pandas'):\n"
        "    sys.modules[name] = None\n"
        "from artent_fast.cli.sweep import main\n"
        f"sys.exit(main(['--tuned', {str(tmp_path / 'm')!r}, '--out', {str(tmp_path / 'o')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ETA" in proc.stderr and not (tmp_path / "o" / "sweep.parquet").exists()
    got = rows_by_module(read_table(tmp_path / "o"))
    assert len(got) == 2
    for module, profile in got.items():
        np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL)


@pytest.mark.parametrize("init", [False, "pissa", "olora", "loftq"])
def test_adapter_that_did_not_start_at_zero_is_refused(tmp_path, init, capsys):
    """An adapter whose config says it did not start at B = 0 cannot be profiled from its factors alone
    (the change since the start is s (B A - B0 A0)): one clear error naming the file and the setting."""
    from safetensors.torch import save_file

    folder = tmp_path / "adapter"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "init_lora_weights": init}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {
            "base_model.model.q_proj.lora_A.weight": torch.randn(2, 8),
            "base_model.model.q_proj.lora_B.weight": torch.randn(8, 2),
        },
        folder / "adapter_model.safetensors",
    )
    assert sweep("--tuned", str(folder), "--out", str(tmp_path / "o")) == 1  # a checkpoint error: no rows
    err = capsys.readouterr().err
    assert "adapter_config.json" in err and f"init_lora_weights={init!r}" in err and "did not start at zero" in err


@pytest.mark.parametrize("steps", [(10,), (10, 30)])
def test_valley_figure_is_bars_for_one_checkpoint_and_lines_with_a_layer_band_over_steps(tmp_path, steps):
    """One checkpoint (no step axis): one bar per module family, mean over layers, whiskers min-max (not
    dots at 'step 0'); several steps: one line per family with a min-max band over layers."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from artent_fast.plotting.sweep import _valley_figure, valley_depths_by_step

    make_synthetic(tmp_path / "ck", scale="1/128", layers=3, steps=steps, kinds=("lora",))
    run_sweep([tmp_path / "ck" / "lora"], tmp_path / "o", progress=False, verbose=False)
    depths = valley_depths_by_step(read_table(tmp_path / "o"))
    assert set(depths) == {("q_proj", "lora"), ("v_proj", "lora")}
    assert all(len(v) == 3 for per in depths.values() for v in per.values())  # one depth per layer
    fig = _valley_figure(plt, depths)
    ax = fig.axes[0]
    if len(steps) == 1:
        assert len(ax.patches) == 2 and not ax.get_legend()  # two bars, labelled on the axis
        assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["q_proj", "v_proj"]
        heights = sorted(p.get_height() for p in ax.patches)
        assert heights == pytest.approx(sorted(sum(v) / 3 for per in depths.values() for v in per.values()))
    else:
        assert len(ax.collections) == 2 and {line.get_label() for line in ax.lines} >= {
            "q_proj (lora)",
            "v_proj (lora)",
        }
    plt.close(fig)


def test_a_tracked_run_and_a_sweep_of_its_adapter_name_modules_alike(tmp_path):
    """One canonical module name (the base model's, artent_fast.patterns.module_name) in tracker histories
    and sweep tables, so the two join on ``module``, with the same profiles."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    import artent_fast

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_llama_config(intermediate_size=48))
    model.save_pretrained(tmp_path / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    tracker = artent_fast.track(pm, out=None, background=False)
    moved(pm)
    tracker.step()
    tracked = {r["module"]: r["entropies"] for r in tracker.history(as_frame=False)}
    tracker.close()
    pm.save_pretrained(tmp_path / "adapter")
    assert (
        sweep("--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "adapter"), "--out", str(tmp_path / "o")) == 0
    )
    swept = rows_by_module(read_table(tmp_path / "o"))
    assert set(tracked) == set(swept) and all(m.startswith("model.layers.") for m in tracked)
    for module, profile in tracked.items():
        np.testing.assert_allclose(swept[module], profile, atol=1e-6)
