"""Input checks for the attention entry points: clear errors naming the tensor at fault.

Shapes follow FlashAttention / SDPA: q ``(B, Hq, T, d)``, k and v ``(B, Hkv, S, d)`` with
``Hq`` a multiple of ``Hkv`` (grouped-query attention). Masks broadcast to ``(B, Hq, T, S)``:
boolean (True = keep) or additive float (``-inf`` = masked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from artent_fast.core.validate import check_kind

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Problem:
    """Validated sizes of one attention call."""

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    scale: float

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads


def _check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_kind(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must have 4 dims (batch, heads, seq, head_dim), got shape {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; expected one of float16, bfloat16, float32, float64")
    return x


def check_qk(q: torch.Tensor, k: torch.Tensor, scale: float | None) -> Problem:
    """Validate q and k (shapes, dtypes, devices) and resolve the softmax scale."""
    _check_tensor(q, "q")
    _check_tensor(k, "k")
    if k.device != q.device:
        raise ValueError(f"k is on {k.device} but q is on {q.device}: move them to one device")
    if k.dtype != q.dtype:
        raise TypeError(f"k has dtype {k.dtype} but q has {q.dtype}: cast them to one dtype")
    b, h, t, d = q.shape
    bk, hk, s, dk = k.shape
    if bk != b:
        raise ValueError(f"k has batch {bk} but q has batch {b} (q {tuple(q.shape)}, k {tuple(k.shape)})")
    if dk != d:
        raise ValueError(f"k has head_dim {dk} but q has head_dim {d} (q {tuple(q.shape)}, k {tuple(k.shape)})")
    if hk == 0 or h % hk != 0:
        raise ValueError(f"q has {h} heads, not a multiple of k's {hk} heads (grouped-query attention needs that)")
    if t == 0 or s == 0 or d == 0 or b == 0 or h == 0:
        raise ValueError(f"empty attention problem: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number or None (1/sqrt(head_dim)), got {scale!r}")
    return Problem(b, h, hk, t, s, d, float(scale))


def check_v(v: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
    _check_tensor(v, "v")
    if v.device != q.device:
        raise ValueError(f"v is on {v.device} but q is on {q.device}: move them to one device")
    if v.dtype != q.dtype:
        raise TypeError(f"v has dtype {v.dtype} but q has {q.dtype}: cast them to one dtype")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v shape {tuple(v.shape)} does not match k shape {tuple(k.shape)} in (batch, heads, seq)")


def check_mask(mask: torch.Tensor | None, p: Problem, device: torch.device) -> torch.Tensor | None:
    """Return ``mask`` as a 4D tensor broadcastable to ``(B, H, T, S)`` (bool or float), or None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    check_kind(mask, "mask")
    if mask.device != device:
        raise ValueError(f"mask is on {mask.device} but q is on {device}: move it to q's device")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask has dtype {mask.dtype}: use a boolean mask (True = keep) or an additive float mask")
    if mask.ndim > 4:
        raise ValueError(f"mask has {mask.ndim} dims; it must broadcast to (B, H, T, S) = {_full(p)}")
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
    for size, full, what in zip(m.shape, _full(p), ("batch", "heads", "query", "key"), strict=True):
        if size not in (1, full):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not broadcast to (B, H, T, S) = {_full(p)} "
                f"(its {what} dim is {size})"
            )
    return m


def _full(p: Problem) -> tuple[int, int, int, int]:
    return (p.batch, p.heads, p.q_len, p.kv_len)


def check_capture(capture: object) -> tuple[str, ...]:
    names = (capture,) if isinstance(capture, str) else tuple(capture or ())
    for name in names:
        if name not in ("lse", "entropy"):
            raise ValueError(f"capture may hold 'lse' and 'entropy', got {name!r}")
    return names
