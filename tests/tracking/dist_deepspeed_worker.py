"""Worker for test_tracking_deepspeed.py: ``torchrun --nproc-per-node 2 dist_deepspeed_worker.py OUT KIND``.

A tiny LLaMA with a peft adapter (KIND: lora, loha) trained 3 steps by a DeepSpeed ZeRO-3 engine on
CPU (gloo, ``DS_ACCELERATOR=cpu``), tracked with ``artent_fast.track(engine)``; every rank then
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


def main(out: Path, kind: str) -> None:
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
    main(Path(sys.argv[1]), sys.argv[2])
