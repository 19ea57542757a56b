"""The Triton attention kernels (kernels/src/attention_fwd.py, attention_bwd.py) against the float64 reference.

On CPU it runs under Triton's interpreter (TRITON_INTERPRET=1, fp32 only: the interpreter has
no bf16), at small sizes and with 16 x 16 blocks so that ragged edges are exercised. The variable
must be set before triton is first imported (triton's own jitted helpers are built at import),
so the interpreted tests run in a child pytest process started by ``test_interpreted_suite``;
the parent process and the rest of the suite never see the variable. GPU tests (compiled
kernel, fp16/bf16, head dims 64/128) are marked ``gpu`` and run in-process.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import IN_INTERPRETER_CHILD, interpreted, run_interpreted

pytest.importorskip("triton")

INTERPRETED = IN_INTERPRETER_CHILD
in_child = interpreted  # deselected in the parent, run by test_interpreted_suite

from artent_fast.attention import fused_attention  # noqa: E402
from artent_fast.attention.reference import reference_attention  # noqa: E402
from artent_fast.attention.triton_path import kernel_module  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="this is the child process")
def test_interpreted_suite():
    """Run this file's interpreted tests in a child process with TRITON_INTERPRET=1."""
    run_interpreted(__file__)


@pytest.fixture
def interpret():
    mod = kernel_module()
    if mod is None:
        pytest.skip("kernels/src/attention_fwd.py could not be loaded with triton")
    return mod


def qkv(rng, b, h, hk, t, s, d, dtype=torch.float32, device="cpu", grad=False):
    def make(*shape):
        return torch.from_numpy(rng.standard_normal(shape)).to(device=device, dtype=dtype).requires_grad_(grad)

    return make(b, h, t, d), make(b, hk, s, d), make(b, hk, s, d)


def check(out, lse, ent, q, k, v, causal, mask, atol, scale=None):
    ro, rl, re = reference_attention(q, k, v, causal=causal, mask=mask, scale=scale)
    assert torch.equal(torch.isneginf(lse.cpu()), torch.isneginf(rl.cpu())), "dead rows differ"
    assert not torch.isnan(out).any() and not torch.isnan(ent).any()
    for got, want, name in ((out, ro, "out"), (lse, rl, "lse"), (ent, re, "entropy")):
        err = (got.double() - want).nan_to_num(0.0, 0.0, 0.0).abs().max().item()
        assert err <= atol, f"{name}: max error {err:.3g}"


# (B, Hq, Hkv, T, S, d): T and S not multiples of the 16-row block, T = 1, S != T, GQA, d not a power of 2
SHAPES = [
    (1, 2, 2, 1, 1, 16),
    (2, 2, 1, 37, 37, 16),
    (1, 4, 2, 16, 16, 32),
    (1, 2, 2, 5, 40, 24),
    (1, 2, 1, 40, 9, 16),
    (1, 1, 1, 1, 21, 64),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@in_child
def test_interpreted_kernel_matches_reference(rng, interpret, shape, causal):
    q, k, v = qkv(rng, *shape)
    out, lse, ent = interpret.attention_fwd(q, k, v, None, causal=causal, scale=shape[-1] ** -0.5)
    check(out, lse, ent, q, k, v, causal, None, 1e-4)


@pytest.mark.parametrize("kind", ["padding", "bool", "additive"])
@in_child
def test_interpreted_kernel_masks(rng, interpret, kind):
    b, h, hk, t, s, d = 2, 2, 1, 19, 23, 16
    q, k, v = qkv(rng, b, h, hk, t, s, d)
    if kind == "padding":
        mask = torch.arange(s) < torch.tensor([s, 7]).unsqueeze(1)
        mask = mask[:, None, None, :]
    else:
        keep = torch.from_numpy(rng.random((b, h, t, s)) > 0.5)
        keep[0, 1, 3] = False  # a fully masked row
        mask = keep if kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    for causal in (False, True):
        out, lse, ent = interpret.attention_fwd(q, k, v, mask, causal=causal, scale=0.25)
        check(out, lse, ent, q, k, v, causal, mask, 1e-4, scale=0.25)


@in_child
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "shape", [(2, 4, 2, 37, 37, 16), (1, 2, 1, 20, 45, 24), (1, 2, 1, 40, 9, 16), (1, 1, 1, 1, 7, 16)]
)
def test_interpreted_backward_kernel(rng, interpret, shape, causal):
    """kernels/src/attention_bwd.py against float64 autograd through the reference, dead rows included."""
    from artent_fast.attention.triton_path import load_kernel

    bwd = load_kernel("attention_bwd")
    b, h, hk, t, s, d = shape
    q, k, v = qkv(rng, *shape, dtype=torch.float64, grad=True)
    keep = torch.from_numpy(rng.random((b, 1, t, s)) > 0.3)
    keep[0, 0, -1] = False
    ro, rl, _ = reference_attention(q, k, v, causal=causal, mask=keep)
    dout = torch.randn_like(ro)
    want = torch.autograd.grad(ro, (q, k, v), dout)
    f32 = [x.detach().float() for x in (q, k, v, ro, dout, rl)]
    got = bwd.attention_bwd(*f32, keep, causal=causal, scale=d**-0.5)
    for g, w, name in zip(got, want, "qkv", strict=True):
        err = (g.double() - w).abs().max().item()
        assert err <= 1e-4, f"d{name}: max error {err:.3g}"


