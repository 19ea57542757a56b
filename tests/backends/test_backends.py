"""The op dispatcher and every backend against the torch reference.

Policy tests use fake kernels for a probe op (no GPU needed): device order cuda -> triton ->
torch, ``NotImplemented`` declines, the ``ARTENT_FAST_BACKEND`` override and its fallback. The
Triton backend runs end to end on CPU under the interpreter in a child process
(``TRITON_INTERPRET=1`` must precede triton's import), with spies proving its kernels ran. The
CUDA backend and cupy input need a GPU (``gpu`` tests).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import artent_fast as af
from artent_fast.backends import available_backends, dispatch, registry, selected_backend
from tests.conftest import IN_INTERPRETER_CHILD, interpreted, run_interpreted

INTERPRETED = IN_INTERPRETER_CHILD
in_child = interpreted  # deselected in the parent, run by test_interpreted_suite
in_parent = pytest.mark.skipif(INTERPRETED, reason="parent-process test")
ROOT = Path(__file__).resolve().parents[2]


def _cuda_ext_available() -> bool:
    try:
        from artent_fast.backends import cuda_ops  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@in_parent
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_interpreted_suite():
    """Run this file's interpreted tests in a child process with TRITON_INTERPRET=1."""
    run_interpreted(__file__)


# ---------------------------------------------------------------- dispatcher policy


def test_selected_backend_reads_the_override(monkeypatch):
    monkeypatch.delenv("ARTENT_FAST_BACKEND", raising=False)
    assert selected_backend() is None
    monkeypatch.setenv("ARTENT_FAST_BACKEND", " Triton ")
    assert selected_backend() == "triton"
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "opencl")
    with pytest.raises(ValueError, match="ARTENT_FAST_BACKEND='opencl'"):
        selected_backend()


def test_available_backends_match_what_imports():
    got = available_backends()
    assert got[0] == "torch"
    assert ("triton" in got) == (importlib.util.find_spec("triton") is not None)
    assert ("cuda" in got) == _cuda_ext_available()


@pytest.fixture
def probe(monkeypatch):
    """A fake op 'probe' with a kernel per backend; each records its calls and may decline."""
    calls: list[str] = []
    decline: set[str] = set()
    monkeypatch.setattr(registry, "_KERNELS", {k: dict(v) for k, v in registry._KERNELS.items()})
    monkeypatch.setattr(registry, "_LOADED", {"torch": True, "triton": True, "cuda": True})
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.delenv("ARTENT_FAST_BACKEND", raising=False)
    for backend in registry.BACKENDS:

        def kernel(x, _b=backend):
            calls.append(_b)
            return NotImplemented if _b in decline else (_b, x)

        registry.register_kernel("probe", backend)(kernel)
    return calls, decline


def test_dispatch_order_by_device(probe):
    calls, decline = probe
    x = torch.zeros(2)
    assert dispatch("probe", x)[0] == "torch" and calls == ["torch"]  # CPU: torch only
    calls.clear()
    assert dispatch("probe", x, device=torch.device("cuda"))[0] == "cuda"
    decline.add("cuda")
    calls.clear()
    assert dispatch("probe", x, device=torch.device("cuda"))[0] == "triton" and calls == ["cuda", "triton"]
    decline.add("triton")
    calls.clear()
    assert dispatch("probe", x, device=torch.device("cuda"))[0] == "torch"
    assert calls == ["cuda", "triton", "torch"]


def test_override_forces_a_backend_and_falls_back_to_torch(probe, monkeypatch):
    calls, decline = probe
    x = torch.zeros(2)
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "triton")
    assert dispatch("probe", x)[0] == "triton"  # forced even on CPU
    decline.add("triton")
    calls.clear()
    with pytest.warns(UserWarning, match="no usable triton kernel for 'probe'"):
        assert dispatch("probe", x, device=torch.device("cuda"))[0] == "torch"
    assert calls == ["triton", "torch"]  # forced: cuda is not tried
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "torch")
    calls.clear()
    assert dispatch("probe", x, device=torch.device("cuda"))[0] == "torch" and calls == ["torch"]


def test_forced_backend_that_declines_warns_once_per_op(probe, monkeypatch):
    _, decline = probe
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "cuda")
    decline.add("cuda")
    with pytest.warns(UserWarning, match="ARTENT_FAST_BACKEND=cuda: no usable cuda kernel for 'probe'"):
        assert dispatch("probe", torch.zeros(1))[0] == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        assert dispatch("probe", torch.zeros(1))[0] == "torch"


