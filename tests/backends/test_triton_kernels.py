"""The engine's Triton kernels (kernels/src/gram.py, partial_trace.py, entropy.py) against the torch ops, float64.

On CPU they run under Triton's interpreter at small sizes with 16 x 16 tiles, so ragged edges,
several tiles and batches are all exercised. TRITON_INTERPRET=1 must be set before triton is
first imported, so the interpreted tests run in a child pytest process started by
``test_interpreted_suite``; the parent process never sees the variable. ``gpu`` tests run the
compiled kernels in-process at larger sizes and in fp16/bf16.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import IN_INTERPRETER_CHILD, interpreted, run_interpreted

pytest.importorskip("triton")

from artent_fast.kernels import entropy as kent  # noqa: E402
from artent_fast.kernels import gram as kgram  # noqa: E402
from artent_fast.kernels import partial_trace as ktrace  # noqa: E402

from artent_fast.backends import torch_ops  # noqa: E402
from artent_fast.core.gram import bond_densities, split_point  # noqa: E402

INTERPRETED = IN_INTERPRETER_CHILD
in_child = interpreted  # deselected in the parent, run by test_interpreted_suite
ROOT = Path(__file__).resolve().parents[2]
DTYPES = [torch.float32, torch.float64]
BATCHES = [(), (3,), (2, 2)]


def tol(dtype: torch.dtype) -> float:
    return 2e-5 if dtype == torch.float32 else 1e-12


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().clamp_min(1e-300)
    return float((got.double() - ref).abs().max() / scale) if ref.numel() else 0.0


def tensor(rng, shape, dtype, device="cpu"):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype=dtype, device=device)


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="this is the child process")
def test_interpreted_suite():
    """Run this file's interpreted tests in a child process with TRITON_INTERPRET=1."""
    run_interpreted(__file__)


# ---------------------------------------------------------------- gram


@in_child
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 16), (17, 33), (40, 9), (32, 48)])
def test_gram_matches_float64(rng, dtype, batch, shape):
    x = tensor(rng, (*batch, *shape), dtype)
    for side in ("left", "right"):
        got = kgram.gram(x, side)
        ref = torch_ops.gram(x.double(), side)
        assert got.shape == ref.shape and got.dtype == dtype
        assert rel_err(got, ref) < tol(dtype), (side, shape, batch)
        assert torch.equal(got, got.mT), "the kernel stores each off-diagonal tile twice: exactly symmetric"


@in_child
def test_gram_strided_and_empty(rng):
    x = tensor(rng, (3, 40, 21), torch.float64).mT  # non-contiguous view
    assert rel_err(kgram.gram(x, "left"), x @ x.mT) < 1e-12
    assert rel_err(kgram.gram(x[::2], "right"), x[::2].mT @ x[::2]) < 1e-12
    assert kgram.gram(torch.zeros(0, 4, 5), "left").shape == (0, 4, 4)


@in_child
def test_gram_errors():
    with pytest.raises(ValueError, match="side"):
        kgram.gram(torch.zeros(2, 2), "up")
    with pytest.raises(TypeError, match="dtype"):
        kgram.gram(torch.zeros(2, 2, dtype=torch.int32), "left")
    with pytest.raises(ValueError, match="shape"):
        kgram.gram(torch.zeros(3), "left")


# ---------------------------------------------------------------- partial traces

CHAINS = [[2, 3], [3, 2, 2], [2, 3, 5], [4, 4, 4], [7, 2, 3], [2, 2, 2, 2, 2], [5, 19]]


@in_child
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dims", CHAINS)
def test_partial_trace_chain_matches_float64(rng, dtype, batch, dims):
    size = math.prod(dims)
    x = tensor(rng, (*batch, size, size + 2), dtype)
    rho = x @ x.mT
    for side in ("last", "first"):
        keeps, traced = ktrace.chain_levels(dims, side)
        outs = ktrace.partial_trace_chain(rho, keeps, traced, side)
        assert len(outs) == len(dims) - 1
        for out, keep, t in zip(outs, keeps, traced, strict=True):
            ref = torch_ops.partial_trace(rho.double(), keep, t, side)
            assert out.shape == (*batch, keep, keep)
            assert rel_err(out, ref) < tol(dtype), (dims, side, keep)
        one = ktrace.partial_trace(rho, keeps[0], traced[0], side)
        assert rel_err(one, torch_ops.partial_trace(rho.double(), keeps[0], traced[0], side)) < tol(dtype)


@in_child
@pytest.mark.parametrize("dims", [[2, 3, 5, 2], [3, 3, 2, 2, 2], [16, 2, 3], [2, 2, 2, 2, 2, 3]])
def test_chain_reproduces_core_bond_densities(rng, dims):
    """The one-launch chain gives every bond density that the core derives level by level."""
    t = tensor(rng, (2, math.prod(dims)), torch.float64)
    ref = bond_densities(t, dims)  # torch ops (not forced to triton here)
    k_star = split_point(dims)
    checked = 0
    if k_star > 1:
        left = math.prod(dims[:k_star])
        root = t.reshape(2, left, -1) @ t.reshape(2, left, -1).mT
        keeps, traced = ktrace.chain_levels(dims[:k_star], "last")
        for k, out in zip(
            range(k_star - 1, 0, -1), ktrace.partial_trace_chain(root, keeps, traced, "last"), strict=True
        ):
            assert rel_err(out, ref[k - 1]) < 1e-12
            checked += 1
    if k_star < len(dims) - 2:
        left = math.prod(dims[: k_star + 1])
        root = t.reshape(2, left, -1).mT @ t.reshape(2, left, -1)
        keeps, traced = ktrace.chain_levels(dims[k_star + 1 :], "first")
        for k, out in zip(
            range(k_star + 2, len(dims)), ktrace.partial_trace_chain(root, keeps, traced, "first"), strict=True
        ):
            assert rel_err(out, ref[k - 1]) < 1e-12
            checked += 1
    assert checked >= 1


