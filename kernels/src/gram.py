"""Batched Gram products ``x @ x^T`` / ``x^T @ x`` in one launch.

Torch reference: the registry's torch kernel ``artent_fast.backends.torch_ops.gram``.

The densities at the middle bonds of a chain are Grams of reshapes of the state (docs/definitions.md §6). One
program computes one output tile of one matrix of the batch; only tiles on or above the diagonal
do work, off-diagonal ones are stored twice and diagonal ones symmetrised, so the output is
exactly symmetric (as eigensolvers assume). Float64
inputs accumulate in float64 with plain FMAs (no tensor-core rounding); other dtypes use
``tl.dot`` in IEEE float32 (no TF32), so results match the float64 reference to float32 round-off.
"""

from __future__ import annotations

import torch

from ._support import DTYPES, Launch, check_runnable, interpreting, jit, ptr, tl


def _gram_kernel(
    X,
    OUT,
    n_out,
    depth,
    tiles,
    sxb,
    sxi,
    sxk,
    sob,
    soi,
    soj,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // (tiles * tiles)
    t = pid % (tiles * tiles)
    ti = t // tiles
    tj = t % tiles
    if ti <= tj:
        rows = ti * BLOCK + tl.arange(0, BLOCK)
        cols = tj * BLOCK + tl.arange(0, BLOCK)
        kk = tl.arange(0, BLOCK_K)
        base = X + b.to(tl.int64) * sxb
        acc = tl.zeros([BLOCK, BLOCK], tl.float32 if USE_DOT else OUT.dtype.element_ty)
        for k0 in range(0, depth, BLOCK_K):
            k = k0 + kk
            a = tl.load(
                base + rows[:, None] * sxi + k[None, :] * sxk,
                mask=(rows[:, None] < n_out) & (k[None, :] < depth),
                other=0.0,
            )
            c = tl.load(
                base + cols[:, None] * sxi + k[None, :] * sxk,
                mask=(cols[:, None] < n_out) & (k[None, :] < depth),
                other=0.0,
            )
            if USE_DOT:
                acc += tl.dot(a.to(tl.float32), tl.trans(c.to(tl.float32)), input_precision="ieee")
            else:
                acc += tl.sum(a[:, None, :] * c[None, :, :], axis=2)
        if ti == tj:  # a diagonal tile: symmetrise, so the whole output is exactly symmetric
            acc = (acc + tl.trans(acc)) * 0.5
        out = acc.to(OUT.dtype.element_ty)
        obase = OUT + b.to(tl.int64) * sob
        ok = (rows[:, None] < n_out) & (cols[None, :] < n_out)
        tl.store(obase + rows[:, None] * soi + cols[None, :] * soj, out, mask=ok)
        if ti < tj:
            tl.store(obase + cols[None, :] * soi + rows[:, None] * soj, out, mask=ok)


def gram(x: torch.Tensor, side: str, *, block: int | None = None) -> torch.Tensor:
    """``x @ x^T`` (side='left', ``(..., a, a)``) or ``x^T @ x`` (side='right', ``(..., b, b)``) of ``(..., a, b)``."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x has dtype {x.dtype}; the gram kernel takes {DTYPES}")
    if x.ndim < 2:
        raise ValueError(f"x must be (..., a, b), got shape {tuple(x.shape)}")
    check_runnable(x, "x")
    lead = x.shape[:-2]
    x3 = x.reshape(-1, *x.shape[-2:])
    if side == "right":
        x3 = x3.mT  # X^T X = Gram of the transposed rows: same kernel, swapped strides
    batch, n_out, depth = x3.shape
    out = torch.empty(batch, n_out, n_out, dtype=x.dtype, device=x.device)
    if batch == 0 or n_out == 0:
        return out.reshape(*lead, n_out, n_out)
    consts = launch_constexprs(x.dtype, interpreting())
    consts["BLOCK"] = block or consts["BLOCK"]
    tiles = -(-n_out // consts["BLOCK"])
    jit(_gram_kernel)[(batch * tiles * tiles,)](
        x3,
        out,
        n_out,
        depth,
        tiles,
        x3.stride(0),
        x3.stride(1),
        x3.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        **consts,
    )
    return out.reshape(*lead, n_out, n_out)


def launch_constexprs(dtype: torch.dtype, interpret: bool) -> dict:
    """The kernel's ``BLOCK``, ``BLOCK_K`` and ``USE_DOT`` for ``dtype`` (float64: FMAs; default warps and stages)."""
    use_dot = dtype != torch.float64
    block = 16 if interpret else (64 if use_dot else 32)
    return {"BLOCK": block, "BLOCK_K": 16 if (use_dot or interpret) else 8, "USE_DOT": use_dot}


def launch_configs() -> list[Launch]:
    """Every configuration :func:`gram` launches with on a GPU (one per dtype), for ahead-of-time compiling."""
    return [Launch.of(_gram_kernel, {"X": ptr(dt), "OUT": ptr(dt)}, launch_constexprs(dt, False), {}) for dt in DTYPES]
