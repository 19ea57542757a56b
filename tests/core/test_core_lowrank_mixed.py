"""Profiles of many factored updates of different shapes in one computation, against their plain twins.

The twin of every row is the float64 SVD profile of that unit's product ``B @ A`` on its own.
"""

from __future__ import annotations

import pytest
import torch

import artent_fast
from artent_fast.core.lowrank_mixed import lowrank_profiles, mixed_plan, pad_factors


def naive(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return artent_fast.entanglement_profile(B.double() @ A.double(), method="naive")


def check(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], atol: float = 1e-9, nan: tuple[int, ...] = ()
) -> torch.Tensor:
    """Every row against its unit's SVD profile; the units in ``nan`` must measure as all-NaN."""
    B, A = pad_factors(pairs)
    out = lowrank_profiles(B, A, [(b.shape[0], a.shape[1]) for b, a in pairs])
    assert out.dtype == torch.float64 and out.shape[0] == len(pairs)
    for i, (b, a) in enumerate(pairs):
        if i in nan:
            assert torch.isnan(out[i]).all(), f"unit {i} should measure as NaN"
            continue
        ref = naive(b, a)
        torch.testing.assert_close(out[i, : ref.shape[0]], ref, atol=atol, rtol=0, msg=f"unit {i} {tuple(b.shape)}")
        assert torch.isnan(out[i, ref.shape[0] :]).all()  # padding after the unit's last bond
    return out


@pytest.mark.parametrize("seed", range(4))
def test_random_mixtures_match_each_units_svd_profile(seed):
    g = torch.Generator().manual_seed(100 + seed)
    sides = [1, 2, 3, 6, 12, 16, 30, 64, 97, 128]
    r = int(torch.randint(1, 9, (1,), generator=g))
    pairs = []
    for _ in range(int(torch.randint(1, 7, (1,), generator=g))):
        m, n = (sides[int(i)] for i in torch.randint(len(sides), (2,), generator=g))
        if m == 1 and n in (1, 2, 3, 97):
            n = 6  # a 1 x prime update has one site and no bond
        pairs.append((torch.randn(m, r, generator=g), torch.randn(r, n, generator=g)))
    check(pairs)


def test_the_trackers_case_and_mixed_dtypes():
    g = torch.Generator().manual_seed(1)
    pairs = [(torch.randn(m, 8, generator=g), torch.randn(8, 256, generator=g)) for m in (256, 64, 256, 64)]
    pairs[1] = (pairs[1][0].to(torch.bfloat16), pairs[1][1].double())
    check(pairs, atol=1e-9)


def test_zero_and_rank_deficient_units():
    g = torch.Generator().manual_seed(2)
    pairs = [
        (torch.zeros(16, 4), torch.randn(4, 32, generator=g)),  # B = 0 (peft's initial LoRA): all NaN
        (torch.randn(16, 4, generator=g), torch.randn(4, 32, generator=g)),
        (torch.randn(32, 1, generator=g).expand(32, 4).clone(), torch.randn(4, 16, generator=g)),  # rank 1
    ]
    check(pairs, nan=(0,))


def test_extreme_scales_are_invariant():
    g = torch.Generator().manual_seed(3)
    b, a = torch.randn(24, 3, generator=g, dtype=torch.float64), torch.randn(3, 40, generator=g, dtype=torch.float64)
    pairs = [(b * 1e-150, a), (b, a * 1e150), (b, a)]
    out = check(pairs)
    torch.testing.assert_close(out[0], out[2], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[1], out[2], atol=1e-12, rtol=0)


def test_renyi_entropies_and_base():
    g = torch.Generator().manual_seed(4)
    pairs = [(torch.randn(m, 5, generator=g), torch.randn(5, 48, generator=g)) for m in (20, 48)]
    B, A = pad_factors(pairs)
    out = lowrank_profiles(B, A, [(20, 48), (48, 48)], alpha=2.0, base=2.0)
    for i, (b, a) in enumerate(pairs):
        ref = artent_fast.entanglement_profile(b.double() @ a.double(), method="naive", alpha=2.0, base=2.0)
        torch.testing.assert_close(out[i, : ref.shape[0]], ref, atol=1e-9, rtol=0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="one rank"):
        pad_factors([(torch.randn(4, 2), torch.randn(2, 4)), (torch.randn(4, 3), torch.randn(3, 4))])
    with pytest.raises(TypeError, match="A of unit 0"):
        pad_factors([(torch.randn(4, 2), torch.ones(2, 4, dtype=torch.int64))])
    with pytest.raises(ValueError, match="no factors"):
        pad_factors([])
    B, A = pad_factors([(torch.randn(4, 2), torch.randn(2, 4))])
    with pytest.raises(ValueError, match="exceed"):
        lowrank_profiles(B, A, [(8, 4)])
    with pytest.raises(ValueError, match="do not match"):
        lowrank_profiles(B, A, [(4, 4), (4, 4)])


def test_plan_is_cached_and_slots_cover_every_bond():
    mixed = mixed_plan(((256, 256), (64, 256)), 8, 256, 256)
    assert mixed_plan(((256, 256), (64, 256)), 8, 256, 256) is mixed
    plan, slots = mixed.plan, mixed.slots
    assert mixed.width == 15 and slots.shape == (2 * mixed.width,)
    real = slots[slots < plan.num_bonds]
    assert sorted(real.tolist()) == list(range(plan.num_bonds)) == list(range(15 + 13))
    cpu = torch.device("cpu")
    assert mixed.on(cpu)[1] is mixed.on(cpu)[1]  # indices moved once per device


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_units_measure_as_nan_and_leave_the_others_exact(bad):
    g = torch.Generator().manual_seed(5)
    pairs = [(torch.randn(m, 4, generator=g), torch.randn(4, 32, generator=g)) for m in (16, 32, 16)]
    pairs[1][1][2, 3] = bad  # one entry of A in unit 1
    pairs[2][0][0, 0] = 3e38  # unit 2: finite but near float32's largest (not a fault)
    check(pairs, nan=(1,))
