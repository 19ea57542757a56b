"""BondPlan (one gather, one eigensolve per density size) against per-bond SVDs in float64 numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import artent_fast as af
from artent_fast.core.bondplan import BondPlan, lowrank_plan
from artent_fast.core.reference import reference_profile

SEED = 1123


def _numpy_bond_entropies(state: np.ndarray, dims: tuple[int, ...], bonds: tuple[int, ...]) -> np.ndarray:
    """Entropy at each bond of a chain state, from one SVD per bond (no library code)."""
    total = state.size
    out = []
    for k in bonds:
        left = math.prod(dims[:k])
        s = np.linalg.svd(state.reshape(left, total // left), compute_uv=False) ** 2
        p = s[s > 0] / s.sum()
        out.append(-np.sum(p * np.log(p)))
    return np.array(out)


@pytest.mark.parametrize(
    "chains",
    [
        [(2, 2, 2, 2, 2, 2)],
        [(3, 5, 7)],
        [(2, 3, 2, 5, 2)],
        [(7, 2), (2, 2, 2, 3)],
        [(4, 4, 4, 8), (8, 2, 2, 2, 2, 2)],
        [(11, 13)],
        [(2, 2, 2, 2, 2, 2, 2, 2, 8), (8, 2, 2, 2, 2, 2, 2, 2, 2)],
    ],
)
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_plan_matches_per_bond_svd(chains, batch):
    rng = np.random.default_rng(SEED)
    wanted = [tuple(range(1, len(d))) for d in chains]
    states = [rng.standard_normal((*batch, math.prod(d))) for d in chains]
    plan = BondPlan(chains, wanted)
    got = plan.entropies([torch.from_numpy(s) for s in states], 1.0, math.e).numpy()
    flat = [s.reshape(-1, s.shape[-1]) for s in states]
    for i in range(flat[0].shape[0]):
        ref = np.concatenate([_numpy_bond_entropies(f[i], d, w) for f, d, w in zip(flat, chains, wanted, strict=True)])
        np.testing.assert_allclose(got.reshape(-1, plan.num_bonds)[i], ref, atol=1e-10)


def test_plan_subset_of_bonds_in_requested_order():
    rng = np.random.default_rng(SEED)
    dims = (2, 3, 2, 2, 5)
    state = rng.standard_normal(math.prod(dims))
    plan = BondPlan([dims], [(2, 4)])
    got = plan.entropies([torch.from_numpy(state)], 1.0, math.e).numpy()
    np.testing.assert_allclose(got, _numpy_bond_entropies(state, dims, (2, 4)), atol=1e-10)


SMALL = [(12, 18, 3), (7, 11, 2), (1, 24, 2), (30, 1, 3), (8, 8, 1), (16, 16, 40), (2, 2, 1), (24, 40, 6)]
LARGE = [(256, 256, 8), (64, 256, 8), (128, 256, 8), (256, 64, 16)]  # the tracker's shapes (LLaMA, hidden 256)


def _check_lowrank(m, n, r, batch, alpha):
    rng = np.random.default_rng(SEED + m + n + r)
    B, A = rng.standard_normal((*batch, m, r)), rng.standard_normal((*batch, r, n))
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), alpha=alpha).numpy()
    flat_b, flat_a = B.reshape(-1, m, r), A.reshape(-1, r, n)
    ref = np.stack([reference_profile(b @ a, alpha=alpha) for b, a in zip(flat_b, flat_a, strict=True)])
    np.testing.assert_allclose(got.reshape(ref.shape), ref, atol=1e-9)


@pytest.mark.parametrize("m,n,r", SMALL)
@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5, math.inf])
def test_lowrank_profile_matches_reference(m, n, r, batch, alpha):
    _check_lowrank(m, n, r, batch, alpha)


@pytest.mark.parametrize("m,n,r", LARGE)
def test_lowrank_profile_tracker_shapes(m, n, r):
    _check_lowrank(m, n, r, (2,), 1.0)


def test_float32_factors_as_the_tracker_passes_them():
    rng = np.random.default_rng(SEED)
    B = rng.standard_normal((4, 256, 8)).astype(np.float32)
    A = rng.standard_normal((4, 8, 256)).astype(np.float32)
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), on_zero="nan", check_finite=False)
    assert got.dtype == torch.float32
    for i in range(4):
        ref = reference_profile(B[i].astype(np.float64) @ A[i].astype(np.float64))
        np.testing.assert_allclose(got[i].numpy(), ref, atol=1e-5)


def test_plans_are_cached_per_layout():
    assert lowrank_plan((2,) * 8, (2,) * 8, 8) is lowrank_plan((2,) * 8, (2,) * 8, 8)


def test_zero_update_in_a_batch_is_nan_and_others_exact():
    rng = np.random.default_rng(SEED)
    B = rng.standard_normal((3, 16, 4))
    B[1] = 0
    A = rng.standard_normal((3, 4, 32))
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), on_zero="nan")
    assert torch.isnan(got[1]).all()
    for i in (0, 2):
        np.testing.assert_allclose(got[i].numpy(), reference_profile(B[i] @ A[i]), atol=1e-9)
