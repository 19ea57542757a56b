"""MPS Adaptation (docs/definitions.md §7): parameter count, forward vs dense reference, training, merge,
save/load, profile."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import artent_fast
from artent_fast.adapters import mps
from artent_fast.testing.models import tiny_llama_config


def _tiny(d_in: int, d_out: int, *, bias: bool = True, dtype=torch.float64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d_out, bias=bias, dtype=dtype), nn.Tanh(), nn.Linear(d_out, 5, dtype=dtype))


def test_paper_parameter_count_without_allocating():
    # B: 4096*256 = 1,048,576; core1 (256, 64, 32) = 524,288; core2 (32, 64) = 2,048
    assert mps.core_shapes(256, 32, (64, 64)) == [(256, 64, 32), (32, 64)]
    assert mps.count_parameters(4096, 4096, r=256, chi=32, dims=(64, 64)) == 1_574_912


def test_paper_parameter_count_on_meta_device():
    model = nn.Sequential(nn.Linear(4096, 4096, device="meta"))
    model = mps.apply(model, targets=["0"], r=256, chi=32, dims=(64, 64), alpha=512)
    assert mps.trainable_parameters(model) == 1_574_912
    assert 1_574_912 < 2 * 4096 * 256  # fewer than LoRA's 2,097,152


@pytest.mark.parametrize(
    "d_in,dims,chi,r",
    [
        (12, (3, 4), 5, 3),
        (64, (4, 4, 4), 3, 6),
        (30, (2, 3, 5), 4, 2),
        (16, (16,), 2, 4),
        (48, None, 7, 5),
        (8, (2, 2, 2), 1, 1),
    ],
)
@pytest.mark.parametrize("batch", [(), (3,), (2, 5)])
def test_forward_matches_dense_reference(d_in, dims, chi, r, batch):
    gen = torch.Generator().manual_seed(d_in * 7 + r)
    d_out = 10
    model = mps.apply(
        _tiny(d_in, d_out), targets=["0"], r=r, chi=chi, dims=dims, alpha=2.5 * r, init="random", seed=d_in + chi
    )
    layer = model[0]
    x = torch.randn(*batch, d_in, generator=gen, dtype=torch.float64)
    # plain twin: contract the cores with einsum over all indices at once
    cores = list(layer.cores)
    dims_ = layer.dims
    if len(cores) == 1:
        a = cores[0]
    else:
        letters = "abcdefgh"
        spec = [f"r{letters[0]}A"] + [f"{chr(65 + j)}{letters[j + 1]}{chr(66 + j)}" for j in range(len(cores) - 2)]
        spec.append(f"{chr(65 + len(cores) - 2)}{letters[len(cores) - 1]}")
        out = "r" + letters[: len(cores)]
        a = torch.einsum(",".join(spec) + "->" + out, *cores).reshape(r, d_in)
    assert math.prod(dims_) == d_in
    w = layer.base.weight
    expected = x @ w.T + layer.base.bias + 2.5 * (x @ a.T @ layer.B.T)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.a_mps(), a, rtol=1e-12, atol=1e-12)


def test_lora_init_starts_at_the_base_model():
    model = _tiny(16, 8)
    x = torch.randn(4, 16, dtype=torch.float64)
    before = model(x)
    mps.apply(model, targets=["0"], r=4, chi=2, dims=(4, 4))
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert float(model[0].B.detach().abs().sum()) == 0.0
    assert float(model[0].a_mps().detach().abs().sum()) > 0


def test_only_adapter_is_trainable_and_training_moves_it():
    model = mps.apply(_tiny(16, 8), targets=["0"], r=4, chi=3, dims=(2, 8), alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.B", "0.cores.0", "0.cores.1"}
    assert mps.trainable_parameters(model) == 8 * 4 + 4 * 2 * 3 + 3 * 8
    w0 = model[0].base.weight.clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 16, generator=gen, dtype=torch.float64)
    y = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert float(model[0].B.detach().abs().sum()) > 0
    torch.testing.assert_close(model[0].base.weight, w0, rtol=0, atol=0)


def test_merge_unmerge_round_trip():
    model = mps.apply(_tiny(24, 12), targets=["0"], r=3, chi=4, dims=(2, 3, 4), alpha=6, init="random", seed=3)
    layer = model[0]
    x = torch.randn(7, 24, dtype=torch.float64)
    w0, y0 = layer.base.weight.clone(), model(x)
    mps.merge(model)
    assert layer.merged
    torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x), y0, rtol=1e-10, atol=1e-12)
    mps.merge(model)  # idempotent
    mps.unmerge(model)
    assert not layer.merged
    torch.testing.assert_close(layer.base.weight, w0, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(model(x), y0, rtol=1e-10, atol=1e-12)


def test_save_load_round_trip(tmp_path):
    pytest.importorskip("safetensors")
    src = mps.apply(_tiny(16, 8, seed=5), targets=["0", "2"], r=2, chi=3, dims=None, alpha=4, init="random", seed=9)
    mps.save(src, tmp_path / "adapter")
    dst = mps.load(_tiny(16, 8, seed=5), tmp_path / "adapter")
    assert set(mps.mps_modules(dst)) == {"0", "2"}
    x = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert mps.trainable_parameters(dst) == mps.trainable_parameters(src)
    other = mps.apply(_tiny(16, 8, seed=5), targets=["0", "2"], r=3, chi=3)
    with pytest.raises(ValueError, match="config"):
        mps.load(other, tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match="mps_adapter_config.json"):
        mps.load(_tiny(16, 8), tmp_path / "nowhere")


def test_save_is_atomic_a_failed_write_keeps_the_old_adapter(tmp_path, monkeypatch):
    st = pytest.importorskip("safetensors.torch")
    src = mps.apply(_tiny(16, 8, seed=5), targets=["0"], r=2, chi=3, alpha=4, init="random", seed=9)
    folder = mps.save(src, tmp_path / "adapter")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def half_write(tensors, filename, **kwargs):  # writes part of a file, then the disk fills up
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", half_write)
    with torch.no_grad():
        src[0].B.add_(1.0)
    with pytest.raises(OSError, match="No space"):
        mps.save(src, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # old files intact, no temp file left


@pytest.mark.parametrize(
    "d_out,d_in,dims,chi,r",
    [(16, 16, (4, 4), 3, 2), (12, 18, (2, 3, 3), 2, 3), (8, 32, (8, 4), 4, 4), (6, 10, (2, 5), 5, 1)],
)
def test_profile_equals_dense_profile(d_out, d_in, dims, chi, r):
    model = mps.apply(
        _tiny(d_in, d_out), targets=["0"], r=r, chi=chi, dims=dims, alpha=3.0, init="random", seed=d_out + d_in
    )
    layer = model[0]
    got = mps.mps_update_profile(layer)
    want = artent_fast.entanglement_profile(layer.delta_weight().detach(), method="naive")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-8)
    centre = artent_fast.sites(d_out, d_in).row_col_bond
    assert float(got[centre]) <= math.log(r) + 1e-9  # rank <= r at the row/column bond


def test_fresh_adapter_profile_is_nan_not_an_error():
    layer = mps.apply(_tiny(16, 8), targets=["0"], r=2, chi=2, dims=(4, 4))[0]
    assert torch.isnan(mps.mps_update_profile(layer)).all()


def test_clear_errors():
    with pytest.raises(ValueError, match="multiply to 15"):
        mps.apply(_tiny(16, 8), targets=["0"], r=2, chi=2, dims=(3, 5))
    with pytest.raises(ValueError, match="match no nn.Linear"):
        mps.apply(_tiny(16, 8), targets=["q_proj"], r=2, chi=2)
    with pytest.raises(ValueError, match="chi must be a positive integer"):
        mps.apply(_tiny(16, 8), targets=["0"], r=2, chi=0)
    with pytest.raises(ValueError, match="init"):
        mps.apply(_tiny(16, 8), targets=["0"], r=2, chi=2, init="xavier")


def test_float32_model_and_llama_targets():
    transformers = pytest.importorskip("transformers")
    cfg = tiny_llama_config()
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 64, (2, 8))
    before = model(ids).logits
    mps.apply(model, targets=["q_proj", "v_proj"], r=4, chi=4, dims=(4, 8))
    assert len(mps.mps_modules(model)) == 4
    torch.testing.assert_close(model(ids).logits, before)
    # v_proj: 16 x 32 (2 kv heads of 8); q_proj: 32 x 32
    expect = 2 * (
        mps.count_parameters(32, 32, r=4, chi=4, dims=(4, 8)) + mps.count_parameters(16, 32, r=4, chi=4, dims=(4, 8))
    )
    assert mps.trainable_parameters(model) == expect


def test_gradients_of_factored_forward_match_dense_reference():
    model = mps.apply(_tiny(12, 6), targets=["0"], r=3, chi=2, dims=(2, 2, 3), alpha=1.5, init="random", seed=2)
    layer = model[0]
    x = torch.randn(4, 12, dtype=torch.float64)
    params = [layer.B, *layer.cores]
    g_fact = torch.autograd.grad(layer(x).square().sum(), params)
    dense = x @ (layer.base.weight + layer.delta_weight()).T + layer.base.bias  # dW formed explicitly
    g_dense = torch.autograd.grad(dense.square().sum(), params)
    for a, b in zip(g_fact, g_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda *ps: mps.apply_cores(x, ps[1:], layer.dims) @ ps[0].T,
        tuple(p.detach().clone().requires_grad_(True) for p in params),
    )
