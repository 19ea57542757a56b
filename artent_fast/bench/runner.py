"""``artent bench``: run the sections of a plan, print tables as they go, write report.md, results.json, figures."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from artent_fast.atomic import atomic_write, out_folder
from artent_fast.backends import registry
from artent_fast.bench.attention import forward_table, plot_attention, training_table
from artent_fast.bench.core import dense_table, factored_table, plot_speedups
from artent_fast.bench.eigvalsh import eig_table, plot_eig
from artent_fast.bench.machine import machine_info, machine_markdown
from artent_fast.bench.plan import SECTIONS, Plan, plan_for
from artent_fast.bench.selfcheck import passed, run_selfcheck
from artent_fast.bench.sweep import sweep_table
from artent_fast.bench.table import Table
from artent_fast.bench.tracking import measure_overhead
from artent_fast.extras import missing_extra, optional

SCHEMA = 1


def progress(desc: str):
    """A wrapper that shows a tqdm bar on stderr for an iterable (plain iteration without tqdm)."""
    if optional("tqdm", "progress bars", extra="progress") is None:
        return lambda it: it
    from tqdm.auto import tqdm

    def wrap(it: Iterable) -> Iterable:
        return tqdm(it, desc=desc, leave=False, file=sys.stderr, disable=None)

    return wrap


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda: CUDA is not available here (torch "
            f"{torch.__version__}, built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'for CPU'})"
        )
    return device


def check_sections(only: Sequence[str] | None) -> list[str]:
    """The sections to run, in order: every one for ``None``; an empty list (``--only ,``) is an error."""
    if only is None:
        return list(SECTIONS)
    if not only:
        raise ValueError(f"--only names no section; choose from {', '.join(SECTIONS)}")
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise ValueError(f"--only: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in only]


def run_sections(
    plan: Plan, device: str, sections: list[str], echo: bool, after_each=None
) -> tuple[list[Table], dict[str, str]]:
    """Run each section (a failing one is reported, the others go on); ``after_each(tables, errors, done)``
    (``done``: the sections run so far) is called after every section, so that a run killed later keeps
    what it measured."""
    tables: list[Table] = []
    errors: dict[str, str] = {}
    for i, section in enumerate(sections):
        t0 = time.perf_counter()
        try:
            tables += SECTION_RUNNERS[section](plan, device, echo)
        except Exception as exc:  # one broken section must not lose the others' figures
            errors[section] = f"{type(exc).__name__}: {exc}"
            if echo:
                print(f"\n## {section}: FAILED ({errors[section]})", flush=True)
        if echo:
            print(f"_({section}: {time.perf_counter() - t0:.1f} s)_", flush=True)
        if after_each is not None:
            after_each(tables, errors, sections[: i + 1])
    return tables, errors


def _selfcheck(plan: Plan, device: str, echo: bool) -> list[Table]:
    return [run_selfcheck(device, echo=echo)]


def _core(plan: Plan, device: str, echo: bool) -> list[Table]:
    return [
        dense_table(device, plan.dense_shapes, sweep=plan.dense_sweep, echo=echo, progress=progress("dense")),
        factored_table(
            device,
            plan.factored_shapes,
            plan.ranks,
            batch=plan.factored_batch,
            echo=echo,
            progress=progress("factored"),
        ),
    ]


def _eigvalsh(plan: Plan, device: str, echo: bool) -> list[Table]:
    return [
        eig_table(device, plan.eig_sizes, plan.eig_batch, plan.eig_dtypes, echo=echo, progress=progress("eigvalsh"))
    ]


def _attention(plan: Plan, device: str, echo: bool) -> list[Table]:
    out = [
        forward_table(
            device, dt, plan.attn_fwd, repeats=plan.attn_repeats, echo=echo, progress=progress(f"attention fwd {dt}")
        )
        for dt in plan.attn_dtypes
    ]
    out.append(
        training_table(
            device,
            plan.attn_dtypes[0],
            plan.attn_train,
            repeats=plan.attn_repeats,
            echo=echo,
            progress=progress("attention fwd+bwd"),
        )
    )
    return out


def _tracking(plan: Plan, device: str, echo: bool) -> list[Table]:
    s = plan.tracking_shape
    table = Table(
        "tracking",
        "Tracking overhead: LoRA step, q and v of all layers tracked every step",
        {
            "model": "model",
            "shape": "layers x hidden (vocab)",
            "units": "tracked",
            "untracked_s": "untracked s/step",
            "tracked_s": "tracked s/step",
            "overhead_pct": "overhead %",
            "tracker_host_s": "tracker.step() host s",
            "tracker_host_pct": "tracker host time %",
            "launches": "kernel launches per due step",
        },
        echo=echo,
    )
    if s["hidden"] != 2048 or s["layers"] != 16:
        table.notes.append(
            f"scaled down from LLaMA-3.2-1B (16 x 2048) to {s['layers']} x {s['hidden']}, "
            f"batch {s['batch']}x{s['seq']}, r={s['rank']}"
        )
    table.start()
    r = measure_overhead(
        s,
        device,
        plan.tracking_dtype,
        blocks=plan.tracking_blocks[0],
        block_steps=plan.tracking_blocks[1],
        hf=plan.mode != "tiny",
        progress=progress("tracking blocks"),
    )
    top = r.pop("top_ops")
    table.add(shape=f"{s['layers']} x {s['hidden']} ({s['vocab']})", **r)
    if echo:
        print(f"\nOne due tracker.step() under torch.profiler, ops by self host time:\n```\n{top}\n```", flush=True)
    return [table]


def _sweep(plan: Plan, device: str, echo: bool) -> list[Table]:
    table = sweep_table(device, plan.sweep_cases, echo=echo, progress=progress("sweep"))
    if any(c["scale"] != "1" for c in plan.sweep_cases):
        table.note("8B shapes scaled down (scale column: every dimension times the scale)")
    return [table]


SECTION_RUNNERS = {
    "selfcheck": _selfcheck,
    "core": _core,
    "eigvalsh": _eigvalsh,
    "attention": _attention,
    "tracking": _tracking,
    "sweep": _sweep,
}


def figures(tables: dict[str, Table], out: Path, title: str) -> tuple[list[str], str | None]:
    """PNG figures of the ratio tables; (names written, a note when matplotlib is missing)."""
    if optional("matplotlib", "figures", extra="plot") is None:
        return [], f"figures skipped ({missing_extra('matplotlib', 'figures', extra='plot')})"
    written = []
    if "core_dense" in tables and "core_factored" in tables:
        plot_speedups(tables["core_dense"], tables["core_factored"], out / "core_speedups.png", title)
        written.append("core_speedups.png")
    if "eigvalsh" in tables:
        plot_eig(tables["eigvalsh"], out / "eigvalsh.png", title)
        written.append("eigvalsh.png")
    attn = [t for name, t in tables.items() if name.startswith("attention")]
    if attn:
        plot_attention(attn, out / "attention.png", title)
        written.append("attention.png")
    return written, None


def run_bench(
    device: str,
    *,
    mode: str = "full",
    out: str | Path = "artent_bench",
    only: Sequence[str] | None = None,
    echo: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark; write ``report.md``, ``results.json`` and figures into ``out``; return the results."""
    device = check_device(device)
    sections = check_sections(only)
    plan = plan_for(device, mode)
    out = out_folder(out, "--out")
    start = time.perf_counter()
    info = machine_info(device)
    if echo:
        print(f"# artent bench ({mode}, {device})\n", flush=True)
        print(machine_markdown(info), flush=True)
        for note in plan.notes:
            print(f"_{note}_", flush=True)
    title = f"{(info['gpu'] or {}).get('name', info['cpu'])}; torch {torch.__version__}; {device}; {mode}"

    def write(tables: list[Table], errors: dict[str, str], done: list[str], final: bool) -> dict[str, Any]:
        """results.json and report.md of the sections done so far (figures only at the end)."""
        by_name = {t.name: t for t in tables}
        selfcheck_ok = None
        if "selfcheck" in by_name:
            selfcheck_ok = passed(by_name["selfcheck"]) and "selfcheck" not in errors
        figs, fig_note = figures(by_name, out, title) if final else ([], None)
        results = {
            "schema": SCHEMA,
            "command": command or f"artent bench --device {device}" + ("" if mode == "full" else f" --{mode}"),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": mode,
            "device": device,
            "sections": sections,
            "complete": final,
            "machine": info,
            "selfcheck_passed": selfcheck_ok,
            "tables": {t.name: t.to_json() for t in tables},
            "autotune": registry.tuned_choices(),
            "errors": errors,
            "figures": figs,
            "notes": plan.notes
            + ([fig_note] if fig_note else [])
            + ([] if final else [f"partial: sections done so far: {', '.join(done) or 'none'}"]),
            "elapsed_s": round(time.perf_counter() - start, 2),
        }
        atomic_write(out / "results.json", json.dumps(results, indent=1, default=str))
        atomic_write(out / "report.md", report_markdown(results, tables))
        return results

    tables, errors = run_sections(plan, device, sections, echo, lambda t, e, done: write(t, e, done, final=False))
    results = write(tables, errors, sections, final=True)
    figs = results["figures"]
    if echo:
        print(
            f"\nwrote {out / 'report.md'}, {out / 'results.json'}"
            + "".join(f", {out / f}" for f in figs)
            + f" in {results['elapsed_s']:.0f} s",
            flush=True,
        )
    return results


def report_markdown(results: dict[str, Any], tables: list[Table]) -> str:
    lines = [
        f"# artent bench: {results['device']}, {results['mode']}",
        "",
        f"Command: `{results['command']}`; date {results['date']}; {results['elapsed_s']:.0f} s in all.",
        "",
    ]
    lines += [f"_{n}_" for n in results["notes"]] + [""]
    if results["selfcheck_passed"] is not None:
        lines += [f"**Self-check: {'passed' if results['selfcheck_passed'] else 'FAILED'}**", ""]
    lines.append(machine_markdown(results["machine"]))
    for t in tables:
        lines.append(t.markdown())
    if results["autotune"]:
        lines += ["## Dispatcher choices measured (eigvalsh autotune)", "", "| key | backend |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in results["autotune"].items()] + [""]
    if results["errors"]:
        lines += ["## Sections that failed", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()] + [""]
    for fig in results["figures"]:
        lines.append(f"![{fig}]({fig})")
    return "\n".join(lines) + "\n"
