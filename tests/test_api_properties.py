"""Property test over the public API's arguments (issue 11, "Done means").

For any draw of shapes, dtypes, scales, site dims, alpha and base, each call either returns the
float64 numpy reference's profile (one SVD per bond) or raises a ValueError/TypeError whose message
names the argument at fault. Nothing else: no NaN profile, no other exception, no wrong number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import artent_fast as af  # noqa: E402
from artent_fast.core.reference import reference_profile  # noqa: E402

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GOOD_ALPHA = [1, 1.0, 2, 0.5, 3.0, math.inf, 1e300, np.float64(2.0), np.int64(1)]
BAD_ALPHA = [0, -1, math.nan, -math.inf, "2", None, True]
GOOD_BASE = [math.e, 2, 10.0, 0.5, np.float32(2.0)]
BAD_BASE = [1, 1.0, 0, -2.0, math.inf, math.nan, "e", None, False]
FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
BAD_DTYPES = [torch.int64, torch.complex64, torch.bool]
# an input entry this large or small is representable in each dtype (beyond it the draw overflows
# to Inf, which must then be a ValueError naming the input, or underflows to a zero matrix)
SCALE_EXPONENTS = [-310, -300, -200, -154, -30, -5, 0, 5, 30, 154, 200, 300]


def _factorisations(n: int) -> list[tuple[int, ...]]:
    """Some ordered factorisations of ``n`` (including ``(n,)`` and a split with a 1 in it)."""
    out = [(n,), (1, n)]
    for d in range(2, n):
        if n % d == 0:
            out.append((d, n // d))
    return out


@st.composite
def dims_arg(draw, size: int, name: str):
    """(value passed, is_valid, dims used by the reference or None)."""
    kind = draw(st.sampled_from(["none", "none", "good", "numpy", "wrong-product", "float", "string", "zero"]))
    if kind == "none":
        return None, True, None
    if kind in ("good", "numpy"):
        dims = draw(st.sampled_from(_factorisations(size)))
        value = np.array(dims, dtype=np.int64) if kind == "numpy" else dims
        return value, True, tuple(d for d in dims if d != 1)
    if kind == "wrong-product":
        return (size + 1,), False, None
    if kind == "float":
        return (size + 0.5,), False, None
    if kind == "string":
        return str(size), False, None
    return (0, size), False, None


@st.composite
def scalar_arg(draw, good: list, bad: list):
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(bad)), False
    return draw(st.sampled_from(good)), True


@st.composite
def matrices(draw, batch_ok: bool = True):
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2 if batch_ok else 0)))
    m, n = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    bad_dtype = draw(st.integers(0, 9)) == 0
    dtype = draw(st.sampled_from(BAD_DTYPES if bad_dtype else FLOAT_DTYPES))
    exponent = draw(st.sampled_from(SCALE_EXPONENTS))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["gauss", "gauss", "gauss", "rank1", "tiny-spread"]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, m, n))
    if kind == "rank1":
        x = rng.standard_normal((*batch, m, 1)) @ rng.standard_normal((*batch, 1, n))
    elif kind == "tiny-spread":
        x = x * 10.0 ** rng.integers(-8, 8, size=x.shape)
    with np.errstate(over="ignore", under="ignore"):
        x = x * 10.0**exponent
    t = torch.from_numpy(x)
    if dtype in (torch.int64, torch.bool):
        t = t.to(dtype) if torch.isfinite(t).all() else torch.ones(t.shape, dtype=dtype)
    else:
        t = t.to(dtype)
    return t, (m, n), not bad_dtype


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 divided by its largest absolute entry (per matrix)."""
    x = x.to(torch.float64)
    peak = x.abs().amax((-2, -1), keepdim=True)
    return x / torch.where(peak > 0, peak, 1.0)


def _degenerate(x: torch.Tensor, m: int, n: int) -> bool:
    """Whether the input itself is unusable: non-finite, a zero matrix (in any batch entry), fewer than 2 sites."""
    if x.dtype in BAD_DTYPES:
        return True
    x64 = x.to(torch.float64)
    zero = not bool(x64.flatten(-2).ne(0).any(-1).all())
    return zero or not bool(torch.isfinite(x64).all()) or len(af.prime_factors(m)) + len(af.prime_factors(n)) < 2


def _assert_names(exc: Exception, names: tuple[str, ...]) -> None:
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    assert any(name in str(exc) for name in names), f"{type(exc).__name__}: {exc!r} names none of {names}"


def _reference(x: torch.Tensor, **kw) -> np.ndarray:
    arr = x.to(torch.float64).numpy()
    return reference_profile(arr, **kw) if arr.ndim == 2 else _batched(arr, **kw)


def _batched(arr: np.ndarray, **kw) -> np.ndarray:
    flat = arr.reshape(-1, *arr.shape[-2:])
    out = np.stack([reference_profile(a, **kw) for a in flat])
    return out.reshape(*arr.shape[:-2], out.shape[-1])


def _tolerance(dtype: torch.dtype, method: str) -> float:
    return 1e-8 if dtype == torch.float64 or method in ("gram", "auto") else 2e-4


