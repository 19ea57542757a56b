"""The factored path against the reference profile of the materialised product."""

import math

import numpy as np
import pytest
import torch

import artent_fast as af
from artent_fast.core.reference import reference_profile


@pytest.mark.parametrize(
    "m,n,r",
    [
        (64, 64, 4),
        (64, 32, 16),
        (12, 18, 3),
        (7 * 64, 64, 8),
        (384, 384, 8),
        (16, 16, 40),
        (1, 24, 2),
        (30, 1, 3),
        (8, 8, 1),
        (96, 160, 12),
    ],
)
def test_matches_materialised_reference(rng, m, n, r):
    B, A = rng.standard_normal((m, r)), rng.standard_normal((r, n))
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), scale=0.7)
    np.testing.assert_allclose(got.numpy(), reference_profile(B @ A), atol=1e-8)


def test_float32_and_explicit_dims(rng):
    B = rng.standard_normal((48, 6)).astype(np.float32)
    A = rng.standard_normal((6, 40)).astype(np.float32)
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), row_dims=(6, 8), col_dims=(4, 10))
    assert got.dtype == torch.float32
    ref = reference_profile(B.astype(np.float64) @ A.astype(np.float64), row_dims=(6, 8), col_dims=(4, 10))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_batched_and_broadcast(rng):
    B = rng.standard_normal((3, 1, 32, 4))
    A = rng.standard_normal((5, 4, 64))
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A))
    assert got.shape == (3, 5, 10)
    for i in range(3):
        for j in range(5):
            np.testing.assert_allclose(got[i, j].numpy(), reference_profile(B[i, 0] @ A[j]), atol=1e-8)


def test_degenerate_factors(rng):
    B = rng.standard_normal((32, 4))
    B[:, 2] = B[:, 0]  # rank-deficient B
    A = rng.standard_normal((4, 32))
    A[3] = 0.0  # and A
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A))
    np.testing.assert_allclose(got.numpy(), reference_profile(B @ A), atol=1e-8)


@pytest.mark.parametrize("span", [1e-4, 1e-8, 1e-13])
def test_ill_conditioned_factors(rng, span):
    """Factors whose singular values span many decades (the square roots of their Grams lose the smallest)."""
    m, n, r = 96, 80, 10
    scales = np.logspace(0, np.log10(span), r)
    B = np.linalg.qr(rng.standard_normal((m, r)))[0] * scales  # columns scaled over many decades
    A = rng.standard_normal((r, r)) @ (np.linalg.qr(rng.standard_normal((n, r)))[0] * scales[::-1]).T
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A))
    np.testing.assert_allclose(got.numpy(), reference_profile(B @ A), atol=1e-8)


def test_matches_dense_path_and_valley(rng):
    B, A = torch.randn(256, 8, dtype=torch.float64), torch.randn(8, 256, dtype=torch.float64)
    fact = af.lowrank_profile(B, A)
    torch.testing.assert_close(fact, af.entanglement_profile(B @ A), atol=1e-8, rtol=0)
    c = af.sites(256, 256).row_col_bond
    assert fact[c] <= math.log(8) + 1e-9
    assert fact[c] < fact[c - 2] and fact[c] < fact[c + 2]  # the entanglement valley


def test_zero_update_policy():
    B, A = torch.zeros(16, 4), torch.randn(4, 16)
    with pytest.raises(ValueError, match="zero matrix"):
        af.lowrank_profile(B, A)
    assert torch.isnan(af.lowrank_profile(B, A, on_zero="nan")).all()
    with pytest.raises(ValueError, match="zero matrix"):
        af.lowrank_profile(torch.randn(16, 4), A, scale=0.0)
    mixed = af.lowrank_profile(torch.stack([B, torch.randn(16, 4)]), A, on_zero="nan")
    assert torch.isnan(mixed[0]).all() and torch.isfinite(mixed[1]).all()


@pytest.mark.parametrize(
    "B,A,exc,match",
    [
        (torch.randn(8, 3), torch.randn(4, 8), ValueError, "do not chain"),
        (torch.randn(8, 3).int(), torch.randn(3, 8), TypeError, "B has dtype"),
        (torch.randn(8, 3), torch.full((3, 8), float("nan")), ValueError, "A has .* NaN"),
        (torch.randn(2, 8, 3), torch.randn(3, 3, 8), ValueError, "do not broadcast"),
        (torch.randn(8), torch.randn(1, 8), ValueError, "at least 2 dims"),
    ],
)
def test_bad_input(B, A, exc, match):
    with pytest.raises(exc, match=match):
        af.lowrank_profile(B, A)
