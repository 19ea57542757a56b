"""The Triton attention path: the fused forward kernel, and a backward from the stored lse.

The backward is FlashAttention-2's recurrence from the saved log-sum-exp: the Triton kernels of
``kernels/src/attention_bwd.py``, or, with ``BACKWARD = "torch"`` or when that module cannot load,
the same recurrence in torch over query blocks (``torch_path.backward_from_lse``). Neither stores
the attention matrix.

:func:`attention` is the registry's triton kernel of the op ``attention``: it runs where
:func:`triton_usable` says so and declines (``NotImplemented``) elsewhere, so the registry falls
back to the torch kernel (docs/backends.md).
"""

from __future__ import annotations

import functools
import importlib

import torch

from artent_fast.attention.torch_path import backward_from_lse
from artent_fast.attention.validate import Problem
from artent_fast.backends.registry import register_kernel, selected_backend

BACKWARD = "triton"  # or "torch": the fallback recurrence (for comparisons)


@functools.cache
def load_kernel(name: str):
    """``artent_fast.kernels.<name>`` (kernels/src/<name>.py) if it imports and triton is usable, else None."""
    try:
        mod = importlib.import_module(f"artent_fast.kernels.{name}")
    except ImportError:
        return None
    return mod if mod.available() else None


def kernel_module():
    """The forward kernel module (``kernels/src/attention_fwd.py``), or None without triton."""
    return load_kernel("attention_fwd")


def triton_usable(q: torch.Tensor, head_dim: int, v_dim: int, dropout_p: float, *, interpreted: bool = False) -> bool:
    """Whether the Triton kernel can run this call (CUDA tensor, triton importable, supported shape).

    ``interpreted``: also CPU float32 tensors when triton's interpreter is on (``TRITON_INTERPRET=1``).
    """
    if not (dropout_p == 0 and head_dim <= 256 and v_dim == head_dim and q.dtype != torch.float64):
        return False
    if q.is_cuda:
        return kernel_module() is not None
    if not (interpreted and q.device.type == "cpu" and q.dtype == torch.float32):
        return False
    mod = kernel_module()
    if mod is None:
        return False
    from artent_fast.kernels import _support

    return _support.interpreting()


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
            dq, dk, dv = bwd.attention_bwd(
                q, k, v, out, dout, lse, ctx.mask, causal=ctx.causal, scale=ctx.problem.scale
            )
        else:
            dq, dk, dv = backward_from_lse(q, k, v, out, dout, lse, ctx.problem, ctx.mask, ctx.causal)
        return dq, dk, dv, None, None, None, None


def triton_attention(q, k, v, p: Problem, mask, causal: bool, entropy: bool = True):
    """``(out, lse, entropy or None)`` from the fused kernel, differentiable in q, k, v."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return TritonAttention.apply(q, k, v, mask, p, causal, entropy)
    return kernel_module().attention_fwd(q, k, v, mask, causal=causal, scale=p.scale, entropy=entropy)


@register_kernel("attention", "triton")
def attention(
    q, k, v, p: Problem, mask, causal: bool, dropout_p: float = 0.0, training: bool = True, entropy: bool = True
):
    """The fused kernel where it can run this call; declines the rest (the torch kernel's signature).

    On CUDA when :func:`triton_usable`; on CPU only when the backend is forced
    (``ARTENT_FAST_BACKEND=triton``) and triton's interpreter is on.
    """
    if not triton_usable(q, q.shape[-1], v.shape[-1], dropout_p, interpreted=selected_backend() == "triton"):
        return NotImplemented
    return triton_attention(q, k, v, p, mask, causal, entropy)
