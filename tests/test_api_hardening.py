"""Issue 11, "The API and the other commands": gradients, scale, argument checks, `artent profile` errors.

Each test here failed on the code before the fix (NaN gradients, NaN or "zero matrix" profiles at
extreme scales, c=nan with r2=1, a hang in trial division, accepted bad arguments, tracebacks).
"""

from __future__ import annotations

import json
import math
import struct
import threading
import warnings

import numpy as np
import pytest
import torch

import artent_fast as af
from artent_fast.cli import main
from artent_fast.core.reference import reference_profile

SEED = 20261123


@pytest.fixture
def gen():
    return np.random.default_rng(SEED)


# -- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gram", "naive", "sweep"])
@pytest.mark.parametrize("alpha", [1, 2, 0.5, math.inf])
def test_dense_gradients_pass_gradcheck(gen, method, alpha):
    x = torch.from_numpy(gen.standard_normal((6, 8))).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: af.entanglement_profile(x, method=method, alpha=alpha), (x,))


@pytest.mark.parametrize("shape", [(8, 12), (2, 4, 9)])
def test_dense_gradient_is_finite_and_matches_finite_difference(gen, shape):
    x = torch.from_numpy(gen.standard_normal(shape)).requires_grad_()
    af.entanglement_profile(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    d = torch.from_numpy(gen.standard_normal(shape))
    eps = 1e-6
    with torch.no_grad():
        fd = (af.entanglement_profile(x + eps * d).sum() - af.entanglement_profile(x - eps * d).sum()) / (2 * eps)
    assert float((x.grad * d).sum()) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_lowrank_gradients_pass_gradcheck(gen):
    B = torch.from_numpy(gen.standard_normal((6, 3))).requires_grad_()
    A = torch.from_numpy(gen.standard_normal((3, 8))).requires_grad_()
    assert torch.autograd.gradcheck(lambda B, A: af.lowrank_profile(B, A, scale=0.3), (B, A))


def test_lowrank_gradient_finite_at_degenerate_gram(gen):
    """Orthonormal rows of A: A A^T = I, a fully degenerate Gram (eigh's gradient would be NaN there)."""
    q, _ = np.linalg.qr(gen.standard_normal((8, 3)))
    A = torch.from_numpy(q.T.copy()).requires_grad_()
    B = torch.from_numpy(gen.standard_normal((6, 3))).requires_grad_()
    af.lowrank_profile(B, A).sum().backward()
    assert torch.isfinite(A.grad).all() and torch.isfinite(B.grad).all()


def test_rank_deficient_dense_gradient_is_finite(gen):
    x = torch.from_numpy(gen.standard_normal((8, 1)) @ gen.standard_normal((1, 12))).requires_grad_()
    af.entanglement_profile(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_lowrank_rank_deficient_factor_with_grad_warns(gen):
    B = torch.from_numpy(gen.standard_normal((6, 2)) @ np.ones((2, 3))).requires_grad_()  # rank 2 < r = 3
    A = torch.from_numpy(gen.standard_normal((3, 8))).requires_grad_()
    with pytest.warns(RuntimeWarning, match="rank-deficient"):
        prof = af.lowrank_profile(B, A)
    ref = reference_profile(B.detach().numpy() @ A.detach().numpy())
    np.testing.assert_allclose(prof.detach().numpy(), ref, atol=1e-8)


# -- scale invariance -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gram", "naive", "sweep"])
@pytest.mark.parametrize("scale", [1e154, 1e200, 1e300, 1e-154, 1e-300, 1e-310])
def test_dense_profile_is_scale_invariant(gen, method, scale):
    x = gen.standard_normal((12, 8))
    ref = reference_profile(x)
    got = af.entanglement_profile(torch.from_numpy(x * scale), method=method)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6 if scale < 1e-307 else 1e-10)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_float32_extremes(gen, scale):
    x = gen.standard_normal((16, 8))
    got = af.entanglement_profile(torch.from_numpy((x * scale).astype(np.float32)), method="naive")
    np.testing.assert_allclose(got.numpy(), reference_profile(x), atol=1e-4)


@pytest.mark.parametrize("scale", [1e200, 1e-200, -1e300, 5e-324])
def test_lowrank_scale_is_invariant(gen, scale):
    B, A = gen.standard_normal((12, 3)), gen.standard_normal((3, 10))
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), scale=scale)
    np.testing.assert_allclose(got.numpy(), reference_profile(B @ A), atol=1e-9)


