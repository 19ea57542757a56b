"""Partial traces of batched density matrices: one site, or a whole nested chain in one launch.

Torch reference: the registry's torch kernels ``artent_fast.backends.torch_ops.partial_trace`` and
``partial_trace_chain``.

Side 'last' traces the trailing factor (left-block densities, ``rho`` over ``keep x traced``):
``out[i, j] = sum_t rho[i*T + t, j*T + t]``; side 'first' traces the leading factor (right-block
densities): ``out[i, j] = sum_t rho[t*K + i, t*K + j]``. Every bond density of one side of a chain
is such a trace of the side's root density with ``T`` the product of the traced site dims, so
:func:`partial_trace_chain` computes all of them from the root in one launch (no level waits for
the previous one); its total work is at most the size of the root, per batch element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._support import DTYPES, Launch, check_runnable, interpreting, jit, ptr, tl, unique


def _trace_kernel(
    RHO,
    OUT,
    LEVELS,
    n_levels,
    tiles_total,
    srb,
    sri,
    srj,
    sob,
    SIDE_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
    MAX_LEVELS: tl.constexpr,
):
    # LEVELS: int64 rows (keep, traced, first tile, output offset) per level, padded to MAX_LEVELS.
    pid = tl.program_id(0)
    b = pid // tiles_total
    tile = pid % tiles_total
    keep = tl.load(LEVELS + 0)
    traced = tl.load(LEVELS + 1)
    first = tl.load(LEVELS + 2)
    offset = tl.load(LEVELS + 3)
    for lvl in tl.static_range(1, MAX_LEVELS):
        if lvl < n_levels:
            start = tl.load(LEVELS + lvl * 4 + 2)
            if tile >= start:
                keep = tl.load(LEVELS + lvl * 4 + 0)
                traced = tl.load(LEVELS + lvl * 4 + 1)
                first = start
                offset = tl.load(LEVELS + lvl * 4 + 3)
    t_local = tile - first
    tiles_side = (keep + BLOCK - 1) // BLOCK
    ti = t_local // tiles_side
    tj = t_local % tiles_side
    rows = ti * BLOCK + tl.arange(0, BLOCK)
    cols = tj * BLOCK + tl.arange(0, BLOCK)
    ok = (rows[:, None] < keep) & (cols[None, :] < keep)
    if SIDE_LAST:
        ri = rows * traced
        cj = cols * traced
        step = 1
    else:
        ri = rows
        cj = cols
        step = keep
    base = RHO + b.to(tl.int64) * srb
    acc = tl.zeros([BLOCK, BLOCK], tl.float32 if OUT.dtype.element_ty != tl.float64 else tl.float64)
    for t in range(0, traced):
        acc += tl.load(base + (ri[:, None] + t * step) * sri + (cj[None, :] + t * step) * srj, mask=ok, other=0.0)
    tl.store(
        OUT + b.to(tl.int64) * sob + offset + rows[:, None] * keep + cols[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=ok,
    )


MAX_CHAIN_LEVELS = 32  # a chain of 33+ sites of dim >= 2 has a root of 2^33+ rows: never in memory


def _block(keep_max: int, interpret: bool) -> int:
    if interpret:
        return 16
    return 32 if keep_max >= 32 else max(8, 1 << (max(keep_max, 1) - 1).bit_length())


def _max_levels(n_levels: int) -> int:
    """The level table's padded length (a power of two: few distinct compiles)."""
    return 1 << (n_levels - 1).bit_length()


def launch_configs() -> list[Launch]:
    """Every configuration :func:`partial_trace_chain` launches with on a GPU (dtype, side, block, padded level
    count; default warps and stages), for ahead-of-time compiling. Switches: the side and the level count."""
    return unique(
        Launch.of(
            _trace_kernel,
            {"RHO": ptr(dt), "OUT": ptr(dt), "LEVELS": ptr(torch.int64)},
            {"SIDE_LAST": side_last, "BLOCK": _block(keep, False), "MAX_LEVELS": _max_levels(n)},
            {},
            switches=("SIDE_LAST", "MAX_LEVELS"),
        )
        for dt in DTYPES
        for keep in range(1, 65)
        for side_last in (True, False)
        for n in range(MAX_CHAIN_LEVELS, 0, -1)
    )


