"""Exact profiles of many factored updates of *different* shapes in one computation (the tracker's due step).

:func:`artent_fast.lowrank_profile` batches updates of one shape. A model's tracked LoRA updates
come in a few shapes (q and v projections differ under grouped-query attention), and at these sizes
the cost of a measurement is mostly the number of torch calls, not arithmetic. Here every update of
one rank ``r`` is measured together:

1. the factors are zero padded into ``B (k, m_max, r)`` and ``A (k, r, n_max)``: zero rows of ``B``
   and zero columns of ``A`` change neither ``A A^T`` nor ``B^T B``, so one batched pass computes
   every unit's reduced factors (:func:`artent_fast.core.lowrank.reduced_factors`);
2. one :class:`~artent_fast.core.bondplan.BondPlan` holds the chains of all units: root Grams of equal
   shape share one product, densities of equal size one ``eigvalsh``, whatever unit they belong to;
3. the profiles come back as one ``(k, max_bonds)`` tensor, NaN padded after each unit's last bond.

A unit whose update is zero, or whose factors hold a NaN or Inf, measures as all-NaN. The plain twin
is :func:`artent_fast.lowrank_profile` of each unit on its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from artent_fast.backends import native, ops
from artent_fast.core.bondplan import BondPlan, lowrank_chains
from artent_fast.core.layout import default_sites
from artent_fast.core.lowrank import reduced_factors


def pad_factors(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` of shapes ``(k, m_max, r)`` and ``(k, r, n_max)``: each unit's factors, zero padded.

    All units must have the same rank ``r`` and lie on one device; mixed floating dtypes are promoted.
    """
    if not pairs:
        raise ValueError("pad_factors: no factors given")
    for i, pair in enumerate(pairs):
        for name, t in zip("BA", pair, strict=True):
            if not t.is_floating_point() or t.ndim != 2:
                raise TypeError(
                    f"pad_factors: {name} of unit {i} must be a real floating matrix, got {t.dtype} {tuple(t.shape)}"
                )
    ranks = {B.shape[-1] for B, _ in pairs} | {A.shape[-2] for _, A in pairs}
    if len(ranks) != 1:
        raise ValueError(f"pad_factors: factors of one rank are required, got ranks {sorted(ranks)}")
    Bs, As = [b for b, _ in pairs], [a.mT for _, a in pairs]
    dtypes = {t.dtype for t in Bs + As}
    if len(dtypes) > 1:
        dtype = functools.reduce(torch.promote_types, dtypes)
        Bs, As = [t.to(dtype) for t in Bs], [t.to(dtype) for t in As]
    return pad_sequence(Bs, batch_first=True), pad_sequence(As, batch_first=True).mT


