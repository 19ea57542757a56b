"""``artent demo``: a short tracked LoRA fine-tune writes a complete report folder."""

from __future__ import annotations

import math

import pytest
import torch

import artent_fast
from artent_fast.cli import main
from artent_fast.extras import missing_extra
from artent_fast.testing.models import tiny_llama_config
from artent_fast.tracking import read_history

pytest.importorskip("transformers")
pytest.importorskip("peft")


def small_demo(model, out) -> int:
    """``artent demo`` of ``model`` (a folder or a file): 2 steps of LoRA rank 2 on batches of 2 x 8 tokens."""
    args = ["--model", str(model), "--out", str(out), "--steps", "2", "--rank", "2", "--batch", "2", "--seq-len", "8"]
    return main(["demo", *args])


@pytest.mark.slow
def test_demo_writes_report(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--steps", "3", "--batch", "2", "--seq-len", "16"]) == 0
    printed = capsys.readouterr().out
    assert "step    3/3" in printed and "summary.md" in printed
    assert "row/column-bond S (mean of 8 modules)" in printed  # the column says what it averages
    for name in ("history.jsonl", "summary.md", "profile.png", "heatmap.png", "valley_depth.png", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    records = read_history(out)
    assert sorted({r["step"] for r in records}) == [1, 2, 3]
    assert len(records) == 3 * 8  # 4 layers x (q_proj, v_proj)
    for r in records:
        assert (
            r["kind"] == "lora"
            and r["rank"] == 8
            and len(r["entropies"])
            == sum(map(len, (artent_fast.prime_factors(r["shape"][0]), artent_fast.prime_factors(r["shape"][1])))) - 1
        )
        assert r["row_col_entropy"] <= math.log(8) + 1e-5
    summary = (out / "summary.md").read_text()
    assert "| module |" in summary and "![profile.png](profile.png)" in summary


@pytest.mark.slow
def test_demo_with_local_model_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=128, hidden_size=24, intermediate_size=48, num_hidden_layers=1)
    folder = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)  # no tokenizer: bytes folded into the vocab
    out = tmp_path / "report"
    assert small_demo(folder, out) == 0
    records = read_history(out)
    assert {tuple(r["shape"]) for r in records} == {(24, 24), (12, 24)}


def test_demo_errors_name_the_argument(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["demo", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert main(["demo", "--targets", "query", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "--targets" in capsys.readouterr().err


def _tiny_folder(tmp_path, max_positions=64):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_llama_config(
        vocab_size=128, hidden_size=24, intermediate_size=48, num_hidden_layers=1, max_position_embeddings=max_positions
    )
    folder = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_seq_len_beyond_the_models_positions_is_one_line_exit_2(tmp_path, capsys):
    folder = _tiny_folder(tmp_path, max_positions=16)
    assert main(["demo", "--model", str(folder), "--seq-len", "17", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()  # (transformers' loading progress bars come first)
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith("artent demo: error: --seq-len 17")
    assert "maximum positions (16)" in last
    assert main(["demo", "--seq-len", "257", "--steps", "1", "--out", str(tmp_path / "r")]) == 2  # built model: 256
    assert "maximum positions (256)" in capsys.readouterr().err


def test_bad_numbers_are_one_line_exit_2(tmp_path, capsys):
    for opt, value in (("--alpha", "0"), ("--lr", "nan"), ("--rank", "0"), ("--batch", "-1")):
        assert main(["demo", opt, value, "--out", str(tmp_path / "r")]) == 2, opt
        assert opt in capsys.readouterr().err


def test_without_the_hf_extra_the_extra_is_named(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    assert main(["demo", "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'artent_fast[hf]'" in err and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_writes_the_report_of_the_steps_done_and_exits_130(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from artent_fast import demo

    real = demo.batches

    def interrupted_after_two(*args, **kwargs):
        data = real(*args, **kwargs)
        yield next(data)
        yield next(data)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "batches", interrupted_after_two)
    out = tmp_path / "r"
    assert main(["demo", "--out", str(out), "--steps", "50", "--batch", "2", "--seq-len", "16"]) == 130
    captured = capsys.readouterr()
    assert "interrupted after 2 of 50 steps" in captured.out and "interrupted" in captured.err
    assert "Traceback" not in captured.err
    summary = (out / "summary.md").read_text()
    assert "steps done: 2 of 50 (interrupted" in summary
    assert sorted({r["step"] for r in read_history(out)}) == [1, 2]
    for name in ("profile.png", "loss.png"):
        assert (out / name).stat().st_size > 0


def test_without_matplotlib_figures_are_skipped_with_the_reason(tmp_path, capsys, monkeypatch):
    from artent_fast import demo

    def no_matplotlib():
        raise missing_extra("matplotlib", "figures", extra="plot")

    import artent_fast.plotting as plotting

    monkeypatch.setattr(plotting, "require_matplotlib", no_matplotlib)
    out = tmp_path / "r"
    assert main(["demo", "--out", str(out), "--steps", "1", "--batch", "2", "--seq-len", "16"]) == 0
    printed = capsys.readouterr().out
    assert ",  and" not in printed and "figures skipped (figures: matplotlib is not installed" in printed
    assert "Figures skipped: figures: matplotlib is not installed" in (out / "summary.md").read_text()
    assert not list(out.glob("*.png"))
    assert demo.write_figures(out, [], [])[0] == []


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for piece in ("(default: 150)", "(default: artent_demo)", "(default: 0)", "seed of the model", "smollm2"):
        assert piece in text, piece


@pytest.mark.slow
def test_demo_on_a_gguf_file(tmp_path):
    pytest.importorskip("gguf")
    from tests.integrations.test_models_loader import tiny_llama, write_tiny_gguf

    folder = tmp_path / "g"
    folder.mkdir()
    file = write_tiny_gguf(folder / "tiny.gguf", tiny_llama(2))
    out = tmp_path / "r"
    assert small_demo(file, out) == 0
    assert {tuple(r["shape"]) for r in read_history(out)} == {(32, 32), (16, 32)}


@pytest.mark.parametrize("command", ["profile", "demo", "sweep", "plot", "bench"])
def test_every_command_explains_itself(command, capsys):
    """Each subcommand has a description and shows its defaults, zero ones included."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    usage, _, rest = out.partition("\n\n")
    assert usage.startswith(f"usage: artent {command}")
    description = rest.split("\n\n", 1)[0]
    assert len(description.split()) >= 8 and not description.startswith("options:"), description
    assert "(default:" in out


@pytest.mark.slow
def test_demo_opens_with_no_future_warning(tmp_path):
    """peft's use of a deprecated transformers attribute is not the user's concern: no FutureWarning."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--out", str(tmp_path / "r"), "--steps", "1", "--batch", "2", "--seq-len", "16"]) == 0
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