def test_every_op_has_a_torch_kernel():
    """Other backends may decline any input, so torch must cover every op they register."""
    for backend in ("triton", "cuda"):
        registry._load(backend)
    for op, kernels in registry._KERNELS.items():
        if op != "probe":
            assert "torch" in kernels, op


def test_unknown_op_is_a_key_error():
    with pytest.raises(KeyError, match="no kernel registered for op 'nope'"):
        dispatch("nope", torch.zeros(1))


@in_parent
def test_forced_backends_on_cpu_without_kernels_give_torch_results(monkeypatch, rng):
    """Forced triton (no interpreter) or cuda (no GPU): kernels decline, results equal the torch path.

    A forced backend that cannot load at all (no triton, extension not built) raises with the reason.
    """
    x = torch.from_numpy(rng.standard_normal((3, 12, 18)))
    ref = af.entanglement_profile(x, method="gram")
    for backend in ("triton", "cuda", "cupy"):
        monkeypatch.setattr(registry, "_WARNED", set())
        monkeypatch.setenv("ARTENT_FAST_BACKEND", backend)
        if backend not in available_backends():
            with pytest.raises(registry.BackendUnavailable, match=f"the {backend} backend cannot load here"):
                af.entanglement_profile(x, method="gram")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = af.entanglement_profile(x, method="gram")
        assert torch.equal(got, ref), backend


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_kernel_that_cannot_compile_hands_over_to_torch(monkeypatch):
    """On a GPU, a TritonError (compile, ptxas, resources) disables that op's kernel with one warning."""
    from triton.errors import TritonError

    from artent_fast.backends import triton_ops

    monkeypatch.setattr(triton_ops, "_DISABLED", set())
    calls = []

    def broken(*args):
        calls.append(args)
        raise TritonError("ptxas failed")

    with pytest.warns(RuntimeWarning, match="triton kernel for 'gram' failed"):
        assert triton_ops.run_guarded("gram", broken, "cuda", 1) is NotImplemented
    assert triton_ops.run_guarded("gram", broken, "cuda", 1) is NotImplemented and len(calls) == 1
    with pytest.raises(TritonError):  # the interpreter (CPU) shows every failure
        triton_ops.run_guarded("entropy", broken, "cpu", 1)
    assert triton_ops.run_guarded("entropy", lambda x: x + 1, "cuda", 1) == 2


# ---------------------------------------------------------------- triton backend, interpreted


@pytest.fixture
def triton_spies(monkeypatch):
    """Force the triton backend and count calls into its kernels."""
    from artent_fast.backends import triton_ops

    counts: dict[str, int] = {}
    for mod, name in (
        (triton_ops._gram, "gram"),
        (triton_ops._trace, "partial_trace"),
        (triton_ops._trace, "partial_trace_chain"),
        (triton_ops._entropy, "entropy"),
    ):
        real = getattr(mod, name)

        def spy(*a, _real=real, _name=name, **k):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(*a, **k)

        monkeypatch.setattr(mod, name, spy)
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "triton")
    return counts


SHAPES = [(8, 8), (12, 18), (30, 64), (3, 16, 24), (2, 2, 27, 20), (7, 2), (1, 96)]


@in_child
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_backend_profile_matches_torch(triton_spies, monkeypatch, rng, shape, dtype):
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    got = af.entanglement_profile(x, method="gram")
    assert triton_spies.get("gram", 0) >= 1 and triton_spies.get("entropy", 0) >= 1
    if af.sites(*shape[-2:]).num_bonds > 2:
        assert triton_spies.get("partial_trace_chain", 0) >= 1
    monkeypatch.delenv("ARTENT_FAST_BACKEND")
    ref = af.entanglement_profile(x.double(), method="naive")  # per-bond SVDs: a different algorithm
    assert got.dtype == dtype and got.shape == ref.shape
    eps = 1e-10 if dtype == torch.float64 else 1e-6  # float32 output: rounded at the end only
    assert torch.allclose(got.double(), ref, rtol=eps, atol=eps), (got, ref)


@in_child
@pytest.mark.parametrize("m,n,r", [(16, 24, 3), (36, 20, 5), (32, 32, 16)])
def test_triton_backend_lowrank_matches_torch(triton_spies, monkeypatch, rng, m, n, r):
    B = torch.from_numpy(rng.standard_normal((2, m, r)))
    A = torch.from_numpy(rng.standard_normal((2, r, n)))
    got = af.lowrank_profile(B, A, scale=0.5)
    assert triton_spies.get("gram", 0) >= 1
    monkeypatch.delenv("ARTENT_FAST_BACKEND")
    ref = af.entanglement_profile(0.5 * B @ A, method="naive")
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-9)