@pytest.mark.parametrize("factor_scale", [1e160, 1e-160])
def test_lowrank_extreme_factors(gen, factor_scale):
    B, A = gen.standard_normal((12, 3)), gen.standard_normal((3, 10))
    got = af.lowrank_profile(torch.from_numpy(B * factor_scale), torch.from_numpy(A * factor_scale))
    np.testing.assert_allclose(got.numpy(), reference_profile(B @ A), atol=1e-9)


def test_lowrank_scale_zero_is_still_zero(gen):
    B, A = torch.from_numpy(gen.standard_normal((8, 2))), torch.from_numpy(gen.standard_normal((2, 8)))
    with pytest.raises(ValueError, match="zero matrix"):
        af.lowrank_profile(B, A, scale=0.0)
    assert torch.isnan(af.lowrank_profile(B, A, scale=0.0, on_zero="nan")).all()


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_mps_decompose_extreme_scale(gen, scale):
    x = gen.standard_normal((8, 12))
    mps = af.mps_decompose(torch.from_numpy(x * scale))
    np.testing.assert_allclose(mps.entropies().numpy(), reference_profile(x), atol=1e-10)
    assert float(mps.norm) == pytest.approx(np.linalg.norm(x) * scale, rel=1e-12)
    back = mps.to_matrix().numpy() / scale
    np.testing.assert_allclose(back, x, atol=1e-10)


# -- fit_cardy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "profile,exc,match",
    [
        (torch.tensor([1.0, float("nan"), 2.0, 1.0]), ValueError, "NaN or Inf"),
        (torch.tensor([1.0, float("inf"), 2.0, 1.0]), ValueError, "NaN or Inf"),
        (torch.tensor([1.0, 2.0, 1.0], dtype=torch.complex64), TypeError, "profile"),
        (torch.tensor([True, False, True]), TypeError, "profile"),
        (torch.tensor([1.0, 2.0]), ValueError, "at least 3 bonds"),
        (torch.tensor([1.0]), ValueError, "at least 3 bonds"),
        ("abc", TypeError, "profile"),
    ],
)
def test_fit_cardy_bad_input(profile, exc, match):
    with pytest.raises(exc, match=match):
        af.fit_cardy(profile)


def test_fit_cardy_good_input_still_fits():
    fit = af.fit_cardy(np.array([0.5, 0.9, 1.0, 0.9, 0.5]))
    assert torch.isfinite(fit.c) and 0 <= float(fit.r2) <= 1


# -- site layouts ---------------------------------------------------------------------------------


