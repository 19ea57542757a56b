"""The Cardy form as a model comparison at several context lengths, on a pretrained model's attention, before and
after fine-tuning.

    python experiments/cardy_context.py --model smollm2 --out experiments/smollm2    # ~3 min on 2 busy cores

For each context length T (64, 256, 512) the base model reads ``--windows`` held-out windows of T tokens
(the text of a pretrained model's findings run: experiments/texts.py). Per layer, the attention matrices'
profiles are averaged over heads; per window this gives one profile per layer and one for the block of
the last ``--block`` layers (the layers the findings experiment fine-tunes). Each is fitted by the
open-chain Calabrese-Cardy form, a volume-law line and a saturating curve (experiments/cardy.py:
``cardy_forms``; the periodic form has the same regressor up to a constant: same r2 and AIC, c halved),
with and without the two edge bonds, and set beside the same fits of random T x T matrices averaged in the
same numbers (Gaussian; causal softmax at logit scales 1, 2, 4). The windows are the replicates: the
block's r2 and delta AIC are judged against the strongest null with the rule of experiments/verdicts.py.

The fine-tuned block: when ``OUT/results.json`` is the findings run of the same model (and its trained
parameters are in ``OUT/state/``), each of ``--runs`` (default: the base LoRA, the FFT at matched loss and
MPS) is rebuilt from the base model and its saved state for every seed (experiments/pretrained.py:
``rebuild``), and its block reads the first ``--tuned-windows`` of the same windows (the layers below are
frozen, so their hidden states are the base model's, computed once). Its fits are judged against the same
null, and against the base model's block on the same windows with the seeds as replicates (noise: the
seed-to-seed spread, never below the floor; either direction): does fine-tuning change the fit beyond seed
noise? Writes ``cardy_context.json`` and ``cardy_context.md`` into ``--out``.
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
from experiments.findings import matched_fft  # noqa: E402
from experiments.models import load_pretrained  # noqa: E402
from experiments.nulls import cardy_null, strongest_null  # noqa: E402
from experiments.pretrained import rebuild  # noqa: E402
from experiments.run_plan import Run, runs_of  # noqa: E402
from experiments.top_view import TopView, prefix_states  # noqa: E402

LENGTHS = (64, 256, 512)


def head_means(attentions) -> list[list[float]]:
    """Per layer: the mean over heads of the profiles of one window's attention matrices (1, H, T, T)."""
    return [
        entanglement_profile(a[0].double(), on_zero="nan", check_finite=False).nanmean(0).tolist() for a in attentions
    ]


@torch.no_grad()
def layer_profiles(model, ids: torch.Tensor) -> list[list[float]]:
    """Per layer: the mean over heads of the attention matrices' profiles for one window ``ids`` (1, T)."""
    return head_means(model(input_ids=ids, output_attentions=True).attentions)


@torch.no_grad()
def top_block_profiles(model, h: torch.Tensor, first: int) -> list[list[float]]:
    """Per window: the profile of the block of layers ``first`` and up (mean over its layers of the head-mean
    profiles), run from the hidden states ``h`` (windows, T, hidden) entering layer ``first``."""
    with TopView(model, first) as view:
        att = [view.logits(h[i : i + 1], 1, output_attentions=True).attentions for i in range(len(h))]
    return [torch.tensor(head_means(a)).mean(0).tolist() for a in att]


def fits(profile: list[float]) -> dict[str, dict[str, float]]:
    return {"edges": cardy_forms(profile), "no_edges": cardy_forms(profile, edges=False)}


def _floor(key: str) -> float:
    return V.FLOORS["r2"] if key == "r2" else 2.0  # delta AIC: 2, the usual threshold of a real preference


def against_null(block_fits: list[dict[str, Any]], null: dict[str, Any], seeds: int | None = None) -> dict[str, Any]:
    """The blocks' r2 and delta AIC (all bonds) against the strongest random-matrix null of each."""
    verdicts = {}
    for key in ("r2", "delta_aic"):
        name, values = strongest_null(null, key)
        verdicts[key] = {
            "null_name": name,
            **V.judge([f["edges"][key] for f in block_fits], values, floor=_floor(key), seeds=seeds),
        }
    return verdicts


def _mean(fits_: list[dict[str, Any]], key: str, edges: str = "edges") -> float:
    return statistics.fmean(f[edges][key] for f in fits_)


