"""``artent demo``: a short tracked LoRA fine-tune writes a complete report folder."""

from __future__ import annotations

import math

import pytest
import torch

import artent_fast
from artent_fast.cli import main
from artent_fast.tracking import read_history

pytest.importorskip("transformers")
pytest.importorskip("peft")


def test_demo_writes_report(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--steps", "3", "--batch", "2", "--seq-len", "16"]) == 0
    printed = capsys.readouterr().out
    assert "step    3/3" in printed and "summary.md" in printed
    for name in ("history.jsonl", "summary.md", "profile.png", "heatmap.png", "valley_depth.png", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    records = read_history(out)
    assert sorted({r["step"] for r in records}) == [1, 2, 3]
    assert len(records) == 3 * 8  # 4 layers x (q_proj, v_proj)
    for r in records:
        assert r["kind"] == "lora" and r["rank"] == 8 and len(r["entropies"]) == sum(map(len, (
            artent_fast.prime_factors(r["shape"][0]), artent_fast.prime_factors(r["shape"][1])))) - 1
        assert r["row_col_entropy"] <= math.log(8) + 1e-5
    summary = (out / "summary.md").read_text()
    assert "| module |" in summary and "![profile.png](profile.png)" in summary


def test_demo_with_local_model_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    folder = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)  # no tokenizer: bytes folded into the vocab
    out = tmp_path / "report"
    assert main(["demo", "--model", str(folder), "--out", str(out), "--steps", "2", "--rank", "2",
                 "--batch", "2", "--seq-len", "8"]) == 0
    records = read_history(out)
    assert {tuple(r["shape"]) for r in records} == {(24, 24), (12, 24)}


def test_demo_errors_name_the_argument(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["demo", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert main(["demo", "--targets", "query", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "--targets" in capsys.readouterr().err
