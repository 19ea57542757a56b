"""artent_fast.track: tracked profiles equal the plain float64 profile of the materialised update."""

from __future__ import annotations

import copy
import json
import math
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import artent_fast
from artent_fast.patterns import module_name
from artent_fast.testing.models import moved, tiny_llama_config
from artent_fast.tracking import read_history, valley_depth

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def tiny_llama(hidden: int = 32, heads: int = 4, kv_heads: int = 2, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_llama_config(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
    )
    return transformers.LlamaForCausalLM(config)


def lora(model, **kwargs):
    kwargs.setdefault("r", 4)
    kwargs.setdefault("lora_alpha", 8)
    kwargs.setdefault("target_modules", ["q_proj", "v_proj"])
    return peft.get_peft_model(model, peft.LoraConfig(**kwargs))


def batch(seed: int, vocab: int = 64, size: tuple[int, int] = (2, 12)) -> torch.Tensor:
    return torch.randint(0, vocab, size, generator=torch.Generator().manual_seed(seed))


def train(model, optimizer, steps: int, seed: int = 0, after_step=None) -> list[float]:
    losses = []
    for i in range(steps):
        ids = batch(seed + i, model.config.vocab_size)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if after_step is not None:
            after_step(i + 1)
    return losses


def reference(matrix: torch.Tensor) -> list[float]:
    """The obviously-right twin: float64, one SVD per bond."""
    return artent_fast.entanglement_profile(matrix.detach().double(), method="naive").tolist()


def by_label(records, step=None):
    out = {}
    for r in records:
        if step is None or r["step"] == step:
            part = f"[{r['part']}]" if r.get("part") else ""
            out[r["module"] + part + (f"@{r['adapter']}" if r.get("adapter") else "")] = r
    return out


def modules(model, suffix):
    return {module_name(n): m for n, m in model.named_modules() if n.endswith(suffix)}


@pytest.mark.parametrize("hidden,heads,kv", [(32, 4, 2), (24, 4, 2)])
def test_lora_profiles_match_materialised_update(tmp_path, rng, hidden, heads, kv):
    model = lora(tiny_llama(hidden, heads, kv, seed=int(rng.integers(1 << 30))), r=int(rng.integers(2, 6)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = artent_fast.track(model, optimizer=opt, out=tmp_path)

    def check(step):
        recs = by_label(tracker.history(as_frame=False), step)
        layers = {**modules(model, "q_proj"), **modules(model, "v_proj")}
        assert {k.split("@")[0] for k in recs} == set(layers)
        for name, layer in layers.items():
            rec = recs[name + "@default"]
            assert rec["kind"] == "lora" and rec["rank"] == layer.r["default"] and rec["merged"] is False
            want = reference(layer.get_delta_weight("default"))
            assert rec["entropies"] == pytest.approx(want, abs=1e-5)
            assert rec["row_sites"] == artent_fast.sites(*layer.weight.shape).row_sites
            assert rec["row_col_entropy"] == pytest.approx(want[rec["row_sites"] - 1], abs=1e-5)
            assert rec["row_col_entropy"] <= math.log(rec["rank"]) + 1e-5

    train(model, opt, 3, after_step=check)
    tracker.close()
    assert [r["step"] for r in read_history(tmp_path)] == [r["step"] for r in tracker.history(as_frame=False)]
    assert sorted({r["step"] for r in tracker.history(as_frame=False)}) == [1, 2, 3]


def test_full_finetuning_says_its_schedule_once():
    """Full fine-tuning with every=1 measures every 10th step by default: track() says so, once."""
    from artent_fast.tracking.tracker import ScheduleNotice

    model = tiny_llama(24, 4, 2)
    with pytest.warns(ScheduleNotice, match=r"4 full \(dense\) update\(s\) are measured every 10 steps") as caught:
        artent_fast.track(model, every=1, out=None).close()
    assert len([w for w in caught if issubclass(w.category, ScheduleNotice)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleNotice)
        artent_fast.track(model, every=1, dense_every=1, out=None).close()  # chosen: nothing to say
        artent_fast.track(lora(tiny_llama(24, 4, 2)), every=1, out=None).close()  # factored only


def test_full_finetuning_tracks_w_minus_w0(tmp_path, rng):
    model = tiny_llama(24, 4, 2, seed=int(rng.integers(1 << 30)))
    w0 = {
        module_name(n): m.weight.detach().double().clone()
        for n, m in model.named_modules()
        if n.endswith(("q_proj", "v_proj"))
    }
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = artent_fast.track(model, optimizer=opt, dense_every=2, out=tmp_path / "run.jsonl")
    assert tracker.snapshot_bytes == sum(w.numel() * 4 for w in w0.values())

    def check(step):
        recs = by_label(tracker.history(as_frame=False), step)
        if step % 2:
            assert recs == {}  # the dense interval
            return
        assert set(recs) == set(w0)
        for name, layer in modules(model, "proj").items():
            if name in w0:
                rec = recs[name]
                assert rec["kind"] == "dense" and rec["shape"] == list(layer.weight.shape)
                assert rec["entropies"] == pytest.approx(reference(layer.weight.double() - w0[name]), abs=1e-5)

    train(model, opt, 4, after_step=check)
    tracker.close()
    assert (tmp_path / "run.jsonl").exists()


def test_zero_update_is_skipped_and_counted(tmp_path):
    model = lora(tiny_llama(), init_lora_weights=True)  # peft's default: B = 0, dW = 0
    with artent_fast.track(model, out=tmp_path) as tracker:
        tracker.step()
        assert tracker.history(as_frame=False) == [] and tracker.skipped == 4
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        train(model, opt, 1)
        tracker.step()
        assert len(tracker.history(as_frame=False)) == 4
    assert all(not any(math.isnan(e) for e in r["entropies"]) for r in read_history(tmp_path))


def test_multiple_adapters_each_tracked(tmp_path):
    model = lora(tiny_llama(), r=4)
    model.add_adapter("second", peft.LoraConfig(r=2, lora_alpha=3, target_modules=["v_proj"]))
    model.base_model.set_adapter(["default", "second"])
    tracker = artent_fast.track(model, out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    tracker.step()
    recs = by_label(tracker.history(as_frame=False))
    v_layers = modules(model, "v_proj")
    assert len(recs) == len(modules(model, "q_proj")) + 2 * len(v_layers)
    for name, layer in v_layers.items():
        for adapter in ("default", "second"):
            rec = recs[f"{name}@{adapter}"]
            assert rec["adapter"] == adapter and rec["rank"] == layer.r[adapter]
            assert rec["scaling"] == pytest.approx(layer.scaling[adapter])
            assert rec["entropies"] == pytest.approx(reference(layer.get_delta_weight(adapter)), abs=1e-5)


def test_merged_adapter_counted_once(tmp_path):
    model = lora(tiny_llama(), r=3)
    tracker = artent_fast.track(model, targets=["q_proj", "re:.*q_proj\\.base_layer"], out=None)
    moved(model)
    expected = {n: reference(m.get_delta_weight("default")) for n, m in modules(model, "q_proj").items()}
    model.merge_adapter()
    tracker.step()
    recs = tracker.history(as_frame=False)
    assert len(recs) == len(expected)  # the merged base layer is part of the adapter's layer: not a second target
    for r in recs:
        assert r["merged"] is True and r["kind"] == "lora"
        assert r["entropies"] == pytest.approx(expected[r["module"]], abs=1e-5)


def test_rslora_and_rank_alpha_patterns(tmp_path):
    model = lora(
        tiny_llama(), r=4, lora_alpha=8, use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 5}
    )
    tracker = artent_fast.track(model, out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    tracker.step()
    for r in tracker.history(as_frame=False):
        rank, alpha = (2, 5) if r["module"].endswith("v_proj") else (4, 8)
        assert r["rank"] == rank and r["scaling"] == pytest.approx(alpha / math.sqrt(rank))
        layer = {module_name(n): m for n, m in model.named_modules()}[r["module"]]
        assert r["entropies"] == pytest.approx(reference(layer.get_delta_weight("default")), abs=1e-5)


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=24, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel(config)


def test_fan_in_fan_out_conv1d_and_fused_qkv_split(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lora(tiny_gpt2(), target_modules=["c_attn"], fan_in_fan_out=True, r=3)
    tracker = artent_fast.track(model, targets="c_attn", split={"c_attn": ("q", "k", "v")}, out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    tracker.step()
    recs = by_label(tracker.history(as_frame=False))
    for name, layer in modules(model, "c_attn").items():
        delta = layer.get_delta_weight("default")  # Conv1D layout: (in, out) = (24, 72)
        assert delta.shape == (24, 72)
        for i, part in enumerate("qkv"):
            rec = recs[f"{name}[{part}]@default"]
            assert rec["shape"] == [24, 24]
            assert rec["entropies"] == pytest.approx(reference(delta[:, 24 * i : 24 * (i + 1)]), abs=1e-5)


def test_fft_of_conv1d_fused_qkv_with_sizes(tmp_path):
    model = tiny_gpt2()
    w0 = {n: m.weight.detach().double().clone() for n, m in modules(model, "c_attn").items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = artent_fast.track(
        model, optimizer=opt, targets="c_attn", dense_every=1, split={"c_attn": {"q": 24, "kv": 48}}, out=None
    )
    train(model, opt, 1)
    recs = by_label(tracker.history(as_frame=False))
    for name, layer in modules(model, "c_attn").items():
        delta = layer.weight.double() - w0[name]
        assert recs[f"{name}[q]"]["entropies"] == pytest.approx(reference(delta[:, :24]), abs=1e-5)
        assert recs[f"{name}[kv]"]["entropies"] == pytest.approx(reference(delta[:, 24:]), abs=1e-5)


@pytest.mark.parametrize("moved_before", [False, True])
def test_dora_uses_dense_path(tmp_path, moved_before):
    """DoRA's change of the weight, dense; magnitudes moved before track() are its start (``dora-D0``)."""
    model = lora(tiny_llama(), use_dora=True, target_modules=["q_proj"])

    def move_magnitudes():
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_magnitude_vector" in name:
                    p.mul_(torch.linspace(0.5, 1.5, p.numel()))  # move the magnitudes off their initial norms

    if moved_before:
        move_magnitudes()
        start = {
            name: layer.get_base_layer().weight.detach().double().clone()
            for name, layer in modules(model, "q_proj").items()
        }
        for name, layer in modules(model, "q_proj").items():
            merged = copy.deepcopy(layer)
            merged.merge(safe_merge=True)
            start[name] = merged.get_base_layer().weight.double()
    tracker = artent_fast.track(model, targets="q_proj", dense_every=1, out=None)
    if moved_before:
        move_magnitudes()
    else:
        move_magnitudes()
        start = {
            name: layer.get_base_layer().weight.detach().double().clone()
            for name, layer in modules(model, "q_proj").items()
        }
    expected = {}
    for name, layer in modules(model, "q_proj").items():
        merged = copy.deepcopy(layer)
        merged.merge(safe_merge=True)
        expected[name] = reference(merged.get_base_layer().weight.double() - start[name])
    tracker.step()
    recs = tracker.history(as_frame=False)
    assert {r["module"] for r in recs} == set(expected)
    for r in recs:
        assert r["kind"] == "dense" and r["adapter"] == "default"
        assert r["update"] == ("dora-D0" if moved_before else "dora")
        assert r["entropies"] == pytest.approx(expected[r["module"]], abs=1e-5)


class Ragged(nn.Module):
    """Layers of assorted shapes, powers of two and not."""

    def __init__(self, shapes):
        super().__init__()
        self.layers = nn.ModuleDict({f"proj{i}": nn.Linear(n, m, bias=False) for i, (m, n) in enumerate(shapes)})

    def forward(self, x):
        return sum(layer(x[..., : layer.in_features]).sum() for layer in self.layers.values())


def test_many_shapes_lora_and_fft_batched(rng):
    shapes = [(16, 16), (16, 16), (12, 18), (30, 7), (64, 8), (9, 25), (12, 18)]
    rng_shapes = [(int(rng.integers(2, 40)), int(rng.integers(2, 40))) for _ in range(3)]
    model = Ragged(shapes + rng_shapes)
    w0 = {
        module_name(n): m.weight.detach().double().clone() for n, m in model.named_modules() if n.startswith("layers.")
    }
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    tracker = artent_fast.track(model, optimizer=opt, targets="proj*", dense_every=1, out=None)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    model(x).square().backward()
    with torch.no_grad():
        for p in model.parameters():
            p.grad += torch.randn_like(p)  # a full-rank update for every layer
    opt.step()
    recs = by_label(tracker.history(as_frame=False))
    assert set(recs) == set(w0)
    for path, layer in model.named_modules():
        name = module_name(path)
        if name in w0:
            assert recs[name]["entropies"] == pytest.approx(reference(layer.weight.double() - w0[name]), abs=1e-5)

    peft_model = peft.get_peft_model(
        Ragged(shapes + rng_shapes),
        peft.LoraConfig(r=3, target_modules=[f"proj{i}" for i in range(len(shapes) + 3)], init_lora_weights=False),
    )
    # B0 != 0: each update is the change since start, rank 2r = 6, all shapes still in one measurement
    start = {
        module_name(n): m.get_delta_weight("default").double()
        for n, m in peft_model.named_modules()
        if hasattr(m, "lora_A")
    }
    tracker = artent_fast.track(peft_model, targets="re:.*proj\\d+", out=None)
    moved(peft_model)
    tracker.step()
    recs = by_label(tracker.history(as_frame=False))
    assert len(recs) == len(shapes) + 3
    for path, layer in peft_model.named_modules():
        name = module_name(path)
        if f"{name}@default" in recs:
            rec = recs[f"{name}@default"]
            want = reference(layer.get_delta_weight("default").double() - start[name])
            assert rec["update"] == "BA-B0A0" and rec["rank"] == 6
            assert rec["entropies"] == pytest.approx(want, abs=1e-5)


def test_failing_module_is_dropped_and_training_goes_on(tmp_path):
    model = lora(tiny_llama())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = artent_fast.track(model, optimizer=opt, out=tmp_path)
    bad = tracker.units[0]

    def boom(*_args):
        raise RuntimeError("broken adapter")

    bad.factors = boom
    with pytest.warns(RuntimeWarning, match="stopped tracking") as caught:
        losses = train(model, opt, 3)
    assert len([w for w in caught if "stopped tracking" in str(w.message)]) == 1  # reported once
    assert len(losses) == 3 and bad.label in tracker.dropped
    labels = {r["module"] for r in tracker.history(as_frame=False)}
    assert bad.module not in labels and len(labels) == len(tracker.units) == 3
    tracker.close()


def test_failing_measurement_in_a_batch_drops_only_that_unit(monkeypatch):
    model = lora(tiny_llama(layers=3))
    tracker = artent_fast.track(model, targets="q_proj", out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    victim = tracker.units[1]
    victim.factors = lambda *_: (torch.randn(32, 4), torch.zeros(4, 32, dtype=torch.int64), 1.0, False)
    with pytest.warns(RuntimeWarning, match="stopped tracking"):
        for _ in range(3):  # dropped after MAX_FAILURES failures in a row
            tracker.step()
    assert victim.label in tracker.dropped
    assert len(tracker.history(as_frame=False)) == 2 * 3


def test_strict_reraises(tmp_path):
    model = lora(tiny_llama())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = artent_fast.track(model, optimizer=opt, out=None, strict=True)
    tracker.units[0].factors = lambda *_: (_ for _ in ()).throw(RuntimeError("broken adapter"))
    with pytest.raises(RuntimeError, match="broken adapter"):
        train(model, opt, 1)


def test_history_file_written_incrementally(tmp_path):
    model = lora(tiny_llama())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = artent_fast.track(model, optimizer=opt, every=2, out=tmp_path, background=False)
    path = tmp_path / "history.jsonl"
    sizes = []
    train(model, opt, 4, after_step=lambda s: sizes.append(len(read_history(path))))
    assert sizes == [0, 4, 4, 8]  # every=2; measured on the training thread: on disk before the next step
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["kind"] == "lora" for line in lines)
    with path.open("a") as f:
        f.write('{"step": 6, "modu')  # a crash mid-write
    with pytest.warns(RuntimeWarning, match="line 9 .the last. is cut"):
        assert len(read_history(path)) == 8
    tracker.close()


def test_history_frame_and_plot(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    model = lora(tiny_llama())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with artent_fast.track(model, optimizer=opt, out=tmp_path) as tracker:
        train(model, opt, 3)
    records = tracker.history()
    assert isinstance(records, list) and len(records) == 12 and all(isinstance(r, dict) for r in records)
    frame = tracker.history(as_frame=True)  # one type by default; the DataFrame on request
    assert isinstance(frame, pd.DataFrame) and len(frame) == 12
    assert {"step", "module", "kind", "entropies", "row_sites", "valley_depth"} <= set(frame.columns)
    for what in ("profile", "heatmap", "valley"):
        tracker.plot(what, path=tmp_path / f"{what}.png")
        assert (tmp_path / f"{what}.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="what must be"):
        tracker.plot("pie")


def test_schedule_explicit_steps_and_compile_guard(monkeypatch):
    model = lora(tiny_llama())
    tracker = artent_fast.track(model, every=3, out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    for _ in range(7):
        tracker.step()
    assert sorted({r["step"] for r in tracker.history(as_frame=False)}) == [3, 6]
    tracker.step(global_step=30)
    assert tracker.current_step == 30 and tracker.history(as_frame=False)[-1]["step"] == 30
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    tracker.step(global_step=33)
    assert tracker.current_step == 30
    tracker.close()
    tracker.close()  # idempotent


def test_bad_arguments_name_the_culprit():
    model = tiny_llama()
    with pytest.raises(ValueError, match="match no trainable"):
        artent_fast.track(model, targets=["query", "value"], out=None)
    with pytest.raises(ValueError, match="every"):
        artent_fast.track(model, every=0, out=None)
    with pytest.raises(TypeError, match="model"):
        artent_fast.track("model", out=None)
    with pytest.raises(ValueError, match="split"):
        artent_fast.track(model, split={"q_proj": 5}, out=None)


def test_bert_style_targets():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48
    )
    model = lora(transformers.BertModel(config), target_modules=["query", "value"])
    tracker = artent_fast.track(model, targets=("query", "value"), out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    tracker.step()
    assert sorted(r["module"].rsplit(".", 1)[-1] for r in tracker.history(as_frame=False)) == ["query", "value"]


def test_tensorboard_scalars_and_images(tmp_path):
    class Writer:
        def __init__(self):
            self.scalars, self.figures = [], []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def add_figure(self, tag, fig, step, close=True):
            self.figures.append((tag, step))

        def flush(self):
            pass

    pytest.importorskip("matplotlib")
    writer = Writer()
    model = lora(tiny_llama(layers=1))
    with artent_fast.track(model, out=None, tensorboard=writer, image_every=2) as tracker:
        moved(model)  # as training would: B != 0 only after tracking started
        for _ in range(2):
            tracker.step()
    tags = {t for t, _, _ in writer.scalars}
    assert {t.rsplit("/", 1)[-1] for t in tags} == {"row_col_entropy", "valley_depth", "peak_entropy"}
    assert len(tags) == 2 * 3 and writer.figures == [("artent/profiles", 2)]
    scalars = tracker.pop_scalars()
    assert len(scalars) == 6 and tracker.pop_scalars() == {}


def test_real_tensorboard_writer(tmp_path):
    pytest.importorskip("tensorboard")
    model = lora(tiny_llama(layers=1))
    with artent_fast.track(model, out=None, tensorboard=tmp_path / "tb") as tracker:
        moved(model)  # as training would: B != 0 only after tracking started
        tracker.step()
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))


def test_attention_records_from_side_channel(monkeypatch):
    calls = []
    channel = types.ModuleType("artent_fast.attention.channel")
    pending = [
        {
            "module": "module._orig_mod.model.layers.0.self_attn",  # as seen through DDP and torch.compile
            "kind": "attention",
            "entropies": [0.1, 0.2],
            "row_sites": 1,
            "cardy_c": 0.5,
        }
    ]
    channel.drain = lambda: [pending.pop()] if pending else []
    channel.enable = lambda model: calls.append("enable")
    channel.disable = lambda model: calls.append("disable")
    monkeypatch.setitem(sys.modules, "artent_fast.attention.channel", channel)
    model = lora(tiny_llama(layers=1))
    with artent_fast.track(model, out=None, attention=True) as tracker:
        moved(model)  # as training would: B != 0 only after tracking started
        tracker.step()
    attention = [r for r in tracker.history(as_frame=False) if r["kind"] == "attention"]
    assert attention == [{**attention[0], "step": 1}] and attention[0]["cardy_c"] == 0.5
    assert attention[0]["module"] == "model.layers.0.self_attn"  # the unwrapped model's name, as for updates
    assert calls == ["enable", "disable"]


def test_attention_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "artent_fast.attention.channel", None)
    with pytest.raises(ImportError, match="attention capture is unavailable"):
        artent_fast.track(lora(tiny_llama(layers=1)), out=None, attention=True)


def test_valley_depth_definition():
    assert valley_depth([1.0, 2.0, 0.5, 3.0, 1.0], row_sites=3) == pytest.approx(2.5 - 0.5)
    assert valley_depth([3.0, 1.0, 0.5, 0.7, 2.0, 1.0], row_sites=3) == pytest.approx(2.5 - 0.5)  # side peaks
    assert valley_depth([1.0, 0.25], row_sites=2) == pytest.approx(0.75)
    page = artent_fast.page_curve(64, 64).tolist()
    assert valley_depth(page, row_sites=6) < 0  # a central peak, no valley
    assert math.isnan(valley_depth([1.0], row_sites=1))


def test_asynchronous_jobs_are_collected_on_a_later_step_and_at_close(monkeypatch):
    """The CUDA code path's bookkeeping, with a fake event standing in for the side stream's."""

    class FakeEvent:
        def __init__(self):
            self.done = False

        def query(self):
            return self.done

        def synchronize(self):
            self.done = True

    model = lora(tiny_llama(layers=1))
    tracker = artent_fast.track(model, out=None, background=False)
    moved(model)  # as training would: B != 0 only after tracking started
    events = []
    real_run = tracker._launcher.run

    def deferred(*args):
        job = real_run(*args)
        job.event = FakeEvent()
        events.append(job.event)
        return job

    def recorded():
        return sorted((r["step"], r["module"].rsplit(".", 1)[-1]) for r in tracker._records)

    monkeypatch.setattr(tracker._launcher, "run", deferred)
    tracker.step()  # q_proj and v_proj differ in shape (grouped-query attention) yet share one job
    assert recorded() == [] and len(events) == 1
    tracker.step()
    assert recorded() == [] and len(events) == 2  # step 1 not done: nothing read
    events[1].done = True
    tracker.step()  # step 2's job is done but step 1's is not: results stay in order
    assert recorded() == [] and len(events) == 3
    events[0].done = True
    tracker.step()  # collects steps 1 and 2, not 3
    assert recorded() == [(1, "q_proj"), (1, "v_proj"), (2, "q_proj"), (2, "v_proj")]
    assert len(tracker.history()) == 8  # history() waits for everything pending
    tracker.close()
    assert sorted(r["step"] for r in tracker.history(as_frame=False)) == [1, 1, 2, 2, 3, 3, 4, 4]


def test_background_worker_records_equal_the_training_threads(tmp_path):
    runs = {}
    for background in (True, False):
        model = lora(tiny_llama(layers=2))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        out = tmp_path / str(background)
        tracker = artent_fast.track(model, optimizer=opt, out=out, background=background)
        assert tracker._launcher.background is background
        train(model, opt, 5)
        tracker.wait()
        assert not tracker._jobs and len(tracker._records) == 4 * 5  # wait() recorded everything pending
        if background:  # one intra-op thread on the worker: it never oversubscribes the training's cores
            assert tracker._launcher._pool.submit(torch.get_num_threads).result() == 1
        tracker.close()
        assert tracker._launcher._pool is None  # the worker thread is gone after close()
        runs[background] = (tracker.history(), read_history(out))
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) == 4 * 5
    assert runs[True][1] == runs[True][0] and runs[False][1] == runs[False][0]


def test_background_queue_is_bounded_and_loses_no_step(monkeypatch):
    import threading

    from artent_fast.tracking import compute
    from artent_fast.tracking.tracker import MAX_PENDING_BACKGROUND

    gate = threading.Event()
    real = compute.measure_lowrank

    def slow(*args):
        gate.wait(10)  # the worker thread is held until the test lets it go
        return real(*args)

    monkeypatch.setattr(compute, "measure_lowrank", slow)
    model = lora(tiny_llama(layers=1))
    tracker = artent_fast.track(model, out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    tracker.step()
    tracker.step()
    assert len(tracker._jobs) == MAX_PENDING_BACKGROUND  # both steps queued on the held worker
    threading.Timer(0.2, gate.set).start()
    tracker.step()  # a third due step waits for the oldest job instead of queueing it or skipping a step
    assert len(tracker._jobs) <= MAX_PENDING_BACKGROUND and tracker.lagged == 0
    tracker.close()
    assert sorted(r["step"] for r in tracker.history()) == [1, 1, 2, 2, 3, 3]


def test_failure_on_the_worker_thread_moves_measuring_to_the_training_thread(monkeypatch):
    from artent_fast.tracking import compute

    model = lora(tiny_llama(layers=3))
    tracker = artent_fast.track(model, targets="q_proj", out=None)
    moved(model)  # as training would: B != 0 only after tracking started
    victim = tracker.units[1]
    bad = victim.factors()[0].clone()
    real = compute.measure_lowrank

    def flaky(B, A, shapes):  # fails on any batch holding the victim's factors
        if any(torch.equal(B[i, :m].to(bad.dtype), bad) for i, (m, _) in enumerate(shapes)):
            raise RuntimeError("injected")
        return real(B, A, shapes)

    monkeypatch.setattr(compute, "measure_lowrank", flaky)
    with pytest.warns(RuntimeWarning, match="moved to the training thread"):
        tracker.step()
        tracker.history()
    assert not tracker._launcher.background and tracker.skipped == 3  # the whole batch failed once
    with pytest.warns(RuntimeWarning, match="stopped tracking"):
        for _ in range(2):
            tracker.step()  # on the training thread: the batch is split and the unit at fault found
    assert list(tracker.dropped) == [victim.label]
    assert sorted(r["step"] for r in tracker.history()) == [2, 2, 3, 3]  # the others went on


@pytest.mark.slow
def test_a_program_that_never_closes_its_tracker_still_writes_every_record(tmp_path):
    import subprocess

    script = f"""
import torch, peft, transformers, artent_fast
from artent_fast.testing.models import tiny_llama_config
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(tiny_llama_config(num_hidden_layers=1))
model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
tracker = artent_fast.track(model, optimizer=opt, out={str(tmp_path)!r})
for _ in range(3):
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()
# no close(): the measurements still on the worker thread are recorded at exit
"""
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(r["step"] for r in read_history(tmp_path / "history.jsonl")) == [1, 1, 2, 2, 3, 3]


def test_background_argument_checks():
    model = lora(tiny_llama(layers=1))
    with pytest.raises(ValueError, match="strict=True"):
        artent_fast.track(model, out=None, background=True, strict=True)
    with pytest.raises(TypeError, match="background must be"):
        artent_fast.track(model, out=None, background="yes")
    assert not artent_fast.track(model, out=None, strict=True)._launcher.background


def test_attention_records_from_the_real_channel(tmp_path):
    attention = pytest.importorskip("artent_fast.attention")
    pytest.importorskip("artent_fast.attention.channel")
    name = attention.register_attention()
    model = lora(tiny_llama(layers=2))
    model.base_model.model.set_attn_implementation(name)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with artent_fast.track(model, optimizer=opt, attention=True, out=tmp_path):
        train(model, opt, 3)
    records = read_history(tmp_path)
    attn = [r for r in records if r["kind"] == "attention"]
    assert {r["step"] for r in attn} == {1, 2, 3}
    assert {r["module"] for r in attn} == {module_name(n) for n, _ in model.named_modules() if n.endswith("self_attn")}
    profiled = [r for r in attn if r.get("entropies")]
    assert profiled and {r["step"] for r in profiled} == {2, 3}  # profiles requested at each tracked step
    assert len([r for r in records if r["kind"] == "lora"]) == 3 * 4


def test_two_trackers_with_attention_keep_their_own_records():
    attention = pytest.importorskip("artent_fast.attention")
    name = attention.register_attention()
    models = [lora(tiny_llama(layers=n, seed=n)) for n in (1, 2)]
    for model in models:
        model.base_model.model.set_attn_implementation(name)
    trackers = [artent_fast.track(model, attention=True, out=None) for model in models]
    for step in range(2):
        for model, tracker in zip(models, trackers, strict=True):
            with torch.no_grad():
                model(input_ids=batch(step))
            tracker.step()
    for model, tracker in zip(models, trackers, strict=True):
        tracker.close()
        attn = [r for r in tracker.history() if r["kind"] == "attention"]
        own = {module_name(n) for n, _ in model.named_modules() if n.endswith("self_attn")}
        assert {r["module"] for r in attn} == own  # all of its own modules, none of the other model's
        assert len(attn) == 2 * len(own) and any(r.get("entropies") for r in attn)


def test_base_weights_snapshot_device_and_resume(tmp_path, rng):
    model = tiny_llama(16, 2, 2, layers=1, seed=int(rng.integers(1 << 30)))
    base = {n + ".weight": torch.randn_like(m.weight) for n, m in modules(model, "q_proj").items()}
    path = tmp_path / "h.jsonl"
    tracker = artent_fast.track(
        model, targets="q_proj", dense_every=1, base_weights=base, snapshot_device="cpu", out=path
    )
    tracker.step()
    tracker.close()
    for r in tracker.history(as_frame=False):
        layer = {module_name(n): m for n, m in model.named_modules()}[r["module"]]
        want = reference(layer.weight.double() - base[r["module"] + ".weight"].double())
        assert r["entropies"] == pytest.approx(want, abs=1e-5)
    with artent_fast.track(model, targets="q_proj", dense_every=1, base_weights=base, out=path, resume=True) as t2:
        t2.step(global_step=5)
    assert [r["step"] for r in read_history(path)] == [1, 5]
    with artent_fast.track(model, targets="q_proj", dense_every=1, base_weights=base, out=path) as t3:
        t3.step()
    assert [r["step"] for r in read_history(path)] == [1]  # a new run starts the file afresh
    with pytest.raises(ValueError, match="base_weights"):
        artent_fast.track(model, targets="q_proj", base_weights={k: v[:4] for k, v in base.items()}, out=None)
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file({**base, "unused": torch.zeros(3)}, tmp_path / "base.safetensors")
    with artent_fast.track(
        model, targets="q_proj", dense_every=1, base_weights=tmp_path / "base.safetensors", out=None
    ) as t4:
        t4.step()
    assert [r["entropies"] for r in t4.history(as_frame=False)] == [r["entropies"] for r in tracker.history(False)]
    with pytest.raises(FileNotFoundError, match="base_weights"):
        artent_fast.track(model, targets="q_proj", base_weights=tmp_path / "none.safetensors", out=None)


@pytest.mark.gpu
def test_cuda_side_stream_matches_reference(tmp_path):
    model = lora(tiny_llama(64, 4, 2)).cuda()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = artent_fast.track(model, optimizer=opt, out=tmp_path)
    expected = {}

    def snapshot(step):
        expected[step] = {
            n: reference(m.get_delta_weight("default"))
            for n, m in modules(model, "proj").items()
            if n.endswith(("q_proj", "v_proj"))
        }

    ids = batch(0).cuda()
    for step in range(1, 4):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        snapshot(step)
    tracker.close()  # waits for the side stream's last results
    for r in tracker.history(as_frame=False):
        assert r["entropies"] == pytest.approx(expected[r["step"]][r["module"]], abs=1e-5)
    assert sorted({r["step"] for r in tracker.history(as_frame=False)}) == [1, 2, 3]


def effective_weights(model, suffixes=("q_proj", "v_proj")) -> dict[str, torch.Tensor]:
    """Each LoRA layer's weight as its forward uses it, ``W_base + s B A``, in float64 (peft's own parts)."""
    out = {}
    for path, layer in model.named_modules():
        name = module_name(path)
        if name.endswith(suffixes) and hasattr(layer, "lora_A"):
            B, A = layer.lora_B["default"].weight.double(), layer.lora_A["default"].weight.double()
            W = layer.get_base_layer().weight.double() + layer.scaling["default"] * (B @ A)
            out[name] = W.detach().clone()
    return out


@pytest.mark.parametrize("init", ["pissa", "olora", "gaussian", True, False])
def test_lora_of_any_initialisation_tracks_the_change_since_start(init):
    """The tracked update is ``W_eff(now) - W_eff(start)`` for every peft initialisation, exact in float64.

    PiSSA and OLoRA move ``s B0 A0`` out of the base weight: profiling ``s B A`` (as before issue 25)
    is off by up to 0.37 nats; the change since start is ``s (B A - B0 A0)``, rank at most ``2 r``.
    """
    model = lora(tiny_llama(seed=3), r=4, init_lora_weights=init)
    start = effective_weights(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tracker = artent_fast.track(model, optimizer=opt, out=None, background=False)
    starts_at_zero = init in (True, "gaussian")
    train(model, opt, 3)
    recs = by_label(tracker.history(), step=3)
    now = effective_weights(model)
    assert set(recs) == {name + "@default" for name in start}
    for name in start:
        rec = recs[name + "@default"]
        want = reference(now[name] - start[name])
        assert rec["kind"] == "lora"
        assert rec["update"] == ("BA" if starts_at_zero else "BA-B0A0")
        assert rec["rank"] == (4 if starts_at_zero else 8)
        assert rec["entropies"] == pytest.approx(want, abs=1e-6), name
    tracker.close()


def test_unchanged_nonzero_adapter_is_a_zero_update_and_part_slices_match():
    """Before any step the change since start is zero (skipped, not round-off); a fused split slices B0 too."""
    model = lora(tiny_llama(seed=4), r=2, init_lora_weights="pissa", target_modules=["q_proj"])
    start = effective_weights(model, ("q_proj",))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tracker = artent_fast.track(model, targets="q_proj", split={"q_proj": 2}, out=None, background=False)
    tracker.step()
    assert tracker.history() == [] and tracker.skipped == len(start) * 2
    train(model, opt, 2)
    tracker.step()
    now = effective_weights(model, ("q_proj",))
    recs = by_label(tracker.history(), step=2)
    for name in start:
        delta = now[name] - start[name]
        half = delta.shape[0] // 2
        assert recs[f"{name}[0]@default"]["entropies"] == pytest.approx(reference(delta[:half]), abs=1e-6)
        assert recs[f"{name}[1]@default"]["entropies"] == pytest.approx(reference(delta[half:]), abs=1e-6)
        assert recs[f"{name}[0]@default"]["update"] == "BA-B0A0"
    tracker.close()


@pytest.mark.parametrize("init", ["lora", "random"])
def test_mps_adaptation_is_tracked_on_the_factored_path(init):
    """The library's own MPS Adaptation (adapters.mps.apply) is tracked: its update s B A_mps, factored,
    measured as the change of the effective weight since tracking started (B = 0 at start with init
    "lora"; init "random" starts elsewhere), exact against the float64 profile of that change."""
    from artent_fast.adapters import mps

    model = tiny_llama(hidden=32, layers=2)
    mps.apply(model, targets=["q_proj", "v_proj"], r=4, chi=3, init=init, seed=1)
    layers = mps.mps_modules(model)

    def exact(layer):  # float64 from the parameters: a float32 product would lose the small change
        return layer.scale * layer.B.detach().double() @ mps.contract_cores([c.detach().double() for c in layer.cores])

    start = {name: exact(layer) for name, layer in layers.items()}
    tracker = artent_fast.track(model, out=None, background=False)
    assert {u.source for u in tracker.units} == {"mps"} and len(tracker.units) == len(layers) == 4
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    train(model, opt, 2)
    tracker.step()
    records = by_label(tracker.history(as_frame=False))
    assert set(records) == set(layers)
    for name, layer in layers.items():
        change = exact(layer) - start[name]
        r = records[name]
        assert r["kind"] == "lora" and r["update"] == ("BA" if init == "lora" else "BA-B0A0")
        assert r["entropies"] == pytest.approx(reference(change), abs=1e-6)
    tracker.close()


def test_a_tracker_dropped_without_close_writes_every_measured_step(tmp_path, monkeypatch):
    """Garbage collected while its worker thread still measures: every due step is written, the history
    file is released (a new tracker can open it), nothing is lost silently."""
    import gc

    from artent_fast.tracking import compute

    slow = compute._measure_on_host

    def slower(measure, inputs):  # keep jobs pending when the tracker is dropped
        import time

        time.sleep(0.05)
        return slow(measure, inputs)

    monkeypatch.setattr(compute, "_measure_on_host", slower)
    model = lora(tiny_llama(layers=2))
    path = tmp_path / "history.jsonl"
    tracker = artent_fast.track(model, out=path, background=True)
    moved(model)
    for _ in range(3):
        tracker.step()
    units = len(tracker.units)
    del tracker
    gc.collect()
    records = [r for r in read_history(path) if r.get("kind") == "lora"]
    assert sorted(r["step"] for r in records) == sorted([1, 2, 3] * units)
    artent_fast.track(model, out=path, resume=True).close()  # the lock was released


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are set on Linux only")
def test_worker_thread_measures_at_low_priority(monkeypatch):
    """The CPU worker thread lowers its own priority (nice + 19 by default; ARTENT_FAST_WORKER_NICE changes it),
    so it measures on a core the training leaves free; the training thread keeps the process's priority."""
    import os
    import threading

    from artent_fast.tracking.compute import Launcher

    def priority_seen(nice: str | None) -> int:
        if nice is None:
            monkeypatch.delenv("ARTENT_FAST_WORKER_NICE", raising=False)
        else:
            monkeypatch.setenv("ARTENT_FAST_WORKER_NICE", nice)
        launcher = Launcher(background=True)
        seen = []

        def measure(x):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return x

        launcher.run(1, [], [], [torch.zeros(1)], measure).result()
        launcher.close()
        return seen[0]

    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert priority_seen(None) == min(19, base + 19)
    assert priority_seen("5") == min(19, base + 5)
    assert priority_seen("0") == base
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # this thread untouched
    with pytest.raises(ValueError, match="ARTENT_FAST_WORKER_NICE"):
        priority_seen("low")
