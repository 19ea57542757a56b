"""Issue 11 for `artent sweep` / `artent plot`: nothing read outside the checkpoint folder, one bad input is one
error, resume never serves stale rows, task-head prefixes, bad arguments exit 2 with one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")

from artent_fast.checkpoints.confine import Escape, confine, roots_of  # noqa: E402
from artent_fast.cli import main  # noqa: E402
from artent_fast.sweep import read_table, run_sweep  # noqa: E402
from artent_fast.testing.models import moved  # noqa: E402
from tests.test_sweep_helpers import model_tensors, peft_config, ref, rows_by_module, save  # noqa: E402

ATOL = 2e-5
SHAPES = {"self_attn.q_proj": (8, 12), "self_attn.v_proj": (4, 12)}


def sweep(*args: str) -> int:
    return main(["sweep", "--no-progress", *args])


def errors_of(out: Path) -> list[dict]:
    return json.loads((out / "errors.json").read_text())


def write_adapter(
    folder: Path,
    modules: list[str],
    m: int,
    n: int,
    r: int = 2,
    config: dict | None = None,
    prefix: str = "base_model.model.",
) -> dict[str, torch.Tensor]:
    factors = {}
    for mod in modules:
        factors[f"{prefix}{mod}.lora_A.weight"] = torch.randn(r, n, dtype=torch.float64).float()
        factors[f"{prefix}{mod}.lora_B.weight"] = torch.randn(m, r, dtype=torch.float64).float()
    save(folder, factors, stem="adapter_model")
    (folder / "adapter_config.json").write_text(json.dumps(config if config is not None else peft_config(r)))
    return factors


@pytest.fixture
def good(tmp_path, rng):
    """A good checkpoint swept beside each bad one: its rows must still be written."""
    tensors = model_tensors(rng, 1, SHAPES)
    save(tmp_path / "good", tensors)
    return tmp_path / "good", tensors


def assert_good_rows(out: Path, good) -> None:
    folder, tensors = good
    got = rows_by_module(read_table(out), str(folder))
    assert sorted(got) == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    for module, profile in got.items():
        np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL)


class StatSpy:
    """Records every stat/lstat/open of a path under ``outside`` (the probe the issue forbids)."""

    def __init__(self, monkeypatch, outside: Path):
        self.outside, self.seen = str(outside), []
        for name in ("stat", "lstat", "open", "readlink"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real):
        def spy(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(self.outside):
                self.seen.append(os.fspath(path))
            return real(path, *args, **kwargs)

        return spy


# ---------------------------------------------------------------- security: only the checkpoint folder is read


@pytest.mark.parametrize(
    "entry",
    [
        "../outside/x.safetensors",
        "ABSOLUTE",
        "../../etc/passwd",
        "sub/../../outside/x.safetensors",
        "../outside/missing.safetensors",
    ],
)
def test_index_entry_leaving_the_folder_is_refused_before_it_is_touched(tmp_path, rng, good, monkeypatch, entry):
    outside = tmp_path / "outside"
    secret = model_tensors(rng, 1, SHAPES)
    save(outside, {k: v for k, v in secret.items()}, stem="x")  # a readable safetensors file outside
    if entry == "ABSOLUTE":
        entry = str(outside / "x.safetensors")
    ckpt = tmp_path / "evil"
    inside = model_tensors(rng, 1, SHAPES)
    save(
        ckpt,
        {"model.layers.0.self_attn.q_proj.weight": inside["model.layers.0.self_attn.q_proj.weight"]},
        stem="model-00001-of-00002",
    )
    weight_map = {
        "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.self_attn.v_proj.weight": entry,
    }
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    spy = StatSpy(monkeypatch, outside)
    code = sweep("--tuned", str(ckpt), "--tuned", str(good[0]), "--out", str(tmp_path / "o"))
    monkeypatch.undo()
    assert code == 1
    assert spy.seen == [], f"paths outside the checkpoint were probed: {spy.seen}"
    (err,) = errors_of(tmp_path / "o")
    assert err["file"].endswith("evil/model.safetensors.index.json")
    assert err["tensor"] == "model.layers.0.self_attn.v_proj.weight"
    assert "refused" in err["error"] and (
        "leaves the checkpoint folder" in err["error"] or "absolute path" in err["error"]
    )
    table = read_table(tmp_path / "o")
    assert str(ckpt) not in set(table["checkpoint"])  # nothing of the refused checkpoint, nothing from outside
    assert_good_rows(tmp_path / "o", good)


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_pickle_index_escape_is_refused_without_inviting_allow_pickle(tmp_path, rng, good, capsys, allow_pickle):
    outside = tmp_path / "outside"
    outside.mkdir()
    torch.save(model_tensors(rng, 1, SHAPES), outside / "pytorch_model.bin")
    ckpt = tmp_path / "evil"
    ckpt.mkdir()
    (ckpt / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"model.layers.0.self_attn.q_proj.weight": "../outside/pytorch_model.bin"}})
    )
    args = ["--tuned", str(ckpt), "--tuned", str(good[0]), "--out", str(tmp_path / "o")]
    assert sweep(*args, *(["--allow-pickle"] if allow_pickle else [])) == 1
    err = capsys.readouterr().err
    (record,) = errors_of(tmp_path / "o")
    assert record["file"].endswith("pytorch_model.bin.index.json") and "leaves the checkpoint folder" in record["error"]
    assert "--allow-pickle" not in record["error"] and "pass --allow-pickle" not in err
    assert_good_rows(tmp_path / "o", good)


def test_symlinked_weights_leaving_the_folder_are_refused(tmp_path, rng, good, monkeypatch):
    outside = tmp_path / "outside"
    save(outside, model_tensors(rng, 1, SHAPES))
    ckpt = tmp_path / "linked"
    ckpt.mkdir()
    (ckpt / "model.safetensors").symlink_to(outside / "model.safetensors")
    spy = StatSpy(monkeypatch, outside)
    code = sweep("--tuned", str(ckpt), "--tuned", str(good[0]), "--out", str(tmp_path / "o"))
    monkeypatch.undo()
    assert code == 1 and spy.seen == []
    (record,) = errors_of(tmp_path / "o")
    assert record["file"].endswith("linked/model.safetensors") and "symbolic link" in record["error"]
    assert_good_rows(tmp_path / "o", good)


def test_symlinks_inside_the_folder_and_hub_cache_blobs_are_read(tmp_path, rng):
    tensors = model_tensors(rng, 1, SHAPES)
    save(tmp_path / "m" / "real", tensors)
    (tmp_path / "m" / "model.safetensors").symlink_to("real/model.safetensors")  # inside: fine
    repo = tmp_path / "hub" / "models--org--tiny"
    save(repo / "blobs", tensors, stem="0123abcd")
    snap = repo / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to("../../blobs/0123abcd.safetensors")  # the hub cache's layout
    for folder in (tmp_path / "m", snap):
        out = tmp_path / f"o_{folder.name}"
        assert sweep("--tuned", str(folder), "--out", str(out)) == 0
        got = rows_by_module(read_table(out))
        assert len(got) == 2
        for module, profile in got.items():
            np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL)


def test_confine_resolves_links_and_refuses_every_way_out(tmp_path):
    root = tmp_path / "ck"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "up").symlink_to("..")
    (root / "abs_in").symlink_to(root / "sub")
    (root / "abs_out").symlink_to(tmp_path / "secret")
    (root / "loop").symlink_to("loop")
    roots = roots_of(root)
    assert confine(roots[0], "sub/../a.safetensors", roots) == root / "a.safetensors"
    assert confine(roots[0], "abs_in/x", roots) == root / "sub" / "x"
    assert confine(roots[0], "up/ck/x", roots) == root / "x"  # out and back in by a link: inside
    for bad in ("../x", "/etc/passwd", "up/secret/x", "abs_out/x", "sub/../../x", "loop", "", "a\x00b"):
        with pytest.raises(Escape):
            confine(roots[0], bad, roots)


def test_adapter_files_and_run_children_leaving_their_folder_are_refused(tmp_path, rng, good):
    outside = tmp_path / "outside"
    write_adapter(outside / "adapter", ["model.layers.0.self_attn.q_proj"], 8, 12)
    a1 = tmp_path / "a1"  # weights linked out
    a1.mkdir()
    (a1 / "adapter_config.json").write_text(json.dumps(peft_config()))
    (a1 / "adapter_model.safetensors").symlink_to(outside / "adapter" / "adapter_model.safetensors")
    a2 = tmp_path / "a2"  # config linked out
    write_adapter(a2, ["model.layers.0.self_attn.q_proj"], 8, 12)
    (a2 / "adapter_config.json").unlink()
    (a2 / "adapter_config.json").symlink_to(outside / "adapter" / "adapter_config.json")
    run = tmp_path / "run"  # a run folder whose checkpoint-20 is a link to a folder outside it
    save(run / "checkpoint-10", model_tensors(rng, 1, SHAPES))
    (run / "checkpoint-20").symlink_to(outside / "adapter")
    code = sweep(
        "--tuned",
        str(a1),
        "--tuned",
        str(a2),
        "--tuned",
        str(run),
        "--tuned",
        str(good[0]),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 1
    errors = errors_of(tmp_path / "o")
    assert len(errors) == 3, errors
    text = "\n".join(f"{e['file']} [{e['tensor']}] {e['error']}" for e in errors)
    assert "a1/adapter_model.safetensors [None]" in text and "a2/adapter_config.json [None]" in text
    assert "run [checkpoint-20]" in text and text.count("refused") == 3
    assert set(read_table(tmp_path / "o")["checkpoint"]) == {str(run / "checkpoint-10"), str(good[0])}
    assert_good_rows(tmp_path / "o", good)


# ---------------------------------------------------------------- one bad input is one error


BAD_CONFIGS = {
    "r0": ({"r": 0}, "'r'"),
    "list": ([1, 2], "JSON object"),
    "alpha_text": ({"lora_alpha": "sixteen"}, "'lora_alpha'"),
    "alpha_nan": ({"lora_alpha": float("nan")}, "'lora_alpha'"),
    "r_float": ({"r": 2.5}, "'r'"),
    "r_bool": ({"r": True}, "'r'"),
    "rank_pattern_regex": ({"rank_pattern": {"q_proj(": 2}}, "rank_pattern['q_proj(']"),
    "alpha_pattern_regex": ({"alpha_pattern": {"*": 2}}, "alpha_pattern['*']"),
    "rank_pattern_value": ({"rank_pattern": {"q_proj": -1}}, "rank_pattern['q_proj']"),
    "alpha_pattern_value": ({"alpha_pattern": {"q_proj": "x"}}, "alpha_pattern['q_proj']"),
    "rank_pattern_list": ({"rank_pattern": ["q_proj"]}, "'rank_pattern'"),
    "rslora_text": ({"use_rslora": "yes"}, "'use_rslora'"),
    "fan_in_fan_out_int": ({"fan_in_fan_out": 1}, "'fan_in_fan_out'"),
    "peft_type_int": ({"peft_type": 3}, "'peft_type'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_malformed_adapter_config_is_one_error_and_the_rest_is_swept(tmp_path, good, case):
    patch, key = BAD_CONFIGS[case]
    config = patch if isinstance(patch, list) else {**peft_config(2), **patch}
    write_adapter(tmp_path / "bad", ["model.layers.0.self_attn.q_proj"], 8, 12, config=config)
    code = sweep("--tuned", str(tmp_path / "bad"), "--tuned", str(good[0]), "--out", str(tmp_path / "o"))
    assert code == 1
    (err,) = errors_of(tmp_path / "o")
    assert err["file"].endswith("bad/adapter_config.json") and key in err["error"], err
    assert_good_rows(tmp_path / "o", good)


BAD_INDEXES = {
    "weight_map_list": ({"weight_map": ["model.safetensors"]}, "weight_map", "'weight_map'"),
    "weight_map_missing": ({"metadata": {}}, "weight_map", "missing"),
    "not_an_object": (["weight_map"], None, "JSON object"),
    "entry_int": (
        {"weight_map": {"model.layers.0.self_attn.q_proj.weight": 5}},
        "model.layers.0.self_attn.q_proj.weight",
        "must name a file",
    ),
    "entry_null": (
        {"weight_map": {"model.layers.0.self_attn.q_proj.weight": None}},
        "model.layers.0.self_attn.q_proj.weight",
        "must name a file",
    ),
    "entry_list": (
        {"weight_map": {"model.layers.0.self_attn.q_proj.weight": ["a.safetensors"]}},
        "model.layers.0.self_attn.q_proj.weight",
        "must name a file",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_malformed_index_is_one_error_and_the_rest_is_swept(tmp_path, rng, good, case):
    doc, key, words = BAD_INDEXES[case]
    save(tmp_path / "bad", model_tensors(rng, 1, SHAPES), stem="model-00001-of-00001")
    (tmp_path / "bad" / "model.safetensors.index.json").write_text(json.dumps(doc))
    code = sweep("--tuned", str(tmp_path / "bad"), "--tuned", str(good[0]), "--out", str(tmp_path / "o"))
    assert code == 1
    (err,) = errors_of(tmp_path / "o")
    assert err["file"].endswith("bad/model.safetensors.index.json") and err["tensor"] == key
    assert words in err["error"], err
    assert_good_rows(tmp_path / "o", good)


# ---------------------------------------------------------------- resume never serves stale rows


@pytest.mark.parametrize("what", ["weights", "base", "adapter"])
def test_checkpoint_rewritten_in_place_is_recomputed(tmp_path, rng, what):
    base = model_tensors(rng, 2, SHAPES)
    save(tmp_path / "base", base)
    if what == "adapter":
        mods = [f"model.layers.{i}.self_attn.q_proj" for i in range(2)]
        write_adapter(tmp_path / "t", mods, 8, 12)
        args = ["--base", str(tmp_path / "base")]
    else:
        save(tmp_path / "t", {k: v + 1 for k, v in base.items()})
        args = ["--base", str(tmp_path / "base")] if what == "base" else []
    out = tmp_path / "o"
    assert sweep("--tuned", str(tmp_path / "t"), "--out", str(out), *args) == 0
    units = len(json.loads((out / "manifest.json").read_text())["units"])
    # rewrite in place: same names and shapes (so the same file size), new values
    if what == "adapter":
        factors = write_adapter(tmp_path / "t", mods, 8, 12)
        want = {
            m: ref(
                factors[f"base_model.model.{m}.lora_B.weight"].double()
                @ factors[f"base_model.model.{m}.lora_A.weight"].double()
            )
            for m in mods
        }
    else:
        fresh = model_tensors(rng, 2, SHAPES)
        if what == "base":
            save(tmp_path / "base", fresh)
            want = {k[:-7]: ref(base[k] + 1 - fresh[k]) for k in fresh if "_proj" in k}
        else:
            save(tmp_path / "t", fresh)
            want = {k[:-7]: ref(fresh[k]) for k in fresh if "_proj" in k}
    result = run_sweep([tmp_path / "t"], out, base=tmp_path / "base" if args else None, progress=False, verbose=False)
    assert result.ok and result.skipped == 0 and result.ran == units
    got = rows_by_module(read_table(out))
    assert sorted(got) == sorted(want)
    for module, profile in got.items():
        np.testing.assert_allclose(profile, want[module], atol=ATOL, err_msg=module)
    again = run_sweep([tmp_path / "t"], out, base=tmp_path / "base" if args else None, progress=False, verbose=False)
    assert again.ran == 0 and again.skipped == units  # unchanged inputs: nothing redone


def sweep_query_value(base, tuned, out) -> int:
    """``artent sweep`` of the query and value projections of ``tuned`` against ``base``, into ``out``."""
    targets = ("--target", "query", "--target", "value")
    return sweep("--base", str(base), "--tuned", str(tuned), "--out", str(out), *targets)


def test_corrupt_or_wrong_shaped_parts_are_recomputed_and_crash_temps_removed(tmp_path, rng):
    tensors = model_tensors(rng, 3, SHAPES)
    save(tmp_path / "m", tensors)
    out = tmp_path / "o"
    first = run_sweep([tmp_path / "m"], out, batch=1, progress=False, verbose=False)
    assert first.ok and first.units == 6
    parts = sorted((out / "parts").glob("*.json"))
    assert len(parts) == 6
    parts[0].write_text('{"unit": "cut')  # a truncated file
    doc = json.loads(parts[1].read_text())
    del doc["rows"]["entropy"]
    parts[1].write_text(json.dumps(doc))  # a column missing
    doc = json.loads(parts[2].read_text())
    doc["rows"] = {c: v[:-1] for c, v in doc["rows"].items()}
    parts[2].write_text(json.dumps(doc))  # one row short
    parts[3].write_text("[]")  # wrong shape altogether
    stale = [out / ".sweep.parquet.999999999.tmp", out / "parts" / ".abc.json.999999998.tmp"]
    for path in stale:
        path.write_bytes(b"half written")
    with pytest.warns(UserWarning, match="corrupt part file") as record:
        again = run_sweep([tmp_path / "m"], out, batch=1, progress=False, verbose=False)
    assert len(record) == 4
    assert again.ok and again.ran == 4 and again.skipped == 2
    assert not any(p.exists() for p in stale)
    got = rows_by_module(read_table(out))
    assert len(got) == 6
    for module, profile in got.items():
        np.testing.assert_allclose(profile, ref(tensors[module + ".weight"]), atol=ATOL)


# ---------------------------------------------------------------- task-head adapters against a bare base


@pytest.mark.parametrize(
    "adapter_prefix,base_prefix,mapping",
    [
        ("bert.", "", "strip prefix 'bert.'"),
        ("model.", "", "strip prefix 'model.'"),
        ("", "model.", "add prefix 'model.'"),
        ("", "", "same names"),
    ],
)
def test_task_head_adapter_against_bare_base(tmp_path, rng, adapter_prefix, base_prefix, mapping):
    m, n = 8, 12
    names = [f"encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")]
    save(tmp_path / "base", {f"{base_prefix}{k}.weight": torch.randn(m, n) for k in names})
    factors = write_adapter(tmp_path / "a", [adapter_prefix + k for k in names], m, n)
    out = tmp_path / "o"
    assert sweep_query_value(tmp_path / "base", tmp_path / "a", out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_name_mapping"] == {str(tmp_path / "a"): mapping}
    got = rows_by_module(read_table(out))
    assert sorted(got) == sorted(adapter_prefix + k for k in names)
    for module, profile in got.items():
        dw = (
            factors[f"base_model.model.{module}.lora_B.weight"].double()
            @ factors[f"base_model.model.{module}.lora_A.weight"].double()
        )
        np.testing.assert_allclose(profile, ref(dw), atol=ATOL)


def test_task_head_full_finetune_against_bare_base(tmp_path, rng):
    base = {f"model.layers.{i}.self_attn.q_proj.weight": torch.randn(8, 12) for i in range(2)}
    save(tmp_path / "base", {k.removeprefix("model."): v for k, v in base.items()})  # the bare model's names
    tuned = {k: v + torch.randn_like(v) for k, v in base.items()}
    save(tmp_path / "t", tuned)
    assert sweep("--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "t"), "--out", str(tmp_path / "o")) == 0
    got = rows_by_module(read_table(tmp_path / "o"))
    assert len(got) == 2
    for module, profile in got.items():
        np.testing.assert_allclose(profile, ref(tuned[module + ".weight"] - base[module + ".weight"]), atol=ATOL)


def test_real_peft_sequence_classification_adapter_against_bare_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50, num_labels=3
    )
    transformers.BertModel(config).save_pretrained(tmp_path / "base")  # bare: encoder.layer.0...
    model = transformers.BertForSequenceClassification(config)
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    pm = peft.get_peft_model(model, lora)
    moved(pm)  # as after training: B != 0
    pm.save_pretrained(tmp_path / "adapter")  # bert.encoder.layer.0... (the task head's prefix)
    out = tmp_path / "o"
    assert sweep_query_value(tmp_path / "base", tmp_path / "adapter", out) == 0
    assert json.loads((out / "manifest.json").read_text())["base_name_mapping"] == {
        str(tmp_path / "adapter"): "strip prefix 'bert.'"
    }
    got = rows_by_module(read_table(out))
    assert len(got) == 4
    for name, module in pm.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and hasattr(module, "get_delta_weight"):
            key = name.removeprefix("base_model.model.")
            np.testing.assert_allclose(got[key], ref(module.get_delta_weight("default").detach()), atol=ATOL)


# ---------------------------------------------------------------- bad arguments: exit 2, one line


def _bad_args(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    cases = {
        "out_is_file": (["--out", str(tmp_path / "afile")], "--out"),
        "out_under_file": (["--out", str(tmp_path / "afile" / "sub")], "--out"),
        "device_unknown": (["--device", "tpu9"], "--device"),
        "device_index": (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "--device"),
        "device_mps": (["--device", "mps"], "--device"),
        "target_regex": (["--target", "re:q_proj("], "--target"),
        "target_star": (["--target", "re:*"], "--target"),
        "target_empty": (["--target", ""], "--target"),
        "alpha_zero": (["--alpha", "0"], "--alpha"),
        "alpha_nan": (["--alpha", "nan"], "--alpha"),
        "alpha_negative": (["--alpha", "-1"], "--alpha"),
        "log_base_one": (["--log-base", "1"], "--log-base"),
        "log_base_zero": (["--log-base", "0"], "--log-base"),
        "log_base_negative": (["--log-base", "-2"], "--log-base"),
        "log_base_nan": (["--log-base", "nan"], "--log-base"),
        "log_base_inf": (["--log-base", "inf"], "--log-base"),
        "batch_zero": (["--batch", "0"], "--batch"),
    }
    return cases


@pytest.mark.parametrize("case", sorted(_bad_args(Path("/nonexistent"))))
def test_bad_arguments_exit_2_with_one_line(tmp_path, rng, capsys, case):
    if case == "device_mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    save(tmp_path / "m", model_tensors(rng, 2, SHAPES))
    (tmp_path / "afile").write_text("x")
    extra, name = _bad_args(tmp_path)[case]
    args = ["--tuned", str(tmp_path / "m"), *extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "o")]
    assert sweep(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "parts").exists() and not (tmp_path / "o" / "errors.json").exists()


def test_bad_arguments_in_the_python_api_name_the_argument(tmp_path, rng):
    save(tmp_path / "m", model_tensors(rng, 1, SHAPES))
    for kwargs, name in (
        ({"alpha": float("nan")}, "alpha"),
        ({"log_base": 1.0}, "log_base"),
        ({"targets": ["re:("]}, "re:\\("),
        ({"device": "nope"}, "device"),
        ({"batch": 0}, "batch"),
    ):
        with pytest.raises(ValueError, match=name):
            run_sweep([tmp_path / "m"], tmp_path / "o", progress=False, verbose=False, **kwargs)
    assert run_sweep([tmp_path / "m"], tmp_path / "o", progress=False, verbose=False, batch=np.int64(2)).ok


# ---------------------------------------------------------------- artent plot: one line, exit 2


@pytest.fixture
def swept(tmp_path, rng):
    save(tmp_path / "run" / "checkpoint-10", model_tensors(rng, 2, SHAPES))
    run_sweep([tmp_path / "run"], tmp_path / "o", progress=False, verbose=False)
    return tmp_path / "o"


def test_plot_unknown_checkpoint_exits_2(tmp_path, swept, capsys):
    pytest.importorskip("matplotlib")
    code = main(["plot", "--in", str(swept), "--out", str(tmp_path / "fig"), "--checkpoint", "checkpoint-99"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--checkpoint" in err and "checkpoint-10" in err, err
    assert not list((tmp_path / "fig").glob("*.png")) if (tmp_path / "fig").exists() else True
    # the folder name alone is accepted
    assert main(["plot", "--in", str(swept), "--out", str(tmp_path / "fig"), "--checkpoint", "checkpoint-10"]) == 0
    assert any(p.name.startswith("heatmap_") for p in (tmp_path / "fig").glob("*.png"))


@pytest.mark.parametrize("content", ["text", "csv_other", "empty", "parquet_garbage", "binary"])
def test_plot_input_that_is_not_a_table_exits_2(tmp_path, capsys, content):
    files = {
        "text": ("notes.txt", b"hello\n"),
        "csv_other": ("sweep.csv", b"a,b\n1,2\n"),
        "empty": ("sweep.csv", b""),
        "parquet_garbage": ("sweep.parquet", b"PAR1 not really"),
        "binary": ("sweep.csv", b"\xff\xfe\x00\x01"),
    }
    name, data = files[content]
    (tmp_path / name).write_bytes(data)
    code = main(["plot", "--in", str(tmp_path / name), "--out", str(tmp_path / "fig")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--in" in err and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["plot", "sweep"])
def test_help_has_a_description_and_shows_defaults(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "See docs/sweep.md" in text and "exit codes" in text
    if command == "sweep":
        assert "(default: 4)" in text and "(default: auto)" in text and "(default: q_proj v_proj)" in text
    else:
        assert "(default: the last step)" in text


def test_missing_parquet_extra_is_one_line_exit_2(tmp_path, rng, capsys, monkeypatch):
    import artent_fast.sweep.runner as runner

    save(tmp_path / "m", model_tensors(rng, 1, SHAPES))
    monkeypatch.setattr(runner, "have_pyarrow", lambda: False)
    assert sweep("--tuned", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--format", "parquet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pyarrow" in err and "Traceback" not in err, err


def test_pickled_file_linked_out_is_refused_without_inviting_allow_pickle(tmp_path, rng, good):
    outside = tmp_path / "outside"
    outside.mkdir()
    torch.save(model_tensors(rng, 1, SHAPES), outside / "pytorch_model.bin")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "pytorch_model.bin").symlink_to(outside / "pytorch_model.bin")
    assert sweep("--tuned", str(tmp_path / "evil"), "--tuned", str(good[0]), "--out", str(tmp_path / "o")) == 1
    (record,) = errors_of(tmp_path / "o")
    assert "symbolic link" in record["error"] and "--allow-pickle" not in record["error"]
    assert_good_rows(tmp_path / "o", good)
