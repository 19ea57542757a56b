"""The findings experiment on a pretrained model (SmolLM2-135M-Instruct by default) on a CPU.

Text: the English part of the ``chatterbot-corpus`` package (BSD-3-Clause, question/answer pairs), formatted
``Question: ... / Answer: ...``, split by conversation into training (9 in 10) and held-out text. Nothing
is downloaded.

What is trained (to fit a 2-core CPU): ``q_proj`` and ``v_proj`` of the last ``train_layers`` decoder layers
only; every other weight is frozen, so the hidden states entering the first trained layer are computed once
for a fixed pool of text windows and reused by every run and seed (experiments/top_view.py; checked against
the full model at start). The loss is the next-token loss on the last 16 tokens of each 64-token window
(each has at least 48 tokens of context), which cuts the cost of the 49,152-way vocabulary projection.

Methods, from the same start: full fine-tuning (FFT) of those ``q_proj``/``v_proj`` weights; LoRA on them
(ranks, alphas, learning rates varied one at a time around a base setting, ``alpha / r`` fixed in the rank
sweep); MPS Adaptation at the parameter count of the base LoRA. Each run is repeated for every seed (seed =
adapter initialisation and the order and choice of batches from the pool).

Measured at checkpoints: internal profiles of each trained module's update (LoRA and MPS from their factors,
FFT as ``W - W0``), valley depth, row/column-bond entropy; external profiles of the attention matrices of the
trained layers on fixed probe windows (every layer of the base model at the end, per head), with open-chain
Calabrese-Cardy fits; the no-hair comparison across methods at the end, and of every model of those pairs with
itself at the other seeds (the seed floor).

The run resumes: each finished (run, seed) stays in ``results.json`` and its trained parameters in
``OUT/state/``; a restarted run skips them (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import artent_fast
from artent_fast.adapters.mps import trainable_parameters
from artent_fast.atomic import atomic_path, atomic_write
from artent_fast.testing.text import tokens_of
from experiments.cardy import CARDY_BOUNDARY, cardy
from experiments.findings import CRITERIA, nohair_pairs, seed_pairs
from experiments.measure import (
    external_all,
    external_top,
    flat_heads,
    internal,
    kind_of,
    mean_profiles,
    modules_of,
    shapes,
    summarise,
    target_pattern,
)
from experiments.models import adapt, half_chi, load_pretrained
from experiments.nulls import spectrum_nulls
from experiments.run_plan import Run
from experiments.settings import Settings, checkpoints, stored
from experiments.texts import corpus_text, windows
from experiments.top_view import TopView, check_top_view, held_out_loss, prefix_states, window_loss
from experiments.train import fit


def train_run(
    model,
    base,
    run: Run,
    s: Settings,
    data: dict[str, torch.Tensor],
    first: int,
    mods: dict[str, Any],
    seed: int,
    row_sites: dict[str, int],
) -> dict[str, Any]:
    """Train ``model`` (a copy of ``base`` adapted for ``run``) on the cached windows; its results entry."""
    gen = torch.Generator().manual_seed(1000 + seed)
    order = torch.randint(0, len(data["pool_h"]), (s.steps, s.batch), generator=gen)
    steps = checkpoints(s)
    profiles, externals = {}, {}

    def on_step(step: int) -> None:
        if step in steps:
            model.eval()
            profiles[step] = internal(mods, base)
            externals[step] = external_top(model, data["probe_h"], first)
            model.train()

    with TopView(model, first) as view:
        losses, _ = fit(
            model,
            run.lr,
            order,
            lambda idx: window_loss(view, data["pool_h"][idx], data["pool_ids"][idx], s.scored),
            on_step=on_step,
        )
    final = profiles[steps[-1]]
    return {
        "losses": losses,
        "eval_loss": held_out_loss(model, data, first, s.scored),
        "trainable": trainable_parameters(model),
        "profiles": {str(k): v for k, v in profiles.items()},
        "summary": {str(k): summarise(v, row_sites) for k, v in profiles.items()},
        "mean_final": mean_profiles(final),
        "external": {str(k): v for k, v in externals.items()},
        "cardy": {str(k): cardy(flat_heads(v)) for k, v in externals.items()},
        # low-rank updates only: a full-rank FFT update's null costs ~20 s per module and no criterion uses it
        "spectrum_null": spectrum_nulls(mods, base) if run.method != "fft" else {},
    }


def state_path(out: Path, name: str, seed: int) -> Path:
    return out / "state" / f"{name}_seed{seed}.pt"


def save_state(out: Path, name: str, seed: int, model) -> None:
    """The trained parameters of (run, seed), written atomically: a resumed run rebuilds the model from them."""
    state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(state_path(out, name, seed)) as tmp:
        torch.save(state, tmp)


def rebuild(base, run: Run, pattern: str, seed: int, out: Path):
    """The trained model of (run, seed): ``base`` adapted for ``run`` (:func:`experiments.models.adapt`) with the
    trained parameters that :func:`save_state` kept in ``out/state/``; in eval mode."""
    model = adapt(base, run, pattern, seed)
    keys = model.load_state_dict(torch.load(state_path(out, run.name, seed)), strict=False)
    if keys.unexpected_keys:
        raise RuntimeError(f"{state_path(out, run.name, seed)}: parameters {keys.unexpected_keys[:3]} not in the model")
    return model.eval()


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


def run(args: argparse.Namespace, s: Settings, runs: list[Run], out: Path, t0: float) -> dict[str, Any]:
    """Load the model, cache the frozen prefix, train and measure every (run, seed) not kept from a previous
    invocation, compare the no-hair pairs and their seed floors; ``results`` (findings not yet judged).
    The MPS run's chi (and name) is set here, from the model."""
    base, tokenizer, description = load_pretrained(args.model)
    for p in base.parameters():
        p.requires_grad_(False)
    n_layers = base.config.num_hidden_layers
    k = min(s.train_layers, n_layers)
    first = n_layers - k
    trained_ids = list(range(first, n_layers))
    pattern = target_pattern(trained_ids)
    tag = args.tag or ("smollm2" if "smollm2" in str(args.model).lower() else "real")
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
    base_mods = modules_of(base, pattern)
    row_sites = {kind_of(n): artent_fast.sites(*m.weight.shape).row_sites for n, m in base_mods.items()}
    for r in runs:
        if r.method == "mps":
            r.chi = half_chi(base, pattern, r.r)
            r.name = f"mps_r{r.r}_chi{r.chi}"
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
        "settings": stored(s),
        "criteria": CRITERIA,
        "cardy_boundary": CARDY_BOUNDARY,
        "trained_layers": trained_ids,
        "pattern": pattern,
        "row_sites": row_sites,
        "shapes": shapes(base_mods),
        "tokens": [len(train_tok), len(held_tok)],
        "top_view_max_diff": top_diff,
        "base_eval_loss": held_out_loss(base, data, first, s.scored),
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

    for seed in s.seeds:
        for r in runs:
            if str(seed) in results["runs"][r.name]["seeds"] and state_path(out, r.name, seed).exists():
                done += 1
                print(f"  [{done}/{total}] seed {seed} {r.name}: kept from the previous run", flush=True)
                continue
            model = adapt(base, r, pattern, seed)
            # names as in the full model (a TopView renumbers the layers)
            entry = train_run(model, base, r, s, data, first, modules_of(model, pattern), seed, row_sites)
            save_state(out, r.name, seed, model)
            now.add((r.name, seed))
            results["runs"][r.name]["seeds"][str(seed)] = entry
            del model
            done += 1
            per = (time.time() - t_train) / done
            last = entry["summary"][max(entry["summary"], key=int)]
            depth = " ".join(f"{k[0]} {v['valley_depth']:+.2f}/{v['center']:.2f}" for k, v in last.items())
            print(
                f"  [{done}/{total}] seed {seed} {r.name:24s} loss {entry['losses'][0]:.2f}->"
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
            rebuild(base, by_name[a[0]], pattern, a[1], out),
            rebuild(base, by_name[b[0]], pattern, b[1], out),
            {"input_ids": probe},
            base=base,
            layers=trained_ids,
            names=(a[0], b[0]),
        )
        into[key] = {"summary": res.summary(), "table": res.table}
        atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))

    pairs = nohair_pairs(runs, results)  # after training: FFT at the loss nearest LoRA's
    needed = {n for p in pairs for n in p}
    for a, b in pairs:  # across methods, seed by seed
        for seed in s.seeds:
            compare(results["nohair"].setdefault(f"{a} vs {b}", {}), str(seed), (a, seed), (b, seed))
    for name in sorted(needed):  # the floor: the same method, two seeds
        for x, y in seed_pairs(s.seeds):
            compare(results["nohair_floor"].setdefault(name, {}), f"{x} vs {y}", (name, x), (name, y))
    return results
