"""The CUDA eigensolver extension (csrc/): it compiles with nvcc, imports without a GPU, and its algorithm is right.

The build runs whenever nvcc and pybind11 are present (one architecture, two small translation
units: well under a minute on 2 cores). Without a GPU the kernel cannot run, so its algorithm
(round-robin parallel Jacobi with 2x2 block updates, csrc/jacobi_eigvalsh.cu) is checked through a
numpy twin that performs the same steps in the same order, against LAPACK. ``gpu`` tests run the
compiled kernel against torch.linalg.eigvalsh.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("artent_fast_csrc_build", ROOT / "csrc" / "build.py")
csrc_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(csrc_build)

needs_toolchain = pytest.mark.skipif(
    csrc_build.find_nvcc() is None or importlib.util.find_spec("pybind11") is None, reason="needs nvcc and pybind11"
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ARTENT_FAST_BACKEND", "ARTENT_FAST_CUDA_EXT")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return csrc_build.build(tmp_path_factory.mktemp("cuda_ext"))


@pytest.fixture(scope="module")
def ext(built):
    spec = importlib.util.spec_from_file_location("_cuda_jacobi", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not touch CUDA: this machine may have no GPU
    return module


# ---------------------------------------------------------------- build and import


@pytest.mark.slow
@needs_toolchain
def test_extension_builds_imports_and_exposes_its_api(built, ext):
    assert built.name.startswith("_cuda_jacobi") and built.stat().st_size > 0
    assert callable(ext.eigvalsh_batched) and ext.MAX_N == 512 and ext.ABI_VERSION == 1
    assert "eigvalsh_batched(a" in ext.eigvalsh_batched.__doc__
    libs = subprocess.run(["ldd", str(built)], capture_output=True, text=True).stdout
    assert "libtorch" not in libs and "libcudart.so" not in libs  # static cudart, no libtorch


@pytest.mark.slow
@needs_toolchain
def test_bad_arguments_fail_before_any_cuda_call(ext):
    with pytest.raises(ValueError, match="dtype must be"):
        ext.eigvalsh_batched(1, 1, 1, 4, "float16")
    for n in (0, 513):
        with pytest.raises(ValueError, match="n must be in 1..512"):
            ext.eigvalsh_batched(1, 1, 1, n, "float32")
    with pytest.raises(ValueError, match="null device pointer"):
        ext.eigvalsh_batched(0, 0, 3, 8, "float64")
    with pytest.raises(ValueError, match="max_sweeps"):
        ext.eigvalsh_batched(1, 1, 1, 8, "float64", max_sweeps=0)
    ext.eigvalsh_batched(0, 0, 0, 8, "float64")  # empty batch: a no-op, CUDA untouched


@pytest.mark.slow
@needs_toolchain
def test_cuda_backend_loads_the_built_extension(built):
    code = (
        "import torch\n"
        "from artent_fast.backends import available_backends, dispatch, cuda_ops\n"
        "assert 'cuda' in available_backends(), available_backends()\n"
        "x = torch.randn(4, 40, 40, dtype=torch.float64); x = x @ x.mT\n"
        "assert not cuda_ops.covers(x)\n"
        "assert dispatch('eigvalsh', x).shape == (4, 40)\n"
        "print('ok', cuda_ops.MIN_N, cuda_ops.MAX_N)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(ARTENT_FAST_CUDA_EXT=str(built)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and "ok 32 512" in res.stdout, res.stderr[-3000:]


@pytest.mark.slow
def test_cuda_backend_without_extension_is_skipped():
    code = (
        "import importlib, torch\n"
        "try:\n    importlib.import_module('artent_fast.backends.cuda_ops')\n"
        "except ImportError as e:\n    assert '/nonexistent' in str(e), e\nelse:\n    raise SystemExit('imported')\n"
        "from artent_fast.backends import available_backends\n"
        "assert 'cuda' not in available_backends()\n"
        "import artent_fast as af\n"
        "print('ok', af.entanglement_profile(torch.randn(4, 6)).shape)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(ARTENT_FAST_CUDA_EXT="/nonexistent/x.so"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(("cuda", "cpu"), [("", ""), ("1", ""), ("", "0")])
def test_setup_builds_the_extension_only_when_asked(cuda, cpu):
    """The CUDA extension only with ARTENT_FAST_BUILD_CUDA=1 (and its toolchain); the compiled CPU path always
    (an optional extension: a missing C compiler does not stop the install) unless ARTENT_FAST_BUILD_CPU=0."""
    code = (
        "import setuptools, runpy\n"
        "setuptools.setup = lambda **kw: print('EXT', [(e.name, getattr(e, 'optional', False)) "
        "for e in kw['ext_modules']], kw['packages'][:1])\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(ARTENT_FAST_BUILD_CUDA=cuda, ARTENT_FAST_BUILD_CPU=cpu),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    toolchain = csrc_build.find_nvcc() is not None and importlib.util.find_spec("pybind11") is not None
    expected = [("artent_fast._cpu_densities", True)] if cpu != "0" else []
    expected += [("artent_fast._cuda_jacobi", False)] if cuda == "1" and toolchain else []
    assert f"EXT {expected} ['artent_fast']" in res.stdout, res.stdout


# ---------------------------------------------------------------- the algorithm, through a numpy twin


def schedule(m: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Round ``r`` of the kernel's round-robin over ``m`` players: pairs (p < q), as in ``player()``."""
    pos = np.arange(m // 2)

    def player(x):
        return np.where(x == 0, 0, 1 + (x - 1 + r) % (m - 1))

    a, b = player(pos), player(m - 1 - pos)
    return np.minimum(a, b), np.maximum(a, b)


def jacobi_twin(a: np.ndarray, max_sweeps: int = 20) -> tuple[np.ndarray, int]:
    """The kernel's steps in numpy: same schedule, rotations, 2x2 block updates and stopping rule."""
    dtype = a.dtype
    n = a.shape[0]
    m = n + (n & 1)
    eps = np.finfo(dtype).eps
    A = np.zeros((n + 1, n + 1), dtype)  # row/column n: the dummy player of odd sizes (always zero)
    A[:n, :n] = a
    sweeps = 0
    for _ in range(max_sweeps):
        inner = A[:n, :n]
        diag = np.diagonal(inner)
        off = np.square(inner - np.diag(diag)).sum(dtype=dtype)
        if off <= eps * eps * np.square(diag).sum(dtype=dtype):
            break
        sweeps += 1
        for r in range(m - 1):
            p, q = schedule(m, r)
            app, aqq, apq = A[p, p], A[q, q], A[p, q]
            # negligible pairs (Demmel-Veselic): no rotation, the pair's entry is zeroed below
            rotate = (q < n) & (np.abs(apq) > eps * np.sqrt(np.abs(app)) * np.sqrt(np.abs(aqq)))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tau = (aqq - app) / (2 * np.where(rotate, apq, 1))
                t = np.where(rotate, np.copysign(dtype.type(1), tau) / (np.abs(tau) + np.sqrt(1 + tau * tau)), 0)
            t = t.astype(dtype)
            c = (1 / np.sqrt(1 + t * t)).astype(dtype)
            s = t * c
            b00, b01, b10, b11 = A[np.ix_(p, p)], A[np.ix_(p, q)], A[np.ix_(q, p)], A[np.ix_(q, q)]
            c1, s1, c2, s2 = c[:, None], s[:, None], c[None, :], s[None, :]
            m00, m01 = c1 * b00 - s1 * b10, c1 * b01 - s1 * b11
            m10, m11 = s1 * b00 + c1 * b10, s1 * b01 + c1 * b11
            n00, n01 = c2 * m00 - s2 * m01, s2 * m00 + c2 * m01
            n10, n11 = c2 * m10 - s2 * m11, s2 * m10 + c2 * m11
            k = np.arange(len(p))
            n00[k, k] = np.diagonal(b00) - t * np.diagonal(b01)
            n11[k, k] = np.diagonal(b11) + t * np.diagonal(b01)
            n01[k, k] = 0
            n10[k, k] = 0
            A[np.ix_(p, p)], A[np.ix_(p, q)], A[np.ix_(q, p)], A[np.ix_(q, q)] = n00, n01, n10, n11
            A[n, :] = 0  # the kernel never stores dummy entries
            A[:, n] = 0
    return np.sort(np.diagonal(A[:n, :n])), sweeps


@pytest.mark.parametrize("m", [2, 4, 6, 34, 100, 512])
def test_round_robin_meets_every_pair_once_per_sweep(m):
    seen = set()
    for r in range(m - 1):
        p, q = schedule(m, r)
        assert len(set(p) | set(q)) == m  # disjoint pairs: the round's rotations commute
        seen.update(zip(p.tolist(), q.tolist(), strict=True))
    assert len(seen) == m * (m - 1) // 2


def _matrices(rng, n, dtype):
    x = rng.standard_normal((n, n + 2))
    sym = rng.standard_normal((n, n))
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    repeated = (q * np.repeat([1.0, -2.0, 3.0], -(-n // 3))[:n]) @ q.T  # repeated eigenvalues
    return {
        "psd": x @ x.T,
        "indefinite": sym + sym.T,
        "repeated": repeated,
        "identity": np.eye(n),
        "zero": np.zeros((n, n)),
        "graded": np.diag(10.0 ** -np.arange(n) / 2) + 1e-3 * (sym + sym.T),
    }


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 31, 33, 48])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jacobi_twin_matches_lapack(rng, n, dtype):
    for name, a in _matrices(rng, n, dtype).items():
        a = a.astype(dtype)
        got, sweeps = jacobi_twin(a)
        ref = np.linalg.eigvalsh(a.astype(np.float64))
        scale = max(np.abs(ref).max(), np.finfo(np.float64).tiny)
        limit = 2e-6 if dtype == np.float32 else 1e-14
        assert np.abs(got - ref).max() <= limit * scale * max(1, np.sqrt(n)), (name, n, dtype)
        assert sweeps < 20, (name, n, sweeps)  # converged by the stopping rule, not the sweep cap


# ---------------------------------------------------------------- the compiled kernel (GPU)


@pytest.mark.slow
@pytest.mark.gpu
@needs_toolchain
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_kernel_matches_torch(ext, dtype):
    for n in (1, 2, 5, 32, 33, 64, 127, 128, 256, 300, 512):
        x = torch.randn(5, n, n + 1, device="cuda", dtype=torch.float64)
        a = (x @ x.mT).to(dtype)
        ref = torch.linalg.eigvalsh(a.double())
        for force_global in (False, True):
            work = a.clone()
            out = torch.empty(5, n, device="cuda", dtype=dtype)
            ext.eigvalsh_batched(
                work.data_ptr(),
                out.data_ptr(),
                5,
                n,
                str(dtype).split(".")[1],
                torch.cuda.current_stream().cuda_stream,
                force_global=force_global,
            )
            err = float((out.double() - ref).abs().max() / ref.abs().max())
            assert err < (1e-5 if dtype == torch.float32 else 1e-12), (n, force_global, err)


def test_runtime_library_static_preferred_shared_as_fallback(tmp_path):
    """The build links the static CUDA runtime when the toolkit has it, else the shared one (with an rpath)."""
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libcudart.so").write_bytes(b"")
    assert csrc_build.cudart_dir(tmp_path) == tmp_path / "lib64"
    assert csrc_build.cudart_libraries(tmp_path / "lib64") == ["cudart"]
    (tmp_path / "targets" / "x86_64-linux" / "lib").mkdir(parents=True)
    (tmp_path / "targets" / "x86_64-linux" / "lib" / "libcudart_static.a").write_bytes(b"")
    static = tmp_path / "targets" / "x86_64-linux" / "lib"
    assert csrc_build.cudart_dir(tmp_path) == static
    assert csrc_build.cudart_libraries(static)[0] == "cudart_static"
    with pytest.raises(FileNotFoundError, match="libcudart"):
        csrc_build.cudart_dir(tmp_path / "nothing")