@in_child
def test_triton_backend_ops_match_torch_ops(triton_spies, rng):
    from artent_fast.backends import torch_ops

    x = torch.from_numpy(rng.standard_normal((3, 20, 30)))
    for side in ("left", "right"):
        assert torch.allclose(dispatch("gram", x, side), torch_ops.gram(x, side), rtol=1e-12, atol=1e-12)
    rho = x[:, :, :24].mT @ x[:, :, :24]  # 24 = 2 * 3 * 4
    for keep, traced, side in ((6, 4, "last"), (2, 12, "last"), (4, 6, "first"), (12, 2, "first")):
        got = dispatch("partial_trace", rho, keep, traced, side)
        assert torch.allclose(got, torch_ops.partial_trace(rho, keep, traced, side), rtol=1e-12, atol=1e-12)
    outs = dispatch("partial_trace_chain", rho, [6, 2], "last")
    assert torch.allclose(outs[1], torch_ops.partial_trace(rho, 2, 12, "last"), rtol=1e-12, atol=1e-12)
    spec = torch.from_numpy(rng.random((4, 9)))
    for alpha in (1.0, 2.0, math.inf):
        assert torch.allclose(dispatch("entropy", spec, alpha=alpha), torch_ops.entropy(spec, alpha=alpha))
    assert set(triton_spies) == {"gram", "partial_trace", "partial_trace_chain", "entropy"}


@in_child
def test_triton_backend_declines_unsupported_dtypes(triton_spies):
    x = torch.ones(2, 3, 4, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(dispatch("gram", x, "left"), x @ x.mT)
    assert "gram" not in triton_spies


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ext_available(), reason="CUDA extension not built")
@pytest.mark.parametrize("n", [32, 33, 34, 64, 98, 100, 128, 256, 512])  # 33, 34, 98: odd pair counts
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_backend_eigvalsh_matches_torch(n, dtype):
    from artent_fast.backends import cuda_ops

    g = torch.Generator(device="cuda").manual_seed(n)
    x = torch.randn(7, n, n + 3, device="cuda", dtype=torch.float64, generator=g)
    a = (x @ x.mT).to(dtype)
    ref = torch.linalg.eigvalsh(a.double())
    for force_global in (False, True):
        got = cuda_ops.jacobi_eigvalsh(a, force_global=force_global)
        err = float((got.double() - ref).abs().max() / ref.abs().max())
        assert err < (1e-5 if dtype == torch.float32 else 1e-12), (n, dtype, force_global, err)
    assert cuda_ops.covers(a) and dispatch("eigvalsh", a).shape == (7, n)


@pytest.mark.gpu
def test_cupy_arrays_are_accepted_zero_copy():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(0)
    host = rng.standard_normal((4, 12, 18))
    arr = cp.asarray(host)
    got = af.entanglement_profile(arr)
    assert got.device.type == "cuda"
    assert torch.allclose(got.cpu().double(), af.entanglement_profile(torch.from_numpy(host)), atol=1e-10)
    view = torch.from_dlpack(arr)
    assert view.data_ptr() == arr.data.ptr  # DLPack shares the buffer


@pytest.mark.parametrize("shape", [(512, 9), (513, 20), (1031, 3), (2, 700, 31), (1100, 1)])
@pytest.mark.parametrize("side", ["left", "right"])
def test_torch_gram_split_product_matches_plain_matmul(rng, shape, side):
    """The halved-work Gram (recursive row split) equals ``x @ x^T`` / ``x^T @ x`` in float64."""
    from artent_fast.backends import torch_ops

    x = torch.from_numpy(rng.standard_normal(shape))
    if side == "right":
        x = x.mT.contiguous()
    ref = x.numpy() @ np.swapaxes(x.numpy(), -1, -2) if side == "left" else np.swapaxes(x.numpy(), -1, -2) @ x.numpy()
    got = torch_ops.gram(x, side)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


# ---------------------------------------------------------------- load reasons and measured autotune


def test_a_backend_that_does_not_load_keeps_its_reason(monkeypatch):
    monkeypatch.setattr(registry, "_BACKEND_MODULES", {**registry._BACKEND_MODULES, "cupy": "artent_fast.no_such_mod"})
    monkeypatch.setattr(registry, "_LOADED", {})
    monkeypatch.setattr(registry, "_ERRORS", {})
    assert "cupy" not in available_backends()
    reason = registry.load_errors()["cupy"]
    assert reason.startswith("ModuleNotFoundError") and "artent_fast.no_such_mod" in reason
    assert "torch" not in registry.load_errors()


