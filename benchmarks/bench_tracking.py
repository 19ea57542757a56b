"""Step-time overhead of artent_fast.track on a LoRA fine-tune (ratios within one run).

A 4-layer, 256-hidden LLaMA (8 heads, 4 key/value heads), LoRA r=8 on q_proj and v_proj, batches of
4 x 128 tokens, tracked every step. Tracked and untracked steps are interleaved in blocks on the
same model so that machine noise hits both alike; the table gives median step times, their ratio,
and the median time of ``tracker.step()`` itself over the untracked step time.

    python benchmarks/bench_tracking.py                 # vocab 32000 (LLaMA's)
    python benchmarks/bench_tracking.py --vocab 256     # a tiny vocabulary: the harder case
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(vocab: int, rank: int, seed: int):
    import peft
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256)
    model = peft.get_peft_model(transformers.LlamaForCausalLM(config),
                                peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"]))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=6, help="tracked/untracked block pairs")
    parser.add_argument("--block-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import artent_fast

    model = build(args.vocab, args.rank, 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tracker = artent_fast.track(model, out=None)  # steps given explicitly below, only in tracked blocks
    gen = torch.Generator().manual_seed(0)

    def train_step(tracked: bool) -> tuple[float, float]:
        ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=gen)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        if tracked:
            tracker.step()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    for _ in range(3):  # warm-up (and B != 0 from here on)
        train_step(True)
    plain, tracked, tracker_only = [], [], []
    for _ in range(args.blocks):
        plain += [train_step(False)[0] for _ in range(args.block_steps)]
        for _ in range(args.block_steps):
            total, own = train_step(True)
            tracked.append(total)
            tracker_only.append(own)
    tracker.close()
    p, t, o = (statistics.median(x) for x in (plain, tracked, tracker_only))
    print(f"LoRA fine-tune, LLaMA 4x256 (vocab {args.vocab}), r={args.rank} on q_proj+v_proj "
          f"({len(tracker.units)} tracked updates), batch {args.batch}x{args.seq_len}, "
          f"{torch.get_num_threads()} threads, {len(plain)} steps each")
    print(f"{'':28}{'median s':>10}{'ratio':>8}")
    print(f"{'untracked step':28}{p:10.4f}{1.0:8.3f}")
    print(f"{'tracked step (every step)':28}{t:10.4f}{t / p:8.3f}")
    print(f"{'tracker.step() alone':28}{o:10.4f}{o / p:8.3f}")
    print(f"overhead: {100 * (t / p - 1):+.1f}% by step times, {100 * o / p:.1f}% by the tracker's own time "
          f"(target <= 5%)")


if __name__ == "__main__":
    main()
