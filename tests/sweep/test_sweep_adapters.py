"""`artent sweep` of adapters whose update is not ``s B A``: DoRA (dense, against the base) and adapters that did
not start at zero (PiSSA: ``s (B A - B0 A0)`` against the initial adapter), exact against float64 peft."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from artent_fast.cli import main  # noqa: E402
from artent_fast.sweep import read_table, run_sweep  # noqa: E402
from artent_fast.sweep.store import find_table  # noqa: E402
from artent_fast.testing.models import moved, tiny_llama_config  # noqa: E402
from tests.test_sweep_helpers import ref, rows_by_module  # noqa: E402

ATOL = 1e-6  # nats, against the float64 profile of peft's merged weight minus the base


def sweep(*args: str) -> int:
    return main(["sweep", "--no-progress", *args])


def tiny(arch: str):
    """A tiny model and the LoRA target modules and fan_in_fan_out of its architecture."""
    torch.manual_seed(0)
    if arch == "llama":
        return transformers.LlamaForCausalLM(tiny_llama_config()), ["q_proj", "v_proj"], False
    config = transformers.GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel(config), ["c_attn", "c_fc"], True  # Conv1D: weights stored (in, out)


def merged_minus_base(pm, base_folder) -> dict[str, torch.Tensor]:
    """``module -> W_merged - W_base`` in float64: peft's own merge of the adapter into the base weight."""
    base = {k: v.double() for k, v in load_file(base_folder / "model.safetensors").items()}
    merged = pm.double().merge_and_unload()
    return {
        name: module.weight.detach() - base[f"{name}.weight"]
        for name, module in merged.named_modules()
        if f"{name}.weight" in base and getattr(module, "weight", None) is not None and module.weight.ndim == 2
    }


