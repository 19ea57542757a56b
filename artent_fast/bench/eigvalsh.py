"""Batched ``eigvalsh``: the CUDA Jacobi kernel vs ``torch.linalg.eigvalsh`` vs ``cupy.linalg.eigvalsh``,
and which one the dispatcher picks (measured by its autotune on CUDA; torch on CPU).
"""

# ruff: noqa: B023  (the timed closures run at once, inside the loop that defines them)

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from artent_fast.backends import dispatch, registry
from artent_fast.bench.table import Table
from artent_fast.bench.timing import median_time
from artent_fast.plotting import require_matplotlib, save_figure


def sym_batch(batch: int, n: int, dtype: torch.dtype, dev: str, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(batch, n, n + 8, device=dev, dtype=dtype, generator=gen)
    return x @ x.mT


def _kernel(backend: str):
    """The backend's eigvalsh kernel, or None when it is not loaded here."""
    return registry.kernels_of("eigvalsh").get(backend)


def _max_rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got.double() - ref).abs().amax(-1) / ref.abs().amax(-1)).max())


def eig_table(
    dev: str,
    sizes: Sequence[int],
    batch: int,
    dtypes: Sequence[torch.dtype],
    *,
    repeats: int = 3,
    echo: bool = True,
    progress=iter,
) -> Table:
    table = Table(
        "eigvalsh",
        f"Eigenvalues of {batch} symmetric matrices (values only)",
        {
            "n": "n",
            "dtype": "dtype",
            "torch_s": "torch.linalg.eigvalsh s",
            "jacobi_s": "CUDA Jacobi s",
            "cupy_s": "cupy (cuSOLVER) s",
            "fastest": "fastest",
            "dispatcher": "dispatcher picks",
            "dispatcher_s": "dispatcher s",
            "jacobi_err": "Jacobi max rel. diff",
            "cupy_err": "cupy max rel. diff",
        },
        echo=echo,
    ).start()
    gen = torch.Generator(device=dev).manual_seed(3)
    names = {"torch": "torch", "cuda": "jacobi", "cupy": "cupy"}
    for n in progress(sizes):
        for dtype in dtypes:
            a = sym_batch(batch, n, dtype, dev, gen)
            ref = torch.linalg.eigvalsh(a.double())
            row = {"n": n, "dtype": str(dtype)[6:]}
            times = {}
            for backend, col in names.items():
                fn = _kernel(backend)
                got = fn(a) if fn is not None else NotImplemented
                if got is NotImplemented:
                    row[f"{col}_s"] = None
                    continue
                times[backend] = row[f"{col}_s"] = median_time(lambda: fn(a), device=dev, repeats=repeats)
                if backend != "torch":
                    row[f"{col}_err"] = _max_rel(got, ref)
            row["fastest"] = min(times, key=times.get)
            row["dispatcher"], row["dispatcher_s"] = dispatcher_choice(a, dev, repeats)
            table.add(**row)
    if dev.startswith("cuda"):
        table.note(
            "dispatcher: the registry's measured autotune (per size, batch bucket and dtype); "
            "'fastest' and 'dispatcher picks' can differ where two kernels are within noise"
        )
    else:
        table.note("on CPU the dispatcher uses torch (no autotune); the CUDA and cupy kernels need a GPU")
    return table


def dispatcher_choice(a: torch.Tensor, dev: str, repeats: int) -> tuple[str, float]:
    """Which backend the dispatcher runs for ``a`` (a fresh measurement on CUDA) and its time."""
    if os.environ.get("ARTENT_FAST_BACKEND"):
        choice = registry.selected_backend()
    elif (("eigvalsh", a.device.type) in registry.AUTOTUNED) and registry.autotune_enabled():
        key = registry.tune_key("eigvalsh", a.device, (a,))
        registry._TUNED.pop(key, None)
        dispatch("eigvalsh", a)
        choice = registry._TUNED.get(key, "torch")
    else:
        choice = "torch"
    return choice, median_time(lambda: dispatch("eigvalsh", a), device=dev, repeats=repeats)


def plot_eig(table: Table, path, title: str) -> None:
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"n={r['n']} {r['dtype']}" for r in table.rows]
    xs = range(len(labels))
    for i, (col, name) in enumerate((("torch_s", "torch"), ("jacobi_s", "CUDA Jacobi"), ("cupy_s", "cupy"))):
        ax.bar([x + (i - 1) * 0.27 for x in xs], [r.get(col) or 0 for r in table.rows], 0.27, label=name)
    ax.set_xticks(list(xs), labels, rotation=30, ha="right")
    ax.set(ylabel="seconds (lower is better)", yscale="log", title=table.title)
    ax.legend()
    fig.suptitle(title, fontsize=9)
    save_figure(fig, plt, path, dpi=110)
