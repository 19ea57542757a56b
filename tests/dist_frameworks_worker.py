"""Worker for tests/test_tracking_distributed.py: the HF Trainer and Lightning (DDP, gloo, CPU) under torchrun.

``torchrun --nproc-per-node 2 dist_frameworks_worker.py OUT hf lightning``: trains a small LoRA
model with the framework's callback on every rank; each rank writes ``OUT/<mode>.rank<r>.json``
with its history and rank 0 the float64 reference profiles of its final update (DDP keeps
whole replicas) and the Trainer's ``log_history`` (HF).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import dist_tracking_worker as base  # noqa: E402


class Loss(nn.Module):
    """``Tiny`` with a loss, as the HF Trainer calls it: ``model(x=..., labels=...) -> {"loss": ...}``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = base.Tiny()

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def lora(model: nn.Module) -> nn.Module:
    import peft

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return peft.get_peft_model(model, config)


def references(model: nn.Module) -> dict[str, list[float]]:
    import artent_fast
    from artent_fast.tracking.distributed import unwrapped_name

    out = {}
    for path, module in model.named_modules():
        if unwrapped_name(path).endswith(("q_proj", "v_proj")) and hasattr(module, "lora_A"):
            delta = (
                module.scaling["default"]
                * module.lora_B["default"].weight.double()
                @ module.lora_A["default"].weight.double()
            )
            out[unwrapped_name(path)] = artent_fast.entanglement_profile(delta, method="naive").tolist()
    return out


def data(n: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(2)
    return [{"x": torch.randn(base.D, generator=g), "labels": torch.randn(4, generator=g)} for _ in range(n)]


def run_hf(out: Path) -> None:
    import torch.distributed as dist
    import transformers

    from artent_fast.integrations.hf import ArtentCallback

    torch.manual_seed(0)
    model = lora(Loss())
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        logging_steps=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        ddp_backend="gloo",
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data())
    callback = ArtentCallback.attach(trainer, every=2)
    trainer.train()
    rank = dist.get_rank()
    report = {
        "history": callback.tracker.history(),
        "refs": references(model) if rank == 0 else {},
        "log_history": trainer.state.log_history,
        "world": dist.get_world_size(),
    }
    (out / f"hf.rank{rank}.json").write_text(json.dumps(report))


def run_lightning(out: Path) -> None:
    import lightning

    from artent_fast.integrations.lightning import ArtentCallback

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = lora(Loss())

        def training_step(self, batch, batch_idx):
            return self.model(**batch)["loss"]

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.05)

    module = Module()
    callback = ArtentCallback()
    trainer = lightning.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=3,
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out / "lightning"),
    )
    loader = torch.utils.data.DataLoader(data(), batch_size=4)
    trainer.fit(module, loader)
    rank = trainer.global_rank
    report = {
        "history": callback.tracker.history(),
        "refs": references(module) if rank == 0 else {},
        "world": trainer.world_size,
    }
    (out / f"lightning.rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    torch.set_num_threads(1)
    for mode in sys.argv[2:]:
        {"hf": run_hf, "lightning": run_lightning}[mode](Path(sys.argv[1]))