@pytest.fixture
def tuned_probe(probe, monkeypatch):
    """The probe op autotuned on CPU; torch's kernel is slow, cuda's fast, triton and cupy decline."""
    import time

    calls, decline = probe
    monkeypatch.setattr(registry, "AUTOTUNED", {("probe", "cpu")})
    monkeypatch.setattr(registry, "_TUNED", {})
    monkeypatch.setattr(registry, "_LOADED", {b: True for b in registry.BACKENDS})
    monkeypatch.delenv("ARTENT_FAST_AUTOTUNE", raising=False)
    kernels = registry._KERNELS["probe"]
    slow = kernels["torch"]

    def torch_kernel(x):
        time.sleep(0.005)
        return slow(x)

    kernels["torch"] = torch_kernel
    decline.update({"triton", "cupy"})
    return calls, decline


def test_autotune_runs_the_measured_fastest_kernel_and_caches_it(tuned_probe):
    calls, _ = tuned_probe
    x = torch.zeros(8, 5, 5)
    assert dispatch("probe", x)[0] == "cuda"  # measured: faster than torch; triton declined
    assert set(calls) == {"torch", "cuda", "triton", "cupy"}
    assert registry.tuned_choices() == {"probe cpu float32 5x5 batch<=8": "cuda"}
    calls.clear()
    assert dispatch("probe", torch.zeros(7, 5, 5))[0] == "cuda" and calls == ["cuda"]  # same bucket: cached
    calls.clear()
    dispatch("probe", torch.zeros(9, 5, 5))  # next bucket: measured again
    assert "torch" in calls and len(registry.tuned_choices()) == 2


def test_autotune_is_bypassed_when_forced_or_turned_off(tuned_probe, monkeypatch):
    calls, _ = tuned_probe
    x = torch.zeros(2, 3, 3)
    monkeypatch.setenv("ARTENT_FAST_AUTOTUNE", "0")
    assert dispatch("probe", x)[0] == "torch" and calls == ["torch"]  # the static order (CPU: torch)
    calls.clear()
    monkeypatch.delenv("ARTENT_FAST_AUTOTUNE")
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "torch")
    assert dispatch("probe", x)[0] == "torch" and calls == ["torch"]
    assert registry.tuned_choices() == {}


def test_autotune_skips_a_kernel_that_raises(tuned_probe):
    def broken(x):
        raise RuntimeError("boom")

    registry._KERNELS["probe"]["cuda"] = broken
    with pytest.warns(RuntimeWarning, match="the cuda kernel for 'probe' failed"):
        assert dispatch("probe", torch.zeros(2, 3, 3))[0] == "torch"


def test_eigvalsh_is_autotuned_on_cuda_only():
    assert ("eigvalsh", "cuda") in registry.AUTOTUNED and not any(dev == "cpu" for _, dev in registry.AUTOTUNED)
    assert registry.candidates(torch.device("cpu")) == ["torch"]


