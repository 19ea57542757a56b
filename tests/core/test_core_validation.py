"""Bad input gets a clear error naming the problem."""

import math

import numpy as np
import pytest
import torch

import artent_fast as af


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError, "NaN or Inf"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), ValueError, "NaN or Inf"),
        (torch.ones(4, 4, dtype=torch.int64), TypeError, "floating-point"),
        (torch.ones(4, 4, dtype=torch.complex64), TypeError, "complex"),
        (torch.ones(8), ValueError, "at least 2 dims"),
        (torch.ones(0, 4), ValueError, "empty"),
        ([[1.0, 2.0]], TypeError, "torch.Tensor or numpy"),
        (torch.ones(1, 1), ValueError, "at least 2 sites"),
        (torch.ones(1, 3), ValueError, "at least 2 sites"),
    ],
)
def test_bad_matrix(x, exc, match):
    with pytest.raises(exc, match=match):
        af.entanglement_profile(x)


def test_zero_matrix_policy():
    with pytest.raises(ValueError, match=r"zero matrix at batch index \[\(1,\)\]"):
        af.entanglement_profile(torch.stack([torch.randn(8, 8), torch.zeros(8, 8)]))
    for method in ("naive", "sweep", "gram"):
        got = af.entanglement_profile(torch.stack([torch.randn(8, 8), torch.zeros(8, 8)]), on_zero="nan", method=method)
        assert torch.isfinite(got[0]).all() and torch.isnan(got[1]).all()
    with pytest.raises(ValueError, match="on_zero"):
        af.entanglement_profile(torch.randn(4, 4), on_zero="ignore")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(row_dims=(2, 3)), "row_dims=.* multiply to 6"),
        (dict(col_dims=(0, 8)), "positive"),
        (dict(method="svd"), "method must be one of"),
        (dict(order="col-major"), "order must be one of"),
        (dict(alpha=0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(base=1), "base"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        af.entanglement_profile(torch.randn(8, 8), **kwargs)


def test_mps_bad_options():
    with pytest.raises(ValueError, match="max_bond"):
        af.mps_decompose(torch.randn(8, 8), max_bond=0)
    with pytest.raises(ValueError, match="cutoff"):
        af.mps_decompose(torch.randn(8, 8), cutoff=-1)
    with pytest.raises(ValueError, match="one matrix"):
        af.mps_decompose(torch.randn(2, 8, 8))
    with pytest.raises(ValueError, match="zero matrix"):
        af.mps_decompose(torch.zeros(8, 8))


def test_sites_layouts():
    lay = af.sites(384, 14336)
    assert lay.row_dims == (2,) * 7 + (3,) and lay.col_dims == (2,) * 11 + (7,)
    assert lay.row_col_bond == 7 and lay.num_bonds == 19
    inter = af.sites(8, 4, order="interleaved")
    assert inter.dims == (2, 2, 2, 2, 2) and inter.perm == (0, 3, 1, 4, 2)
    assert af.sites(12, 18, row_dims=(3, 4), col_dims=(1, 18)).dims == (3, 4, 18)
    assert [lft * rgt for lft, rgt in lay.bond_dims()] == [384 * 14336] * lay.num_bonds
    assert af.prime_factors(2 * 3 * 3 * 97) == (2, 3, 3, 97)
    with pytest.raises(ValueError, match="positive integer"):
        af.sites(0, 4)
    assert math.prod(lay.dims) == 384 * 14336


def test_numpy_float16_upcast():
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float16)
    assert af.entanglement_profile(x).dtype == torch.float32
