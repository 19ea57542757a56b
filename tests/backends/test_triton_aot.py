"""Every Triton kernel compiles ahead of time for an H100/H200 (sm_90), no GPU needed, within its shared memory.

The configurations come from each kernel module's ``launch_configs()``, built from the same block, warp and
stage choosers its launcher calls, so a new choice is covered here without touching this file. The full
cross product (about 1300 compiles: every dtype, head dim class, mask kind and dtype, causal, entropy, mode,
side, level count) takes far longer than the suite allows on a small CPU; by default one configuration per
*resource group* compiles: the same kernel, pointer element sizes, tile sizes, warps and stages, with the
switches (causal, mask kind and the mask's dtype, entropy, entropy mode, trace side and level count) at their
heaviest setting (the first listed: an additive float64 mask, causal, entropy on). ``ARTENT_AOT=all`` compiles
every configuration. Skips cleanly where triton cannot compile for CUDA (no CUDA backend or ptxas).
"""

from __future__ import annotations

import importlib
import os

import pytest

SMEM_LIMIT = 232448  # bytes of shared memory one block may use on an H100/H200 (sm_90, opt-in maximum)
MODULES = ("gram", "partial_trace", "entropy", "attention_fwd", "attention_bwd")
FULL = os.environ.get("ARTENT_AOT", "") == "all"


def _module(name: str):
    try:
        return importlib.import_module(f"artent_fast.kernels.{name}")
    except ImportError:  # pragma: no cover - kernels always import; triton may not
        return None


def _selected(name: str) -> list:
    mod = _module(name)
    if mod is None or not hasattr(mod, "launch_configs"):
        return []
    launches = mod.launch_configs()
    if FULL:
        return launches
    first = {}
    for launch in launches:
        first.setdefault(launch.resources(), launch)
    return list(first.values())


CASES = [(name, launch) for name in MODULES for launch in _selected(name)]


def _compile(launch):
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as exc:  # pragma: no cover - older triton
        pytest.skip(f"triton {triton.__version__} has no ahead-of-time compile API: {exc}")
    src = ASTSource(triton.jit(launch.kernel), launch.signature(), constexprs=dict(launch.constexprs))
    try:
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(launch.options))
    except Exception as exc:
        text = str(exc).lower()
        if "ptxas" in text and ("not found" in text or "no such file" in text) or "backend" in text:
            pytest.skip(f"cannot compile for CUDA here: {exc}")
        raise


def test_every_kernel_lists_its_configurations():
    """Each module enumerates its launches (none repeated), the old single attention case among them."""
    import torch

    for name in MODULES:
        mod = _module(name)
        assert mod is not None and hasattr(mod, "launch_configs"), name
        launches = mod.launch_configs()
        assert launches and len(set(launches)) == len(launches), name
        assert any(n == name for n, _ in CASES), name
    fwd = _module("attention_fwd")
    bm, bn = fwd.default_blocks(128, torch.bfloat16, interpret=False)
    want = {"CAUSAL": True, "MASK_KIND": 1, "IEEE": False, "ENTROPY": True, "BLOCK_M": bm, "BLOCK_N": bn}
    assert any(
        dict(c.constexprs) == {**want, "BLOCK_D": 128} and dict(c.types)["Q"] == "*bf16" and c.options
        for c in fwd.launch_configs()
    )
    # every head dim the launcher takes maps to a listed BLOCK_D and option set
    blocks = {(dict(c.constexprs)["BLOCK_D"], c.options) for c in fwd.launch_configs()}
    for d in range(1, 257):
        assert (max(16, 1 << (d - 1).bit_length()), tuple(fwd.launch_options(d).items())) in blocks, d


@pytest.mark.parametrize(("name", "launch"), CASES, ids=[launch.name() for _, launch in CASES])
def test_compiles_for_sm90_within_shared_memory(name, launch):
    compiled = _compile(launch)
    shared = compiled.metadata.shared
    assert shared <= SMEM_LIMIT, f"{launch.name()}: {shared} bytes of shared memory > {SMEM_LIMIT}"
    consts, types = dict(launch.constexprs), dict(launch.types)
    if name.startswith("attention") and types["Q"] in ("*fp16", "*bf16"):
        # Hopper tensor cores: 16-bit attention tiles of 64+ rows (a warpgroup MMA's minimum) use wgmma; the
        # 32 x 32 blocks of the d > 128 backward get mma.sync (triton 3.6 and 3.9)
        rows = consts["BLOCK_N"] if launch.kernel.__name__ == "_dkdv" else consts["BLOCK_M"]
        ptx = compiled.asm["ptx"]
        assert "mma" in ptx, f"{launch.name()}: no tensor-core MMA in its PTX"
        if rows >= 64:
            assert "wgmma.mma_async" in ptx, f"{launch.name()}: no wgmma in its PTX"
    assert consts  # every kernel is specialised by its launcher
