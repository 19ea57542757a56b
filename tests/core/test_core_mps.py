"""Truncated and exact MPS decompositions."""

import numpy as np
import pytest
import torch

import artent_fast as af
from artent_fast.core.reference import reference_profile
from tests.matrices import FAMILIES


@pytest.mark.parametrize("shape", [(16, 16), (12, 18), (7 * 8, 8), (2, 3)])
@pytest.mark.parametrize("order", ["row-major", "interleaved"])
def test_exact_without_truncation(rng, shape, order):
    x = rng.standard_normal(shape)
    mps = af.mps_decompose(torch.from_numpy(x), order=order)
    np.testing.assert_allclose(mps.to_matrix().numpy(), x, atol=1e-10)
    np.testing.assert_allclose(mps.entropies().numpy(), reference_profile(x, order=order), atol=1e-8)
    assert float(mps.discarded_weight.abs().max()) < 1e-20
    assert len(mps.cores) == af.sites(*shape, order=order).num_sites
    assert mps.cores[0].shape[0] == 1 and mps.cores[-1].shape[-1] == 1


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("max_bond", [1, 2, 5])
def test_truncation_error_bounded_by_discarded_weight(rng, family, max_bond):
    x = FAMILIES[family](rng, 32, 32)
    mps = af.mps_decompose(torch.from_numpy(x), max_bond=max_bond)
    assert max(mps.bond_dims) <= max_bond
    err = np.linalg.norm(mps.to_matrix().numpy() - x) ** 2 / np.linalg.norm(x) ** 2
    assert err <= mps.total_discarded_weight + 1e-12
    assert mps.discarded_weight.shape == (9,)


def test_cutoff_keeps_weight_within_bound(rng):
    x = FAMILIES["decaying"](rng, 64, 64)
    mps = af.mps_decompose(torch.from_numpy(x), cutoff=1e-6)
    assert float(mps.discarded_weight.max()) <= 1e-6
    assert max(mps.bond_dims) < 64  # something was dropped
    err = np.linalg.norm(mps.to_matrix().numpy() - x) ** 2 / np.linalg.norm(x) ** 2
    assert err <= mps.total_discarded_weight + 1e-12


def test_dtype_norm_and_repr(rng):
    x = torch.from_numpy(rng.standard_normal((8, 8)).astype(np.float32)) * 50
    mps = af.mps_decompose(x, max_bond=8)
    assert mps.to_matrix().dtype == torch.float32
    torch.testing.assert_close(mps.to_matrix(), x, atol=1e-3, rtol=1e-5)
    assert "MPS(8x8" in repr(mps) and mps.num_params == sum(c.numel() for c in mps.cores)
