"""Worker for test_tracking_distributed.py: the HF Trainer and Lightning under torchrun (gloo, CPU).

``torchrun --nproc-per-node 2 dist_frameworks_worker.py OUT MODE...`` trains a small LoRA model
with the framework's callback on every rank, for each MODE:

- ``hf``: the Trainer with DDP;
- ``hf_fsdp``: the Trainer configured for FSDP2 (``fsdp=True, fsdp_config={"version": 2}``). On CPU
  accelerate 1.15 drops the FSDP plugin (``AcceleratorState`` turns on FSDP only for GPU-like
  distributed types, not ``MULTI_CPU``) and the Trainer runs DDP; the report says which ran;
- ``lightning``: ``strategy="ddp"``;
- ``lightning_fsdp2``: ``ModelParallelStrategy`` (FSDP2: ``fully_shard`` in ``configure_model``,
  DTensor parameters). Lightning's ``FSDPStrategy`` (FSDP1) refuses ``accelerator="cpu"``;
- ``attention_ddp``, ``attention_fsdp2``: no framework: ``track(model, optimizer=opt, attention=True)``
  on every rank with a tiny peft LLaMA on the "artent" attention, wrapped in DDP or sharded with
  ``fully_shard`` (each decoder layer, then the root); each rank feeds its own batches.

Each rank writes ``OUT/<mode>.rank<r>.json`` with its history, and rank 0 the float64 reference
profiles of the final update, computed from the whole factors (``DTensor.full_tensor()`` on every
rank under FSDP2, outside the tracker), and the Trainer's ``log_history`` (HF).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from artent_fast.patterns import module_name
from artent_fast.testing.models import cpu_training_args

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

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return peft.get_peft_model(model, config)


def whole(t: torch.Tensor) -> torch.Tensor:
    """The full tensor of a parameter: ``full_tensor()`` of a DTensor (a collective: call on every rank)."""
    t = t.detach()
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def references(model: nn.Module) -> dict[str, list[float]]:
    """Float64 profiles of the LoRA updates from the whole factors; call on every rank (gathers DTensors)."""
    import artent_fast

    out = {}
    for path, module in model.named_modules():
        if module_name(path).endswith(("q_proj", "v_proj")) and hasattr(module, "lora_A"):
            b = whole(module.lora_B["default"].weight).double()
            a = whole(module.lora_A["default"].weight).double()
            delta = module.scaling["default"] * b @ a
            out[module_name(path)] = artent_fast.entanglement_profile(delta, method="naive").tolist()
    return out


def sharded(model: nn.Module) -> bool:
    """True when the LoRA factors are DTensors (FSDP2 sharding took place)."""
    return any(hasattr(p, "full_tensor") for n, p in model.named_parameters() if "lora_" in n)


def data(n: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(2)
    return [{"x": torch.randn(base.D, generator=g), "labels": torch.randn(4, generator=g)} for _ in range(n)]


def run_hf(out: Path, mode: str = "hf") -> None:
    import torch.distributed as dist
    import transformers

    from artent_fast.integrations.hf import ArtentCallback

    fsdp = {"fsdp": True, "fsdp_config": {"version": 2}} if mode == "hf_fsdp" else {}
    torch.manual_seed(0)
    model = lora(Loss())
    args = cpu_training_args(
        out / mode, max_steps=4, learning_rate=5e-2, ddp_backend="gloo", remove_unused_columns=False, seed=0, **fsdp
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data())
    callback = ArtentCallback.attach(trainer, every=2)
    trainer.train()
    rank = dist.get_rank()
    refs = references(model)  # every rank: a collective under FSDP2
    report = {
        "history": callback.tracker.history(),
        "refs": refs if rank == 0 else {},
        "log_history": trainer.state.log_history,
        "world": dist.get_world_size(),
        "fsdp_enabled": bool(trainer.is_fsdp_enabled),
        "distributed_type": str(trainer.accelerator.state.distributed_type),
        "wrapper": type(trainer.model_wrapped).__name__,
        "sharded": sharded(model),
    }
    (out / f"{mode}.rank{rank}.json").write_text(json.dumps(report))


def run_lightning(out: Path, mode: str = "lightning") -> None:
    import lightning

    from artent_fast.integrations.lightning import ArtentCallback

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = lora(Loss())

        def configure_model(self) -> None:
            if mode != "lightning_fsdp2":
                return
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for block in base.blocks_of(self.model):
                fully_shard(block, mesh=mesh)
            fully_shard(self.model, mesh=mesh)

        def training_step(self, batch, batch_idx):
            return self.model(**batch)["loss"]

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.05)

    if mode == "lightning_fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    else:
        strategy = "ddp"
    module = Module()
    callback = ArtentCallback()
    trainer = lightning.Trainer(
        strategy=strategy,
        accelerator="cpu",
        devices=2,
        max_steps=3,
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out / mode),
    )
    loader = torch.utils.data.DataLoader(data(), batch_size=4)
    trainer.fit(module, loader)
    rank = trainer.global_rank
    refs = references(module)  # every rank: a collective under FSDP2
    report = {
        "history": callback.tracker.history(),
        "refs": refs if rank == 0 else {},
        "world": trainer.world_size,
        "sharded": sharded(module),
    }
    (out / f"{mode}.rank{rank}.json").write_text(json.dumps(report))


def run_attention(out: Path, mode: str) -> None:
    """``attention=True`` under DDP or FSDP2 (see the module docstring)."""
    import peft
    import torch.distributed as dist
    import transformers

    import artent_fast
    from artent_fast.attention import register_attention
    from artent_fast.testing.models import tiny_llama_config
    from artent_fast.tracking import read_history

    if not dist.is_initialized():  # run alone: the frameworks modes initialise it otherwise
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_llama_config())
    model.set_attn_implementation(register_attention())
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    if mode == "attention_fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.base_model.model.model.layers:
            fully_shard(layer)
        wrapped = fully_shard(model)
    else:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    tracker = artent_fast.track(wrapped, optimizer=opt, attention=True, out=out / mode)
    g = torch.Generator().manual_seed(10 + rank)  # different data on each rank
    for _ in range(3):
        ids = torch.randint(0, 64, (2, 12), generator=g)
        wrapped(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    tracker.close()
    refs = references(model)  # every rank (gathers DTensors under FSDP2)
    report = {
        "history": tracker.history(),
        "file": read_history(out / mode) if rank == 0 else None,
        "refs": refs,
        "attention_modules": [module_name(n) for n, m in model.named_modules() if n.endswith("self_attn")],
    }
    (out / f"{mode}.rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    torch.set_num_threads(1)
    for mode in sys.argv[2:]:
        run = run_hf if mode.startswith("hf") else run_attention if mode.startswith("attention") else run_lightning
        run(Path(sys.argv[1]), mode)