@in_child
@pytest.mark.parametrize("backward", ["triton", "torch"])
def test_dispatch_and_backward_through_triton(rng, interpret, monkeypatch, backward):
    """fused_attention(backend='triton') gives the torch path's numbers, and the same gradients with either backward."""
    monkeypatch.setattr("artent_fast.attention.triton_path.BACKWARD", backward)
    q, k, v = qkv(rng, 1, 4, 2, 18, 18, 16, grad=True)
    mask = (torch.arange(18) < 13)[None, None, None, :]
    out, stats = fused_attention(q, k, v, causal=True, mask=mask, backend="triton")
    ref, ref_stats = fused_attention(q, k, v, causal=True, mask=mask, backend="torch")
    assert (out - ref).abs().max() <= 1e-5
    assert (stats["entropy"] - ref_stats["entropy"]).abs().max() <= 1e-5
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    want = torch.autograd.grad(ref, (q, k, v), dout)
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= 1e-4


@in_child
def test_interpreted_kernel_without_entropy(rng, interpret):
    """The "same kernel without capture" (benchmark baseline): same out and lse, no entropy."""
    q, k, v = qkv(rng, 1, 2, 1, 21, 21, 16)
    full = interpret.attention_fwd(q, k, v, None, causal=True, scale=0.25)
    bare = interpret.attention_fwd(q, k, v, None, causal=True, scale=0.25, entropy=False)
    assert bare[2] is None
    assert torch.equal(full[0], bare[0]) and torch.equal(full[1], bare[1])
    out, stats = fused_attention(q, k, v, causal=True, scale=0.25, capture=("lse",), backend="triton")
    assert set(stats) == {"lse"} and torch.equal(out, full[0])


def test_triton_backend_refuses_dropout(rng):
    q, k, v = qkv(rng, 1, 1, 1, 4, 4, 16)
    with pytest.raises(ValueError, match="dropout"):
        fused_attention(q, k, v, causal=True, backend="triton", dropout_p=0.1)


# ---- compiled kernel on a GPU -------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_kernel(rng, d, dtype, causal):
    q, k, v = qkv(rng, 2, 8, 2, 300, 300, d, dtype=dtype, device="cuda")
    mask = (torch.arange(300, device="cuda") < torch.tensor([300, 200], device="cuda").unsqueeze(1))[:, None, None]
    out, stats = fused_attention(q, k, v, causal=causal, mask=mask)
    ro, rl, re = reference_attention(q, k, v, causal=causal, mask=mask)
    if dtype == torch.float32:
        assert (out.double() - ro).abs().max() <= 1e-4
    else:  # FlashAttention's ratio test
        low = reference_attention(q, k, v, causal=causal, mask=mask, dtype=dtype)[0]
        assert (out.double() - ro).abs().max() <= 2 * (low.double() - ro).abs().max() + 1e-6
    assert (stats["lse"].double() - rl).abs().max() <= 1e-3
    assert (stats["entropy"].double() - re).abs().max() <= 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_backward(rng, dtype):
    q, k, v = qkv(rng, 2, 8, 2, 200, 200, 64, dtype=dtype, device="cuda", grad=True)
    out, _ = fused_attention(q, k, v, causal=True)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    ro = reference_attention(q, k, v, causal=True)[0]
    want = torch.autograd.grad(ro, (q, k, v), dout.double())
    low = torch.autograd.grad(reference_attention(q, k, v, causal=True, dtype=dtype)[0], (q, k, v), dout)
    for g, w, lo in zip(got, want, low, strict=True):
        bound = 1e-4 if dtype == torch.float32 else 2 * (lo.double() - w).abs().max().item() + 1e-6
        assert (g.double() - w).abs().max().item() <= bound