def partial_trace_chain(
    rho: torch.Tensor, keeps: Sequence[int], traced: Sequence[int], side: str, *, block: int | None = None
) -> list[torch.Tensor]:
    """``[trace of rho over a factor of dim traced[l], keeping keeps[l]]`` for every level ``l``, one launch.

    ``rho``: ``(..., S, S)`` with ``keeps[l] * traced[l] == S`` for every level. Outputs are views
    of one buffer, ``(..., keeps[l], keeps[l])``.
    """
    if side not in ("last", "first"):
        raise ValueError(f"side must be 'last' or 'first', got {side!r}")
    if rho.dtype not in DTYPES:
        raise TypeError(f"rho has dtype {rho.dtype}; the partial-trace kernel takes {DTYPES}")
    if rho.ndim < 2 or rho.shape[-1] != rho.shape[-2]:
        raise ValueError(f"rho must be (..., S, S), got shape {tuple(rho.shape)}")
    keeps, traced = [int(k) for k in keeps], [int(t) for t in traced]
    if len(keeps) != len(traced) or not 0 < len(keeps) <= MAX_CHAIN_LEVELS:
        raise ValueError(
            f"keeps {keeps} and traced {traced} must be of equal length, from 1 to {MAX_CHAIN_LEVELS} levels"
        )
    size = rho.shape[-1]
    for k, t in zip(keeps, traced, strict=True):
        if k < 1 or t < 1 or k * t != size:
            raise ValueError(f"keep {k} x traced {t} != {size}, the size of rho {tuple(rho.shape)}")
    check_runnable(rho, "rho")
    lead = rho.shape[:-2]
    r3 = rho.reshape(-1, size, size)
    batch = r3.shape[0]
    block = block or _block(max(keeps), interpreting())
    rows, tile, offset = [], 0, 0
    for k, t in zip(keeps, traced, strict=True):
        rows.append((k, t, tile, offset))
        tile += (-(-k // block)) ** 2
        offset += k * k
    out = torch.empty(batch, offset, dtype=rho.dtype, device=rho.device)
    if batch > 0:
        max_levels = _max_levels(len(rows))
        table = torch.tensor(rows + [rows[-1]] * (max_levels - len(rows)), dtype=torch.int64).to(rho.device)
        jit(_trace_kernel)[(batch * tile,)](
            r3,
            out,
            table,
            len(rows),
            tile,
            r3.stride(0),
            r3.stride(1),
            r3.stride(2),
            out.stride(0),
            SIDE_LAST=side == "last",
            BLOCK=block,
            MAX_LEVELS=max_levels,
        )
    return [out[:, o : o + k * k].reshape(*lead, k, k) for k, _, _, o in rows]


def partial_trace(rho: torch.Tensor, keep: int, traced: int, side: str) -> torch.Tensor:
    """Trace out one factor of dim ``traced`` from ``rho`` ``(..., keep*traced, keep*traced)`` (see module doc)."""
    return partial_trace_chain(rho, [keep], [traced], side)[0]


def chain_levels(dims: Sequence[int], side: str) -> tuple[list[int], list[int]]:
    """``(keeps, traced)`` of every nested trace of a chain root over sites ``dims``, nearest first.

    side='last': the root is over ``dims`` and level ``l`` keeps the first ``len(dims)-1-l`` sites;
    side='first': level ``l`` keeps the last ``len(dims)-1-l`` sites.
    """
    dims = list(dims)
    keeps, traced = [], []
    for n_keep in range(len(dims) - 1, 0, -1):
        kept = dims[:n_keep] if side == "last" else dims[len(dims) - n_keep :]
        keeps.append(math.prod(kept))
        traced.append(math.prod(dims) // keeps[-1])
    return keeps, traced
