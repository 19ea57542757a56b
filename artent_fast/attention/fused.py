"""``fused_attention(q, k, v)``: scaled dot-product attention that also returns per-row statistics."""

from __future__ import annotations

import torch

from artent_fast.attention.torch_path import torch_attention
from artent_fast.attention.triton_path import triton_attention, triton_usable
from artent_fast.attention.validate import check_capture, check_mask, check_qk, check_v
from artent_fast.backends import registry

ATTENTION_BACKENDS = ("auto", "torch", "triton")


def check_backend(backend: str, q: torch.Tensor, v: torch.Tensor, dropout_p: float) -> None:
    """ValueError unless ``backend`` is one of :data:`ATTENTION_BACKENDS` and, named explicitly, can run this call.

    An explicit ``backend`` fails loudly; ``"auto"`` leaves the choice to the registry (see
    :func:`fused_attention`), which falls back.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "triton" and dropout_p > 0:
        raise ValueError("backend='triton' has no dropout: use dropout_p=0 or backend='torch'")
    if backend == "triton" and not triton_usable(q, q.shape[-1], v.shape[-1], dropout_p, interpreted=True):
        raise ValueError(
            "backend='triton' cannot run this call (it needs a CUDA tensor, triton installed, "
            "head_dim <= 256 equal to v's, not float64): use backend='torch' or 'auto'"
        )


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    capture: tuple[str, ...] | str | None = ("lse", "entropy"),
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attention output and per-row statistics: ``(out, {"lse": ..., "entropy": ...})``.

    q ``(B, Hq, T, d)``, k/v ``(B, Hkv, S, d)`` with ``Hq`` a multiple of ``Hkv`` (GQA).
    ``causal``: bottom-right aligned (query ``i`` sees keys ``j <= i + S - T``).
    ``mask``: bool (True = keep) or additive float, broadcastable to ``(B, Hq, T, S)``.
    ``scale``: default ``1/sqrt(d)``. ``capture``: which of "lse", "entropy" to return, each
    ``(B, Hq, T)`` float32 (float64 for float64 input), detached; ``H_i = -sum_j P_ij ln P_ij``.
    Fully masked rows: out 0, lse -inf, entropy 0. ``dropout_p`` (torch path only) drops
    attention weights after the statistics are taken. ``backend``: "torch" or "triton" runs that
    path (a ValueError where it cannot); "auto" dispatches the op ``attention`` through the one
    op registry (:mod:`artent_fast.backends.registry`), like every engine op: Triton on CUDA where
    it runs the call, torch otherwise; ``ARTENT_FAST_BACKEND`` forces a backend (``triton`` also
    runs on CPU under ``TRITON_INTERPRET=1``; ``cuda``/``cupy`` have no attention kernel: torch,
    warned once; one that cannot load raises :class:`~artent_fast.backends.registry.BackendUnavailable`).
    """
    p = check_qk(q, k, scale)
    check_v(v, q, k)
    names = check_capture(capture)
    mask = check_mask(mask, p, q.device)
    if not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    check_backend(backend, q, v, dropout_p)
    want_entropy = "entropy" in names
    if backend == "triton":
        out, lse, ent = triton_attention(q, k, v, p, mask, bool(causal), want_entropy)
    elif backend == "torch":
        out, lse, ent = torch_attention(q, k, v, p, mask, bool(causal), float(dropout_p), entropy=want_entropy)
    else:
        args = (q, k, v, p, mask, bool(causal), float(dropout_p))
        out, lse, ent = registry.dispatch("attention", *args, entropy=want_entropy)
    stats = {"lse": lse, "entropy": ent}
    return out, {name: stats[name] for name in names}
