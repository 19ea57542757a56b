"""The "artent" transformers attention: same outputs as eager on tiny LLaMA / BERT models, padding included."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from artent_fast.attention import channel, register_attention  # noqa: E402
from artent_fast.testing.models import tiny_llama_config  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def registered():
    assert register_attention() == "artent"


@pytest.fixture
def fresh_channel():
    channel.reset()
    yield
    channel.reset()


def tiny_llama(seed: int, kv_heads: int = 2):
    torch.manual_seed(seed)
    cfg = tiny_llama_config(intermediate_size=48, num_key_value_heads=kv_heads)
    cfg._attn_implementation = "eager"
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_bert(seed: int):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    cfg._attn_implementation = "eager"
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def batch(rng, b=3, t=11, left_pad=True):
    ids = torch.from_numpy(rng.integers(0, 64, size=(b, t)))
    am = torch.ones(b, t, dtype=torch.long)
    pads = rng.integers(1, t - 1, size=b - 1)
    for row, n in enumerate(pads, start=1):
        if left_pad:
            am[row, :n] = 0
        else:
            am[row, t - n :] = 0
    return ids, am


def run(model, impl, **inputs):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("left_pad", [True, False])
def test_llama_matches_eager_with_padding(rng, kv_heads, left_pad):
    model = tiny_llama(int(rng.integers(1 << 30)), kv_heads)
    ids, am = batch(rng, left_pad=left_pad)
    eager = run(model, "eager", input_ids=ids, attention_mask=am)
    ours = run(model, "artent", input_ids=ids, attention_mask=am)
    assert model.config._attn_implementation == "artent"
    real = am.bool()
    assert not torch.isnan(ours).any()
    assert (ours - eager)[real].abs().max() < 1e-4


def test_llama_no_mask_and_generation(rng):
    model = tiny_llama(int(rng.integers(1 << 30)))
    ids = torch.from_numpy(rng.integers(0, 64, size=(2, 9)))
    eager = run(model, "eager", input_ids=ids)
    ours = run(model, "artent", input_ids=ids)
    assert (ours - eager).abs().max() < 1e-4
    model.set_attn_implementation("artent")
    got = model.generate(ids, max_new_tokens=5, do_sample=False)
    model.set_attn_implementation("eager")
    want = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(got, want)


@pytest.mark.parametrize("left_pad", [True, False])
def test_bert_matches_eager_with_padding(rng, left_pad):
    model = tiny_bert(int(rng.integers(1 << 30)))
    ids, am = batch(rng, left_pad=left_pad)
    eager = run(model, "eager", input_ids=ids, attention_mask=am)
    ours = run(model, "artent", input_ids=ids, attention_mask=am)
    assert (ours - eager).abs().max() < 1e-4  # encoder: every query row has live keys


def test_training_gradients_match_eager(rng):
    """Right padding, as in training (with left padding the last pad row, fully masked, would predict
    the first real token: eager's finfo.min mask makes that row uniform where ours is documented 0)."""
    seed = int(rng.integers(1 << 30))
    ids, am = batch(rng, left_pad=False)
    labels = ids.masked_fill(am == 0, -100)
    grads = {}
    for impl in ("eager", "artent"):
        model = tiny_llama(seed).train()
        model.set_attn_implementation(impl)
        model(input_ids=ids, attention_mask=am, labels=labels).loss.backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["eager"].keys() == grads["artent"].keys()
    for name, g in grads["eager"].items():
        assert (grads["artent"][name] - g).abs().max() < 1e-4, name


def test_from_pretrained_and_channel(rng, tmp_path, fresh_channel):
    tiny_llama(int(rng.integers(1 << 30))).save_pretrained(tmp_path)
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="artent").eval()
    assert model.config._attn_implementation == "artent"
    ids, am = batch(rng, b=2, t=8)
    channel.enable(model)
    channel.request_profile()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
        model(input_ids=ids, attention_mask=am)
    recs = channel.drain()
    assert [r["module"] for r in recs] == ["model.layers.0.self_attn", "model.layers.1.self_attn"] * 2
    assert [bool(r["entropies"]) for r in recs] == [True, True, False, False]
    assert recs[0]["row_sites"] == 3 and len(recs[0]["entropies"]) == 5
    assert all(r["kind"] == "attention" and r["entropy_mean"] == r["entropy_mean"] for r in recs)
    channel.disable(model)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    assert channel.drain() == []


def test_bert_channel_names(rng, fresh_channel):
    model = tiny_bert(int(rng.integers(1 << 30)))
    model.set_attn_implementation("artent")
    channel.enable(model)
    ids, am = batch(rng, b=2, t=6)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    names = [r["module"] for r in channel.drain()]
    assert names == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]


def test_channel_warns_when_model_is_not_on_artent(rng, fresh_channel):
    model = tiny_llama(int(rng.integers(1 << 30)))
    with pytest.warns(RuntimeWarning, match="attn_implementation='eager'"):
        channel.enable(model)
