"""The one reader of a module's update (artent_fast.updates): every peft adapter type, against peft itself.

The float64 reference of an update is the change of the layer's *effective* weight since tracking
started, read through peft's own ``merge_and_unload()`` on a copy of the model: it does not share a
line of code with the readers under test. Each adapter type is built on a tiny LLaMA, moved at
random (as training would), and then the unit's update (its factors' product, or its dense matrix),
the record the tracker writes, and the comparison's profile must all agree with that reference.
"""

from __future__ import annotations

import copy

import pytest
import torch

import artent_fast
from artent_fast.compare import internal_profile
from artent_fast.core.update_algebra import dora_change, hadamard_factors, kronecker_factors
from artent_fast.patterns import module_name
from artent_fast.testing.models import tiny_llama_config
from artent_fast.updates import find_units
from artent_fast.updates.find import DENSE_START_TOLERANCE

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TARGETS = ["q_proj", "v_proj"]


def configs():
    """(id, peft config, path the unit must take)."""
    return [
        ("lora", peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS), "lora"),
        ("lora-pissa", peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="pissa"), "lora"),
        ("dora", peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=True), "dense"),
        ("adalora", peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=TARGETS), "lora"),
        ("loha", peft.LoHaConfig(r=3, alpha=6, target_modules=TARGETS), "lora"),
        ("loha-random", peft.LoHaConfig(r=3, alpha=6, target_modules=TARGETS, init_weights=False), "lora"),
        (
            "lokr",
            peft.LoKrConfig(r=2, alpha=4, target_modules=TARGETS, decompose_both=True, decompose_factor=4),
            "lora",
        ),
        ("lokr-full", peft.LoKrConfig(r=8, alpha=8, target_modules=TARGETS), "dense"),
        ("vera", peft.VeraConfig(r=8, target_modules=TARGETS), "lora"),
        ("ia3", peft.IA3Config(target_modules=TARGETS, feedforward_modules=[]), "dense"),
        ("ia3-ff", peft.IA3Config(target_modules=["v_proj", "down_proj"], feedforward_modules=["down_proj"]), "dense"),
    ]


CONFIGS = {name: (config, path) for name, config, path in configs()}


def adapted(name: str, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_llama_config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, max_position_embeddings=32)
    base = transformers.LlamaForCausalLM(config)  # peft initialises PiSSA in float32 only: float64 after
    return peft.get_peft_model(base, copy.deepcopy(CONFIGS[name][0])).double()


