"""The algebra of weight updates, on tensors (no modules): what each adapter type's update is.

The ``*_factors`` functions return ``(P, Q)`` with ``P @ Q`` equal to the update they name, never
forming the product: the low-rank profile (:func:`artent_fast.core.lowrank.lowrank_profile`) then
works on ``P, Q`` alone. :func:`dora_change` and :func:`ia3_change` are the dense updates (rescaled
rows or columns). Tracking (``artent_fast.updates``, live modules) and sweeps (``artent_fast.checkpoints``,
adapter files) both call these.
"""

from __future__ import annotations

import torch


def change_factors(
    B: torch.Tensor, A: torch.Tensor, B0: torch.Tensor, A0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(P, Q)`` of ``B @ A - B0 @ A0`` (float64, rank ``2 r``), free of cancellation.

    ``P @ Q = [B - B0, B0] @ [A; A - A0] = (B - B0) A + B0 (A - A0)``: the differences are exact in
    float64 for float32 (or narrower) factors, and each term is of the size of the change, so the
    small change of a large product (PiSSA's ``B0 A0`` holds the base weight's principal part) is not
    lost to round-off as it would be in ``[B, -B0] @ [A; A0]``. Each column of ``P`` and row of ``Q``
    is then rescaled to equal norms (the product is unchanged), and a pair whose term is zero is
    zeroed, so an unchanged adapter gives zero factors (a zero update).
    """
    wide = torch.float64
    B, A = B.to(wide), A.to(wide)
    B0, A0 = B0.to(B.device, wide), A0.to(A.device, wide)
    P = torch.cat([B - B0, B0], dim=1)  # (m, 2r)
    Q = torch.cat([A, A - A0], dim=0)  # (2r, n)
    left, right = P.norm(dim=0), Q.norm(dim=1)
    dead = (left == 0) | (right == 0)
    live = ~dead & torch.isfinite(left) & torch.isfinite(right) & (left > 0)  # NaN/Inf pairs stay as they are
    c = torch.where(live, right / torch.where(live, left, 1.0), 1.0).sqrt()
    one = torch.ones((), dtype=wide, device=P.device)
    return torch.where(dead, 0.0, c) * P, torch.where(dead, 0.0, one / c).unsqueeze(-1) * Q


def hadamard_factors(
    B1: torch.Tensor, A1: torch.Tensor, B2: torch.Tensor, A2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of the Hadamard product ``(B1 @ A1) * (B2 @ A2)`` (LoHa), rank ``r1 r2``.

    Row ``i`` of ``P`` is ``B1[i] ⊗ B2[i]`` and column ``j`` of ``Q`` is ``A1[:, j] ⊗ A2[:, j]`` (the
    face-splitting products), so ``(P @ Q)[i, j] = (B1 A1)[i, j] (B2 A2)[i, j]``.
    """
    m, n = B1.shape[0], A1.shape[1]
    P = (B1.unsqueeze(2) * B2.unsqueeze(1)).reshape(m, -1)
    Q = (A1.unsqueeze(1) * A2.unsqueeze(0)).reshape(-1, n)
    return P, Q


def kronecker_factors(
    left: tuple[torch.Tensor, torch.Tensor], right: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of ``kron(U1 @ V1, U2 @ V2) = kron(U1, U2) @ kron(V1, V2)`` (LoKr), rank ``k1 k2``."""
    (U1, V1), (U2, V2) = left, right
    return torch.kron(U1, U2), torch.kron(V1, V2)


def full_rank_factors(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, I)`` or ``(I, W)``, whichever has the smaller inner dimension (``min(m, n)``)."""
    m, n = W.shape
    if n <= m:
        return W, torch.eye(n, dtype=W.dtype, device=W.device)
    return torch.eye(m, dtype=W.dtype, device=W.device), W


def dora_change(
    weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, fan_in_fan_out: bool = False
) -> torch.Tensor:
    """DoRA's change of the weight, ``m / ||W + dW||_row * (W + dW) - W`` (peft's merge, in float64).

    ``weight`` (``W``) and ``delta`` (``dW = s B A``) are in the base weight's layout (``(in, out)``
    when ``fan_in_fan_out``); ``magnitude`` holds one value per output feature and the norm is over
    each output feature's inputs (peft's ``get_weight_norm``).
    """
    W, V = weight.double(), weight.double() + delta.to(weight.device).double()
    if fan_in_fan_out:
        W, V = W.mT, V.mT
    factor = magnitude.to(W.device).double().reshape(-1, 1) / V.norm(dim=1, keepdim=True)
    out = factor * V - W
    return out.mT if fan_in_fan_out else out


def adalora_factors(B: torch.Tensor, A: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of AdaLoRA's ``B (A * E)`` (``P Λ Q``; ``E`` is the ``(r, 1)`` column of singular values);
    a module pruned to rank 0 has zero factors of rank 1."""
    if A.shape[0] == 0:
        return B.new_zeros(B.shape[0], 1), A.new_zeros(1, A.shape[1])
    return B, A * E


def vera_factors(
    lambda_b: torch.Tensor, lambda_d: torch.Tensor, B: torch.Tensor, A: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of VeRA's ``(λ_b * B[:out]) (λ_d * A[:, :in])`` (the shared ``A``, ``B`` sliced to the layer)."""
    out, inp = shape
    return lambda_b.unsqueeze(-1) * B[:out], lambda_d.unsqueeze(-1) * A[:, :inp]


def ia3_change(weight: torch.Tensor, scaling: torch.Tensor) -> torch.Tensor:
    """IA3's change of the weight, ``W * (l - 1)``: ``l`` (``(out, 1)`` or ``(1, in)``) rescales rows or columns."""
    return weight * (scaling.to(weight.device, weight.dtype) - 1)
