"""The tracked-profile figure marks each shape's own row/column bond and the ln r bound."""

from __future__ import annotations

import math

import pytest
import torch

import artent_fast as af
from artent_fast.plotting.tracking import plot_tracked_profile

pytest.importorskip("matplotlib")


def record(module: str, m: int, n: int, rank: int, step: int = 3) -> dict:
    layout = af.sites(m, n)
    g = torch.Generator().manual_seed(m + n)
    B, A = torch.randn(m, rank, generator=g), torch.randn(rank, n, generator=g)
    return {
        "step": step,
        "module": module,
        "kind": "lora",
        "shape": [m, n],
        "rank": rank,
        "row_sites": layout.row_sites,
        "entropies": af.lowrank_profile(B, A).tolist(),
    }


@pytest.mark.parametrize(
    "shapes",
    [
        [(256, 256), (64, 256)],  # grouped-query attention: v_proj has fewer rows (bonds 8 and 6)
        [(576, 576), (192, 576)],  # SmolLM2's q and v
        [(128, 128)],
    ],
)
def test_each_shape_gets_its_own_row_column_bond_and_the_ln_r_bound(shapes):
    rank = 8
    history = [record(f"layers.0.p{i}", m, n, rank) for i, (m, n) in enumerate(shapes)]
    fig = plot_tracked_profile(history, theory=False)
    ax = fig.axes[0]
    vertical = {round(line.get_xdata()[0]) for line in ax.lines if len(set(line.get_xdata())) == 1}
    want = {af.sites(m, n).row_col_bond + 1 for m, n in shapes}
    assert vertical == want
    labels = [line.get_label() for line in ax.lines]
    for m, n in shapes:
        bond = af.sites(m, n).row_col_bond + 1
        assert any(lab.startswith(f"row/column bond ({bond})") for lab in labels), labels
    horizontal = [line for line in ax.lines if len(set(line.get_ydata())) == 1 and line.get_label().startswith("ln")]
    assert len(horizontal) == 1 and horizontal[0].get_ydata()[0] == pytest.approx(math.log(rank))
    for r in history:  # the bound holds where the label says it does
        assert r["entropies"][r["row_sites"] - 1] <= math.log(rank) + 1e-9


@pytest.mark.parametrize("layers", [3, 30])
def test_valley_depth_figure_shows_every_layer(layers):
    """Few modules: one line each. Many (a whole model): one line per projection kind, the mean over all
    layers, with a min-max band, so no layer is left out and no colour repeats."""
    from artent_fast.plotting.tracking import plot_valley_depth

    history = [
        {"step": step, "module": f"model.layers.{i}.self_attn.{kind}", "kind": "lora", "valley_depth": i + step / 10}
        for step in (1, 2, 3)
        for i in range(layers)
        for kind in ("q_proj", "v_proj")
    ]
    fig = plot_valley_depth(history, max_curves=12)
    ax = fig.axes[0]
    curves = [line for line in ax.lines if not line.get_label().startswith("_")]  # not the zero line
    if 2 * layers <= 12:
        assert len(curves) == 2 * layers and not ax.collections
    else:
        assert sorted(c.get_label() for c in curves) == [f"q_proj: mean of {layers}", f"v_proj: mean of {layers}"]
        mean = [(layers - 1) / 2 + step / 10 for step in (1, 2, 3)]
        for c in curves:
            assert list(c.get_ydata()) == pytest.approx(mean)
        assert len(ax.collections) == 2
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(layers - 1 + 0.3)
        assert f"{2 * layers} modules" in ax.get_title()
