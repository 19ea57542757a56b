"""Step-time overhead of artent_fast.track on a LoRA fine-tune (ratios within one run).

Default (the CPU target, <= 5%): a 4-layer, 256-hidden LLaMA (8 heads, 4 key/value heads), LoRA
r=8 on q_proj and v_proj, batches of 4 x 128 tokens, tracked every step. ``--preset llama1b``
(the GPU target, <= 1%): LLaMA-3.2-1B shapes, 16 layers, q 2048x2048 and v 512x2048, r=16.

Tracked and untracked blocks of steps alternate on the same model so that machine noise hits
both alike; a block is timed as a whole (with a CUDA synchronize at its end), so on CUDA the
side-stream work the tracker queues is counted where it competes with training. The table gives
median per-step wall times, their ratio, the host time of ``tracker.step()`` itself, and the
process CPU time per step (less sensitive to other processes on a shared machine; CPU only).

    python benchmarks/bench_tracking.py                       # CPU target, vocab 32000
    python benchmarks/bench_tracking.py --vocab 256           # tiny vocabulary: a cheaper step, the harder case
    python benchmarks/bench_tracking.py --preset llama1b --device cuda --dtype bfloat16

Distributed (``--distributed fsdp2|ddp``, launched with torchrun; every rank trains and tracks, the
tracker splits the measuring work across ranks and gathers to rank 0; rank 0 prints):

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/bench_tracking.py --distributed fsdp2 --vocab 256
    torchrun --nproc-per-node 8 benchmarks/bench_tracking.py --distributed fsdp2 --preset llama1b \
        --device cuda --dtype bfloat16                      # NCCL, one GPU per rank
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

PRESETS = {
    "small": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "rank": 8,
        "vocab": 32000,
        "batch": 4,
        "seq_len": 128,
    },
    "llama1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rank": 16,
        "vocab": 128256,
        "batch": 4,
        "seq_len": 512,
    },
}


def build(preset: dict, vocab: int, rank: int, device: str, dtype: torch.dtype):
    import peft
    import transformers

    torch.manual_seed(0)
    shape = {k: v for k, v in preset.items() if k not in ("rank", "vocab", "batch", "seq_len")}
    config = transformers.LlamaConfig(vocab_size=vocab, max_position_embeddings=4096, **shape)
    model = transformers.LlamaForCausalLM(config).to(device=device, dtype=dtype)
    lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"])
    return peft.get_peft_model(model, lora)


def wrap(model, strategy: str, device_type: str, world: int):
    """FSDP2: ``fully_shard`` every decoder layer, then the root; DDP: ``DistributedDataParallel``."""
    if strategy == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device_type, (world,))
    for layer in model.base_model.model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: the preset's)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: the preset's)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--blocks", type=int, default=6, help="tracked/untracked block pairs")
    parser.add_argument("--block-steps", type=int, default=5)
    parser.add_argument("--distributed", choices=("fsdp2", "ddp"), help="under torchrun: shard (FSDP2) or replicate")
    parser.add_argument(
        "--background",
        choices=("auto", "on", "off"),
        default="auto",
        help="CPU: measure on the tracker's worker thread (on) or the training thread (off); auto: track()'s default",
    )
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    vocab, rank = args.vocab or preset["vocab"], args.rank or preset["rank"]
    batch, seq_len = args.batch or preset["batch"], args.seq_len or preset["seq_len"]
    cuda = args.device.startswith("cuda")
    world, me = 1, 0
    if args.distributed:
        import torch.distributed as dist

        if "WORLD_SIZE" not in os.environ:
            parser.error("--distributed: launch with torchrun --nproc-per-node N")
        if cuda:
            args.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(args.device)
        dist.init_process_group("nccl" if cuda else "gloo")
        world, me = dist.get_world_size(), dist.get_rank()

    import artent_fast
    from artent_fast.bench.tracking import time_blocks

    model = build(preset, vocab, rank, args.device, getattr(torch, args.dtype))
    if args.distributed:
        model = wrap(model, args.distributed, "cuda" if cuda else "cpu", world)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    background = {"auto": None, "on": True, "off": False}[args.background]
    tracker = artent_fast.track(model, out=None, background=background)  # steps given explicitly, tracked blocks only
    gen = torch.Generator().manual_seed(0)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()
        if args.distributed:
            torch.distributed.barrier()  # time blocks from a common start (outside the tracker)

    def train_step() -> None:
        ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(args.device)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = time_blocks(train_step, tracker, sync, blocks=args.blocks, block_steps=args.block_steps, warmup=3)
    plain, tracked, own = times["plain"], times["tracked"], times["own"]
    tracker.close()
    if args.distributed:
        report = me == 0
        torch.distributed.destroy_process_group()
        if not report:
            return
    p, t, o = statistics.median(plain), statistics.median(tracked), statistics.median(own)
    where = f"{args.device} ({torch.cuda.get_device_name()})" if cuda else f"cpu, {torch.get_num_threads()} threads"
    if args.distributed:
        where += f", {args.distributed.upper()} on {world} ranks ({'nccl' if cuda else 'gloo'}), rank 0's times"
    print(
        f"LoRA fine-tune, LLaMA preset {args.preset} (vocab {vocab}, {args.dtype}), r={rank} on q_proj+v_proj "
        f"({len(tracker.units)} tracked updates), batch {batch}x{seq_len}, {where}, "
        f"measuring {'on a worker thread' if tracker._launcher.background else 'on the training thread'}, "
        f"{args.blocks} x {args.block_steps} steps each"
    )
    print(f"{'':32}{'median s/step':>14}{'ratio':>8}")
    print(f"{'untracked':32}{p:14.4f}{1.0:8.3f}")
    print(f"{'tracked every step':32}{t:14.4f}{t / p:8.3f}")
    print(f"{'tracker.step() alone (host)':32}{o:14.4f}{o / p:8.3f}")
    cp, ct = statistics.median(times["plain_cpu"]), statistics.median(times["tracked_cpu"])
    print(f"{'process CPU time, untracked':32}{cp:14.4f}{1.0:8.3f}")
    print(f"{'process CPU time, tracked':32}{ct:14.4f}{ct / cp:8.3f}")
    print(
        f"overhead: {100 * (t / p - 1):+.1f}% by wall time per step, {100 * (ct / cp - 1):+.1f}% by process CPU "
        f"time (robust on a shared machine), {100 * o / p:.1f}% by the tracker's own time"
    )


if __name__ == "__main__":
    main()
