"""Correctness self-check: every available backend's kernels, and the public paths, against float64 torch.

Each kernel is called directly (the backend forced for the call, so that e.g. the Triton kernels
also run on CPU under ``TRITON_INTERPRET=1``) on fresh inputs on the bench device, in float32 and
float64, and compared with the same maths done in float64 by plain torch. A kernel that declines
the input (``NotImplemented``: wrong device, say) is reported as such, not as a failure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import contextmanager

import torch

from artent_fast.api import entanglement_profile, lowrank_profile
from artent_fast.attention import fused_attention
from artent_fast.attention.reference import reference_attention
from artent_fast.backends import registry
from artent_fast.bench.table import Table
from artent_fast.core.reference import reference_profiles

TOLERANCE = {torch.float32: 2e-4, torch.float64: 1e-9}  # max error relative to the reference's scale


@contextmanager
def forced(name: str | None):
    """Set ``ARTENT_FAST_BACKEND`` for the block (None: unset)."""
    old = os.environ.get("ARTENT_FAST_BACKEND")
    if name is None:
        os.environ.pop("ARTENT_FAST_BACKEND", None)
    else:
        os.environ["ARTENT_FAST_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ARTENT_FAST_BACKEND", None)
        else:
            os.environ["ARTENT_FAST_BACKEND"] = old


def _trace64(rho: torch.Tensor, keep: int, traced: int, side: str) -> torch.Tensor:
    b = rho.shape[:-2]
    if side == "last":
        return torch.einsum("...itjt->...ij", rho.reshape(*b, keep, traced, keep, traced))
    return torch.einsum("...titj->...ij", rho.reshape(*b, traced, keep, traced, keep))


def _entropy64(values: torch.Tensor) -> torch.Tensor:
    p = values.clamp_min(0) / values.clamp_min(0).sum(-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(-1)


def cases(dev: str, dtype: torch.dtype, gen: torch.Generator) -> dict[str, tuple[tuple, dict, Callable]]:
    """op -> (args, kwargs, float64 reference of the result)."""
    x = torch.randn(3, 48, 56, device=dev, dtype=dtype, generator=gen)
    sym = x @ x.mT
    rho = torch.randn(2, 24, 40, device=dev, dtype=dtype, generator=gen)
    rho = rho @ rho.mT  # 24 = 2 * 3 * 4
    spec = torch.rand(5, 33, device=dev, dtype=dtype, generator=gen)
    spec[0, :7] = 0  # zero entries contribute nothing
    d = {
        "eigvalsh": ((sym,), {}, lambda: torch.linalg.eigvalsh(sym.double())),
        "gram": ((x, "left"), {}, lambda: x.double() @ x.double().mT),
        "partial_trace": ((rho, 6, 4, "last"), {}, lambda: _trace64(rho.double(), 6, 4, "last")),
        "partial_trace_chain": (
            (rho, [12, 4], "first"),
            {},
            lambda: [_trace64(rho.double(), 12, 2, "first"), _trace64(rho.double(), 4, 6, "first")],
        ),
        "entropy": ((spec,), {}, lambda: _entropy64(spec.double())),
    }
    return d


def rel_error(got, ref) -> float:
    if isinstance(ref, list):
        return max(rel_error(g, r) for g, r in zip(got, ref, strict=True))
    got = got.double()
    scale = float(ref.abs().max()) or 1.0
    return float((got - ref).abs().max()) / scale


def kernel_rows(dev: str, table: Table, gen: torch.Generator) -> None:
    for dtype in (torch.float32, torch.float64):
        for op, (args, kwargs, ref) in cases(dev, dtype, gen).items():
            expected = ref()
            for backend, fn in sorted(registry.kernels_of(op).items(), key=lambda kv: registry.BACKENDS.index(kv[0])):
                with forced(backend):
                    try:
                        got = fn(*args, **kwargs)
                    except Exception as exc:  # reported, not raised: the self-check shows every backend
                        got = exc
                if isinstance(got, Exception):
                    err, status = None, f"FAIL ({type(got).__name__}: {str(got)[:120]})"
                elif got is NotImplemented:
                    err, status = None, "declined (not for this device/input)"
                else:
                    err = rel_error(got, expected)
                    status = "pass" if err <= TOLERANCE[dtype] else "FAIL"
                tol = TOLERANCE[dtype]
                table.add(check=op, backend=backend, dtype=str(dtype)[6:], error=err, tolerance=tol, status=status)


def public_rows(dev: str, table: Table, gen: torch.Generator) -> None:
    """The public paths with the default (automatic) choice of kernels, against float64 references."""
    w = torch.randn(2, 48, 72, device=dev, generator=gen)
    ref = torch.from_numpy(reference_profiles(w.cpu().double().numpy()))
    got = entanglement_profile(w).cpu().double()
    _public(table, "entanglement_profile", float((got - ref).abs().max() / ref.abs().max()), 1e-4)
    B = torch.randn(64, 6, device=dev, generator=gen)
    A = torch.randn(6, 96, device=dev, generator=gen)
    ref = torch.from_numpy(reference_profiles((B @ A).cpu().double().numpy()[None]))[0]
    got = lowrank_profile(B, A).cpu().double()
    _public(table, "lowrank_profile", float((got - ref).abs().max() / ref.abs().max()), 1e-4)
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    q = torch.randn(1, 4, 96, 64, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(1, 2, 96, 64, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(1, 2, 96, 64, device=dev, dtype=dtype, generator=gen)
    out, stats = fused_attention(q, k, v, causal=True)
    r_out, r_lse, r_ent = reference_attention(q, k, v, causal=True)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    err = max(
        float((out.double() - r_out).abs().max() / r_out.abs().max()),
        float((stats["entropy"].double() - r_ent).abs().max() / r_ent.abs().max()),
    )
    _public(table, f"attention ({str(dtype)[6:]})", err, tol)


def _public(table: Table, name: str, err: float, tol: float) -> None:
    ok = math.isfinite(err) and err <= tol
    table.add(check=name, backend="auto", dtype="-", error=err, tolerance=tol, status="pass" if ok else "FAIL")


def run_selfcheck(dev: str, *, echo: bool = True) -> Table:
    """The self-check table; ``passed(table)`` says whether every row that ran passed."""
    table = Table(
        "selfcheck",
        f"Self-check against float64 torch on {dev}",
        {
            "check": "check",
            "backend": "backend",
            "dtype": "dtype",
            "error": "max rel. error",
            "tolerance": "tolerance",
            "status": "status",
        },
        echo=echo,
    ).start()
    gen = torch.Generator(device=dev).manual_seed(1234)
    kernel_rows(dev, table, gen)
    public_rows(dev, table, gen)
    return table


def passed(table: Table) -> bool:
    return all(not str(r["status"]).startswith("FAIL") for r in table.rows)
