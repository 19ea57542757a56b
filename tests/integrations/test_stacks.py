"""Training stacks around the tracker: torch.compile, TRL's SFTTrainer, accelerate without the Trainer, QLoRA.

Each is a tiny LLaMA built from a config; the measured profiles are checked against the float64 profile of
the real update (``scaling * B @ A``, read from the factors).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import artent_fast
from artent_fast.patterns import module_name
from artent_fast.testing.models import cpu_training_args, moved, tiny_llama_config


def reference(layer: nn.Module, adapter: str = "default") -> list[float]:
    """Float64 profile of ``scaling * B @ A`` from the factors themselves (the base weight is not read)."""
    B = layer.lora_B[adapter].weight.detach().double()
    A = layer.lora_A[adapter].weight.detach().double()
    return artent_fast.entanglement_profile(layer.scaling[adapter] * B @ A, method="naive").tolist()


def lora_llama(layers: int = 1):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = tiny_llama_config(num_hidden_layers=layers, max_position_embeddings=32)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return peft.get_peft_model(transformers.LlamaForCausalLM(config), lora)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {module_name(n): m for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))}


def check_last_step(history: list[dict], model: nn.Module) -> None:
    last_step = max(r["step"] for r in history)
    last = {r["module"]: r for r in history if r["step"] == last_step}
    layers = lora_layers(model)
    assert set(last) == set(layers)
    for name, layer in layers.items():
        assert last[name]["entropies"] == pytest.approx(reference(layer), abs=1e-5)


# -- torch.compile -----------------------------------------------------------------------------------


def test_compiled_model_names_and_no_graph_breaks():
    from torch._dynamo.utils import counters

    model = lora_llama()
    compiled = torch.compile(model, backend="eager")  # dynamo's tracing is what breaks graphs; eager keeps it fast
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    tracker = artent_fast.track(compiled, optimizer=opt, out=None, background=False)
    assert all(u.path.startswith("_orig_mod.") for u in tracker.units)
    assert {u.module for u in tracker.units} == set(lora_layers(model))  # names without _orig_mod.
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    counters.clear()
    for _ in range(3):
        compiled(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    explained = torch._dynamo.explain(compiled)(input_ids=ids, labels=ids)
    assert explained.graph_break_count == 0, explained.break_reasons
    tracker.close()
    assert sorted({r["step"] for r in tracker.history()}) == [1, 2, 3]
    check_last_step(tracker.history(), model)


# -- TRL's SFTTrainer ----------------------------------------------------------------------------------


def char_tokenizer():
    """A 28-token character tokenizer built locally (no downloads): ``<pad>``, ``<eos>``, ``a``-``z``."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, **{chr(97 + i): i + 2 for i in range(26)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_trl_sft_trainer_callback_unchanged(tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from artent_fast.integrations.hf import ArtentCallback

    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(tiny_llama_config(num_hidden_layers=1, max_position_embeddings=32))
    gen = torch.Generator().manual_seed(1)
    texts = ["".join(chr(97 + int(i)) for i in torch.randint(0, 26, (12,), generator=gen)) for _ in range(16)]
    args = cpu_training_args(tmp_path, trl.SFTConfig, max_steps=4, learning_rate=1e-2, max_length=16)
    trainer = trl.SFTTrainer(  # SFTTrainer wraps the model in peft itself (its most common use)
        model=base,
        args=args,
        train_dataset=datasets.Dataset.from_dict({"text": texts}),
        processing_class=char_tokenizer(),
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    callback = ArtentCallback.attach(trainer, every=2)
    trainer.train()

    history = callback.tracker.history()
    assert sorted({r["step"] for r in history}) == [2, 4]
    check_last_step(history, trainer.model)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logged] == [2, 4]
    for entry in logged:
        assert {"artent/q_proj/valley_depth_mean", "artent/v_proj/row_col_entropy_mean"} <= set(entry)
    q = [r["valley_depth"] for r in history if r["step"] == 4 and r["module"].endswith("q_proj")]
    assert logged[-1]["artent/q_proj/valley_depth_min"] == pytest.approx(min(q))


# -- accelerate without the Trainer ------------------------------------------------------------------


@pytest.mark.parametrize("accumulate", [1, 2])
def test_accelerate_plain_loop_readme_example(tmp_path, accumulate):
    accelerate = pytest.importorskip("accelerate")
    model = lora_llama()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=accumulate)
    model, opt = accelerator.prepare(model, opt)
    # the README's plain loop: track(model, optimizer=opt); accelerate's optimizer wraps the torch one
    tracker = artent_fast.track(model, optimizer=opt, out=tmp_path / "artent", background=False)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        ids = torch.randint(0, 64, (2, 8), generator=gen)
        with accelerator.accumulate(model):
            accelerator.backward(model(input_ids=ids, labels=ids).loss)
            opt.step()
            opt.zero_grad()
    tracker.close()
    steps = 4 // accumulate  # optimizer steps, not micro-batches
    assert tracker.current_step == steps
    assert sorted({r["step"] for r in tracker.history()}) == list(range(1, steps + 1))
    check_last_step(tracker.history(), accelerator.unwrap_model(model))


