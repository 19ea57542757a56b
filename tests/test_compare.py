"""The no-hair comparison: attention outputs, external profiles against an eager reference, internal kinds."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch

import artent_fast
from artent_fast.adapters import mps
from artent_fast.core.reference import reference_profiles
from artent_fast.testing.models import tiny_llama_config

transformers = pytest.importorskip("transformers")


def _llama(seed: int = 0, attn: str = "eager"):
    cfg = tiny_llama_config()
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    model.set_attn_implementation(attn)
    return model.eval()


def _ids(batch: int = 2, t: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 64, (batch, t), generator=torch.Generator().manual_seed(seed))


def _perturbed(model, layer: int = 1, eps: float = 0.2):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[layer].self_attn.q_proj.weight.add_(eps * torch.randn(32, 32))
    return other


def test_identical_models_give_distance_zero_cosine_one():
    a = _llama()
    res = artent_fast.compare_models(a, copy.deepcopy(a), _ids())
    assert [r["layer"] for r in res.table] == [0, 1]
    for row in res.table:
        assert row["rel_distance"] == 0.0
        assert row["cosine"] == pytest.approx(1.0, abs=1e-12)
        assert row["external_gap"] == 0.0
        assert row["external_a"] == row["external_b"]


def test_perturbed_model_differs_only_from_the_perturbed_layer_on():
    a = _llama()
    b = _perturbed(a, layer=1)
    res = artent_fast.compare_models(a, b, _ids(), base=a)
    first, second = res.table
    assert first["rel_distance"] == 0.0
    assert second["rel_distance"] > 1e-3
    assert second["cosine"] < 1 - 1e-6
    assert second["external_gap"] > 0
    # internal: a vs its own base is a zero update (NaN); b's q_proj update is dense (full fine-tuning)
    assert second["internal_kind_b"] == "fft"
    assert np.isnan(second["internal_a"]["q_proj"]).all()
    assert not np.isnan(second["internal_b"]["q_proj"]).any()
    assert np.isnan(second["internal_b"]["v_proj"]).all()  # v_proj untouched


@pytest.mark.parametrize("batch,t", [(1, 8), (2, 12), (3, 6)])
def test_external_profiles_match_eager_reference(batch, t):
    a = _llama(seed=batch)
    b = _perturbed(a, layer=0, eps=0.5)
    ids = _ids(batch, t, seed=t)
    res = artent_fast.compare_models(a, b, ids, profile=True)
    for side, model in (("a", a), ("b", b)):
        with torch.no_grad():
            attentions = model(ids, output_attentions=True).attentions
        for row, probs in zip(res.table, attentions, strict=True):
            ref = reference_profiles(probs.double().numpy())
            want = ref.reshape(-1, ref.shape[-1]).mean(0)
            np.testing.assert_allclose(row[f"external_{side}"], want, rtol=1e-7, atol=1e-9)
            fit = artent_fast.fit_cardy(torch.tensor(want))
            assert row[f"cardy_c_{side}"] == pytest.approx(float(fit.c), rel=1e-6)


def test_sdpa_model_is_switched_to_eager_and_back():
    eager = _llama(seed=3)
    sdpa = copy.deepcopy(eager)
    sdpa.set_attn_implementation("sdpa")
    ids = _ids()
    res_sdpa = artent_fast.compare_models(sdpa, sdpa, ids)
    res_eager = artent_fast.compare_models(eager, eager, ids)
    assert sdpa.config._attn_implementation == "sdpa"
    for rs, re_ in zip(res_sdpa.table, res_eager.table, strict=True):
        np.testing.assert_allclose(rs["external_a"], re_["external_a"], rtol=1e-5, atol=1e-6)


def test_internal_kinds_match_dense_references():
    peft = pytest.importorskip("peft")
    base = _llama(seed=4)
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    adapted = mps.apply(copy.deepcopy(base), targets=["q_proj"], r=4, chi=2, dims=(4, 8), init="random", seed=0)
    res = artent_fast.compare_models(lora, adapted, _ids(), base=base, targets=["q_proj"])
    for i, row in enumerate(res.table):
        assert row["internal_kind_a"] == "lora" and row["internal_kind_b"] == "mps"
        layer = lora.base_model.model.model.layers[i].self_attn.q_proj
        dense = layer.get_delta_weight("default").detach().double()
        want = artent_fast.entanglement_profile(dense, method="naive")
        np.testing.assert_allclose(row["internal_a"]["q_proj"], want.numpy(), atol=1e-8)
        mlayer = adapted.model.layers[i].self_attn.q_proj
        want_b = artent_fast.entanglement_profile(mlayer.delta_weight().detach().double(), method="naive")
        np.testing.assert_allclose(row["internal_b"]["q_proj"], want_b.numpy(), atol=1e-8)
        assert row["internal_gap"] > 0
        assert row["module"] == f"model.layers.{i}.self_attn"
        assert row["rel_distance"] > 0
        # update_matrix: the dense update each profile is the profile of (LoRA, MPS, FFT as W - W0)
        from artent_fast.compare import update_matrix

        torch.testing.assert_close(update_matrix(layer), dense)
        torch.testing.assert_close(update_matrix(mlayer), mlayer.delta_weight().detach().double())
        name = f"model.layers.{i}.self_attn.q_proj"
        tuned = _perturbed(base).model.layers[i].self_attn.q_proj
        w0 = base.model.layers[i].self_attn.q_proj.weight.double()
        torch.testing.assert_close(update_matrix(tuned, name=name, base=base), tuned.weight.double() - w0)
    with pytest.raises(ValueError, match="no adapter"):
        update_matrix(base.model.layers[0].self_attn.q_proj, name="x")


def test_layers_selection_profile_off_and_errors():
    a = _llama()
    res = artent_fast.compare_models(a, a, {"input_ids": _ids()}, layers=[1], profile=False)
    assert [r["layer"] for r in res.table] == [1]
    assert "external_a" not in res.table[0]
    with pytest.raises(ValueError, match="out of range"):
        artent_fast.compare_models(a, a, _ids(), layers=[5])
    with pytest.raises(ValueError, match="no attention module"):
        artent_fast.compare_models(torch.nn.Linear(2, 2), a, _ids())


def test_table_frame_markdown_and_plot(tmp_path):
    a = _llama()
    res = artent_fast.compare_models(a, _perturbed(a), _ids(), base=a, names=("base", "tuned"))
    md = res.to_markdown()
    assert md.count("\n") == 1 + len(res.table) and "rel_distance" in md
    summary = res.summary()
    assert 0 < summary["rel_distance"] and summary["cosine"] <= 1
    pd = pytest.importorskip("pandas")
    frame = res.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 2
    pytest.importorskip("matplotlib")
    res.plot(tmp_path / "nohair.png")
    assert (tmp_path / "nohair.png").stat().st_size > 1000


def test_compare_models_is_a_plain_function_beside_its_module():
    """One name for one thing: ``artent_fast.compare`` is the module, ``compare_models`` the function."""
    module = importlib.import_module("artent_fast.compare")
    assert artent_fast.compare is module and not callable(module)
    assert artent_fast.compare_models is module.compare_models
    a = _llama()
    res = artent_fast.compare_models(a, a, _ids(), profile=False)
    assert res.table[0]["cosine"] == pytest.approx(1.0)