@pytest.mark.gpu
@pytest.mark.parametrize("n", [16, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eigvalsh_autotune_on_cuda_matches_float64(n, dtype, monkeypatch):
    monkeypatch.setattr(registry, "_TUNED", {})
    monkeypatch.delenv("ARTENT_FAST_BACKEND", raising=False)
    g = torch.Generator(device="cuda").manual_seed(n)
    x = torch.randn(33, n, n + 3, device="cuda", dtype=torch.float64, generator=g)
    a = (x @ x.mT).to(dtype)
    ref = torch.linalg.eigvalsh(a.double())
    for _ in range(2):  # measured, then cached
        got = dispatch("eigvalsh", a)
        err = float((got.double() - ref).abs().max() / ref.abs().max())
        assert err < (1e-5 if dtype == torch.float32 else 1e-12), err
    (choice,) = registry.tuned_choices().values()
    assert choice in available_backends()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cupy_eigvalsh_matches_float64(dtype):
    pytest.importorskip("cupy")
    from artent_fast.backends import cupy_ops

    x = torch.randn(5, 40, 44, device="cuda", dtype=torch.float64)
    a = (x @ x.mT).to(dtype)
    got = cupy_ops.eigvalsh(a)
    ref = torch.linalg.eigvalsh(a.double())
    assert got.device == a.device and got.dtype == dtype
    assert float((got.double() - ref).abs().max() / ref.abs().max()) < (1e-5 if dtype == torch.float32 else 1e-12)
    assert cupy_ops.eigvalsh(a.cpu()) is NotImplemented


# ---------------------------------------------------------------- one selector, one signature per op


def test_forced_backend_that_cannot_load_raises_with_its_reason(monkeypatch):
    """Explicit choices fail loudly (the import error is in the message); automatic ones fall back."""
    monkeypatch.setattr(registry, "_BACKEND_MODULES", {**registry._BACKEND_MODULES, "cupy": "artent_fast.no_such_mod"})
    monkeypatch.setattr(registry, "_LOADED", {})
    monkeypatch.setattr(registry, "_ERRORS", {})
    x = torch.randn(2, 4, 4, dtype=torch.float64)
    sym = x @ x.mT
    assert torch.allclose(dispatch("eigvalsh", sym), torch.linalg.eigvalsh(sym))  # automatic: torch
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "cupy")
    with pytest.raises(
        registry.BackendUnavailable,
        match=r"cupy backend cannot load here \(ModuleNotFoundError.*"
        r"no_such_mod",
    ):
        dispatch("eigvalsh", sym)
    from artent_fast.attention import fused_attention

    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(registry.BackendUnavailable, match="no_such_mod"):
        fused_attention(q, q, q, causal=True)


def test_attention_reads_the_override_through_the_registry(monkeypatch):
    from artent_fast.attention import fused_attention
    from artent_fast.attention.reference import reference_attention

    q, k, v = (torch.randn(1, 2, 6, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    ref = reference_attention(q, k, v, causal=True)[0].float()
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setattr(registry, "_LOADED", {b: True for b in registry.BACKENDS})
    for forced in ("torch", "cuda", "cupy", "triton"):
        monkeypatch.setenv("ARTENT_FAST_BACKEND", forced)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out, _ = fused_attention(q, k, v, causal=True)
        assert torch.allclose(out, ref, atol=1e-5), forced
        fallback = [w for w in seen if "no usable" in str(w.message)]
        if forced == "torch" or (forced == "triton" and INTERPRETED):
            assert not fallback, forced
        else:  # no attention kernel (cuda, cupy) or not runnable here (triton on CPU without the interpreter)
            assert f"ARTENT_FAST_BACKEND={forced}: no usable {forced} kernel for 'attention'" in str(
                fallback[0].message
            )
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "opencl")
    with pytest.raises(ValueError, match="ARTENT_FAST_BACKEND='opencl'"):
        fused_attention(q, k, v, causal=True)


def test_every_backend_kernel_has_the_torch_kernel_signature():
    """A kernel registered for an op takes exactly the torch kernel's parameters (names, kinds, defaults)."""
    import inspect

    available_backends()  # load every backend that can load here
    ops = {"eigvalsh", "gram", "partial_trace", "partial_trace_chain", "entropy"}
    assert ops <= set(registry._KERNELS)
    for op, kernels in registry._KERNELS.items():
        if op not in ops:
            continue
        want = inspect.signature(kernels["torch"]).parameters
        for backend, fn in registry._KERNELS[op].items():
            got = inspect.signature(fn).parameters
            assert [(p.name, p.kind, p.default) for p in got.values()] == [
                (p.name, p.kind, p.default) for p in want.values()
            ], (op, backend)


def test_kernels_of_backends_that_cannot_load_here_have_the_torch_signature_too():
    """Read from the source (cuda_ops needs the compiled extension, cupy_ops needs cupy): same parameters."""
    import ast
    import inspect

    def registered(path: Path) -> dict[str, list[str]]:
        out = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register_kernel":
                        a = node.args
                        out[deco.args[0].value] = (
                            [x.arg for x in a.posonlyargs + a.args] + ["*"] + [x.arg for x in a.kwonlyargs]
                        )
        return out

    torch_sig = {}
    for op in ("eigvalsh", "gram", "partial_trace", "partial_trace_chain", "entropy"):
        params = inspect.signature(registry.kernels_of(op)["torch"]).parameters.values()
        pos = [p.name for p in params if p.kind != p.KEYWORD_ONLY]
        torch_sig[op] = pos + ["*"] + [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    backends_dir = ROOT / "artent_fast" / "backends"
    for name in ("cuda_ops.py", "cupy_ops.py", "triton_ops.py"):
        found = registered(backends_dir / name)
        assert found, name
        for op, sig in found.items():
            assert sig == torch_sig[op], (name, op, sig, torch_sig[op])


def test_typed_ops_have_the_kernel_signatures_and_agree_with_float64(rng):
    import inspect

    from artent_fast.backends import ops

    for op in ("eigvalsh", "gram", "partial_trace", "partial_trace_chain", "entropy"):
        want = inspect.signature(registry.kernels_of(op)["torch"]).parameters
        got = inspect.signature(getattr(ops, op)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == [
            (p.name, p.kind, p.default) for p in want.values()
        ], op
    x = torch.from_numpy(rng.standard_normal((2, 6, 8)))
    assert torch.allclose(ops.gram(x, "right"), x.mT @ x)
    sym = x @ x.mT
    assert torch.allclose(ops.eigvalsh(sym), torch.from_numpy(np.linalg.eigvalsh(sym.numpy())))
    rho = torch.from_numpy(rng.standard_normal((12, 12)))
    a, b = ops.partial_trace_chain(rho, [6, 2], "first")
    assert torch.allclose(a, torch.einsum("titj->ij", rho.reshape(2, 6, 2, 6)))
    assert torch.allclose(b, torch.einsum("titj->ij", rho.reshape(6, 2, 6, 2)))
    assert torch.allclose(ops.partial_trace(rho, 3, 4, "last"), torch.einsum("itjt->ij", rho.reshape(3, 4, 3, 4)))
    p = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    assert abs(float(ops.entropy(p, base=2.0)) - 1.5) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_autotune_never_chooses_a_kernel_off_the_float64_result(monkeypatch, dtype):
    """A fast candidate whose result is off the float64 torch result (on a sample of the batch) by more
    than TUNE_AGREEMENT is not chosen, with a warning, torch's own low-precision kernel included; one
    within it is; NaN where float64 has none never passes; with none accurate, the most accurate wins."""
    import time

    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((6, 9, 9))).to(dtype)
    exact = x.double().sum(-1)
    tol = registry.TUNE_AGREEMENT[dtype]
    monkeypatch.setattr(registry, "_KERNELS", {})
    monkeypatch.setattr(registry, "_LOADED", {b: True for b in registry.BACKENDS})
    monkeypatch.setattr(registry, "AUTOTUNED", {("agree", "cpu")})
    monkeypatch.delenv("ARTENT_FAST_BACKEND", raising=False)
    monkeypatch.delenv("ARTENT_FAST_AUTOTUNE", raising=False)

    def off_by(rel, delay=0.0):
        def kernel(a):
            time.sleep(delay)
            s = a.sum(-1)  # the float64 reference sample (the first TUNE_SAMPLE matrices): exact
            return s if a.shape[0] == registry.TUNE_SAMPLE < len(x) else s + rel * s.abs().max()

        return kernel

    kernels = {"torch": off_by(5 * tol, 0.004), "cuda": off_by(30 * tol), "cupy": off_by(0.3 * tol, 0.002)}
    for name, fn in kernels.items():
        registry.register_kernel("agree", name)(fn)
    registry.register_kernel("agree", "triton")(lambda a: torch.full(a.shape[:-1], float("nan"), dtype=a.dtype))
    monkeypatch.setattr(registry, "_TUNED", {})
    with pytest.warns(RuntimeWarning, match="off the float64 result") as seen:
        got = dispatch("agree", x)
    assert registry.tuned_choices() == {f"agree cpu {str(dtype)[6:]} 9x9 batch<=8": "cupy"}
    assert {w.message.args[0].split()[2] for w in seen} == {"torch", "cuda", "triton"}
    assert registry.disagreement(got, exact) <= tol
    # none within the tolerance: the most accurate (torch, 5 tol) is taken, and said
    registry._KERNELS["agree"]["cupy"] = off_by(50 * tol)
    monkeypatch.setattr(registry, "_TUNED", {})
    with pytest.warns(RuntimeWarning, match="taking the most accurate \\(torch"):
        dispatch("agree", x)
    assert list(registry.tuned_choices().values()) == ["torch"]


def test_disagreement_of_tensors():
    a = torch.tensor([1.0, 2.0, float("nan")])
    assert registry.disagreement(a, a.clone()) == 0.0  # NaN in both: equal
    assert registry.disagreement(torch.tensor([1.0, 2.0, 3.0]), a) == math.inf  # NaN on one side only
    assert registry.disagreement(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0])) == pytest.approx(0.25)
    assert registry.disagreement(torch.zeros(2), torch.zeros(3)) == math.inf
    assert registry.disagreement(("torch", 1), torch.zeros(1)) is None
