"""The findings experiment on the built model: a small LLaMA (experiments/models.py: ``build_tiny``) pre-trained
on generated sentences and addition lines, then fine-tuned on subtraction lines by every run from the same
start, on the same batches, one seed. Internal profiles of q_proj/v_proj updates at checkpoints
(``artent_fast.track`` records the LoRA and FFT runs too, and must agree), external profiles and the no-hair
comparisons at the end."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import artent_fast
from artent_fast.adapters.mps import trainable_parameters
from artent_fast.atomic import atomic_write
from artent_fast.testing.text import tokens_of
from artent_fast.tracking.records import valley_depth
from experiments.measure import (
    internal,
    layer_means,
    mean_profile,
    modules_of,
    target_pattern,
    tracker_agreement,
)
from experiments.models import adapt, build_tiny
from experiments.run_plan import Run
from experiments.settings import Settings, checkpoints, stored
from experiments.texts import finetune_text, fixed_batches, pretrain_text
from experiments.train import eval_loss, fit, lm_loss

PRETRAIN_LR = 3e-3


def make_tracker_factory(folder: Path, every: int):
    def factory(model, opt):
        try:
            return artent_fast.track(model, optimizer=opt, every=every, out=folder)
        except Exception as exc:  # a monitoring tool never stops the experiment
            warnings.warn(f"artent_fast.track unavailable ({exc}); measuring at checkpoints only", stacklevel=2)
            return None

    return factory


def run(args: argparse.Namespace, s: Settings, runs: list[Run], out: Path, t0: float) -> dict[str, Any]:
    """Pre-train the built model, fine-tune and measure every run; ``results`` (findings not yet judged)."""
    base, tokenizer, description = build_tiny(s.quick, args.seed)
    base.to(args.device)
    vocab = base.config.vocab_size
    pre = tokens_of(pretrain_text(4000 if s.quick else 20000, args.seed), tokenizer, vocab)
    fine = tokens_of(finetune_text(4000 if s.quick else 20000, args.seed + 1), tokenizer, vocab)
    held = tokens_of(finetune_text(1000, args.seed + 2), tokenizer, vocab)
    if s.pretrain_steps:
        for p in base.parameters():
            p.requires_grad_(True)
        pre_batches = fixed_batches(pre, s.pretrain_steps, s.batch, s.seq_len, args.seed)
        fit(base, PRETRAIN_LR, pre_batches, lm_loss(base, args.device))
    for p in base.parameters():
        p.requires_grad_(False)
    base.eval()
    batches = fixed_batches(fine, s.steps, s.batch, s.seq_len, args.seed + 3)
    evals = fixed_batches(held, s.eval_batches, s.batch, s.seq_len, args.seed + 4)
    probe = evals[0][: min(4, s.batch)].to(args.device)
    steps = checkpoints(s)
    pattern = target_pattern(range(base.config.num_hidden_layers))
    m, n = next(iter(modules_of(base, pattern).values())).weight.shape
    row_sites = artent_fast.sites(m, n).row_sites

    results: dict[str, Any] = {
        "description": description,
        "settings": stored(s),
        "device": args.device,
        "layout": [m, n, row_sites],
        "base_eval_loss": eval_loss(base, evals, args.device),
        "base_external": layer_means(base, probe),
        "heads": base.config.num_attention_heads,
        "probe": len(probe),
        "runs": {},
    }
    keep: dict[str, Any] = {"base": base}
    for r in runs:
        model = adapt(base, r, pattern, args.seed, fft_all=True)
        mods = modules_of(model, pattern)
        profiles: dict[int, dict[str, list[float]]] = {}

        def on_step(step: int, mods=mods, profiles=profiles) -> None:
            if step in steps:
                profiles[step] = internal(mods, base)

        factory = None
        if not args.no_track and r.method in ("lora", "fft"):
            factory = make_tracker_factory(out / "tracking" / r.name, max(1, steps[0]))
        trainable = trainable_parameters(model)
        losses, tracker = fit(
            model, r.lr, batches, lm_loss(model, args.device), on_step=on_step, tracker_factory=factory
        )
        final = profiles[steps[-1]]
        entry = {
            **asdict(r),
            "trainable": trainable,
            "losses": losses,
            "eval_loss": eval_loss(model, evals, args.device),
            "profiles": {str(k): v for k, v in profiles.items()},
            "mean_final": mean_profile(final),
            "external": layer_means(model, probe),
            "tracker_max_diff": tracker_agreement(tracker, final, steps[-1]),
        }
        entry["valley_depth"] = float(valley_depth(entry["mean_final"], row_sites))
        entry["center"] = entry["mean_final"][row_sites - 1]
        results["runs"][r.name] = entry
        if r.method == "fft" or r.method == "mps" or "base" in r.axes or r.r == min(s.ranks):
            keep[r.name] = model
        print(
            f"  {r.name:28s} eval loss {entry['eval_loss']:.3f}  centre S {entry['center']:.3f}  "
            f"valley {entry['valley_depth']:+.3f}  ({time.time() - t0:.0f}s)",
            flush=True,
        )
        atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))
    results["nohair"] = nohair(keep, runs, probe, out)
    return results


def nohair(keep: dict[str, Any], runs: list[Run], probe: torch.Tensor, out: Path) -> dict[str, Any]:
    """The no-hair comparisons between the kept models; the first pair's figure goes to nohair.png."""
    base = keep["base"]
    by_method = {r.method: r.name for r in runs if r.name in keep and (r.method != "lora" or "base" in r.axes)}
    small = [r.name for r in runs if r.method == "lora" and r.name in keep and "base" not in r.axes]
    pairs = []
    if "fft" in by_method and "lora" in by_method:
        pairs.append((by_method["fft"], by_method["lora"]))
    if "lora" in by_method and "mps" in by_method:
        pairs.append((by_method["lora"], by_method["mps"]))
    if "lora" in by_method and small:
        pairs.append((small[0], by_method["lora"]))
    if not pairs and len(keep) > 1:
        pairs.append(("base", next(k for k in keep if k != "base")))
    out_pairs = {}
    moved_from_base: dict[str, float] = {}  # one model sits in several pairs: measure it once

    def moved(name: str) -> float:
        if name not in moved_from_base:
            res = artent_fast.compare_models(base, keep[name], {"input_ids": probe}, profile=False)
            moved_from_base[name] = res.summary()["rel_distance"]
        return moved_from_base[name]

    for i, (a, b) in enumerate(pairs):
        res = artent_fast.compare_models(keep[a], keep[b], {"input_ids": probe}, base=base, names=(a, b))
        out_pairs[f"{a} vs {b}"] = {
            "table": res.table,
            "summary": res.summary(),
            "markdown": res.to_markdown(),
            "moved_from_base": [moved(a), moved(b)],
        }
        if i == 0:
            try:
                res.plot(str(out / "nohair.png"))
            except ImportError:
                pass
    return out_pairs