def moved(model, seed: int) -> None:
    """Every adapter parameter moved at random, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.05)


def effective(model) -> dict[str, torch.Tensor]:
    """Each adapted layer's effective weight, by peft's own merge (float64)."""
    merged = copy.deepcopy(model).merge_and_unload()
    return {
        module_name(n): m.weight.detach().clone()
        for n, m in merged.named_modules()
        if isinstance(m, torch.nn.Linear) and n.endswith(("q_proj", "v_proj", "down_proj"))
    }


def update_of(unit) -> torch.Tensor:
    if unit.kind == "lora":
        B, A, scale, _ = unit.factors()
        return scale * (B.double() @ A.double())
    return unit.dense().double()


def naive(matrix: torch.Tensor) -> list[float]:
    return artent_fast.entanglement_profile(matrix.double(), method="naive").tolist()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_adapter_type_reads_the_change_of_the_effective_weight(name):
    model = adapted(name)
    start = effective(model)
    units = find_units(model, CONFIGS[name][0].target_modules)
    assert units and {u.kind for u in units} == {CONFIGS[name][1]}
    moved(model, seed=1)
    now = effective(model)
    for unit in units:
        want = now[unit.module] - start[unit.module]
        # a dense start below DENSE_START_TOLERANCE of the weight counts as zero (DoRA's magnitude is
        # ||W||_row as float32 computed it): that much of it may remain
        atol = 1e-11 if unit.kind == "lora" else DENSE_START_TOLERANCE * float(start[unit.module].norm())
        torch.testing.assert_close(update_of(unit), want, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("name", ["lora", "loha", "lokr", "vera", "adalora", "dora", "ia3"])
def test_tracker_records_equal_the_float64_profile_of_the_change(name):
    model = adapted(name, seed=2)
    start = effective(model)
    tracker = artent_fast.track(model, targets=TARGETS, out=None, background=False, every=1, dense_every=1)
    moved(model, seed=3)
    tracker.step()
    now = effective(model)
    records = {r["module"]: r for r in tracker.history()}
    assert set(records) == {u.module for u in tracker.units}
    for module, record in records.items():
        assert record["entropies"] == pytest.approx(naive(now[module] - start[module]), abs=1e-6), module
        assert record["update"] == next(u.update for u in tracker.units if u.module == module)
    tracker.close()


@pytest.mark.parametrize("name", ["lora", "loha", "vera", "dora", "ia3"])
def test_compare_profiles_the_whole_adapter_update(name):
    """compare's internal profile reads the same units: the adapter's whole update (no start)."""
    model = adapted(name, seed=4)
    moved(model, seed=5)
    base = {
        module_name(n) + ".weight": m.get_base_layer().weight for n, m in model.named_modules() if n.endswith("q_proj")
    }
    now = effective(model)
    for path, layer in model.named_modules():
        if path.endswith("q_proj") and hasattr(layer, "base_layer"):
            kind, profile = internal_profile(layer, name=path)
            key = module_name(path)
            assert kind == ("lora" if CONFIGS[name][1] == "lora" else "delta")
            assert profile.tolist() == pytest.approx(naive(now[key] - base[key + ".weight"].double()), abs=1e-6)


def test_records_say_which_update_was_measured():
    """A start that is not zero is subtracted and said: BA-B0A0 for factored types, -D0 for dense ones."""
    assert {u.update for u in find_units(adapted("loha-random"), TARGETS)} == {"BA-B0A0"}
    assert {u.update for u in find_units(adapted("loha"), TARGETS)} == {"BA"}
    assert {u.update for u in find_units(adapted("dora"), TARGETS)} == {"dora"}
    assert {u.update for u in find_units(adapted("ia3"), TARGETS)} == {"ia3"}
    assert {u.source for u in find_units(adapted("lokr-full"), TARGETS)} == {"delta"}


def test_structured_factors_against_their_products():
    """The factor algebra alone, on random shapes: Hadamard (LoHa), Kronecker (LoKr), DoRA's rows."""
    gen = torch.Generator().manual_seed(0)
    for m, n, r1, r2 in [(6, 10, 2, 3), (12, 4, 1, 5), (9, 9, 4, 4)]:
        B1, A1 = torch.randn(m, r1, generator=gen, dtype=torch.float64), torch.randn(r1, n, generator=gen).double()
        B2, A2 = torch.randn(m, r2, generator=gen, dtype=torch.float64), torch.randn(r2, n, generator=gen).double()
        P, Q = hadamard_factors(B1, A1, B2, A2)
        assert P.shape == (m, r1 * r2)
        torch.testing.assert_close(P @ Q, (B1 @ A1) * (B2 @ A2))
        P, Q = kronecker_factors((B1, A1), (B2, A2))
        torch.testing.assert_close(P @ Q, torch.kron(B1 @ A1, B2 @ A2))
        W, dW = torch.randn(m, n, generator=gen).double(), torch.randn(m, n, generator=gen).double()
        mag = torch.rand(m, generator=gen).double() + 0.5
        want = mag[:, None] * (W + dW) / (W + dW).norm(dim=1, keepdim=True) - W
        torch.testing.assert_close(dora_change(W, dW, mag), want)
        torch.testing.assert_close(dora_change(W.T, dW.T, mag, fan_in_fan_out=True), want.T)


def test_compare_measures_a_pissa_model_against_its_base_as_the_change():
    """PiSSA moves ``s B0 A0`` out of the base layer: against the base model, compare profiles the change of
    the effective weight (``W_eff - W0``), not ``s B A`` (the base's principal part)."""
    torch.manual_seed(6)
    config = tiny_llama_config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, max_position_embeddings=32)
    base = transformers.LlamaForCausalLM(config)
    tuned = peft.get_peft_model(copy.deepcopy(base), copy.deepcopy(CONFIGS["lora-pissa"][0]))
    moved(tuned, seed=7)
    now = effective(tuned)
    for path, layer in tuned.named_modules():
        if path.endswith("q_proj") and hasattr(layer, "base_layer"):
            key = module_name(path)
            w0 = dict(base.named_modules())[key].weight.detach().double()
            kind, profile = internal_profile(layer, name=path, base=base)
            assert kind == "lora"
            assert profile.tolist() == pytest.approx(naive(now[key].double() - w0), abs=1e-6)
