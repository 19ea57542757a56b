"""The compiled CPU path of the tracker's due step: every bond entropy of many LoRA updates in a few C calls.

``artent_fast._cpu_densities`` (csrc/lowrank_densities.c) is built by ``pip install`` where a C compiler
is present; without it (or with ``ARTENT_FAST_BACKEND`` set to any backend, ``torch`` included)
:func:`lowrank_densities` returns ``NotImplemented`` and the caller runs its torch code, which is the
reference the tests compare this path with. The call releases the GIL, so a measurement on the
tracker's worker thread never holds the training thread's Python up, and it replaces some hundred small
torch calls (scaling, reduced factors, Gram products, traces, gathers) by a few; the eigenvalues come
from a batched solver of the module's own (8 matrices in AVX2 lanes), or from LAPACK's ``dsyevd`` in
torch's own library.

``ARTENT_FAST_NATIVE=0`` turns the path off (for a comparison, or should it ever misbehave).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType, NotImplementedType

import torch

from artent_fast.backends.registry import selected_backend

_MODULE: list[ModuleType | None] = []
_ERROR: list[str] = []
_SYEVD: list[int | None] = []


def load() -> ModuleType | None:
    """The compiled module, or None (the reason in :func:`load_error`); imported once."""
    if not _MODULE:
        try:
            _MODULE.append(importlib.import_module("artent_fast._cpu_densities"))
        except ImportError as exc:  # not built here (no C compiler at install): the torch path
            _MODULE.append(None)
            _ERROR.append(f"{type(exc).__name__}: {exc}")
    return _MODULE[0]


def load_error() -> str | None:
    """Why the compiled module is not loaded (None when it is)."""
    load()
    return _ERROR[0] if _ERROR else None


def enabled() -> bool:
    """Built, not turned off by ``ARTENT_FAST_NATIVE=0``, and no backend forced by ``ARTENT_FAST_BACKEND``."""
    if os.environ.get("ARTENT_FAST_NATIVE", "1").strip() == "0" or selected_backend() is not None:
        return False
    return load() is not None


def lowrank_densities(B: torch.Tensor, A: torch.Tensor, program: dict):
    """``(densities, zero)`` of the padded factors ``B (k, m_max, r)``, ``A (k, r, n_max)`` under ``program``
    (:meth:`artent_fast.core.lowrank_mixed.MixedPlan.program`): float64 densities in the plan's bucket order
    and a bool per unit (zero or non-finite update). ``NotImplemented`` where this path does not apply
    (not built or turned off, not CPU float32/float64, rank above the module's ``RMAX``, a singular non-zero
    Gram): the caller then takes its torch path."""
    module = load() if enabled() else None
    if module is None or B.device.type != "cpu" or A.device.type != "cpu":
        return NotImplemented
    k, m_max, r = B.shape
    n_max = A.shape[2]
    if B.dtype != A.dtype or B.dtype not in (torch.float32, torch.float64) or r > module.RMAX:
        return NotImplemented
    B, A = B.contiguous(), A.contiguous()
    red = torch.empty(k * m_max * r + k * r * n_max, dtype=torch.float64)
    zero = torch.empty(k, dtype=torch.bool)
    full = torch.empty(program["n_grams"] + 1 + program["n_traced"], dtype=torch.float64)
    dens = torch.empty(program["n_dens"], dtype=torch.float64)
    status = module.densities(
        B.data_ptr(), A.data_ptr(), int(B.dtype == torch.float64), k, m_max, r, n_max,
        red.data_ptr(), zero.data_ptr(),
        program["groups"], program["g_count"].data_ptr(), program["g_rows"].data_ptr(),
        program["g_cols"].data_ptr(), program["g_index"].data_ptr(),
        full.data_ptr(), program["n_grams"], program["n_terms"], program["terms"].data_ptr(),
        program["segments"].data_ptr(), program["n_traced"], program["n_dens"], program["order"].data_ptr(),
        dens.data_ptr(),
    )  # fmt: skip
    return NotImplemented if status else (dens, zero)


def lapack_syevd() -> int | None:
    """The address of LAPACK's ``dsyevd_`` in torch's own CPU library (MKL on x86 wheels), or None where that
    library does not export it; looked up once."""
    if not _SYEVD:
        name = {"darwin": "libtorch_cpu.dylib", "win32": "torch_cpu.dll"}.get(sys.platform, "libtorch_cpu.so")
        try:
            lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / name))
            _SYEVD.append(ctypes.cast(lib.dsyevd_, ctypes.c_void_p).value)
        except (OSError, AttributeError):
            _SYEVD.append(None)
    return _SYEVD[0]


def eigvalsh_buckets(dens: torch.Tensor, program: dict, method: str = "auto"):
    """The eigenvalues (ascending) of every density of ``program``'s buckets, bucket after bucket (float64, the
    layout of ``torch.cat`` of ``torch.linalg.eigvalsh`` of each bucket).

    ``method``: ``"auto"``, the module's batched solver (8 matrices at a time in AVX2 lanes, where the CPU has
    AVX2 and FMA) and LAPACK's ``dsyevd`` (the copy in torch's own CPU library) for what it does not take;
    ``"lapack"`` or ``"batched"`` for one of them only (the tests compare both with torch).
    ``NotImplemented`` where neither applies, or LAPACK reports a failure: the caller then uses
    ``torch.linalg.eigvalsh``."""
    module = load() if enabled() else None
    if module is None or dens.dtype != torch.float64 or not dens.is_contiguous():
        return NotImplemented
    values = torch.empty(program["n_values"], dtype=torch.float64)
    info = module.eigvalsh_buckets(
        lapack_syevd() or 0, {"auto": 0, "lapack": 1, "batched": 2}[method], dens.data_ptr(), program["buckets"],
        program["b_size"].data_ptr(), program["b_count"].data_ptr(), program["b_start"].data_ptr(),
        values.data_ptr(),
    )  # fmt: skip
    if info == -1:
        raise MemoryError("eigvalsh_buckets: out of memory")
    return NotImplemented if info else values


def profiles(values: torch.Tensor, zero: torch.Tensor, program: dict) -> torch.Tensor:
    """The profiles ``(k, width)`` from the bucket ``values`` of :func:`eigvalsh_buckets`: each bond's von Neumann
    entropy (natural log), NaN after each unit's last bond and for the units ``zero`` marks."""
    module = load()
    k, width = zero.shape[0], program["width"]
    bond = torch.empty(program["n_bonds"], dtype=torch.float64)
    out = torch.empty(k, width, dtype=torch.float64)
    module.entropies(
        values.data_ptr(), program["n_bonds"], program["v_start"].data_ptr(), program["v_size"].data_ptr(),
        bond.data_ptr(), k, width, program["slots"].data_ptr(), zero.data_ptr(), out.data_ptr(),
    )  # fmt: skip
    return out