def _finishes(fn, seconds: float):
    """Run ``fn`` in a thread; return (finished, exception)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("exc")


def test_huge_prime_side_is_refused_quickly():
    done, exc = _finishes(lambda: af.sites(2**61 - 1, 2), 5.0)
    assert done, "sites(2**61 - 1, 2) did not return within 5 s"
    assert isinstance(exc, ValueError) and "m=" in str(exc)


def test_real_sides_factor_instantly():
    done, exc = _finishes(lambda: af.prime_factors(1099511627689), 5.0)  # a prime just below 2**40
    assert done and exc is None
    assert af.sites(4096, 14336).dims == (2,) * 12 + (2,) * 11 + (7,)


@pytest.mark.parametrize("row_dims", [(3.5,), "12", 12, (2.0, 6.0), (np.float64(12.0),)])
def test_non_integer_row_dims_name_the_argument(row_dims):
    with pytest.raises(TypeError, match="row_dims"):
        af.entanglement_profile(torch.randn(12, 8), row_dims=row_dims)


def test_numpy_integers_are_accepted(gen):
    x = gen.standard_normal((12, 8))
    ref = reference_profile(x, row_dims=(3, 4))
    got = af.entanglement_profile(torch.from_numpy(x), row_dims=np.array([3, 4]), col_dims=[np.int32(8)])
    np.testing.assert_allclose(got.numpy(), reference_profile(x, row_dims=(3, 4), col_dims=(8,)), atol=1e-10)
    assert ref.shape[0] == 4
    assert af.sites(np.int64(12), np.uint16(8)).dims == (2, 2, 3, 2, 2, 2)
    np.testing.assert_allclose(af.page_curve(np.int64(12), 8).numpy(), af.page_curve(12, 8).numpy())
    prof = af.random_lowrank_profile(np.int64(8), 8, np.int64(2), samples=np.int64(2))
    assert prof.shape == (5,)


@pytest.mark.parametrize("make", ["reversed", "strided", "big-endian", "fortran"])
def test_numpy_layouts_are_accepted(gen, make):
    x = gen.standard_normal((12, 16))
    arr = {
        "reversed": lambda: x[::-1, ::-1],
        "strided": lambda: x[::-2],
        "big-endian": lambda: x.astype(">f8"),
        "fortran": lambda: np.asfortranarray(x),
    }[make]()
    got = af.entanglement_profile(arr)
    np.testing.assert_allclose(got.numpy(), reference_profile(np.ascontiguousarray(arr, dtype=np.float64)), atol=1e-10)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128, object])
def test_numpy_bad_dtypes_name_the_matrix(dtype):
    with pytest.raises(TypeError, match="matrix"):
        af.entanglement_profile(np.ones((4, 4), dtype=dtype))


@pytest.mark.parametrize("base", [math.inf, -math.inf, math.nan, 0, -2, 1, 1.0])
def test_bad_base_names_base(base):
    with pytest.raises(ValueError, match="base"):
        af.entanglement_profile(torch.randn(8, 8), base=base)
    with pytest.raises(ValueError, match="base"):
        af.lowrank_profile(torch.randn(8, 2), torch.randn(2, 8), base=base)


@pytest.mark.parametrize("bad", ["e", None, True, [2]])
def test_non_numeric_base_and_alpha_are_type_errors(bad):
    with pytest.raises(TypeError, match="base"):
        af.entanglement_profile(torch.randn(8, 8), base=bad)
    with pytest.raises(TypeError, match="alpha"):
        af.entanglement_profile(torch.randn(8, 8), alpha=bad)


def test_zero_dim_tensor_and_array_scalars(gen):
    B, A = gen.standard_normal((8, 2)), gen.standard_normal((2, 8))
    ref = reference_profile(B @ A)
    for scale in (torch.tensor(2.0), np.array(3.0), np.float32(0.5)):
        got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), scale=scale)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)
    for bad in (torch.tensor(True), torch.tensor(1 + 1j), torch.tensor([1.0, 2.0])):
        with pytest.raises(TypeError, match="scale"):
            af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), scale=bad)


def test_numpy_scalar_alpha_and_base(gen):
    x = gen.standard_normal((8, 8))
    got = af.entanglement_profile(torch.from_numpy(x), alpha=np.float32(2.0), base=np.int64(2))
    np.testing.assert_allclose(got.numpy(), reference_profile(x, alpha=2, base=2), atol=1e-10)


@pytest.mark.parametrize("alpha", [1e300, 1e30, 1e-300, 1e-30])
@pytest.mark.parametrize("method", ["gram", "naive"])
def test_extreme_alpha_is_finite_and_correct(gen, alpha, method):
    x = gen.standard_normal((12, 8))
    got = af.entanglement_profile(torch.from_numpy(x), alpha=alpha, method=method)
    assert torch.isfinite(got).all()
    limit = math.inf if alpha > 1 else 1e-12  # min-entropy, or Hartley (log rank) in the limit
    np.testing.assert_allclose(got.numpy(), reference_profile(x, alpha=limit), atol=1e-6)


def test_extreme_alpha_lowrank(gen):
    B, A = gen.standard_normal((12, 3)), gen.standard_normal((3, 8))
    got = af.lowrank_profile(torch.from_numpy(B), torch.from_numpy(A), alpha=1e300)
    np.testing.assert_allclose(got.numpy(), reference_profile(B @ A, alpha=math.inf), atol=1e-8)


def test_triton_backend_without_gpu_names_backend():
    pytest.importorskip("artent_fast.attention")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the triton backend may run")
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="backend"):
        af.fused_attention(q, q, q, causal=True, backend="triton")


@pytest.mark.parametrize("pattern", ["re:(", "re:[a-", "re:*q"])
def test_bad_target_pattern_names_targets(pattern):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="targets"):
            af.track(model, targets=[pattern], out=None)


# -- artent profile ---------------------------------------------------------------------------------


def _run(capsys, *argv):
    code = main(["profile", *argv])
    captured = capsys.readouterr()
    return code, captured.err


def _one_line_exit_2(capsys, *argv, match: str):
    code, err = _run(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


@pytest.fixture
def safetensors_file(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    path = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(8, 8)}, str(path))
    return path


def test_profile_truncated_safetensors(tmp_path, capsys, safetensors_file):
    data = safetensors_file.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) - 17])
    _one_line_exit_2(capsys, "--input", str(bad), "--out", str(tmp_path / "o"), match="cut.safetensors")


def test_profile_huge_header_safetensors(tmp_path, capsys):
    pytest.importorskip("safetensors")
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    _one_line_exit_2(capsys, "--input", str(bad), "--out", str(tmp_path / "o"), match="huge.safetensors")


@pytest.mark.parametrize("name,data", [("bad.npy", b"\x93NUMPY garbage"), ("bad.pt", b"PK\x03\x04 not a zip")])
def test_profile_corrupt_npy_and_pt(tmp_path, capsys, name, data):
    (tmp_path / name).write_bytes(data)
    _one_line_exit_2(capsys, "--input", str(tmp_path / name), "--out", str(tmp_path / "o"), match=name)


def test_profile_input_not_a_matrix(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.ones(5))
    _one_line_exit_2(capsys, "--input", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), match="need a matrix")


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--size", "-5"], "--size"),
        (["--size", "1"], "--size"),
        (["--rank", "100000", "--size", "8"], "--rank"),
        (["--rank", "0", "--size", "8"], "--rank"),
        (["--example", "gaussian", "--size", "100000"], "--size"),
        (["--base", "inf"], "--base"),
        (["--base", "1"], "--base"),
    ],
)
def test_profile_bad_arguments(tmp_path, capsys, argv, match):
    _one_line_exit_2(capsys, *argv, "--out", str(tmp_path / "o"), match=match)
    assert not (tmp_path / "o").exists()


def test_profile_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("keep me")
    _one_line_exit_2(capsys, "--size", "8", "--rank", "2", "--out", str(tmp_path / "f"), match="--out")
    _one_line_exit_2(capsys, "--size", "8", "--rank", "2", "--out", str(tmp_path / "f" / "sub"), match="--out")
    assert (tmp_path / "f").read_text() == "keep me"


def test_profile_good_input_still_works(tmp_path, capsys, safetensors_file):
    assert main(["profile", "--input", str(safetensors_file), "--out", str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "profile.json").read_text())
    assert len(record["entropies"]) == 5


def test_profile_help_describes_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    out = capsys.readouterr().out
    assert "Entanglement profile of one matrix" in out
    assert "TT-SVD" in out  # --method explained
    assert "random seed" in out  # --seed explained
    assert "(default: 1024)" in out and "artent_profile" in out