def dora_run(tmp_path, arch: str):
    """A base checkpoint and a trained (perturbed) DoRA adapter on it; the peft model."""
    model, targets, fifo = tiny(arch)
    model.save_pretrained(tmp_path / "base")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True, fan_in_fan_out=fifo)
    pm = peft.get_peft_model(model, config)
    moved(pm)  # B off zero
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_magnitude_vector" in name:  # the magnitude trained away from ||W||_row
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    pm.save_pretrained(tmp_path / "dora")
    assert json.loads((tmp_path / "dora" / "adapter_config.json").read_text())["use_dora"] is True
    return pm, targets


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_dora_adapter_is_profiled_dense_against_its_base_exactly_as_peft_merges_it(tmp_path, arch):
    pm, targets = dora_run(tmp_path, arch)
    chosen = [a for t in targets for a in ("--target", t)]
    args = ["--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "dora"), *chosen]
    assert sweep(*args, "--out", str(tmp_path / "o")) == 0
    table = read_table(tmp_path / "o")
    assert set(table["kind"]) == {"dW"} and set(table["update"]) == {"dora"} and set(table["rank"]) == {None}
    assert set(table["theory_kind"]) == {"page"}
    swept = rows_by_module(table)
    want = merged_minus_base(pm, tmp_path / "base")
    assert set(swept) == {m for m in want if m.rsplit(".", 1)[-1] in targets} and len(swept) == 2 * len(targets)
    for module, profile in swept.items():
        np.testing.assert_allclose(profile, ref(want[module]), atol=ATOL, rtol=0, err_msg=module)


def test_dora_adapter_without_a_base_is_refused_naming_the_folder_and_base(tmp_path, capsys):
    dora_run(tmp_path, "llama")
    assert sweep("--tuned", str(tmp_path / "dora"), "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "dora") in err and "DoRA" in err and "--base DIR" in err
    result = run_sweep([tmp_path / "dora"], tmp_path / "o2", progress=False, verbose=False)
    assert len(result.errors) == 1 and "base=" in result.errors[0]["error"]


def pissa_run(tmp_path, init="pissa"):
    """A base checkpoint, a PiSSA adapter as peft saves it before training, and the same adapter trained."""
    model, targets, _ = tiny("llama")
    model.save_pretrained(tmp_path / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=init))
    pm.save_pretrained(tmp_path / "initial")  # before training (peft moved s B0 A0 out of the base weight)
    moved(pm)
    pm.save_pretrained(tmp_path / "trained")
    return pm


@pytest.mark.parametrize("with_base", [True, False])
def test_pissa_adapter_with_its_initial_adapter_is_its_change_since_the_start(tmp_path, with_base):
    """``s (B A - B0 A0)``, factored with rank 2r: the merged weight minus the original base, in float64."""
    pm = pissa_run(tmp_path)
    base = ["--base", str(tmp_path / "base")] if with_base else []
    args = [*base, "--tuned", str(tmp_path / "trained"), "--initial-adapter", str(tmp_path / "initial")]
    assert sweep(*args, "--out", str(tmp_path / "o")) == 0
    table = read_table(tmp_path / "o")
    assert set(table["kind"]) == {"lora"} and set(table["update"]) == {"BA-B0A0"} and set(table["rank"]) == {8}
    swept = rows_by_module(table)
    want = merged_minus_base(pm, tmp_path / "base")
    assert len(swept) == 4
    for module, profile in swept.items():
        np.testing.assert_allclose(profile, ref(want[module]), atol=ATOL, rtol=0, err_msg=module)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["initial_adapter"] == str(tmp_path / "initial")


def test_pissa_adapter_without_its_initial_adapter_is_refused_saying_what_to_pass(tmp_path, capsys):
    pissa_run(tmp_path)
    assert sweep("--tuned", str(tmp_path / "trained"), "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert "init_lora_weights='pissa'" in err and "did not start at zero" in err and "--initial-adapter DIR" in err


def test_an_unchanged_pissa_adapter_has_a_zero_update(tmp_path):
    """The initial adapter swept against itself: no change, so every row is NaN (a zero matrix has no state)."""
    pissa_run(tmp_path)
    result = run_sweep(
        [tmp_path / "initial"], tmp_path / "o", initial_adapter=tmp_path / "initial", progress=False, verbose=False
    )
    assert result.ok
    assert all(np.isnan(v) for v in read_table(tmp_path / "o")["entropy"])


def test_an_initial_adapter_of_other_shapes_is_an_error_naming_it(tmp_path):
    pissa_run(tmp_path)
    model, targets, _ = tiny("llama")
    other = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    other.save_pretrained(tmp_path / "other")
    result = run_sweep(
        [tmp_path / "trained"], tmp_path / "o", initial_adapter=tmp_path / "other", progress=False, verbose=False
    )
    assert len(result.errors) == 4 and all("the initial adapter" in e["error"] for e in result.errors)
    assert all(str(tmp_path / "other") in e["error"] for e in result.errors)


def test_a_table_written_before_the_update_column_reads_with_it_filled_in(tmp_path):
    pissa_run(tmp_path, init=True)  # a zero-start adapter
    run_sweep([tmp_path / "trained"], tmp_path / "o", table_format="csv", progress=False, verbose=False)
    path = find_table(tmp_path / "o")
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("update")
    path.write_text("\n".join(",".join(c for j, c in enumerate(r.split(",")) if j != column) for r in lines) + "\n")
    assert set(read_table(tmp_path / "o")["update"]) == {"BA"}


# ---------------------------------------------------------------- AdaLoRA, LoHa, LoKr, VeRA, IA3


def peft_types(targets: list[str], fifo: bool) -> dict:
    """name -> (peft config, kind, update, rank): every adapter type the sweep reads besides LoRA."""
    return {
        "adalora": (
            peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=targets, fan_in_fan_out=fifo),
            "lora",
            "BA",
            4,
        ),
        "loha": (peft.LoHaConfig(r=3, alpha=6, target_modules=targets), "lora", "BA", 9),
        "lokr": (
            peft.LoKrConfig(r=2, alpha=4, target_modules=targets, decompose_both=True, decompose_factor=4),
            "lora",
            "BA",
            8,
        ),
        "lokr-full": (peft.LoKrConfig(r=8, alpha=8, target_modules=targets), "dW", "delta", None),  # k1 k2 >= min
        "vera": (peft.VeraConfig(r=8, target_modules=targets, fan_in_fan_out=fifo), "lora", "BA", 8),
        "ia3": (
            peft.IA3Config(target_modules=targets, feedforward_modules=targets[-1:], fan_in_fan_out=fifo),
            "dW",
            "ia3",
            None,
        ),
    }


def typed_run(tmp_path, name: str, arch: str = "llama", **overrides):
    """A base checkpoint and an adapter of type ``name`` on it, every parameter moved at random, saved."""
    model, targets, fifo = tiny(arch)
    if arch == "llama":
        targets = ["q_proj", "v_proj", "down_proj"]  # down_proj: IA3's feed-forward (input-scaling) case
    model.save_pretrained(tmp_path / "base")
    config = peft_types(targets, fifo)[name][0]
    for key, value in overrides.items():
        setattr(config, key, value)
    pm = peft.get_peft_model(model, config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    pm.save_pretrained(tmp_path / name)
    return pm, targets


@pytest.mark.parametrize(
    "name, arch",
    [(n, "llama") for n in ("adalora", "loha", "lokr", "lokr-full", "vera", "ia3")]
    + [(n, "gpt2") for n in ("adalora", "vera", "ia3")],  # the types peft puts on GPT-2's Conv1D (fan_in_fan_out)
)
def test_every_peft_adapter_type_is_swept_exactly_as_peft_merges_it(tmp_path, name, arch):
    pm, targets = typed_run(tmp_path, name, arch)
    _, kind, update, rank = peft_types(targets, False)[name]
    chosen = [a for t in targets for a in ("--target", t)]
    args = ["--base", str(tmp_path / "base"), "--tuned", str(tmp_path / name), *chosen]
    assert sweep(*args, "--out", str(tmp_path / "o")) == 0
    table = read_table(tmp_path / "o")
    assert set(table["kind"]) == {kind} and set(table["update"]) == {update} and set(table["rank"]) == {rank}
    assert set(table["theory_kind"]) == {"random-lowrank" if kind == "lora" else "page"}
    swept = rows_by_module(table)
    want = merged_minus_base(pm, tmp_path / "base")
    assert set(swept) == {m for m in want if m.rsplit(".", 1)[-1] in targets} and len(swept) == 2 * len(targets)
    for module, profile in swept.items():
        assert want[module].abs().max() > 0, module
        np.testing.assert_allclose(profile, ref(want[module]), atol=ATOL, rtol=0, err_msg=module)


@pytest.mark.parametrize("name", ["loha", "lokr", "lokr-full", "adalora"])
def test_factored_and_dense_lycoris_adapters_need_no_base(tmp_path, name):
    """Their update is in the adapter alone: swept without --base, the same profiles."""
    pm, _ = typed_run(tmp_path, name)
    assert run_sweep([tmp_path / name], tmp_path / "o", targets=["q_proj"], progress=False, verbose=False).ok
    want = merged_minus_base(pm, tmp_path / "base")
    swept = rows_by_module(read_table(tmp_path / "o"))
    assert len(swept) == 2
    for module, profile in swept.items():
        np.testing.assert_allclose(profile, ref(want[module]), atol=ATOL, rtol=0, err_msg=module)


def test_an_adalora_adapter_pruned_by_its_rank_allocation_is_swept_at_its_kept_ranks(tmp_path):
    """peft saves the kept rows only (rank_pattern); a module pruned to rank 0 has a zero update: NaN rows."""
    pm, targets = typed_run(tmp_path, "adalora")
    pattern = {}
    for path, module in pm.named_modules():
        if hasattr(module, "lora_E") and "default" in module.lora_E:
            key = path.removeprefix("base_model.model.") + ".lora_E.default"
            pattern[key] = [False] * 4 if "layers.0.self_attn.v_proj" in path else [True, False, True, False]
    pm.peft_config["default"].rank_pattern = pattern
    with pytest.warns(UserWarning):  # peft warns of the zero-sized tensors
        pm.save_pretrained(tmp_path / "pruned")
    result = run_sweep(
        [tmp_path / "pruned"], tmp_path / "o", base=tmp_path / "base", targets=targets, progress=False, verbose=False
    )
    assert result.ok
    table = read_table(tmp_path / "o")
    ranks = dict(zip(table["module"], table["rank"], strict=True))
    assert ranks["model.layers.0.self_attn.v_proj"] == 1 and ranks["model.layers.0.self_attn.q_proj"] == 2
    for module, profile in rows_by_module(table).items():
        if module == "model.layers.0.self_attn.v_proj":
            assert np.isnan(profile).all()
        else:  # the kept rank's update (the pruned directions' E was masked to zero): its profile
            assert np.isfinite(profile).all() and profile.max() > 0


@pytest.mark.parametrize("name", ["ia3", "vera"])
def test_ia3_and_vera_adapters_without_a_base_are_refused_saying_why(tmp_path, name, capsys):
    typed_run(tmp_path, name)
    assert sweep("--tuned", str(tmp_path / name), "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / name) in err and {"ia3": "IA3", "vera": "VeRA"}[name] in err and "--base DIR" in err


def test_a_vera_adapter_saved_without_its_shared_matrices_is_refused_naming_the_file(tmp_path):
    typed_run(tmp_path, "vera", save_projection=False)
    result = run_sweep([tmp_path / "vera"], tmp_path / "o", base=tmp_path / "base", progress=False, verbose=False)
    (err,) = result.errors
    assert err["file"].endswith("adapter_model.safetensors") and "save_projection=False" in err["error"]


@pytest.mark.parametrize(
    "name, key",
    [
        ("adalora", "init_lora_weights"),
        ("loha", "init_weights"),
        ("lokr", "init_weights"),
        ("vera", "init_weights"),
        ("ia3", "init_ia3_weights"),
    ],
)
def test_an_adapter_that_did_not_start_at_zero_is_refused_naming_the_setting(tmp_path, name, key):
    typed_run(tmp_path, name, **{key: False})
    result = run_sweep([tmp_path / name], tmp_path / "o", base=tmp_path / "base", progress=False, verbose=False)
    (err,) = result.errors
    assert err["file"].endswith("adapter_config.json") and f"{key}=False" in err["error"]
    assert "did not start at zero" in err["error"]


def test_an_initial_adapter_is_for_lora_adapters_only(tmp_path):
    typed_run(tmp_path, "loha")
    result = run_sweep(
        [tmp_path / "loha"], tmp_path / "o", initial_adapter=tmp_path / "loha", progress=False, verbose=False
    )
    (err,) = result.errors
    assert "--initial-adapter" in err["error"] and "LoHa" in err["error"]


def test_an_unsupported_peft_type_and_a_malformed_lycoris_config_are_one_error_each(tmp_path):
    typed_run(tmp_path, "loha")
    config_path = tmp_path / "loha" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "alpha": "six"}))
    result = run_sweep([tmp_path / "loha"], tmp_path / "o", progress=False, verbose=False)
    (err,) = result.errors
    assert err["file"] == str(config_path) and "'alpha'" in err["error"]
    config_path.write_text(json.dumps({**config, "peft_type": "BOFT"}))
    result = run_sweep([tmp_path / "loha"], tmp_path / "o2", progress=False, verbose=False)
    (err,) = result.errors
    assert "BOFT is not supported" in err["error"] and "LOHA" in err["error"]


