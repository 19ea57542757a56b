"""Dense profiles: every method against the float64 numpy reference (one SVD per bond)."""

import math

import numpy as np
import pytest
import torch

import artent_fast as af
from artent_fast.core.reference import reference_profile, reference_profiles
from tests.matrices import FAMILIES

SHAPES = [(8, 8), (12, 18), (64, 64), (16, 128), (7 * 64, 64), (384, 384), (2, 3), (1, 12), (30, 1), (45, 14)]
METHODS = ["naive", "sweep", "gram", "auto"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_float64_matches_reference(rng, method, family, shape):
    if family == "kronecker" and 1 in shape:
        pytest.skip("a Kronecker split needs both axes > 1")
    m = FAMILIES[family](rng, *shape)
    got = af.entanglement_profile(torch.from_numpy(m), method=method)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference_profile(m), atol=1e-8, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape", [(64, 64), (12, 18), (7 * 64, 64), (384, 384)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_float32_matches_reference(rng, method, family, shape):
    m = FAMILIES[family](rng, *shape).astype(np.float32)
    got = af.entanglement_profile(torch.from_numpy(m), method=method)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), reference_profile(m), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", ["row-major", "interleaved"])
def test_batched_with_explicit_dims_and_order(rng, method, order):
    x = rng.standard_normal((2, 3, 24, 20))
    kwargs = dict(row_dims=(4, 6), col_dims=(5, 2, 2), order=order)
    got = af.entanglement_profile(torch.from_numpy(x), method=method, **kwargs)
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got.numpy(), reference_profiles(x, **kwargs), atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.5, 2.0, 3.0, math.inf])
def test_renyi_and_base(rng, method, alpha):
    x = FAMILIES["decaying"](rng, 32, 24)
    got = af.entanglement_profile(torch.from_numpy(x), method=method, alpha=alpha, base=2)
    np.testing.assert_allclose(got.numpy(), reference_profile(x, alpha=alpha, base=2), atol=1e-8)


def test_batch_equals_one_at_a_time(rng):
    x = torch.from_numpy(rng.standard_normal((5, 48, 36)))
    batched = af.entanglement_profile(x)
    single = torch.stack([af.entanglement_profile(xi) for xi in x])
    torch.testing.assert_close(batched, single, atol=1e-10, rtol=0)


def test_low_precision_and_noncontiguous_inputs(rng):
    x = torch.from_numpy(rng.standard_normal((40, 64)).astype(np.float32))
    expected = reference_profile(x.T.contiguous().numpy())
    got = af.entanglement_profile(x.T)  # a transposed view
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    for dt in (torch.bfloat16, torch.float16):
        low = x.to(dt)
        got = af.entanglement_profile(low)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), reference_profile(low.float().numpy()), atol=1e-4)


def test_numpy_input_accepted(rng):
    x = rng.standard_normal((16, 16))
    np.testing.assert_allclose(af.entanglement_profile(x).numpy(), reference_profile(x), atol=1e-8)


# ---- properties (derivable facts, docs/definitions.md §1) ----


@pytest.mark.parametrize("method", METHODS)
def test_scale_invariance(rng, method):
    x = torch.from_numpy(rng.standard_normal((3, 36, 40)))
    base = af.entanglement_profile(x, method=method)
    for c in (-3.0, 1e-30, 1e30):
        torch.testing.assert_close(af.entanglement_profile(c * x, method=method), base, atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_kronecker_has_zero_entropy_at_its_bond(rng, method):
    a, b = rng.standard_normal((4, 8)), rng.standard_normal((16, 2))
    x = torch.from_numpy(np.kron(a, b))  # 64 x 16, rows (2,2 | 2,2,2,2), cols (2,2,2 | 2)
    prof = af.entanglement_profile(x, order="interleaved", row_dims=(4, 16), col_dims=(8, 2), method=method)
    assert abs(float(prof[1])) < 1e-10  # the bond between (i1 j1) and (i2 j2)
    assert float(prof[0]) > 0.1 and float(prof[2]) > 0.1


@pytest.mark.parametrize("r", [1, 2, 5, 16])
def test_rank_r_bound_at_row_column_bond(rng, r):
    x = torch.from_numpy(FAMILIES["lowrank"](rng, 64, 48, r))
    prof = af.entanglement_profile(x)
    center = af.sites(64, 48).row_col_bond
    s = prof[center].item()
    assert s <= math.log(r) + 1e-9
    sv = torch.linalg.svdvals(x)
    p = sv**2 / (sv**2).sum()
    assert abs(s + float(torch.special.xlogy(p, p).sum())) < 1e-9  # it *is* the matrix's own spectrum


def test_gaussian_follows_page_curve():
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(64, 128, 128, generator=gen, dtype=torch.float64)
    mean = af.entanglement_profile(x).mean(0)
    page = af.page_curve(128, 128)
    # Page's formula is the exact mean for the fixed-trace ensemble; 64 samples -> std error ~ 1e-3
    torch.testing.assert_close(mean, page, atol=5e-3, rtol=0)


@pytest.mark.parametrize("method", ["gram", "sweep"])
@pytest.mark.parametrize("block", [1, 2, 5])
def test_blocked_batches_match_reference_and_name_zero_index(rng, monkeypatch, method, block):
    """Batches processed in blocks (as large batches are) give the same profiles, in order."""
    import artent_fast.core.profile as profile_mod

    monkeypatch.setattr(profile_mod, "chunk_size", lambda *a: block)
    x = rng.standard_normal((2, 3, 12, 10))
    x[1, 2] = 0.0
    got = af.entanglement_profile(torch.from_numpy(x), method=method, on_zero="nan")
    ref = reference_profiles(x.reshape(-1, 12, 10)[:5]).reshape(5, -1)
    np.testing.assert_allclose(got.reshape(6, -1)[:5].numpy(), ref, atol=1e-8, rtol=0)
    assert torch.isnan(got[1, 2]).all()
    with pytest.raises(ValueError, match=r"batch index \[\(1, 2\)\]"):
        af.entanglement_profile(torch.from_numpy(x), method=method)


@pytest.mark.parametrize("shape", [(12, 18), (384, 8), (28, 1), (1, 30), (64, 45)])
@pytest.mark.parametrize("order", ["row-major", "interleaved"])
def test_reference_layout_agrees_with_the_library(shape, order):
    """The numpy reference works out its own sites; they agree with ``sites`` on every shape and order."""
    from artent_fast.core.reference import reference_chain

    rows, cols, perm = reference_chain(*shape, order=order)
    layout = af.sites(*shape, order=order)
    assert (tuple(rows), tuple(cols), tuple(perm)) == (layout.row_dims, layout.col_dims, layout.perm)
