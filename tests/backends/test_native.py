"""The compiled CPU path of the tracker's due step (csrc/lowrank_densities.c) against its torch twin and float64.

``artent_fast.core.lowrank_mixed.lowrank_profiles`` takes the compiled path when it is built and enabled, else
its torch code; ``ARTENT_FAST_NATIVE=0`` forces the torch code, so the two are compared on the same inputs:
mixed shapes, ranks, float32 and float64, zero and non-finite units, rank-deficient factors (the compiled
path declines those, the torch code measures them), and each against the float64 per-unit reference.
"""

from __future__ import annotations

import math
import shutil
import sysconfig
import warnings

import pytest
import torch

import artent_fast
from artent_fast.api import lowrank_profile
from artent_fast.backends import native
from artent_fast.core.lowrank_mixed import lowrank_profiles, mixed_plan, pad_factors
from artent_fast.testing.models import moved

built = pytest.mark.skipif(native.load() is None, reason=f"compiled CPU path not built: {native.load_error()}")

CASES = [  # (shapes, rank, dtype)
    ([(256, 256)] * 4 + [(128, 256)] * 4, 8, torch.float32),  # the tracker benchmark's LoRA r=8 on q and v
    ([(64, 48), (12, 96), (7, 5)], 3, torch.float64),
    ([(2, 2), (1, 8), (8, 1), (3, 3)], 1, torch.float32),
    ([(384, 64), (96, 96)], 16, torch.float32),
    ([(30, 42)], 5, torch.float64),
    ([(24, 36), (36, 24)], 24, torch.float64),  # rank above both sides' sites
]


def both_paths(monkeypatch, B, A, shapes, **kw):
    monkeypatch.setenv("ARTENT_FAST_NATIVE", "1")
    fast = lowrank_profiles(B, A, shapes, **kw)
    monkeypatch.setenv("ARTENT_FAST_NATIVE", "0")
    plain = lowrank_profiles(B, A, shapes, **kw)
    return fast, plain


def factors(gen, shapes, r, dtype):
    return [
        (torch.randn(m, r, generator=gen, dtype=dtype), torch.randn(r, n, generator=gen, dtype=dtype))
        for m, n in shapes
    ]


@built
@pytest.mark.parametrize(("shapes", "r", "dtype"), CASES)
def test_compiled_path_matches_torch_and_float64(monkeypatch, shapes, r, dtype):
    gen = torch.Generator().manual_seed(len(shapes) * 100 + r)
    pairs = factors(gen, shapes, r, dtype)
    B, A = pad_factors(pairs)
    program = mixed_plan(tuple(shapes), r, B.shape[1], A.shape[2]).program()
    assert native.lowrank_densities(B, A, program) is not NotImplemented  # the compiled path ran
    fast, plain = both_paths(monkeypatch, B, A, shapes)
    assert torch.equal(fast.isnan(), plain.isnan())
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=0, equal_nan=True)
    for i, (b, a) in enumerate(pairs):
        want = lowrank_profile(b.double(), a.double())
        torch.testing.assert_close(fast[i, : want.numel()], want, atol=1e-9, rtol=0)


@built
def test_zero_nonfinite_and_rank_deficient_units(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    shapes = [(32, 16), (32, 16), (32, 16), (16, 32)]
    pairs = factors(gen, shapes, 4, torch.float32)
    pairs[0] = (torch.zeros(32, 4), pairs[0][1])  # peft's B before the first step: a zero update
    pairs[1][1][2, 3] = float("inf")
    B, A = pad_factors(pairs)
    fast, plain = both_paths(monkeypatch, B, A, shapes)
    assert fast[:2].isnan().all() and not fast[2:, :5].isnan().any()
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=0, equal_nan=True)
    # a B of rank 2 < r: its Gram is singular to rounding; Cholesky may or may not find a last tiny pivot,
    # and either way the densities (invariant to the square root taken) agree
    low = (torch.randn(32, 2, generator=gen) @ torch.randn(2, 4, generator=gen), pairs[2][1])
    fast, plain = both_paths(monkeypatch, *pad_factors([low, pairs[3]]), [(32, 16), (16, 32)])
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=0, equal_nan=True)
    torch.testing.assert_close(fast[0, :8], lowrank_profile(low[0].double(), low[1].double()), atol=1e-9, rtol=0)
    # a column of B exactly zero: an exactly zero pivot, the compiled path declines, the torch code measures it
    hole = (low[0].clone(), low[1])
    hole[0][:, 3] = 0
    B, A = pad_factors([hole, pairs[3]])
    program = mixed_plan(((32, 16), (16, 32)), 4, B.shape[1], A.shape[2]).program()
    assert native.lowrank_densities(B, A, program) is NotImplemented
    fast, plain = both_paths(monkeypatch, B, A, [(32, 16), (16, 32)])
    torch.testing.assert_close(fast, plain, atol=0, rtol=0, equal_nan=True)


