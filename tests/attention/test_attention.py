"""artent_fast.attention on the torch path: outputs, statistics, gradients and profiles against float64 twins."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch

import artent_fast
from artent_fast.attention import attention_cardy, attention_profile, channel, fused_attention
from artent_fast.attention.external import bond_densities_of
from artent_fast.attention.reference import reference_attention, reference_probs
from artent_fast.attention.torch_path import backward_from_lse, torch_attention
from artent_fast.attention.validate import check_mask, check_qk

# (B, Hq, Hkv, T, S, d): powers of two and not, T = 1, S != T, GQA
SHAPES = [
    (1, 1, 1, 1, 1, 8),
    (2, 4, 4, 16, 16, 16),
    (2, 4, 2, 37, 37, 24),
    (1, 6, 2, 1, 13, 32),
    (3, 2, 1, 9, 20, 8),
    (1, 3, 3, 20, 9, 64),
]


def qkv(rng, b, h, hk, t, s, d, dtype=torch.float32, grad=False):
    def make(*shape):
        x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
        return x.requires_grad_(grad)

    return make(b, h, t, d), make(b, hk, s, d), make(b, hk, s, d)


def padding_mask(rng, b, s, keep_first=True):
    """(B, 1, 1, S) key padding mask with at least one kept key per row."""
    lengths = rng.integers(1, s + 1, size=b)
    keep = torch.arange(s).unsqueeze(0) < torch.from_numpy(lengths).unsqueeze(1)
    if not keep_first:
        keep = keep.flip(-1)
    return keep[:, None, None, :]


def assert_close(actual, expected, atol, what):
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    same_inf = torch.isinf(actual) == torch.isinf(expected)
    assert bool(same_inf.all()), f"{what}: infinite entries differ"
    diff = (actual - expected).nan_to_num(0.0, 0.0, 0.0).abs().max().item()
    assert diff <= atol, f"{what}: max error {diff:.3g} > {atol}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fp32_matches_float64_reference(rng, shape, causal, masked):
    q, k, v = qkv(rng, *shape)
    mask = padding_mask(rng, shape[0], shape[4]) if masked else None
    out, stats = fused_attention(q, k, v, causal=causal, mask=mask)
    ro, rl, re = reference_attention(q, k, v, causal=causal, mask=mask)
    assert out.dtype == torch.float32 and stats["lse"].shape == (shape[0], shape[1], shape[3])
    assert_close(out, ro, 1e-4, "out")
    assert_close(stats["lse"], rl, 1e-4, "lse")
    assert_close(stats["entropy"], re, 1e-4, "entropy")
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_float64_is_exact(rng, shape):
    q, k, v = qkv(rng, *shape, dtype=torch.float64)
    out, stats = fused_attention(q, k, v, causal=True)
    ro, rl, re = reference_attention(q, k, v, causal=True)
    assert stats["entropy"].dtype == torch.float64
    assert_close(out, ro, 1e-12, "out")
    assert_close(stats["entropy"], re, 1e-12, "entropy")


def test_matches_torch_sdpa(rng):
    q, k, v = qkv(rng, 2, 4, 4, 33, 33, 16)
    mask = padding_mask(rng, 2, 33)
    for causal in (False, True):
        m = mask & torch.ones(33, 33, dtype=torch.bool).tril() if causal else mask
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
        out, _ = fused_attention(q, k, v, causal=causal, mask=mask)
        assert_close(out, expected, 1e-5, f"sdpa causal={causal}")


def test_entropy_limits(rng):
    """Uniform attention has entropy ln(number of keys seen); a one-hot row has zero."""
    b, h, t, d = 1, 2, 7, 4
    q = torch.zeros(b, h, t, d)
    k = torch.from_numpy(rng.standard_normal((b, h, t, d))).float()
    _, stats = fused_attention(q, k, k, causal=True)
    seen = torch.arange(1, t + 1, dtype=torch.float32)
    assert torch.allclose(stats["entropy"][0, 0], torch.log(seen), atol=1e-6)
    assert torch.allclose(stats["lse"][0, 0], torch.log(seen), atol=1e-6)
    sharp = torch.eye(t).mul(1e4).expand(b, h, t, t)
    _, stats = fused_attention(sharp, torch.eye(t).expand(b, h, t, t), k, causal=False, scale=1.0)
    assert stats["entropy"].abs().max() < 1e-6


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_fully_masked_rows(rng, kind):
    """Documented value: out 0, lse -inf, entropy 0; never NaN, gradients finite."""
    q, k, v = qkv(rng, 2, 2, 1, 6, 5, 8, grad=True)
    keep = torch.from_numpy(rng.random((2, 2, 6, 5)) > 0.4)
    keep[:, :, 2] = False
    keep[1, 1] = False
    mask = keep if kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    out, stats = fused_attention(q, k, v, causal=False, mask=mask)
    dead = ~keep.any(-1)
    assert not torch.isnan(out).any() and not torch.isnan(stats["entropy"]).any()
    assert (out[dead] == 0).all() and torch.isneginf(stats["lse"][dead]).all() and (stats["entropy"][dead] == 0).all()
    ro, rl, re = reference_attention(q, k, v, causal=False, mask=mask)
    assert_close(out, ro, 1e-5, "out")
    assert_close(stats["lse"], rl, 1e-5, "lse")
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_causal_shorter_keys_masks_leading_rows(rng):
    """Bottom-right causal alignment with S < T: the first T - S rows see nothing."""
    q, k, v = qkv(rng, 1, 2, 2, 8, 5, 8)
    out, stats = fused_attention(q, k, v, causal=True)
    assert torch.isneginf(stats["lse"][..., :3]).all() and torch.isfinite(stats["lse"][..., 3:]).all()
    assert_close(out, reference_attention(q, k, v, causal=True)[0], 1e-5, "out")


def test_mask_broadcast_forms(rng):
    q, k, v = qkv(rng, 2, 4, 2, 6, 7, 8)
    keep = torch.from_numpy(rng.random((2, 4, 6, 7)) > 0.3)
    keep[..., 0] = True
    for m in (keep, keep[:, :1], keep[0], keep[0, 0], keep[:, :1, :1]):
        out, st = fused_attention(q, k, v, causal=False, mask=m)
        ro, _, re = reference_attention(q, k, v, causal=False, mask=m)
        assert_close(out, ro, 1e-5, f"mask {tuple(m.shape)}")
        assert_close(st["entropy"], re, 1e-5, f"mask {tuple(m.shape)}")


def test_additive_float_mask(rng):
    q, k, v = qkv(rng, 1, 2, 2, 5, 5, 8)
    bias = torch.from_numpy(rng.standard_normal((1, 2, 5, 5))).float()
    out, st = fused_attention(q, k, v, causal=True, mask=bias)
    ro, rl, re = reference_attention(q, k, v, causal=True, mask=bias)
    assert_close(out, ro, 1e-5, "out")
    assert_close(st["lse"], rl, 1e-5, "lse")


def test_query_blocks_agree(rng, monkeypatch):
    """Several query blocks (tiny tile budget) give the same numbers as one."""
    q, k, v = qkv(rng, 2, 2, 1, 23, 23, 8)
    whole = fused_attention(q, k, v, causal=True)
    monkeypatch.setattr("artent_fast.attention.torch_path.TILE_BYTES", 2000)
    split = fused_attention(q, k, v, causal=True)
    assert_close(split[0], whole[0], 1e-6, "out")
    assert_close(split[1]["entropy"], whole[1]["entropy"], 1e-6, "entropy")


def test_gradients_match_reference(rng):
    q, k, v = qkv(rng, 2, 4, 2, 11, 11, 8, dtype=torch.float64, grad=True)
    mask = padding_mask(rng, 2, 11)
    out, _ = fused_attention(q, k, v, causal=True, mask=mask)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    ro, _, _ = reference_attention(q, k, v, causal=True, mask=mask)
    want = torch.autograd.grad(ro, (q, k, v), dout)
    for g, w, name in zip(got, want, "qkv", strict=True):
        assert_close(g, w, 1e-10, f"d{name}")


@pytest.mark.parametrize("causal", [False, True])
def test_backward_from_lse_matches_autograd(rng, monkeypatch, causal):
    """The Triton path's backward (FlashAttention-2 recurrence from the stored lse), in torch."""
    q, k, v = qkv(rng, 2, 4, 2, 13, 17, 8, dtype=torch.float64, grad=True)
    keep = torch.from_numpy(rng.random((2, 1, 13, 17)) > 0.3)
    keep[0, 0, 12] = False  # a dead row, if causal does not already kill it
    out, stats = fused_attention(q, k, v, causal=causal, mask=keep)
    dout = torch.randn_like(out)
    want = torch.autograd.grad(out, (q, k, v), dout)
    p = check_qk(q, k, None)
    monkeypatch.setattr("artent_fast.attention.torch_path.TILE_BYTES", 3000)
    got = backward_from_lse(
        q.detach(), k.detach(), v.detach(), out.detach(), dout, stats["lse"], p, check_mask(keep, p, q.device), causal
    )
    for g, w, name in zip(got, want, "qkv", strict=True):
        assert_close(g, w, 1e-10, f"d{name}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_ratio(rng, dtype):
    """FlashAttention's test: error vs float64 at most twice that of the reference run in low precision."""
    q, k, v = qkv(rng, 2, 4, 2, 40, 40, 32, dtype=dtype)
    out, stats = fused_attention(q, k, v, causal=True)
    assert out.dtype == dtype and stats["entropy"].dtype == torch.float32
    exact = reference_attention(q, k, v, causal=True)[0]
    low = reference_attention(q, k, v, causal=True, dtype=dtype)[0]
    err = (out.double() - exact).abs().max().item()
    ref_err = (low.double() - exact).abs().max().item()
    assert err <= 2 * ref_err + 1e-6, f"{dtype}: error {err:.3g} vs low-precision reference {ref_err:.3g}"


def test_dropout_keeps_statistics_and_expectation(rng):
    q, k, v = qkv(rng, 1, 2, 2, 6, 6, 4)
    base, st0 = fused_attention(q, k, v, causal=False)
    torch.manual_seed(0)
    dropped, st1 = fused_attention(q, k, v, causal=False, dropout_p=0.5)
    assert not torch.allclose(dropped, base)
    assert torch.equal(st0["entropy"], st1["entropy"])
    torch.manual_seed(0)
    mean = torch.stack([fused_attention(q, k, v, causal=False, dropout_p=0.5)[0] for _ in range(400)]).mean(0)
    assert (mean - base).abs().max() < 0.25


def test_capture_selects_statistics(rng):
    q, k, v = qkv(rng, 1, 1, 1, 3, 3, 4)
    assert set(fused_attention(q, k, v, causal=True, capture=())[1]) == set()
    assert set(fused_attention(q, k, v, causal=True, capture="lse")[1]) == {"lse"}
    with pytest.raises(ValueError, match="capture"):
        fused_attention(q, k, v, causal=True, capture=("attn",))


def test_package_attention_is_callable_after_submodule_import(rng):
    q, k, v = qkv(rng, 1, 1, 1, 3, 3, 4)
    out, _ = artent_fast.fused_attention(q, k, v, causal=True)
    assert_close(out, reference_attention(q, k, v, causal=True)[0], 1e-6, "out")
    assert artent_fast.attention_profile is attention_profile


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda q, k, v: (q[0], k, v), "4 dims"),
        (lambda q, k, v: (q, k[:1], v[:1]), "batch"),
        (lambda q, k, v: (q, k[..., :4], v), "head_dim"),
        (lambda q, k, v: (q[:, :3], k, v), "multiple"),
        (lambda q, k, v: (q, k.double(), v), "dtype"),
        (lambda q, k, v: (q, k, v.double()), "dtype"),
        (lambda q, k, v: (q, k, v[:, :, :3]), "v shape"),
        (lambda q, k, v: (q.long(), k.long(), v.long()), "dtype"),
        (lambda q, k, v: (q, k.to("meta"), v), "device"),
    ],
)
def test_bad_inputs(rng, bad, match):
    q, k, v = qkv(rng, 2, 4, 2, 5, 6, 8)
    with pytest.raises((ValueError, TypeError), match=match):
        fused_attention(*bad(q, k, v), causal=False)