def test_optimizer_that_cannot_be_hooked_is_refused():
    model = lora_llama()
    with pytest.raises(TypeError, match="optimizer= must be a torch.optim.Optimizer"):
        artent_fast.track(model, optimizer=object(), out=None)


# -- QLoRA (a stand-in for bitsandbytes' Linear4bit) ------------------------------------------------


class FourBitStandIn(nn.Module):
    """The structure of bitsandbytes' ``Linear4bit`` as peft's LoRA sees it, with a guard.

    bitsandbytes' 4-bit CPU backend is not installed here, so this stands in: ``in_features``,
    ``out_features``, a packed ``uint8`` weight of ``out * in / 2`` bytes. Once ``armed``, reading
    ``.weight`` or calling ``dequantize()`` raises (and counts): nothing may read the base.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed = torch.zeros(linear.out_features * linear.in_features // 2, 1, dtype=torch.uint8)
        self._parameters["weight"] = nn.Parameter(packed, requires_grad=False)  # what named_parameters sees
        self.compute = linear.weight.detach().clone()  # forward's own copy (bitsandbytes' kernel)
        self.armed = False
        self.reads = 0

    def __getattr__(self, name: str):
        if name == "weight" and self.__dict__.get("armed"):
            self.__dict__["reads"] += 1
            raise RuntimeError("the 4-bit base weight was read")
        return super().__getattr__(name)

    def dequantize(self) -> torch.Tensor:
        self.reads += 1
        raise RuntimeError("the 4-bit base weight was dequantised")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.compute.to(x.dtype))


@pytest.mark.parametrize("start", ["zero", "moved"])  # B0 = 0 ("BA") and a non-zero start ("BA-B0A0")
def test_qlora_factored_path_never_reads_the_base(start):
    model = lora_llama()
    bases = []
    for layer in lora_layers(model).values():
        layer.base_layer = FourBitStandIn(layer.base_layer)
        bases.append(layer.base_layer)
    if start == "moved":
        moved(model)
    for base in bases:
        base.armed = True
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = artent_fast.track(model, optimizer=opt, out=None, background=False, split={"q_proj": 2})
    assert {u.kind for u in tracker.units} == {"lora"}
    assert {u.update for u in tracker.units} == {"BA" if start == "zero" else "BA-B0A0"}
    snapshot = {
        n: (m.lora_B["default"].weight.detach().clone(), m.lora_A["default"].weight.detach().clone())
        for n, m in lora_layers(model).items()
    }
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    tracker.close()
    assert sum(b.reads for b in bases) == 0
    assert not tracker.dropped and tracker.skipped == 0
    last = {(r["module"], r.get("part")): r for r in tracker.history() if r["step"] == 2}
    for name, layer in lora_layers(model).items():
        B0, A0 = snapshot[name] if start == "moved" else (torch.zeros(1), torch.zeros(1))
        B, A = layer.lora_B["default"].weight.detach(), layer.lora_A["default"].weight.detach()
        update = layer.scaling["default"] * (B.double() @ A.double() - B0.double() @ A0.double())
        parts = [(None, update)] if name.endswith("v_proj") else [("0", update[:16]), ("1", update[16:])]
        for part, matrix in parts:
            expected = artent_fast.entanglement_profile(matrix, method="naive").tolist()
            assert last[(name, part)]["entropies"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes (dev extra)")
def test_qlora_on_a_real_bitsandbytes_4bit_base(tmp_path):
    """QLoRA as users run it: transformers loads the base in 4 bits (bitsandbytes' CPU backend), peft puts
    LoRA on the ``Linear4bit`` layers. The tracker never dequantises the base (counted on bitsandbytes'
    own ``dequantize_4bit`` around construction and every measured step), and its records equal the
    float64 profile of ``scaling * B @ A``."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    bnb_functional = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(0)
    config = tiny_llama_config(  # every projection at least 64 wide: 4-bit blocks of 64
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_key_value_heads=4, max_position_embeddings=32
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    quantized = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    base = transformers.LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=quantized, device_map="cpu")
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    calls = []
    original = bnb_functional.dequantize_4bit

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    bnb_functional.dequantize_4bit = counted
    try:
        tracker = artent_fast.track(model, out=None, background=False)
        assert {u.kind for u in tracker.units} == {"lora"} and len(tracker.units) == 2
        ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
        read = 0
        for _ in range(2):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
            before = len(calls)  # training dequantises in its forward and backward; the tracker must not
            tracker.step()
            read += len(calls) - before
        tracker.close()
    finally:
        bnb_functional.dequantize_4bit = original
    assert read == 0 and calls, "the tracker dequantised the 4-bit base (or training never did: nothing counted)"
    check_last_step(tracker.history(), model)