@in_child
def test_partial_trace_errors():
    rho = torch.eye(6)
    with pytest.raises(ValueError, match="side"):
        ktrace.partial_trace(rho, 2, 3, "middle")
    with pytest.raises(ValueError, match="keep 4 x traced 3"):
        ktrace.partial_trace(rho, 4, 3, "last")
    with pytest.raises(ValueError, match="equal length"):
        ktrace.partial_trace_chain(rho, [2, 3], [3], "last")
    with pytest.raises(ValueError, match="S, S"):
        ktrace.partial_trace(torch.zeros(6, 5), 2, 3, "last")


# ---------------------------------------------------------------- entropy

ALPHAS = [1.0, 2.0, 0.5, 3.7, math.inf]


@in_child
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 16), (2, 3, 33), (4, 100)])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_entropy_matches_float64(rng, dtype, shape, alpha):
    values = torch.from_numpy(rng.random(shape) ** 3).to(dtype)
    if shape[-1] > 1:
        values[..., 0] = 0.0  # exact zeros: 0 log 0 = 0
    if shape[-1] > 2:
        values[..., 1] = -1e-12  # round-off below zero is clamped
    for base in (math.e, 2.0):
        got = kent.entropy(values, alpha=alpha, base=base)
        ref = torch_ops.entropy(values.double(), alpha=alpha, base=base)
        assert got.shape == shape[:-1] and got.dtype == dtype
        assert torch.allclose(got.double(), ref, rtol=tol(dtype) * 10, atol=tol(dtype)), (alpha, base)
        total = values.clamp_min(0).sum(-1) * 1.25  # an explicit normaliser (e.g. the state's norm)
        got_t = kent.entropy(values, total, alpha=alpha, base=base)
        ref_t = torch_ops.entropy(values.double(), total.double(), alpha=alpha, base=base)
        assert torch.allclose(got_t.double(), ref_t, rtol=tol(dtype) * 10, atol=tol(dtype))


@in_child
def test_entropy_matches_core_and_nan_rows():
    values = torch.tensor(
        [[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, float("nan"), 0.0, 0.0]], dtype=torch.float64
    )
    for alpha in ALPHAS:
        got = kent.entropy(values, alpha=alpha)
        ref = torch_ops.entropy(values, alpha=alpha)
        assert torch.allclose(got, ref, equal_nan=True), alpha
        assert got[1].isnan() and got[2].isnan()  # zero spectrum and NaN input stay NaN: no silent zeros
    assert abs(float(kent.entropy(values[0], base=2.0)) - 1.5) < 1e-12
    assert kent.entropy(torch.zeros(0, 4)).shape == (0,)


# ---------------------------------------------------------------- without the interpreter or triton


@pytest.mark.skipif(INTERPRETED, reason="checks the parent process, where the interpreter is off")
def test_cpu_tensor_without_interpreter_is_a_clear_error():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kgram.gram(torch.zeros(4, 4), "left")
    with pytest.raises(RuntimeError, match="rho is on cpu"):
        ktrace.partial_trace(torch.eye(4), 2, 2, "last")


@pytest.mark.slow
def test_kernels_import_without_triton():
    """With triton hidden, the kernel modules import, say so, and the triton backend is skipped."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from artent_fast.kernels import _support, gram, partial_trace, entropy\n"
        "assert _support.AVAILABLE is False\n"
        "try:\n    gram.gram(torch.zeros(2, 2), 'left')\nexcept RuntimeError as e:\n    assert 'triton' in str(e)\n"
        "else:\n    raise SystemExit('no error')\n"
        "from artent_fast.backends import available_backends, dispatch\n"
        "assert 'triton' not in available_backends(), available_backends()\n"
        "x = torch.randn(3, 5, 5, dtype=torch.float64)\n"
        "assert torch.allclose(dispatch('gram', x, 'left'), x @ x.mT)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "ARTENT_FAST_BACKEND")}
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


# ---------------------------------------------------------------- compiled kernels (GPU)


@pytest.mark.gpu
@pytest.mark.skipif(INTERPRETED, reason="compiled kernels")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_compiled_kernels_on_gpu(dtype):
    rng = np.random.default_rng(0)
    x = tensor(rng, (8, 96, 130), dtype, "cuda")
    for side in ("left", "right"):
        ref = torch_ops.gram(x.double(), side)
        if x.element_size() == 2:  # FlashAttention's rule: at most 2x the error of torch's own low-precision Gram
            low = torch_ops.gram(x, side)
            assert rel_err(kgram.gram(x, side), ref) <= 2 * rel_err(low, ref) + 1e-6
        else:
            assert rel_err(kgram.gram(x, side), ref) < tol(dtype)
    dims = [2, 3, 4, 4, 2]
    rho = kgram.gram(tensor(rng, (5, math.prod(dims), 50), torch.float64, "cuda"), "left")
    keeps, traced = ktrace.chain_levels(dims, "last")
    for out, k, t in zip(ktrace.partial_trace_chain(rho, keeps, traced, "last"), keeps, traced, strict=True):
        assert rel_err(out, torch_ops.partial_trace(rho, k, t, "last")) < 1e-12
    values = torch.rand(64, 300, device="cuda", dtype=torch.float64)
    for alpha in ALPHAS:
        assert torch.allclose(kent.entropy(values, alpha=alpha), torch_ops.entropy(values, alpha=alpha))