@dataclass
class MixedPlan:
    """Units of shapes ``(m_i, n_i)``, rank ``r``, padded to ``m_max, n_max`` (see :func:`mixed_plan`)."""

    plan: BondPlan
    index: list[torch.Tensor]  # per root group of the plan: where its Gram factors sit in the flat buffer
    slots: torch.Tensor  # per unit and bond (k * width): its position in the plan's profile, or a NaN's
    width: int  # bonds of the longest profile
    _moved: dict = field(default_factory=dict, repr=False)
    _program: dict | None = field(default=None, repr=False)

    def program(self) -> dict:
        """The plan as flat arrays for the compiled CPU path (:meth:`BondPlan.program`, and ``slots``,
        ``width``), built once."""
        if self._program is None:
            self._program = {**self.plan.program(self.index), "slots": self.slots.contiguous(), "width": self.width}
        return self._program

    def on(self, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(index, slots)`` on ``device``, moved once per device."""
        moved = self._moved.get(device)
        if moved is None:
            moved = self._moved[device] = ([ix.to(device) for ix in self.index], self.slots.to(device))
        return moved


@functools.lru_cache(maxsize=64)
def mixed_plan(shapes: tuple[tuple[int, int], ...], r: int, m_max: int, n_max: int) -> MixedPlan:
    """The plan for units of shapes ``(m_i, n_i)`` padded to ``m_max, n_max``, rank ``r``, default layouts.

    The flat buffer is ``[B~ (k, m_max, r), A~ (k, r, n_max)]`` of reduced factors, flattened.
    """
    chains, wanted, positions, counts = [], [], [], []
    a_base = len(shapes) * m_max * r
    for i, (m, n) in enumerate(shapes):
        layout = default_sites(m, n)
        c, w, sources = lowrank_chains(layout.row_dims, layout.col_dims, r)
        chains += c
        wanted += w
        for source in sources:  # where entry t of the chain's state (B~[i, :m] or A~[i, :, :n], flattened) sits
            if source == "row":
                positions.append(i * m_max * r + torch.arange(m * r))
            else:
                cols = torch.arange(r)[:, None] * n_max + torch.arange(n)
                positions.append(a_base + i * r * n_max + cols.flatten())
        counts.append(sum(len(x) for x in w))
    plan = BondPlan(chains, wanted)
    width, pad = max(counts), plan.num_bonds
    slots, start = [], 0
    for count in counts:
        slots += [start + j if j < count else pad for j in range(width)]
        start += count
    return MixedPlan(plan, plan.root_index(positions), torch.tensor(slots), width)


def lowrank_profiles(
    B: torch.Tensor,
    A: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    *,
    alpha: float = 1.0,
    base: float = math.e,
) -> torch.Tensor:
    """Profiles of ``B[i, :m_i] @ A[i, :, :n_i]`` for ``shapes[i] = (m_i, n_i)``: ``(k, max_bonds)``, float64.

    ``B`` and ``A`` as :func:`pad_factors` returns them (the padding must be zero). Row ``i`` holds
    the ``sum(sites) - 1`` entropies of unit ``i`` (default layout), then NaN; a zero update, or one
    with a non-finite entry, is all NaN.
    """
    k, m_max, r = B.shape
    shapes = tuple((int(m), int(n)) for m, n in shapes)
    if len(shapes) != k or A.shape[0] != k or A.shape[1] != r:
        raise ValueError(f"B {tuple(B.shape)}, A {tuple(A.shape)} and {len(shapes)} shapes do not match")
    if any(m > m_max or n > A.shape[2] for m, n in shapes):
        raise ValueError(f"shapes {shapes} exceed the padded factors B {tuple(B.shape)}, A {tuple(A.shape)}")
    mixed = mixed_plan(shapes, r, m_max, A.shape[2])
    index, slots = mixed.on(B.device)
    program = mixed.program() if B.device.type == "cpu" else None
    native_out = native.lowrank_densities(B, A, program) if program is not None else NotImplemented
    values = None
    if native_out is not NotImplemented:  # the compiled twin of the torch code below, to rounding
        dens, zero = native_out
        values = native.eigvalsh_buckets(dens, program)  # batched solver or LAPACK, from C
        if values is NotImplemented:
            values = None  # torch.linalg.eigvalsh, in spectra_of
        elif alpha == 1:
            out = native.profiles(values, zero, program)
            return out if base == math.e else out / math.log(base)
    else:
        b_red, a_red = reduced_factors(*finite_unit_scale(B.to(torch.float64), A.to(torch.float64)))
        flat = torch.cat([b_red.reshape(-1), a_red.reshape(-1)])
        # every root group's Gram factors, one index_select each (on CPU the fastest of indexing, take and gather)
        dens = mixed.plan.densities_of([flat.index_select(0, ix.flatten()).view(ix.shape) for ix in index])
        zero = b_red.square().sum((-2, -1)) == 0
    prof = ops.entropy(mixed.plan.spectra_of(dens, values), alpha=alpha, base=base)
    prof = torch.cat([prof, prof.new_full((1,), float("nan"))])
    out = prof.gather(0, slots).view(k, mixed.width)
    return out.masked_fill(zero.unsqueeze(-1), float("nan"))


def finite_unit_scale(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's factors divided by their max-abs entry (as :func:`~artent_fast.core.validate.unit_scale`),
    and zeroed where either factor holds a NaN or Inf (the max-abs entry tells: ``amax`` propagates NaN).

    On CPU the zeroing is skipped when every unit is finite; on CUDA it never waits on the host.
    """
    scales = [x.abs().amax((-2, -1), keepdim=True) for x in (B, A)]
    ok = torch.isfinite(scales[0]) & torch.isfinite(scales[1])
    if B.device.type == "cuda" or not bool(ok.all()):
        zero = B.new_zeros(())
        B, A = torch.where(ok, B, zero), torch.where(ok, A, zero)
        scales = [torch.where(ok, sc, 1.0) for sc in scales]
    tiny = torch.finfo(B.dtype).tiny
    return B / scales[0].clamp_min(tiny), A / scales[1].clamp_min(tiny)
