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