@built
def test_renyi_and_other_bases_agree(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    shapes = [(64, 32), (32, 64)]
    B, A = pad_factors(factors(gen, shapes, 4, torch.float64))
    for kw in ({"base": 2.0}, {"alpha": 2.0}, {"alpha": 0.5, "base": 10.0}):
        fast, plain = both_paths(monkeypatch, B, A, shapes, **kw)
        torch.testing.assert_close(fast, plain, atol=1e-12, rtol=0, equal_nan=True)
    fast, _ = both_paths(monkeypatch, B, A, shapes, base=2.0)
    natural, _ = both_paths(monkeypatch, B, A, shapes)
    torch.testing.assert_close(fast, natural / math.log(2.0), atol=1e-12, rtol=0, equal_nan=True)


@built
def test_bucket_eigenvalues_are_torchs():
    gen = torch.Generator().manual_seed(5)
    shapes = ((128, 64), (64, 128), (10, 12))
    B, A = pad_factors(factors(gen, shapes, 6, torch.float64))
    mixed = mixed_plan(shapes, 6, B.shape[1], A.shape[2])
    program = mixed.program()
    dens, _ = native.lowrank_densities(B, A, program)
    values = native.eigvalsh_buckets(dens, program)
    if values is NotImplemented:
        pytest.skip("torch's CPU library exports no dsyevd_ here: torch.linalg.eigvalsh is used")
    blocks = [dens[s0 : s0 + c * s * s].view(c, s, s) for s, c, s0 in mixed.plan.buckets]
    want = torch.cat([torch.linalg.eigvalsh(block).flatten() for block in blocks])
    torch.testing.assert_close(values, want, atol=1e-13 * want.abs().max().item(), rtol=0)


def bucket_program(blocks: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """``blocks`` (each ``(count, s, s)``) as one flat float64 buffer and the bucket fields of a program."""
    starts, at = [], 0
    for b in blocks:
        starts.append(at)
        at += b.numel()
    program = {
        "buckets": len(blocks),
        "b_size": torch.tensor([b.shape[-1] for b in blocks]),
        "b_count": torch.tensor([b.shape[0] for b in blocks]),
        "b_start": torch.tensor(starts),
        "n_values": sum(b.shape[0] * b.shape[-1] for b in blocks),
    }
    return torch.cat([b.flatten() for b in blocks]).double(), program


def hard_matrices(gen, n: int, count: int) -> torch.Tensor:
    """Symmetric ``(count, n, n)``: PSD of full and of low rank, indefinite, zero, identity (all eigenvalues
    equal), diagonal, a tight cluster, scales from 1e-150 to 1e150, a 2 x 2 block structure, then random PSD."""
    out = []
    y = torch.randn(n, n, generator=gen, dtype=torch.float64)
    low = torch.randn(n, max(1, n // 3), generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    special = [
        y @ y.T,
        low @ low.T,
        y + y.T,
        torch.zeros(n, n, dtype=torch.float64),
        torch.eye(n, dtype=torch.float64),
        torch.diag(torch.randn(n, generator=gen, dtype=torch.float64)),
        q @ torch.diag(1 + 1e-12 * torch.arange(n, dtype=torch.float64)) @ q.T,
        1e-150 * (y @ y.T),
        1e150 * (y @ y.T),
        torch.block_diag(*(y[: n // 2, : n // 2] @ y[: n // 2, : n // 2].T, torch.zeros(n - n // 2, n - n // 2))),
    ]
    out = special[:count]
    while len(out) < count:
        x = torch.randn(n, n + 3, generator=gen, dtype=torch.float64)
        out.append(x @ x.T)
    return torch.stack(out)


@built
@pytest.mark.parametrize("method", ["batched", "lapack"])
def test_bucket_eigenvalues_on_hard_matrices(method):
    """Both solvers of the module against torch.linalg.eigvalsh (float64): sizes 1..64, counts not a multiple
    of 8 (partly filled lanes), degenerate, indefinite and badly scaled matrices."""
    gen = torch.Generator().manual_seed(13)
    sizes = ((1, 3), (2, 9), (3, 11), (5, 8), (16, 17), (31, 10), (32, 21), (64, 9))
    blocks = [hard_matrices(gen, n, count) for n, count in sizes]
    dens, program = bucket_program(blocks)
    values = native.eigvalsh_buckets(dens, program, method=method)
    if values is NotImplemented:
        pytest.skip(f"{method}: not available on this machine (no AVX2/FMA, or no dsyevd_ in torch's library)")
    at = 0
    for block in blocks:
        count, n, _ = block.shape
        got = values[at : at + count * n].view(count, n)
        want = torch.linalg.eigvalsh(block)
        scale = block.flatten(1).abs().amax(1).clamp_min(1e-300).unsqueeze(1)
        err = ((got - want).abs() / scale).max().item()
        assert err < 1e-13, f"n={n}: max error {err:.2e} of the matrix scale"
        at += count * n


@built
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_snapshot_packing_matches_pad_factors(dtype):
    """The snapshot of strided factors (transposed, sliced rows, column slices) as pad_factors makes it."""
    gen = torch.Generator().manual_seed(17)
    W = torch.randn(300, 300, generator=gen).to(dtype)
    pairs = [
        (torch.randn(40, 6, generator=gen).to(dtype), torch.randn(6, 24, generator=gen).to(dtype)),
        (W[:17, :6], W[10:16, 5:37]),  # slices of one tensor
        (W.mT[:9, 3:9], W.mT[:6, 100:101]),  # transposed views, one column
        (W[50:51, 0:6], W[:6, :300]),  # one row
    ]
    got = native.pad_factors(pairs)
    want = pad_factors(pairs)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    for g, w in zip(got, want, strict=True):
        assert g.dtype == wide and g.is_contiguous()
        assert torch.equal(g, w.to(wide))  # bfloat16 widens to float32 exactly
    assert native.pad_factors([(pairs[0][0].half(), pairs[0][1].half())]) is NotImplemented
    other = torch.float32 if dtype == torch.float64 else torch.float64
    assert native.pad_factors([(pairs[0][0], pairs[0][1].to(other))]) is NotImplemented  # mixed dtypes


@built
def test_declines_what_it_does_not_cover(monkeypatch):
    gen = torch.Generator().manual_seed(11)
    shapes = ((16, 16),)
    for dtype, r in ((torch.bfloat16, 2), (torch.float32, native.load().RMAX + 1)):
        B, A = pad_factors(factors(gen, shapes, r, torch.float32))
        B, A = B.to(dtype), A.to(dtype)
        program = mixed_plan(shapes, r, 16, 16).program()
        assert native.lowrank_densities(B, A, program) is NotImplemented
        fast, plain = both_paths(monkeypatch, B, A, shapes)
        torch.testing.assert_close(fast, plain, atol=0, rtol=0, equal_nan=True)
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "torch")  # a forced backend: the registry's kernels only
    assert not native.enabled()


def test_built_wherever_a_c_compiler_is():
    """``pip install`` builds the module where a C compiler exists; else the torch path runs, and says why."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        assert native.load() is None and native.load_error()
        pytest.skip(f"no C compiler ({compiler}) here: the torch path runs")
    assert native.load() is not None, f"a C compiler is here but the module did not load: {native.load_error()}"


def tracked_entropies(monkeypatch, model, native_on: str, **kw) -> tuple[dict, int]:
    """One due step's records of ``model`` and how many measurements the compiled path took."""
    monkeypatch.setenv("ARTENT_FAST_NATIVE", native_on)
    calls = []
    compiled = native.lowrank_densities

    def counted(*args):
        out = compiled(*args)
        calls.append(out is not NotImplemented)
        return out

    monkeypatch.setattr(native, "lowrank_densities", counted)
    tracker = artent_fast.track(model, out=None, background=False, **kw)
    moved(model)  # B off zero after tracking started, as training would
    tracker.step()
    out = {(r["module"], r.get("part")): r["entropies"] for r in tracker.history()}
    tracker.close()
    monkeypatch.setattr(native, "lowrank_densities", compiled)
    return out, sum(calls)


@built
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tracker_records_are_the_same_on_both_paths(monkeypatch, dtype):
    """track() on a peft LLaMA (q and v of two shapes) and on a GPT-2 whose fused c_attn is split into q, k, v
    (fan_in_fan_out: transposed, sliced factors): the records agree whichever path measured them."""
    pytest.importorskip("peft")
    from tests.tracking.test_tracking import lora, tiny_gpt2, tiny_llama

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [
            (lambda: lora(tiny_llama(hidden=64, heads=4, kv_heads=2)).to(dtype), {}),
            (
                lambda: lora(tiny_gpt2(), target_modules=["c_attn"], fan_in_fan_out=True, r=3).to(dtype),
                {"targets": "c_attn", "split": {"c_attn": ("q", "k", "v")}},
            ),
        ]
        for build, kw in cases:
            fast, taken = tracked_entropies(monkeypatch, build(), "1", **kw)
            plain, none = tracked_entropies(monkeypatch, build(), "0", **kw)
            assert taken >= 1 and none == 0  # the compiled path measured the first, the torch code the second
            assert fast.keys() == plain.keys() and fast
            for key in fast:
                assert fast[key] == pytest.approx(plain[key], abs=1e-10), key
