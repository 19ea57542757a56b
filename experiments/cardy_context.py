"""The Cardy form as a model comparison at several context lengths, on a pretrained model's attention.

    python experiments/cardy_context.py --model smollm2 --out experiments/smollm2    # ~10 min on 2 busy cores

For each context length T (64, 256, 512) the base model reads ``--windows`` held-out windows of T tokens
(the text of a pretrained model's findings run: experiments/texts.py). Per layer, the attention matrices'
profiles are averaged over heads; per window this gives one profile per layer and one for the block of
the last ``--block`` layers (the layers the findings experiment fine-tunes). Each is fitted by the
open-chain Calabrese-Cardy form, a volume-law line and a saturating curve (experiments/cardy.py:
``cardy_forms``), with and without the two edge bonds, and set beside the same fits of random T x T
matrices averaged in the same numbers (Gaussian; causal softmax at logit scales 1, 2, 4). The windows are
the replicates: the block's r2 and delta AIC are judged against the strongest null with the rule of
experiments/verdicts.py. Writes ``cardy_context.json`` and ``cardy_context.md`` into ``--out``. Only the
base model: the fine-tuned block needs the trained adapters, which the findings run keeps in
``OUT/state/`` from its next run on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the experiments.* modules
from artent_fast.atomic import atomic_write  # noqa: E402
from artent_fast.core.profile import entanglement_profile  # noqa: E402
from artent_fast.testing.text import tokens_of  # noqa: E402
from experiments import texts  # noqa: E402
from experiments import verdicts as V  # noqa: E402
from experiments.cardy import cardy_forms  # noqa: E402
from experiments.models import load_pretrained  # noqa: E402
from experiments.nulls import cardy_null, strongest_null  # noqa: E402

LENGTHS = (64, 256, 512)


@torch.no_grad()
def layer_profiles(model, ids: torch.Tensor) -> list[list[float]]:
    """Per layer: the mean over heads of the attention matrices' profiles for one window ``ids`` (1, T)."""
    att = model(input_ids=ids, output_attentions=True).attentions
    return [entanglement_profile(a[0].double(), on_zero="nan", check_finite=False).nanmean(0).tolist() for a in att]


def fits(profile: list[float]) -> dict[str, dict[str, float]]:
    return {"edges": cardy_forms(profile), "no_edges": cardy_forms(profile, edges=False)}


def study(model, tokens: torch.Tensor, t: int, windows: int, block: int, heads: int, samples: int) -> dict[str, Any]:
    ids = texts.windows(tokens, windows, t, 7 + t)
    per_window = [layer_profiles(model, ids[i : i + 1]) for i in range(windows)]  # window -> layer -> profile
    n_layers = len(per_window[0])
    blocks = [torch.tensor(w[n_layers - block :]).mean(0).tolist() for w in per_window]
    layers = [torch.tensor([w[li] for w in per_window]).mean(0).tolist() for li in range(n_layers)]
    null = {
        "block": cardy_null(t, block * heads, samples=samples),  # one window's block mean: block x heads matrices
        "layer": cardy_null(t, heads * windows, samples=samples),  # a layer over all windows
    }
    block_fits = [fits(p) for p in blocks]
    verdicts = {}
    for key in ("r2", "delta_aic"):
        name, values = strongest_null(null["block"], key)
        verdicts[key] = {
            "null_name": name,
            **V.judge([f["edges"][key] for f in block_fits], values, floor=V.FLOORS["r2"] if key == "r2" else 2.0),
        }
    layer_fits = [fits(p) for p in layers]
    strongest_layer = {k: strongest_null(null["layer"], k) for k in ("r2", "delta_aic")}
    return {
        "t": t,
        "windows": windows,
        "block_profiles": blocks,
        "block_fits": block_fits,
        "layer_profiles": layers,
        "layer_fits": layer_fits,
        "null": null,
        "block_verdicts": verdicts,
        "layers_cardy_preferred": sum(f["edges"]["delta_aic"] > 0 for f in layer_fits),
        "layers_above_null_r2": sum(
            f["edges"]["r2"] > max(strongest_layer["r2"][1]) for f in layer_fits
        ),  # above every draw of the strongest null
        "layers_above_null_delta_aic": sum(
            f["edges"]["delta_aic"] > max(strongest_layer["delta_aic"][1]) for f in layer_fits
        ),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# The Cardy form against random matrices at several context lengths ({res['description']})",
        "",
        f"Written by experiments/cardy_context.py in {res['seconds'] / 60:.1f} min; base model only; "
        f"{res['windows']} held-out windows per length (the replicates); block = layers {res['block_layers']}. "
        "Open-chain Cardy form; delta AIC = best of a line and a saturating curve minus Cardy (positive: Cardy "
        "preferred). Null: mean profiles of as many random T x T matrices (the strongest of Gaussian and causal "
        "softmax at logit scales 1, 2, 4).",
        "",
        "| T | block r2 (all bonds) vs null | block delta AIC vs null | block r2 without edges | layers: Cardy "
        "preferred / above the null's r2 / above its delta AIC |",
        "| ---: | --- | --- | ---: | --- |",
    ]
    for s in res["lengths"]:
        v = s["block_verdicts"]
        ne = statistics.fmean(f["no_edges"]["r2"] for f in s["block_fits"])
        n = len(s["layer_fits"])
        lines.append(
            f"| {s['t']} | {V.fmt(v['r2'])} ({v['r2']['null_name']}) | {V.fmt(v['delta_aic'], 1)} "
            f"({v['delta_aic']['null_name']}) | {ne:.3f} | {s['layers_cardy_preferred']}/{n} / "
            f"{s['layers_above_null_r2']}/{n} / {s['layers_above_null_delta_aic']}/{n} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face folder, a .gguf file, or 'smollm2'")
    parser.add_argument("--out", default="experiments/smollm2")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="context lengths")
    parser.add_argument("--windows", type=int, default=4, help="held-out windows per length (the replicates)")
    parser.add_argument("--block", type=int, default=2, help="the last layers, as fine-tuned by the findings run")
    parser.add_argument("--samples", type=int, default=4, help="draws of each random-matrix null")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    previous = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace) -> Path:
    t0 = time.time()
    model, tokenizer, _ = load_pretrained(args.model)
    model.eval()
    _, held = texts.corpus_text()
    tokens = tokens_of(held, tokenizer, model.config.vocab_size)
    heads, n_layers = model.config.num_attention_heads, model.config.num_hidden_layers
    print(f"loaded in {time.time() - t0:.0f}s; {len(tokens)} held-out tokens", flush=True)
    res: dict[str, Any] = {
        "description": f"{type(model).__name__} from {args.model}",
        "windows": args.windows,
        "block_layers": list(range(n_layers - args.block, n_layers)),
        "lengths": [],
    }
    out = Path(args.out)
    for t in (int(x) for x in args.lengths.split(",")):
        res["lengths"].append(study(model, tokens, t, args.windows, args.block, heads, args.samples))
        v = res["lengths"][-1]["block_verdicts"]
        print(f"T={t}: r2 {V.fmt(v['r2'])}; delta AIC {V.fmt(v['delta_aic'], 1)} ({time.time() - t0:.0f}s)")
        res["seconds"] = time.time() - t0
        atomic_write(out / "cardy_context.json", json.dumps(res, indent=1, default=float))
    atomic_write(out / "cardy_context.md", markdown(res))
    print(markdown(res))
    return out


if __name__ == "__main__":
    main()
