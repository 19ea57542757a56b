"""HF Trainer and Lightning callbacks drive the tracker; their scalars reach the frameworks' logging paths."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import artent_fast
from artent_fast.patterns import module_name
from artent_fast.testing.models import cpu_training_args, tiny_llama_config
from artent_fast.tracking import read_history


def reference(matrix: torch.Tensor) -> list[float]:
    return artent_fast.entanglement_profile(matrix.detach().double(), method="naive").tolist()


@pytest.mark.slow
def test_integrations_package_imports_nothing_heavy():
    code = (
        "import sys, artent_fast.integrations, artent_fast.tracking; "
        "print(any(m in sys.modules for m in ('transformers', 'peft', 'lightning', 'pandas', 'matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_hf_trainer_callback(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from artent_fast.integrations.hf import ArtentCallback

    torch.manual_seed(0)
    config = tiny_llama_config(max_position_embeddings=32)
    model = peft.get_peft_model(
        transformers.LlamaForCausalLM(config), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    gen = torch.Generator().manual_seed(1)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (16, 12), generator=gen)]

    class Recorder(transformers.TrainerCallback):
        logs: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    args = cpu_training_args(tmp_path, max_steps=4, learning_rate=1e-2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[Recorder()])
    callback = ArtentCallback.attach(trainer, every=2)
    trainer.train()

    tracker = callback.tracker
    history = tracker.history(as_frame=False)
    assert sorted({r["step"] for r in history}) == [2, 4]  # peft's B = 0 at init: nothing before training
    layers = {module_name(n): m for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))}
    last = {r["module"]: r for r in history if r["step"] == 4}
    assert set(last) == set(layers)
    for name, layer in layers.items():
        assert last[name]["entropies"] == pytest.approx(reference(layer.get_delta_weight("default")), abs=1e-5)
    assert len(read_history(tmp_path / "artent")) == len(history)
    logged = [log for log in Recorder.logs if any(k.startswith("artent/") for k in log)]
    assert len(logged) == 2  # the summaries went through the Trainer's logs at both logging steps
    artent_keys = {k for k in logged[-1] if k.startswith("artent/")}
    assert artent_keys == {
        f"artent/{kind}/{s}"
        for kind in ("q_proj", "v_proj")
        for s in ("valley_depth_mean", "valley_depth_min", "row_col_entropy_mean")
    }
    q_depths = [r["valley_depth"] for n, r in last.items() if n.endswith("q_proj")]
    assert logged[-1]["artent/q_proj/valley_depth_min"] == pytest.approx(min(q_depths))
    assert logged[-1]["artent/q_proj/valley_depth_mean"] == pytest.approx(sum(q_depths) / len(q_depths))
    # per-module scalars and summaries land in log_history (trainer_state.json)
    entry = next(e for e in trainer.state.log_history if e.get("step") == 4 and "loss" in e)
    name = next(iter(layers))
    assert entry[f"artent/{name}/row_col_entropy"] == pytest.approx(last[name]["row_col_entropy"])
    assert entry["artent/v_proj/valley_depth_min"] == logged[-1]["artent/v_proj/valley_depth_min"]


def test_hf_callback_per_module_scalars_in_logs(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from artent_fast.integrations.hf import ArtentCallback

    torch.manual_seed(0)
    config = tiny_llama_config(num_hidden_layers=1, max_position_embeddings=32)
    model = peft.get_peft_model(
        transformers.LlamaForCausalLM(config), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (8, 12))]
    seen: list[dict] = []

    class Recorder(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    args = cpu_training_args(tmp_path, max_steps=2, learning_rate=1e-2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[Recorder()])
    callback = ArtentCallback.attach(trainer, per_module=True)
    trainer.train()
    module = callback.tracker.units[0].label
    logged = [log for log in seen if any(k.startswith("artent/") for k in log)]
    assert f"artent/{module}/valley_depth" in logged[-1] and "artent/q_proj/valley_depth_mean" in logged[-1]


def test_hf_callback_via_constructor_and_rejects_optimizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    from artent_fast.integrations.hf import ArtentCallback

    with pytest.raises(TypeError, match="optimizer"):
        ArtentCallback(optimizer=object())
    torch.manual_seed(0)
    config = tiny_llama_config(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32
    )
    model = transformers.LlamaForCausalLM(config)  # full fine-tuning: dense path, W0 snapshot
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (8, 8))]
    args = cpu_training_args(tmp_path, max_steps=2, logging_steps=1)
    callback = ArtentCallback(dense_every=1, out=tmp_path / "fft.jsonl")
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    records = read_history(tmp_path / "fft.jsonl")
    assert {(r["step"], r["kind"]) for r in records} == {(1, "dense"), (2, "dense")}


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(12, 24)
        self.v_proj = nn.Linear(24, 8)

    def forward(self, x):
        return self.v_proj(torch.tanh(self.q_proj(x)))


def test_lightning_callback(tmp_path):
    lightning = pytest.importorskip("lightning")
    from artent_fast.integrations.lightning import ArtentCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Regression()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    module = Module()
    w0 = {module_name(n): m.weight.detach().double().clone() for n, m in module.named_modules() if n.endswith("proj")}
    data = torch.utils.data.TensorDataset(torch.randn(32, 12), torch.randn(32, 8))
    callback = ArtentCallback(dense_every=1)
    trainer = lightning.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    history = callback.tracker.history(as_frame=False)
    assert sorted({r["step"] for r in history}) == [1, 2, 3]  # optimizer steps, not micro-batches
    last = {r["module"]: r for r in history if r["step"] == 3}
    assert set(last) == set(w0)
    for path, layer in module.named_modules():
        name = module_name(path)
        if name in w0:
            assert last[name]["entropies"] == pytest.approx(reference(layer.weight.double() - w0[name]), abs=1e-5)
    assert any(k.startswith("artent/net.q_proj/") for k in trainer.callback_metrics)
    assert (tmp_path / "artent" / "history.jsonl").exists()
