"""Hub-cache snapshots, one odd tensor, sweeps sharing an --out, bench arguments, tensor kinds the
profile functions refuse by name, non-finite inputs named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from artent_fast.cli import main  # noqa: E402
from artent_fast.sweep import read_table  # noqa: E402
from tests.sweep.test_sweep_hardening import write_adapter  # noqa: E402
from tests.test_sweep_helpers import model_tensors, peft_config, ref, rows_by_module, save  # noqa: E402

ATOL = 2e-5
SHAPES = {"self_attn.q_proj": (8, 12), "self_attn.v_proj": (4, 12)}


def sweep(*args: str) -> int:
    return main(["sweep", "--no-progress", *args])


def hub_snapshot(hub: Path, repo: str, source: Path) -> Path:
    """The Hugging Face hub cache's layout: every file of ``source`` moved to ``blobs/<sha256>`` (no suffix)
    and linked from ``snapshots/<rev>/<name>`` by a relative link."""
    root = hub / f"models--org--{repo}"
    (root / "blobs").mkdir(parents=True)
    snap = root / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        file.replace(root / "blobs" / digest)
        (snap / file.name).symlink_to(f"../../blobs/{digest}")
    return snap


# ---------------------------------------------------------------- 1. hub-cache snapshots


@pytest.mark.parametrize("shards", [1, 2])
def test_hub_snapshot_with_suffixless_blobs_is_read_as_safetensors(tmp_path, rng, shards):
    base = model_tensors(rng, 1, SHAPES)
    tuned = {k: v + torch.from_numpy(rng.standard_normal(tuple(v.shape))).float() for k, v in base.items()}
    save(tmp_path / "src_base", base, shards=shards)
    save(tmp_path / "src_tuned", tuned, shards=shards)
    snap_base = hub_snapshot(tmp_path / "hub", "base", tmp_path / "src_base")
    snap_tuned = hub_snapshot(tmp_path / "hub", "tuned", tmp_path / "src_tuned")
    out = tmp_path / "o"
    assert sweep("--base", str(snap_base), "--tuned", str(snap_tuned), "--out", str(out)) == 0
    got = rows_by_module(read_table(out))
    assert sorted(got) == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    for module, profile in got.items():
        dw = tuned[module + ".weight"].double() - base[module + ".weight"].double()
        np.testing.assert_allclose(profile, ref(dw), atol=ATOL)


def test_hub_snapshot_adapter_is_read_as_safetensors(tmp_path, rng):
    m, n = 8, 12
    modules = ["model.layers.0.self_attn.q_proj"]
    save(tmp_path / "src_base", {f"{k}.weight": torch.randn(m, n) for k in modules})
    factors = write_adapter(tmp_path / "src_adapter", modules, m, n, config=peft_config(2))
    snap_base = hub_snapshot(tmp_path / "hub", "base", tmp_path / "src_base")
    snap_adapter = hub_snapshot(tmp_path / "hub", "adapter", tmp_path / "src_adapter")
    out = tmp_path / "o"
    assert sweep("--base", str(snap_base), "--tuned", str(snap_adapter), "--out", str(out)) == 0
    (module,) = modules
    dw = factors[f"base_model.model.{module}.lora_B.weight"].double()
    dw = dw @ factors[f"base_model.model.{module}.lora_A.weight"].double()
    np.testing.assert_allclose(rows_by_module(read_table(out))[module], ref(dw), atol=ATOL)


def test_hub_snapshot_pickle_is_still_refused_without_allow_pickle(tmp_path, rng, capsys):
    (tmp_path / "src").mkdir()
    torch.save(model_tensors(rng, 1, SHAPES), tmp_path / "src" / "pytorch_model.bin")
    snap = hub_snapshot(tmp_path / "hub", "pickled", tmp_path / "src")
    assert sweep("--tuned", str(snap), "--out", str(tmp_path / "o")) != 0
    assert "--allow-pickle" in capsys.readouterr().err


def test_a_file_whose_name_says_nothing_is_read_by_its_header(tmp_path, rng):
    from artent_fast.checkpoints.reader import open_weights

    tensors = model_tensors(rng, 1, SHAPES)
    save(tmp_path, tensors)
    blob = tmp_path / "0123abcd"
    (tmp_path / "model.safetensors").replace(blob)
    weights = open_weights(blob)
    assert not weights.file_errors and sorted(weights.names()) == sorted(tensors)
    torch.testing.assert_close(weights.load("lm_head.weight"), tensors["lm_head.weight"])


# ---------------------------------------------------------------- 2. one odd tensor does not end the sweep


@pytest.mark.parametrize("odd", [(1, 1), (0, 12), (12, 0)])
def test_a_degenerate_matrix_is_one_error_and_the_good_rows_are_kept(tmp_path, rng, odd):
    tensors = model_tensors(rng, 1, SHAPES)
    tensors["model.layers.1.self_attn.q_proj.weight"] = torch.ones(odd)
    save(tmp_path / "m", tensors)
    out = tmp_path / "o"
    for _ in range(2):  # and again, resuming: the bad unit is redone and reported, the good ones skipped
        assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out)) == 1
        got = rows_by_module(read_table(out))
        assert sorted(got) == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
        for module, profile in got.items():
            np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL)
        (record,) = json.loads((out / "errors.json").read_text())
        assert record["file"] == str(tmp_path / "m" / "model.safetensors")
        assert record["tensor"] == "model.layers.1.self_attn.q_proj.weight"
        assert f"{odd[0]}x{odd[1]}" in record["error"]


# ---------------------------------------------------------------- 3. two sweeps into one --out


@pytest.mark.slow
def test_a_second_sweep_into_a_locked_out_is_refused_naming_the_holder(tmp_path, rng, capsys):
    import subprocess
    import sys

    save(tmp_path / "m", model_tensors(rng, 1, SHAPES))
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(120)",
            str(out / ".artent-sweep.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out {out}" in err[0] and "in use by another sweep" in err[0]
        assert f"process {holder.pid}" in err[0]
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out)) == 0  # released with its holder


def test_a_sweep_with_other_settings_is_refused_in_an_out_unless_asked(tmp_path, rng, capsys):
    tensors = model_tensors(rng, 1, SHAPES)
    save(tmp_path / "m", tensors)
    save(tmp_path / "m2", tensors)
    out = tmp_path / "o"
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out), "--alpha", "1") == 0
    first = read_table(out)
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out), "--alpha", "1") == 0  # same settings: resumes
    capsys.readouterr()
    for other in (["--alpha", "2"], ["--log-base", "2"], ["--target", "q_proj"], ["--tuned", str(tmp_path / "m2")]):
        assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out), *other) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "other settings" in err[0] and other[0].lstrip("-").split("-")[0] in err[0]
        assert read_table(out) == first  # untouched
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(out), "--alpha", "2", "--overwrite") == 0
    assert set(read_table(out)["entropy"]) != set(first["entropy"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["alpha"] == 2.0


def test_the_tracker_lock_names_the_holder(tmp_path):
    from artent_fast.tracking.records import HistoryFile, HistoryInUseError

    first = HistoryFile(tmp_path / "h.jsonl")
    try:
        with pytest.raises(HistoryInUseError, match=r"h\.jsonl is in use by another tracker \(this process holds"):
            HistoryFile(tmp_path / "h.jsonl")
    finally:
        first.close()


# ---------------------------------------------------------------- 4. artent bench arguments


@pytest.mark.parametrize("where", ["file", "under"])
def test_bench_out_on_or_under_a_file_is_one_line_exit_2(tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    assert main(["bench", "--tiny", "--device", "cpu", "--only", "eigvalsh", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out}" in err[0] and "Traceback" not in err[0]
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("only", [",", "", " , "])
def test_bench_only_naming_no_section_is_an_error(tmp_path, capsys, only):
    assert main(["bench", "--tiny", "--device", "cpu", "--only", only, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--only names no section" in err[0]
    assert not (tmp_path / "o" / "results.json").exists()


# ---------------------------------------------------------------- 5. tensors with no dense values, float8

KINDS = {
    "sparse_coo": lambda t: t.to_sparse(),
    "sparse_csr": lambda t: t.to_sparse_csr(),
    "sparse_csc": lambda t: t.to_sparse_csc(),
    "meta": lambda t: torch.empty_like(t, device="meta"),
    "float8_e4m3fn": lambda t: t.to(torch.float8_e4m3fn),
    "float8_e5m2": lambda t: t.to(torch.float8_e5m2),
}


def _refused(kind: str, name: str):
    what = {"meta": "meta device"}.get(kind, kind)
    return pytest.raises(TypeError, match=rf"^{name} (is a |is on the |has dtype torch\.){what}")


@pytest.mark.filterwarnings("ignore:Sparse CS. tensor support is in beta")
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_profile_functions_refuse_tensors_with_no_dense_values_by_name(kind):
    import artent_fast as af

    make = KINDS[kind]
    x, a, b = torch.randn(8, 12), torch.randn(2, 12), torch.randn(8, 2)
    with _refused(kind, "matrix"):
        af.entanglement_profile(make(x))
    with _refused(kind, "B"):
        af.lowrank_profile(make(b), a)
    with _refused(kind, "A"):
        af.lowrank_profile(b, make(a))
    q = torch.randn(1, 2, 16, 8)
    if kind.startswith("sparse") and kind != "sparse_coo":
        return  # CSR/CSC hold 2-D matrices only: no 4-D attention input of that kind exists
    for name, args in (("q", (make(q), q)), ("k", (q, make(q)))):
        with pytest.raises(TypeError, match=rf"^{name} "):
            af.attention_profile(*args, causal=True)


# ---------------------------------------------------------------- 6. non-finite inputs with check_finite=False


@pytest.mark.parametrize("method", ["naive", "sweep", "gram", "auto"])
def test_non_finite_input_without_the_scan_is_named_not_a_raw_solver_error(method):
    import artent_fast as af

    x = torch.randn(8, 12)
    x[1, 2], x[3, 3] = float("nan"), float("-inf")
    try:
        out = af.entanglement_profile(x, method=method, check_finite=False)
    except ValueError as exc:
        assert str(exc).startswith("matrix has 2 NaN or Inf entries (1 NaN, 0 +Inf, 1 -Inf; the first at index (1, 2))")
    else:  # a solver that does not fail returns NaN, never a made-up number
        assert bool(out.isnan().any())
    with pytest.raises(ValueError, match=r"^matrix has 2 NaN or Inf entries \(1 NaN"):
        af.entanglement_profile(x, method=method)


@pytest.mark.parametrize("which", ["A", "B"])
def test_non_finite_factor_without_the_scan_is_named(which):
    import artent_fast as af

    b, a = torch.randn(8, 2), torch.randn(2, 12)
    (a if which == "A" else b)[0, 1] = float("inf")
    try:
        out = af.lowrank_profile(b, a, check_finite=False)
    except ValueError as exc:
        assert str(exc).startswith(
            f"{which} has 1 NaN or Inf entries (0 NaN, 1 +Inf, 0 -Inf; the first at index (0, 1))"
        )
    else:
        assert bool(out.isnan().any())


def test_non_finite_attention_input_is_named():
    import artent_fast as af

    q, k = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    k[0, 1, 3, 1] = float("nan")
    try:
        out = af.attention_profile(q, k, causal=True)
    except ValueError as exc:
        assert str(exc).startswith(
            "k has 1 NaN or Inf entries (1 NaN, 0 +Inf, 0 -Inf; the first at index (0, 1, 3, 1))"
        )
    else:
        assert bool(out.isnan().any())


def test_a_solver_failure_on_finite_input_is_raised_as_it_was():
    from artent_fast.core.validate import naming_nonfinite

    with pytest.raises(RuntimeError, match="boom"), naming_nonfinite(x=torch.ones(2, 2)):
        raise RuntimeError("boom")