def test_bad_arguments(rng):
    q, k, v = qkv(rng, 2, 4, 2, 5, 6, 8)
    with pytest.raises(ValueError, match="does not broadcast"):
        fused_attention(q, k, v, causal=False, mask=torch.ones(2, 4, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask has dtype"):
        fused_attention(q, k, v, causal=False, mask=torch.ones(2, 1, 1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="scale"):
        fused_attention(q, k, v, causal=False, scale=float("nan"))
    with pytest.raises(ValueError, match="backend"):
        fused_attention(q, k, v, causal=False, backend="cuda")
    with pytest.raises(ValueError, match="dropout"):
        fused_attention(q, k, v, causal=False, dropout_p=1.5)


# ---- external entanglement profiles --------------------------------------------------------

PROFILE_SHAPES = [
    (2, 4, 2, 16, 16, 8),
    (1, 2, 2, 12, 12, 8),
    (1, 3, 1, 6, 20, 4),
    (2, 2, 2, 1, 12, 4),
    (1, 2, 1, 12, 1, 4),
    (1, 2, 2, 9, 8, 4),
]


@pytest.mark.parametrize("shape", PROFILE_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_profile_matches_materialised(rng, shape, causal):
    q, k, _ = qkv(rng, *shape, dtype=torch.float64)
    mask = padding_mask(rng, shape[0], shape[4], keep_first=False) if shape[4] > 1 else None
    prof = attention_profile(q, k, causal=causal, mask=mask)
    expected = artent_fast.entanglement_profile(
        reference_probs(q, k, causal=causal, mask=mask), method="naive", on_zero="nan"
    )
    assert prof.shape == (shape[0], shape[1], expected.shape[-1])
    assert_close(prof, expected, 1e-9, "profile")


def test_profile_chunks_and_sites_options(rng):
    q, k, _ = qkv(rng, 2, 4, 2, 16, 16, 8)
    whole = attention_profile(q, k, causal=True)
    chunked = attention_profile(q, k, causal=True, chunk_bytes=1)
    assert prof_equal(whole, chunked)
    assert whole.dtype == torch.float32
    custom = attention_profile(q, k, causal=True, row_dims=(4, 4), col_dims=(16,))
    expected = artent_fast.entanglement_profile(reference_probs(q, k, causal=True), row_dims=(4, 4), col_dims=(16,))
    assert_close(custom, expected, 1e-5, "custom sites")
    renyi = attention_profile(q, k, causal=True, alpha=2.0, base=2.0)
    expected = artent_fast.entanglement_profile(reference_probs(q, k, causal=True), alpha=2.0, base=2.0)
    assert_close(renyi, expected, 1e-5, "renyi-2 base 2")


def prof_equal(a, b):
    return bool(torch.allclose(a, b, atol=1e-6, rtol=0))


def test_profile_of_dead_head_is_nan(rng):
    q, k, _ = qkv(rng, 1, 2, 2, 4, 4, 4)
    keep = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    keep[0, 1] = False
    prof = attention_profile(q, k, causal=False, mask=keep)
    assert torch.isnan(prof[0, 1]).all() and torch.isfinite(prof[0, 0]).all()


def test_bond_densities_match_core(rng):
    """Our two-root Gram recipe agrees with the core's bond_densities spectra."""
    from artent_fast.core.gram import bond_spectra

    p = torch.from_numpy(rng.random((3, 12, 18)))
    row, col = (2, 2, 3), (2, 3, 3)
    ours = [torch.linalg.eigvalsh(r) for r in bond_densities_of(p, row, col)]
    core = bond_spectra(p.reshape(3, -1), row + col)
    for a, b in zip(ours, core, strict=True):
        n = min(a.shape[-1], b.shape[-1])
        assert torch.allclose(a[..., -n:], b[..., -n:], atol=1e-10)


def test_profile_bad_inputs(rng):
    q, k, _ = qkv(rng, 1, 2, 2, 1, 1, 4)
    with pytest.raises(ValueError, match="site"):
        attention_profile(q, k, causal=False)
    q, k, _ = qkv(rng, 1, 2, 2, 4, 4, 4)
    with pytest.raises(ValueError, match="row_dims"):
        attention_profile(q, k, causal=False, row_dims=(3,))
    with pytest.raises(ValueError, match="alpha"):
        attention_profile(q, k, causal=False, alpha=-1)


def test_attention_cardy(rng):
    """Profiles built from a Cardy law are fitted back exactly, per head and averaged."""
    n_sites, c, s0 = 10, 1.3, 0.2
    l = torch.arange(1, n_sites, dtype=torch.float64)
    law = (c / 3) * torch.log(n_sites / math.pi * torch.sin(math.pi * l / n_sites)) + s0
    profiles = law.expand(2, 3, n_sites - 1).clone()
    profiles[0, 1] = float("nan")
    fit = attention_cardy(profiles)
    assert fit.per_head.c.shape == (2, 3)
    assert abs(float(fit.mean.c) - c) < 1e-9 and abs(float(fit.mean.s0) - s0) < 1e-9
    assert abs(float(fit.mean.r2) - 1) < 1e-9
    layers = attention_cardy([profiles[1], profiles[1] + 1.0])
    assert abs(float(layers.mean.s0) - (s0 + 0.5)) < 1e-9


# ---- the side channel ------------------------------------------------------------------------


class Probe(torch.nn.Module):
    """A stand-in attention module that reports to the channel like the HF hook does."""

    def forward(self, q, k, v, mask=None):
        out, stats = fused_attention(q, k, v, causal=True, mask=mask)
        if channel.is_enabled(self):
            channel.capture(self, q, k, stats, causal=True, mask=mask, scale=None)
        return out


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Probe(), Probe()])


@pytest.fixture
def fresh_channel():
    channel.reset()
    yield channel
    channel.reset()


def test_channel_levels(rng, fresh_channel):
    model = TwoLayers()
    q, k, v = qkv(rng, 2, 4, 2, 8, 8, 4)
    model.layers[0](q, k, v)
    assert channel.drain() == []  # not enabled
    channel.enable(model, profile_every=2)
    for _ in range(3):
        for layer in model.layers:
            layer(q, k, v)
    recs = channel.drain()
    assert channel.drain() == []
    assert [r["module"] for r in recs] == ["layers.0", "layers.1"] * 3
    assert all(r["kind"] == "attention" and isinstance(r["entropy_mean"], float) for r in recs)
    with_profile = [i for i, r in enumerate(recs) if r["entropies"]]
    assert with_profile == [0, 1, 4, 5]
    _, stats = fused_attention(q, k, v, causal=True)
    assert abs(recs[0]["entropy_mean"] - stats["entropy"].mean().item()) < 1e-5
    expected = attention_profile(q, k, causal=True).double().mean((0, 1))
    assert torch.allclose(torch.tensor(recs[0]["entropies"], dtype=torch.float64), expected, atol=1e-5)
    assert recs[0]["row_sites"] == 3 and math.isfinite(recs[0]["cardy_c"]) and "cardy_r2" in recs[0]


def test_channel_request_profile_and_disable(rng, fresh_channel):
    model = TwoLayers()
    q, k, v = qkv(rng, 1, 2, 2, 4, 4, 4)
    channel.enable(model)
    model.layers[0](q, k, v)
    channel.request_profile()
    for _ in range(2):
        for layer in model.layers:
            layer(q, k, v)
    recs = channel.drain()
    assert [bool(r["entropies"]) for r in recs] == [False, True, True, False, False]
    channel.disable(model)
    model.layers[0](q, k, v)
    assert channel.drain() == [] and not channel.is_enabled()


def test_channel_dead_rows_and_errors_never_raise(rng, fresh_channel):
    model = TwoLayers()
    channel.enable(model, profile_every=1)
    q, k, v = qkv(rng, 1, 2, 2, 4, 4, 4)
    keep = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    keep[..., 1, :] = False
    model.layers[0](q, k, v, keep)
    rec = channel.drain()[0]
    _, st = fused_attention(q, k, v, causal=True, mask=keep)
    assert abs(rec["entropy_mean"] - st["entropy"][..., [0, 2, 3]].mean().item()) < 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            channel.capture(model.layers[0], q, k, {"lse": None}, causal=True, mask=None, scale=None)
    assert len([w for w in caught if "capture failed" in str(w.message)]) == 1
    assert channel.drain() == []


def test_channel_global_enable_names_by_class(rng, fresh_channel):
    channel.enable()
    probe = Probe()
    probe.layer_idx = 3
    q, k, v = qkv(rng, 1, 1, 1, 2, 2, 4)
    probe(q, k, v)
    assert channel.drain()[0]["module"] == "Probe.3"
    with pytest.raises(ValueError, match="profile_every"):
        channel.enable(profile_every=-1)


def test_torch_attention_is_the_default_on_cpu(rng):
    q, k, v = qkv(rng, 1, 2, 2, 5, 5, 8)
    p = check_qk(q, k, None)
    out, lse, ent = torch_attention(q, k, v, p, None, True)
    got, stats = fused_attention(q, k, v, causal=True)
    assert torch.equal(out, got) and torch.equal(ent, stats["entropy"])


def test_attention_is_dispatched_through_the_op_registry(rng, monkeypatch):
    """backend='auto' goes through backends.registry like every op: a forced backend with no attention
    kernel falls back to torch with the registry's one-time warning; one that cannot load fails loudly."""
    from artent_fast.backends import BackendUnavailable, registry

    assert registry.kernels_of("attention")["torch"] is torch_attention
    q, k, v = qkv(rng, 1, 2, 1, 5, 5, 8)
    want, _ = fused_attention(q, k, v, causal=True)
    monkeypatch.setattr(registry, "_LOADED", {**registry._LOADED, "cuda": True, "cupy": False})
    monkeypatch.setattr(registry, "_ERRORS", {**registry._ERRORS, "cupy": "ImportError: no cupy"})
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "cuda")
    with pytest.warns(UserWarning, match="no usable cuda kernel for 'attention'"):
        got, _ = fused_attention(q, k, v, causal=True)
    assert torch.equal(got, want)
    monkeypatch.setenv("ARTENT_FAST_BACKEND", "cupy")
    with pytest.raises(BackendUnavailable, match="no cupy"):
        fused_attention(q, k, v, causal=True)
    got, _ = fused_attention(q, k, v, causal=True, backend="torch")  # explicit: the variable is not read
    assert torch.equal(got, want)


def test_without_triton_the_kernels_decline(rng, monkeypatch):
    """No triton: the kernel modules still import, report unavailable, and attention runs on torch."""
    from artent_fast.attention import triton_path

    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "triton.language", None)
    triton_path.load_kernel.cache_clear()
    try:
        assert triton_path.kernel_module() is None and triton_path.load_kernel("attention_bwd") is None
        q, k, v = qkv(rng, 1, 2, 1, 5, 5, 8)
        out, _ = fused_attention(q, k, v, causal=True)
        assert_close(out, reference_attention(q, k, v, causal=True)[0], 1e-5, "out")
    finally:  # forget the triton-less kernel modules so that later tests load real ones
        for name in ("attention_fwd", "attention_bwd"):
            sys.modules.pop(f"artent_fast.kernels.{name}", None)
        triton_path.load_kernel.cache_clear()


def test_attention_profile_uses_the_core_engine(rng, monkeypatch):
    """External profiles go through core.gram's bond_densities (so its backends serve attention too)."""
    import artent_fast.attention.external as ap

    calls = []
    real = ap.bond_densities

    def spy(t, dims, split=None):
        calls.append((tuple(dims), split))
        return real(t, dims, split)

    monkeypatch.setattr(ap, "bond_densities", spy)
    q, k, _ = qkv(rng, 1, 2, 2, 12, 12, 4)
    prof = attention_profile(q.double(), k.double(), causal=True)
    probs = reference_probs(q, k, causal=True)
    expected = artent_fast.entanglement_profile(probs[0])
    assert calls and calls[0][1] == 3  # roots at the row/column bond: T = 12 = 2*2*3 gives 3 row sites, T <= S
    assert torch.allclose(prof[0], expected, atol=1e-10)