@SETTINGS
@given(data=st.data())
def test_entanglement_profile_is_reference_or_named_error(data):
    x, (m, n), dtype_ok = data.draw(matrices())
    row_dims, row_ok, row_ref = data.draw(dims_arg(m, "row_dims"))
    col_dims, col_ok, col_ref = data.draw(dims_arg(n, "col_dims"))
    alpha, alpha_ok = data.draw(scalar_arg(GOOD_ALPHA, BAD_ALPHA))
    base, base_ok = data.draw(scalar_arg(GOOD_BASE, BAD_BASE))
    method = data.draw(st.sampled_from(["auto", "gram", "naive", "sweep"]))
    kwargs = dict(row_dims=row_dims, col_dims=col_dims, alpha=alpha, base=base, method=method)
    bad = [name for name, ok in (("row_dims", row_ok), ("col_dims", col_ok), ("alpha", alpha_ok),
                                 ("base", base_ok), ("matrix", dtype_ok)) if not ok]  # fmt: skip
    degenerate = _degenerate(x, m, n)
    try:
        got = af.entanglement_profile(x, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions
        # an invalid argument's name, or the input's when it is itself unusable: a zero matrix
        # (after underflow), Inf (after overflow), or too few sites (a 1 x 1 or 1 x prime matrix)
        _assert_names(exc, (*bad, "matrix") if degenerate else tuple(bad))
        assert bad or degenerate, f"valid input refused: {exc!r}"
        return
    assert not bad, f"accepted invalid {bad}"
    ref = _reference(x, row_dims=row_ref, col_dims=col_ref, alpha=float(alpha), base=float(base))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.to(torch.float64).numpy(), ref, atol=_tolerance(x.dtype, method), rtol=0)


@SETTINGS
@given(data=st.data())
def test_lowrank_profile_is_reference_or_named_error(data):
    m, n, r = data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10)), data.draw(st.integers(1, 4))
    batch = tuple(data.draw(st.lists(st.integers(1, 2), max_size=1)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    e_b, e_a = data.draw(st.sampled_from(SCALE_EXPONENTS)), data.draw(st.sampled_from(SCALE_EXPONENTS))
    dtype = data.draw(st.sampled_from([torch.float64, torch.float64, torch.float32]))
    with np.errstate(over="ignore", under="ignore"):
        B = torch.from_numpy(rng.standard_normal((*batch, m, r)) * 10.0**e_b).to(dtype)
        A = torch.from_numpy(rng.standard_normal((r, n)) * 10.0**e_a).to(dtype)
    scale_kind = data.draw(st.sampled_from(["one", "huge", "tiny", "zero", "negative", "inf", "nan", "string"]))
    scale = {"one": 1.0, "huge": 1e200, "tiny": 1e-200, "zero": 0.0, "negative": -3e150, "inf": math.inf,
             "nan": math.nan, "string": "2"}[scale_kind]  # fmt: skip
    scale_ok = scale_kind not in ("inf", "nan", "string")
    row_dims, row_ok, row_ref = data.draw(dims_arg(m, "row_dims"))
    col_dims, col_ok, col_ref = data.draw(dims_arg(n, "col_dims"))
    alpha, alpha_ok = data.draw(scalar_arg(GOOD_ALPHA, BAD_ALPHA))
    base, base_ok = data.draw(scalar_arg(GOOD_BASE, BAD_BASE))
    bad = [name for name, ok in (("row_dims", row_ok), ("col_dims", col_ok), ("alpha", alpha_ok), ("base", base_ok),
                                 ("scale", scale_ok)) if not ok]  # fmt: skip
    product = (_unit(B) @ _unit(A)).numpy()  # the exact product's profile: scale invariant, no underflow
    degenerate = _degenerate(B, m, n) or _degenerate(A, m, n) or scale == 0 or not np.any(product != 0)
    try:
        got = af.lowrank_profile(B, A, scale=scale, row_dims=row_dims, col_dims=col_dims, alpha=alpha, base=base)
    except Exception as exc:  # noqa: BLE001
        _assert_names(exc, (*bad, "B", "A", "matrix") if degenerate else tuple(bad))
        assert bad or degenerate, f"valid input refused: {exc!r}"
        return
    assert not bad, f"accepted invalid {bad}"
    ref = _batched(product, row_dims=row_ref, col_dims=col_ref, alpha=float(alpha), base=float(base))
    np.testing.assert_allclose(got.to(torch.float64).numpy(), ref, atol=1e-8 if dtype == torch.float64 else 2e-4)


@SETTINGS
@given(data=st.data())
def test_mps_and_sites_are_reference_or_named_error(data):
    x, (m, n), dtype_ok = data.draw(matrices(batch_ok=False))
    row_dims, row_ok, row_ref = data.draw(dims_arg(m, "row_dims"))
    max_bond = data.draw(st.sampled_from([None, None, 64, 0, -1, 2.5, np.int64(64)]))
    bond_ok = max_bond is None or (not isinstance(max_bond, float) and max_bond > 0)
    bad = [name for name, ok in (("row_dims", row_ok), ("max_bond", bond_ok), ("matrix", dtype_ok)) if not ok]
    try:
        mps = af.mps_decompose(x, row_dims=row_dims, max_bond=max_bond)
    except Exception as exc:  # noqa: BLE001
        degenerate = _degenerate(x, m, n)
        _assert_names(exc, (*bad, "matrix") if degenerate else tuple(bad))
        assert bad or degenerate, f"valid input refused: {exc!r}"
        return
    assert not bad, f"accepted invalid {bad}"
    ref = reference_profile(x.to(torch.float64).numpy(), row_dims=row_ref)
    tol = 1e-8 if x.dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(mps.entropies().to(torch.float64).numpy(), ref, atol=tol)
    assert mps.layout == af.sites(m, n, row_dims=row_dims)
