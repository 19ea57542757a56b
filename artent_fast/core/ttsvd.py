"""Left-to-right TT-SVD sweep (the paper's MPS construction), with optional truncation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class TTSVDResult:
    cores: list[torch.Tensor]  # (..., chi_left, d, chi_right)
    singular_values: list[torch.Tensor]  # kept values at each bond, (..., chi_k)
    discarded_weight: torch.Tensor  # (..., K-1): dropped squared singular values / squared norm


def _keep_count(s: torch.Tensor, max_bond: int | None, cutoff: float) -> int:
    """Smallest count whose discarded relative weight is <= cutoff, capped by max_bond.

    A cutoff needs an unbatched ``s`` (checked by the caller)."""
    keep = s.shape[-1]
    if cutoff > 0:
        w = s.square()
        tail = torch.flip(torch.cumsum(torch.flip(w, [-1]), -1), [-1])  # tail[i] = sum_{j>=i} w_j
        # keep i values -> discarded tail[i]; find smallest i with tail[i] <= cutoff (relative to total 1)
        ok = torch.nonzero(tail <= cutoff * w.sum().clamp_min(torch.finfo(w.dtype).tiny))
        keep = int(ok[0, 0]) if ok.numel() else keep
        keep = max(keep, 1)
    if max_bond is not None:
        keep = min(keep, max_bond)
    return keep


def tt_svd(
    t: torch.Tensor,
    dims: Sequence[int],
    *,
    max_bond: int | None = None,
    cutoff: float = 0.0,
    keep_cores: bool = True,
) -> TTSVDResult:
    """Sequential SVDs of the normalised state ``t`` (``(..., prod(dims))``, unit norm).

    Without truncation the kept singular values give the exact entropy at every bond; with
    ``cutoff`` (relative discarded weight per bond) the state must be unbatched.
    """
    dims = list(dims)
    batch = t.shape[:-1]
    if cutoff > 0 and len(batch):
        raise ValueError("a cutoff truncation gives each matrix its own bond dims: pass one matrix at a time")
    rest = math.prod(dims)
    c = t.reshape(*batch, 1, rest)
    cores: list[torch.Tensor] = []
    svals: list[torch.Tensor] = []
    discarded: list[torch.Tensor] = []
    for d in dims[:-1]:
        chi_left = c.shape[-2]
        rest //= d
        c = c.reshape(*batch, chi_left * d, rest)
        u, s, vh = torch.linalg.svd(c, full_matrices=False)
        keep = _keep_count(s, max_bond, cutoff)
        discarded.append(s[..., keep:].square().sum(-1))
        u, s, vh = u[..., :keep], s[..., :keep], vh[..., :keep, :]
        if keep_cores:
            cores.append(u.reshape(*batch, chi_left, d, keep))
        c = s.unsqueeze(-1) * vh
        svals.append(s)
    if keep_cores:
        cores.append(c.reshape(*batch, c.shape[-2], dims[-1], 1))
    return TTSVDResult(cores, svals, torch.stack(discarded, -1))
