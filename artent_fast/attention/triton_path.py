"""The Triton attention path: the fused forward kernel, and a backward from the stored lse.

The backward is FlashAttention-2's recurrence from the saved log-sum-exp: the Triton kernels of
``kernels/attention_bwd.py``, or, with ``BACKWARD = "torch"`` or when that module cannot load,
the same recurrence in torch over query blocks (``torch_path.backward_from_lse``). Neither stores
the attention matrix.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path

import torch

from artent_fast.attention.torch_path import backward_from_lse
from artent_fast.attention.validate import Problem

BACKWARD = "triton"  # or "torch": the fallback recurrence (for comparisons)


@functools.cache
def load_kernel(name: str):
    """``kernels/<name>.py`` if triton is importable, else None.

    Installed, it is ``artent_fast.kernels.<name>``; in a source checkout whose editable install
    predates the kernels mapping, it is loaded from ``<repo>/kernels`` by path.
    """
    mod = None
    try:
        mod = importlib.import_module(f"artent_fast.kernels.{name}")
    except ImportError:
        path = Path(__file__).resolve().parents[2] / "kernels" / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"artent_fast_kernels_{name}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
    return mod if mod is not None and mod.available() else None


def kernel_module():
    """The forward kernel module (``kernels/attention_fwd.py``), or None without triton."""
    return load_kernel("attention_fwd")


def triton_usable(q: torch.Tensor, head_dim: int, v_dim: int, dropout_p: float) -> bool:
    """Whether the Triton kernel can run this call (CUDA tensor, triton importable, supported shape)."""
    return (q.is_cuda and dropout_p == 0 and head_dim <= 256 and v_dim == head_dim
            and q.dtype != torch.float64 and kernel_module() is not None)


class TritonAttention(torch.autograd.Function):
    """Fused forward (out, lse, entropy); backward from the stored lse (Triton kernels, or torch)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, p: Problem, causal: bool, entropy: bool):
        out, lse, ent = kernel_module().attention_fwd(q, k, v, mask, causal=causal, scale=p.scale, entropy=entropy)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mask, ctx.problem, ctx.causal = mask, p, causal
        ctx.mark_non_differentiable(lse, *([ent] if ent is not None else []))
        return out, lse, ent

    @staticmethod
    def backward(ctx, dout, _dlse, _dent):
        q, k, v, out, lse = ctx.saved_tensors
        bwd = load_kernel("attention_bwd") if BACKWARD == "triton" else None
        if bwd is not None and v.shape[-1] == q.shape[-1]:
            dq, dk, dv = bwd.attention_bwd(q, k, v, out, dout, lse, ctx.mask, causal=ctx.causal,
                                           scale=ctx.problem.scale)
        else:
            dq, dk, dv = backward_from_lse(q, k, v, out, dout, lse, ctx.problem, ctx.mask, ctx.causal)
        return dq, dk, dv, None, None, None, None


def triton_attention(q, k, v, p: Problem, mask, causal: bool, entropy: bool = True):
    """``(out, lse, entropy or None)`` from the fused kernel, differentiable in q, k, v."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return TritonAttention.apply(q, k, v, mask, p, causal, entropy)
    return kernel_module().attention_fwd(q, k, v, mask, causal=causal, scale=p.scale, entropy=entropy)
