"""Worker for test_tracking_deepspeed.py: ``torchrun --nproc-per-node 2 dist_deepspeed_worker.py OUT KIND``.

A tiny LLaMA with a peft adapter (KIND: lora, loha, dora) trained 3 steps by a DeepSpeed ZeRO-3 engine
on CPU (gloo, ``DS_ACCELERATOR=cpu``), tracked with ``artent_fast.track(engine)``; or (KIND trainer)
LoRA trained by the HF ``Trainer`` with a ZeRO-3 config and ``ArtentCallback``. Every rank then
gathers the factors itself and writes the float64 reference profile of the change since the start,
computed from peft's own ``get_delta_weight``, next to the tracker's records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import deepspeed
import peft
import torch
import transformers

import artent_fast
from artent_fast.patterns import module_name
from artent_fast.testing.models import tiny_llama_config

CONFIGS = {
    "lora": lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "loha": lambda: peft.LoHaConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"]),
    "dora": lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True),
}


def deltas(model) -> dict[str, torch.Tensor]:
    """Each adapted layer's update, whole (gathered), float64, by peft's get_delta_weight."""
    layers = {module_name(n): m for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))}
    layers = {n: m for n, m in layers.items() if hasattr(m, "get_delta_weight")}
    params = [p for m in layers.values() for p in m.parameters()]  # LoHa reshapes to the base weight
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        return {n: m.get_delta_weight("default").detach().double().clone() for n, m in layers.items()}


def with_trainer(out: Path) -> None:
    """The HF Trainer's own DeepSpeed integration (accelerate underneath), the callback unchanged."""
    import datasets

    from artent_fast.integrations.hf import ArtentCallback

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, max_position_embeddings=32))
    model = peft.get_peft_model(model, CONFIGS["lora"]())
    ids = torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(0)).tolist()
    zero3 = {  # train_batch_size left out: DeepSpeed derives it (the Trainer's CPU world size would be 1)
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3},
        "zero_allow_untested_optimizer": True,
    }
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=0.1,
        deepspeed=zero3,
        ddp_backend="gloo",
        report_to=[],
        logging_steps=1,
        save_strategy="no",
    )
    callback = ArtentCallback(out=out / "history.jsonl", every=1)
    dataset = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback])
    trainer.train()
    rank = torch.distributed.get_rank()
    now = deltas(model)  # B started at zero: the change since the start is the whole update
    reference = {n: artent_fast.entanglement_profile(now[n], method="naive").tolist() for n in sorted(now)}
    (out / f"reference{rank}.json").write_text(json.dumps(reference))
    logged = [h for h in trainer.state.log_history if any(k.startswith("artent/") for k in h)]
    (out / f"logged{rank}.json").write_text(json.dumps(logged))


def main(out: Path, kind: str) -> None:
    if kind == "trainer":
        with_trainer(out)
        return
    deepspeed.init_distributed(dist_backend="gloo")
    rank = torch.distributed.get_rank()
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, max_position_embeddings=32))
    model = peft.get_peft_model(model, CONFIGS[kind]())
    params = [p for p in model.parameters() if p.requires_grad]
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": 3},
        "zero_allow_untested_optimizer": True,
    }
    engine, *_ = deepspeed.initialize(model=model, config=config, optimizer=torch.optim.SGD(params, lr=0.5))
    try:
        tracker = artent_fast.track(engine, out=out / "history.jsonl", every=1)
    except ValueError as exc:
        (out / f"refused{rank}.txt").write_text(str(exc))
        return
    start = deltas(model)
    for step in range(3):
        ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(step))
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        tracker.step()
    tracker.close()
    now = deltas(model)
    reference = {n: artent_fast.entanglement_profile(now[n] - start[n], method="naive").tolist() for n in sorted(now)}
    (out / f"reference{rank}.json").write_text(json.dumps(reference))


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), sys.argv[2])
    finally:  # tear the process group down before exit: left to interpreter shutdown, a communication thread
        if torch.distributed.is_initialized():  # still joinable once aborted the process (seen 1 run in ~6)
            torch.distributed.destroy_process_group()  # local: no collective that a failed rank would hang