def pad_factors(pairs) -> tuple[torch.Tensor, torch.Tensor] | NotImplementedType:
    """What :func:`artent_fast.core.lowrank_mixed.pad_factors` returns (a copy, zero padded), both contiguous, in
    one call; bfloat16 factors come back as float32 (exactly). ``NotImplemented`` unless every factor is a CPU
    matrix of one rank and one dtype among float32, float64 and bfloat16."""
    module = load() if enabled() else None
    if module is None or not pairs:
        return NotImplemented
    dtype, r = pairs[0][0].dtype, pairs[0][0].shape[-1]
    code = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}.get(dtype)
    if code is None:
        return NotImplemented
    desc = []
    for B, A in pairs:
        if B.dtype != dtype or A.dtype != dtype or B.ndim != 2 or A.ndim != 2 or B.shape[1] != r or A.shape[0] != r:
            return NotImplemented
        if B.device.type != "cpu" or A.device.type != "cpu":
            return NotImplemented
        desc += [B.data_ptr(), B.shape[0], *B.stride(), A.data_ptr(), A.shape[1], *A.stride()]
    k, m_max, n_max = len(pairs), max(B.shape[0] for B, _ in pairs), max(A.shape[1] for _, A in pairs)
    out = torch.float64 if dtype == torch.float64 else torch.float32
    out_b, out_a = torch.empty(k, m_max, r, dtype=out), torch.empty(k, r, n_max, dtype=out)
    table = torch.tensor(desc, dtype=torch.int64)
    module.pack(k, m_max, r, n_max, code, table.data_ptr(), out_b.data_ptr(), out_a.data_ptr())
    return out_b, out_a
