"""Random-matrix references and the Cardy fit."""

import math

import pytest
import torch

import artent_fast as af
from artent_fast.core.theory import lowrank_row_col_entropy, page_entropy


def test_page_entropy_small_cases():
    # dA = dB = 2: H(4) - H(2) - 1/4 = 1/3 + 1/4 - 1/4
    assert abs(float(page_entropy(2, 2)) - 1 / 3) < 1e-12
    # dA = 1: a product state
    assert abs(float(page_entropy(1, 7))) < 1e-12
    # symmetric in its arguments, and ~ ln dA - dA/(2 dB) for dA << dB
    assert float(page_entropy(3, 5)) == pytest.approx(float(page_entropy(5, 3)))
    assert float(page_entropy(8, 4096)) == pytest.approx(math.log(8) - 8 / (2 * 4096), abs=1e-3)


def test_page_curve_accepts_sizes_or_dims():
    torch.testing.assert_close(af.page_curve(12, 8), af.page_curve((2, 2, 3), (2, 2, 2)))
    assert af.page_curve(12, 8).shape == (5,)


def test_random_lowrank_monte_carlo_vs_analytic_center():
    m = n = 64
    r = 4
    mc, std = af.random_lowrank_profile(m, n, r, samples=64, seed=3, return_std=True)
    c = af.sites(m, n).row_col_bond
    assert abs(float(mc[c]) - lowrank_row_col_entropy(m, n, r)) < 0.03
    analytic = af.random_lowrank_profile(m, n, r, method="analytic")
    assert torch.allclose(analytic, mc, atol=0.06)
    assert (std >= 0).all()
    again = af.random_lowrank_profile(m, n, r, samples=64, seed=3)
    torch.testing.assert_close(again, mc)  # seeded


@pytest.mark.parametrize("boundary", ["periodic", "open"])
def test_fit_cardy_recovers_parameters(boundary):
    L = 22
    true = af.CardyFit(*(torch.tensor(v, dtype=torch.float64) for v in ([1.0, 2.5], [0.3, -0.1], [1.0, 1.0])))
    prof = true.predict(L, boundary)
    fit = af.fit_cardy(prof, boundary=boundary)
    torch.testing.assert_close(fit.c, true.c, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.s0, true.s0, atol=1e-10, rtol=0)
    assert (fit.r2 > 1 - 1e-12).all()
    noisy = prof + 0.05 * torch.randn(prof.shape, generator=torch.Generator().manual_seed(0))
    assert (af.fit_cardy(noisy, boundary=boundary).r2 < 1).all()


def test_fit_cardy_bad_input():
    with pytest.raises(ValueError, match="at least 3 bonds"):
        af.fit_cardy(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="boundary"):
        af.fit_cardy(torch.ones(5), boundary="closed")