def test_lora_work_units_keep_their_ids(tmp_path):
    """The fields other adapter types add to a work item stay out of a LoRA unit's id (resume finds old parts)."""
    from artent_fast.sweep.plan import Item, _id_fields

    assert set(_id_fields(Item("m", "m.lora_A.weight", b_tensor="m.lora_B.weight", rank=2))) == {
        "module", "tensor", "base_tensor", "b_tensor", "rank", "scale", "fan_in_fan_out", "magnitude",
        "a0_tensor", "b0_tensor",
    }  # fmt: skip


def test_a_missing_or_mis_shaped_tensor_of_one_module_is_one_error_and_the_rest_is_swept(tmp_path):
    from safetensors.torch import save_file

    typed_run(tmp_path, "loha")
    path = tmp_path / "loha" / "adapter_model.safetensors"
    tensors = load_file(path)
    q0, v1 = "base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.1.self_attn.v_proj"
    del tensors[f"{q0}.hada_w2_b"]
    tensors[f"{v1}.hada_w1_b"] = torch.zeros(2, 32)  # rank 2 where hada_w1_a has 3 columns
    save_file(tensors, path)
    result = run_sweep([tmp_path / "loha"], tmp_path / "o", targets=["q_proj", "v_proj"], progress=False, verbose=False)
    assert sorted(e["tensor"] for e in result.errors) == [
        f"{v1}.hada_w1_a",
        "model.layers.0.self_attn.q_proj.hada_w2_b",
    ]
    assert len(rows_by_module(read_table(tmp_path / "o"))) == 2