def against_base(tuned: list[list[dict[str, Any]]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Does fine-tuning change the block's fit? ``tuned``: per seed, the fits of the windows; ``base``: the
    base model's fits of the same windows. Per seed the mean over the windows (the windows are shared, so
    their spread cancels) against the base's mean; noise = the seed-to-seed spread (never below the
    floor); either direction. Keys ``r2``, ``delta_aic`` (all bonds) and ``..._no_edges``."""
    out = {}
    for edges, suffix in (("edges", ""), ("no_edges", "_no_edges")):
        for key in ("r2", "delta_aic"):
            seeds = [_mean(windows, key, edges) for windows in tuned]
            ref = [_mean(base[: len(tuned[0])], key, edges)]
            out[key + suffix] = V.judge(seeds, ref, floor=_floor(key), direction=0)
    return out


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
    verdicts = against_null(block_fits, null["block"])
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


def tuned_runs(results: dict[str, Any], names: str) -> list[Run]:
    """The runs of ``results`` named in ``names`` (comma-separated), or by default the base LoRA, the FFT at
    matched loss and MPS (the runs of the no-hair comparisons)."""
    runs = runs_of(results)
    by_name = {r.name: r for r in runs}
    if names == "default":
        chosen = [
            next((r.name for r in runs if "base" in r.axes), None),
            matched_fft(results, runs),
            next((r.name for r in runs if r.method == "mps"), None),
        ]
    else:
        chosen = [n for n in names.split(",") if n]
    unknown = [n for n in chosen if n and n not in by_name]
    if unknown:
        raise SystemExit(f"--runs: {', '.join(unknown)} not in the findings run (it has {', '.join(by_name)})")
    return [by_name[n] for n in chosen if n]


def tuned_study(
    base, tokens: torch.Tensor, res: dict[str, Any], results: dict[str, Any], runs: list[Run], args, on_run
) -> dict[str, Any]:
    """The fine-tuned block of each of ``runs`` and seed of ``results`` (rebuilt from ``OUT/state/``) on the first
    ``args.tuned_windows`` windows of each length of ``res``, judged against the null and the base block."""
    first, seeds, k = results["trained_layers"][0], results["settings"]["seeds"], args.tuned_windows
    h = {
        s["t"]: prefix_states(base, texts.windows(tokens, res["windows"], s["t"], 7 + s["t"])[:k], first)
        for s in res["lengths"]
    }
    check = max(  # the cut model against the full forward of the base study: the same block profiles
        float(
            (torch.tensor(top_block_profiles(base, h[s["t"]], first)) - torch.tensor(s["block_profiles"][:k]))
            .abs()
            .max()
        )
        for s in res["lengths"]
    )
    tuned: dict[str, Any] = {
        "results": str(Path(args.out) / "results.json"),
        "block_layers": results["trained_layers"],
        "windows": k,
        "seeds": seeds,
        "top_view_max_diff": check,
        "runs": {},
    }
    for run in runs:
        profiles: dict[int, list[list[list[float]]]] = {s["t"]: [] for s in res["lengths"]}  # t -> seed -> window
        for seed in seeds:
            model = rebuild(base, run, results["pattern"], seed, Path(args.out))
            for t in profiles:
                profiles[t].append(top_block_profiles(model, h[t], first))
            del model
        entry = {"method": run.method, "lengths": []}
        for s in res["lengths"]:
            block_fits = [[fits(p) for p in per_seed] for per_seed in profiles[s["t"]]]
            entry["lengths"].append(
                {
                    "t": s["t"],
                    "block_profiles": profiles[s["t"]],
                    "block_fits": block_fits,
                    "null_verdicts": against_null([f for w in block_fits for f in w], s["null"]["block"], len(seeds)),
                    "base_verdicts": against_base(block_fits, s["block_fits"]),
                }
            )
        tuned["runs"][run.name] = entry
        on_run(run.name, tuned)
    return tuned


def tuned_markdown(tuned: dict[str, Any], res: dict[str, Any]) -> list[str]:
    base = {s["t"]: s for s in res["lengths"]}
    lines = [
        "",
        f"## The fine-tuned block (layers {tuned['block_layers']})",
        "",
        f"Each run's model rebuilt from the base model and its trained parameters (seeds {tuned['seeds']}, "
        f"{tuned['results']} and state/), on the first {tuned['windows']} of the same windows (the block run from "
        f"the base model's hidden states: at most {tuned['top_view_max_diff']:.1e} from the full forward). "
        "Against the null: every (seed, window) fit against the strongest random-matrix null, as above. "
        "Against the base: per seed, the mean over the windows against the base block's mean over the same "
        "windows; noise = the seed-to-seed spread (floor 0.01 for r2, 2 for delta AIC), either direction "
        "(the 'null' of these columns is the base model's block). c: the open-chain c, base -> fine-tuned "
        "(mean ± sd over the seeds; the periodic c is half of it).",
        "",
        "| T | run | block r2 vs null | block delta AIC vs null |",
        "| ---: | --- | --- | --- |",
    ]
    versus_base = [
        "",
        "| T | run | c | r2 vs base | delta AIC vs base | r2 vs base, no edges | delta AIC vs base, no edges |",
        "| ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in tuned["runs"].items():
        for s in entry["lengths"]:
            v, b = s["null_verdicts"], s["base_verdicts"]
            lines.append(
                f"| {s['t']} | {name} | {V.fmt(v['r2'])} ({v['r2']['null_name']}) | {V.fmt(v['delta_aic'], 1)} "
                f"({v['delta_aic']['null_name']}) |"
            )
            c_base = _mean(base[s["t"]]["block_fits"][: tuned["windows"]], "c_open")
            c_seeds = [_mean(w, "c_open") for w in s["block_fits"]]
            c_tuned = f"{statistics.fmean(c_seeds):.3f} ± {statistics.stdev(c_seeds) if len(c_seeds) > 1 else 0.0:.3f}"
            versus_base.append(
                f"| {s['t']} | {name} | {c_base:.3f} -> {c_tuned} | {V.fmt(b['r2'])} | {V.fmt(b['delta_aic'], 1)} "
                f"| {V.fmt(b['r2_no_edges'])} | {V.fmt(b['delta_aic_no_edges'], 1)} |"
            )
    return lines + versus_base


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# The Cardy form against random matrices at several context lengths ({res['description']})",
        "",
        f"Written by experiments/cardy_context.py in {res['seconds'] / 60:.1f} min; "
        f"{'base model and fine-tuned block' if 'tuned' in res else 'base model only'}; "
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
    if "tuned" in res:
        lines += tuned_markdown(res["tuned"], res)
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face folder, a .gguf file, or 'smollm2'")
    parser.add_argument("--out", default="experiments/smollm2")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="context lengths")
    parser.add_argument("--windows", type=int, default=4, help="held-out windows per length (the replicates)")
    parser.add_argument("--block", type=int, default=2, help="the last layers, as fine-tuned by the findings run")
    parser.add_argument("--samples", type=int, default=4, help="draws of each random-matrix null")
    parser.add_argument(
        "--runs",
        default="default",
        help="fine-tuned runs of OUT/results.json to measure, comma-separated (default: the base LoRA, the FFT "
        "at matched loss and MPS; 'none': the base model only)",
    )
    parser.add_argument(
        "--tuned-windows", type=int, default=None, help="windows of the fine-tuned models (default: --windows)"
    )
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
    findings = findings_run(args, res, out)
    if findings is not None:
        runs = tuned_runs(findings, args.runs)
        args.tuned_windows = min(args.tuned_windows or args.windows, args.windows)

        def on_run(name: str, tuned: dict[str, Any]) -> None:
            print(f"fine-tuned {name}: done ({time.time() - t0:.0f}s)", flush=True)
            res["tuned"], res["seconds"] = tuned, time.time() - t0
            atomic_write(out / "cardy_context.json", json.dumps(res, indent=1, default=float))

        tuned_study(model, tokens, res, findings, runs, args, on_run)
    atomic_write(out / "cardy_context.md", markdown(res))
    print(markdown(res))
    return out


def findings_run(args: argparse.Namespace, res: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """``OUT/results.json`` when the fine-tuned block is to be measured and it is the findings run of this model
    with these layers fine-tuned; else None (with a line saying why, unless ``--runs none``)."""
    if args.runs == "none":
        return None
    path = out / "results.json"
    why = None
    if not path.exists():
        why = f"no {path}"
    else:
        results = json.loads(path.read_text())
        if results.get("model") != str(args.model):
            why = f"{path} is the findings run of {results.get('model')}, not {args.model}"
        elif results.get("trained_layers") != res["block_layers"]:
            why = f"{path} fine-tuned layers {results.get('trained_layers')}, not the block {res['block_layers']}"
        elif "seeds" not in results.get("settings", {}):
            why = f"{path} has no seeds: not a pretrained model's findings run"
    if why is None:
        return results
    if args.runs != "default":
        raise SystemExit(f"--runs {args.runs}: {why}")
    print(f"{why}: base model only", flush=True)
    return None


if __name__ == "__main__":
    main()
