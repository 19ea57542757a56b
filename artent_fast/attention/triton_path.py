"""The Triton attention path: the fused forward kernel, with a backward from the stored lse.

The backward is the documented fallback: FlashAttention-2's recurrence from the saved
log-sum-exp, run in torch over query blocks (``torch_path.backward_from_lse``); it never stores
the attention matrix but is slower than a fused backward kernel would be.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path

import torch

from artent_fast.attention.torch_path import backward_from_lse
from artent_fast.attention.validate import Problem


@functools.cache
def kernel_module():
    """``kernels/attention_fwd.py`` if triton is importable, else None.

    Installed, it is ``artent_fast.kernels.attention_fwd``; in a source checkout whose editable
    install predates the kernels mapping, it is loaded from ``<repo>/kernels`` by path.
    """
    mod = None
    try:
        mod = importlib.import_module("artent_fast.kernels.attention_fwd")
    except ImportError:
        path = Path(__file__).resolve().parents[2] / "kernels" / "attention_fwd.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("artent_fast_kernels_attention_fwd", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
    return mod if mod is not None and mod.available() else None


def triton_usable(q: torch.Tensor, head_dim: int, v_dim: int, dropout_p: float) -> bool:
    """Whether the Triton kernel can run this call (CUDA tensor, triton importable, supported shape)."""
    return (q.is_cuda and dropout_p == 0 and head_dim <= 256 and v_dim == head_dim
            and q.dtype != torch.float64 and kernel_module() is not None)


class TritonAttention(torch.autograd.Function):
    """Fused forward (out, lse, entropy); backward from lse in torch."""

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
        dq, dk, dv = backward_from_lse(q, k, v, out, dout, lse, ctx.problem, ctx.mask, ctx.causal)
        return dq, dk, dv, None, None, None, None


def triton_attention(q, k, v, p: Problem, mask, causal: bool, entropy: bool = True):
    """``(out, lse, entropy or None)`` from the fused kernel, differentiable in q, k, v."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return TritonAttention.apply(q, k, v, mask, p, causal, entropy)
    return kernel_module().attention_fwd(q, k, v, mask, causal=causal, scale=p.scale, entropy=entropy)
