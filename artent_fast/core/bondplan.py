"""Every bond's entropy of one or more chain states with a fixed number of torch calls (no per-bond loop).

The gram engine (:mod:`artent_fast.core.gram`) takes one Gram product at each side of a chain's
crossover and traces one site at a time down to every other bond: exact, and the cheapest in
arithmetic, but one Python-level step (and one eigensolve) per bond. For small states (LoRA
factors: ``m x r`` and ``r x n``) that fixed cost per bond is most of the time. A :class:`BondPlan`
precomputes, once per layout, *where* every bond's reduced density matrix sits in the root Grams:

1. the root Grams of every chain (two per chain, as in the gram engine; roots whose factors have
   the same shape share one batched product);
2. every traced density at once: entry ``(i, i')`` of bond ``k`` is the sum of the root entries
   whose traced indices agree, so one ``gather`` of those terms and one ``scatter_add`` into the
   entries give them all (on CUDA, a gather padded with a zero slot and a ``sum``, deterministic);
   one more gather puts the densities in bucket order;
3. densities of equal size form one bucket and one batched ``eigvalsh`` (sizes differ by bond:
   padding all to the largest would multiply the eigensolver's work);
4. the spectra, zero padded (zeros change no entropy), are reduced in one entropy call.

Plans are cached per layout, so a tracker that measures the same shapes every step never rebuilds them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from artent_fast.backends import ops
from artent_fast.core.gram import split_point


@dataclass(frozen=True)
class _Root:
    chain: int  # which chain state
    rows: int  # the state is viewed as (rows, total // rows)
    side: str  # "left": rows x rows Gram; "right": cols x cols Gram
    size: int  # the Gram's side


@dataclass(frozen=True)
class _Bond:
    out: int  # position in the returned profile
    root: int  # index into roots
    size: int  # density side
    traced: int  # size of the traced block (1: the root itself)
    side: str


class BondPlan:
    """Where every requested bond's density sits in the root Grams of its chain.

    ``chains``: site dims of each chain state (flattened in chain order); ``wanted``: per chain, the
    bonds (1-based) to return, in profile order across chains.
    """

    def __init__(self, chains: Sequence[tuple[int, ...]], wanted: Sequence[tuple[int, ...]]) -> None:
        self.totals = tuple(math.prod(d) for d in chains)
        roots: list[_Root] = []
        bonds: list[_Bond] = []
        out = 0
        for c, (dims, want) in enumerate(zip(chains, wanted, strict=True)):
            total, k_star = self.totals[c], split_point(dims)
            left_root = right_root = None
            for k in want:
                left = math.prod(dims[:k])
                if k <= k_star:  # smaller side on the left: a trace of the left root at bond k_star
                    if left_root is None:
                        left_root = len(roots)
                        root_rows = math.prod(dims[:k_star])
                        roots.append(_Root(c, root_rows, "left", root_rows))
                    bonds.append(_Bond(out, left_root, left, roots[left_root].size // left, "left"))
                else:  # smaller side on the right: a trace of the right root at bond k_star + 1
                    if right_root is None:
                        right_root = len(roots)
                        root_rows = math.prod(dims[: k_star + 1])
                        roots.append(_Root(c, root_rows, "right", total // root_rows))
                    right = total // left
                    bonds.append(_Bond(out, right_root, right, roots[right_root].size // right, "right"))
                out += 1
        self.roots = tuple(roots)
        self.num_bonds = out
        self._build_index(bonds)

    def _build_index(self, bonds: list[_Bond]) -> None:
        # roots whose Gram factor ``Y`` (``Y Y^T`` is the root) has the same shape share one product
        shapes: dict[tuple[int, int], list[int]] = {}
        for q, root in enumerate(self.roots):
            total = self.totals[root.chain]
            shape = (root.rows, total // root.rows) if root.side == "left" else (total // root.rows, root.rows)
            shapes.setdefault(shape, []).append(q)
        self.root_groups = list(shapes.values())
        offsets, pos = [0] * len(self.roots), 0
        for members in self.root_groups:
            for q in members:
                offsets[q] = pos
                pos += self.roots[q].size ** 2
        zero = pos  # the flattened roots are followed by one zero
        traced_max = max((b.traced for b in bonds if b.traced > 1), default=1)
        # buckets of equal density size, each a contiguous run of (n_b, s, s) blocks
        sizes = sorted({b.size for b in bonds})
        order = [b for s in sizes for b in bonds if b.size == s]
        # Each density entry is a root entry (a bond at a root) or the sum of ``traced`` root entries
        # (padded to ``traced_max`` with the zero slot): one gather and one sum give all traced
        # entries, then one gather from [roots, 0, traced sums] puts every density in bucket order.
        traced_rows: list[torch.Tensor] = []
        source: list[torch.Tensor] = []
        n_traced = 0
        for b in order:
            base, root_size, s, t = offsets[b.root], self.roots[b.root].size, b.size, b.traced
            i = torch.arange(s).view(s, 1, 1)
            i2 = torch.arange(s).view(1, s, 1)
            j = torch.arange(t).view(1, 1, t)
            if b.side == "left":  # root index (i, j) -> i * t + j
                row, col = i * t + j, i2 * t + j
            else:  # root index (j, i) -> j * s + i
                row, col = j * s + i, j * s + i2
            flat = (base + row * root_size + col).reshape(s * s, t)
            if t == 1:
                source.append(flat[:, 0])
            else:
                traced_rows.append(torch.cat([flat, torch.full((s * s, traced_max - t), zero)], 1))
                source.append(zero + 1 + n_traced + torch.arange(s * s))
                n_traced += s * s
        self.traced_max = traced_max
        self.traced_index = torch.cat(traced_rows).flatten() if traced_rows else None
        # the same sums without padding (CPU): gather only the real terms, then add each into its entry
        # (scatter_add; on CUDA its atomics would make the sums' rounding order vary run to run)
        if traced_rows:
            rows = torch.cat(traced_rows)
            real = rows != zero
            self.traced_terms = rows[real]
            self.traced_segments = torch.arange(rows.shape[0]).unsqueeze(1).expand_as(rows)[real]
            self.n_traced = rows.shape[0]
        else:
            self.traced_terms = self.traced_segments = None
            self.n_traced = 0
        self.order_index = torch.cat(source)
        # spectra: bucket values, flattened and followed by one zero, gathered into (num_bonds, width)
        self.buckets = []  # (size, count, start in the flat densities)
        start = 0
        value_pos: dict[int, int] = {}  # profile position -> start of its values in the flat spectra
        vpos = 0
        for s in sizes:
            members = [b for b in order if b.size == s]
            self.buckets.append((s, len(members), start))
            start += len(members) * s * s
            for b in members:
                value_pos[b.out] = vpos
                vpos += s
        self.width = max(sizes)
        size_of = {b.out: b.size for b in bonds}
        # per bond (profile order): where its eigenvalues start among the bucket values, and how many
        self.value_starts = [value_pos[k] for k in range(self.num_bonds)]
        self.value_sizes = [size_of[k] for k in range(self.num_bonds)]
        pad = vpos
        spectra_index = [
            [start + q if q < size else pad for q in range(self.width)]
            for start, size in zip(self.value_starts, self.value_sizes, strict=True)
        ]
        self.spectra_index = torch.tensor(spectra_index).flatten()
        self._device_cache: dict[torch.device, tuple] = {}

    def _indices(self, device: torch.device) -> tuple:
        cached = self._device_cache.get(device)
        if cached is None:
            move = [self.traced_index, self.order_index, self.spectra_index, self.traced_terms, self.traced_segments]
            cached = self._device_cache[device] = tuple(None if t is None else t.to(device) for t in move)
        return cached

    def root_factors(self, states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per root group, the stacked Gram factors ``Y`` (``Y Y^T`` is the root): ``(..., roots, rows, cols)``."""
        out = []
        for members in self.root_groups:
            factors = []
            for q in members:
                root = self.roots[q]
                t = states[root.chain]
                x = t.reshape(*t.shape[:-1], root.rows, t.shape[-1] // root.rows)
                factors.append(x if root.side == "left" else x.mT)
            out.append(torch.stack(factors, -3) if len(factors) > 1 else factors[0].unsqueeze(-3))
        return out

    def root_index(self, positions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per root group, where each entry of :meth:`root_factors` sits in one flat buffer.

        ``positions[c][t]``: the buffer position of entry ``t`` of chain ``c``'s (flattened) state.
        ``buffer[index]`` then gives every group's factors with one indexing call per group.
        """
        out = []
        for members in self.root_groups:
            parts = []
            for q in members:
                root = self.roots[q]
                x = positions[root.chain].reshape(root.rows, -1)
                parts.append(x if root.side == "left" else x.mT)
            out.append(torch.stack(parts))
        return out

    def densities(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every bond's unnormalised density, flattened bucket by bucket: ``(..., sum of s^2)``."""
        return self.densities_of(self.root_factors(states))

    def densities_of(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`densities` from the root groups' Gram factors (as :meth:`root_factors` returns them)."""
        grams = [ops.gram(y, "left").flatten(-3) for y in factors]
        grams.append(grams[0].new_zeros(*grams[0].shape[:-1], 1))
        flat = torch.cat(grams, -1)
        traced_index, order_index, _, terms, segments = self._indices(flat.device)
        if traced_index is not None and flat.device.type == "cpu":
            rows = flat.reshape(-1, flat.shape[-1])
            picked = rows.gather(-1, terms.expand(rows.shape[0], -1))
            traced = rows.new_zeros(rows.shape[0], self.n_traced).scatter_add_(
                -1, segments.expand(rows.shape[0], -1), picked
            )
            flat = torch.cat([flat, traced.reshape(*flat.shape[:-1], self.n_traced)], -1)
        elif traced_index is not None:
            traced = _take(flat, traced_index).unflatten(-1, (-1, self.traced_max)).sum(-1)
            flat = torch.cat([flat, traced], -1)
        return _take(flat, order_index)

    def spectra(self, states: Sequence[torch.Tensor], *, factors: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Eigenvalues of every bond's density, zero padded: ``(..., num_bonds, width)`` in profile order.

        ``factors``: the root groups' Gram factors instead of ``states`` (see :meth:`root_index`).
        """
        return self.spectra_of(self.densities_of(factors if factors is not None else self.root_factors(states)))

    def spectra_of(self, dens: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`spectra` from the densities (as :meth:`densities_of` returns them); ``values``: their
        eigenvalues already computed, bucket after bucket (as :func:`artent_fast.backends.native.eigvalsh_buckets`
        returns them)."""
        batch = dens.shape[:-1]
        if values is None:
            parts = []
            for s, count, start in self.buckets:
                block = dens[..., start : start + count * s * s].reshape(*batch, count, s, s)
                parts.append(ops.eigvalsh(block).flatten(-2))
            values = torch.cat(parts, -1)
        values = torch.cat([values, values.new_zeros(*batch, 1)], -1)
        return _take(values, self._indices(dens.device)[2]).unflatten(-1, (self.num_bonds, self.width))

    def entropies(
        self,
        states: Sequence[torch.Tensor],
        alpha: float,
        base: float,
        *,
        factors: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Entropy at every requested bond, ``(..., num_bonds)`` (each density normalised by its trace)."""
        return ops.entropy(self.spectra(states, factors=factors), alpha=alpha, base=base)

    def program(self, index: Sequence[torch.Tensor]) -> dict:
        """The plan as flat int64 arrays for the compiled CPU path (:mod:`artent_fast.backends.native`), with
        ``index`` the root groups' factor positions (:meth:`root_index`): per group its member count, rows,
        columns and positions; the traced terms and their segments; the order of the densities; per bucket
        its matrix size, count and start; per bond where its eigenvalues start, and how many."""
        _, order, _, terms, segments = self._indices(torch.device("cpu"))
        shapes = [tuple(ix.shape) for ix in index]
        empty = torch.zeros(1, dtype=torch.int64)  # a valid pointer where there is nothing to read
        return {
            "groups": len(index),
            "g_count": torch.tensor([c for c, _, _ in shapes], dtype=torch.int64),
            "g_rows": torch.tensor([r for _, r, _ in shapes], dtype=torch.int64),
            "g_cols": torch.tensor([c for _, _, c in shapes], dtype=torch.int64),
            "g_index": torch.cat([ix.flatten() for ix in index]).to(torch.int64).contiguous(),
            "n_grams": sum(c * r * r for c, r, _ in shapes),
            "n_terms": 0 if terms is None else terms.numel(),
            "terms": empty if terms is None else terms.to(torch.int64).contiguous(),
            "segments": empty if segments is None else segments.to(torch.int64).contiguous(),
            "n_traced": self.n_traced,
            "n_dens": order.numel(),
            "order": order.to(torch.int64).contiguous(),
            "buckets": len(self.buckets),
            "b_size": torch.tensor([size for size, _, _ in self.buckets], dtype=torch.int64),
            "b_count": torch.tensor([count for _, count, _ in self.buckets], dtype=torch.int64),
            "b_start": torch.tensor([start for _, _, start in self.buckets], dtype=torch.int64),
            "n_values": sum(size * count for size, count, _ in self.buckets),
            "n_bonds": self.num_bonds,
            "v_start": torch.tensor(self.value_starts, dtype=torch.int64),
            "v_size": torch.tensor(self.value_sizes, dtype=torch.int64),
        }


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[..., index]`` by ``gather`` (on CPU about 3x faster than ``index_select`` along the last dim)."""
    flat = x.reshape(-1, x.shape[-1])
    return flat.gather(-1, index.expand(flat.shape[0], -1)).reshape(*x.shape[:-1], index.shape[0])


def lowrank_chains(
    row_dims: tuple[int, ...], col_dims: tuple[int, ...], r: int
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], tuple[str, ...]]:
    """The chains of ``B @ A`` with reduced factors ``B~`` (sites ``row_dims, r``) and ``A~`` (``r, col_dims``).

    Row bonds (and the row/column bond) come from ``B~``, the other column bonds from ``A~``.
    Returns ``(chains, wanted, sources)``: each chain's site dims, its bonds in profile order, and
    which state it reads (``"row"``: ``B~``, ``"col"``: ``A~``).
    """
    chains, wanted, sources = [], [], []
    a, b = len(row_dims), len(col_dims)
    row_bonds = tuple(range(1, a + 1)) if b else tuple(range(1, a))
    if a and row_bonds:
        chains.append((*row_dims, r))
        wanted.append(row_bonds)
        sources.append("row")
    if b > 1:
        chains.append((r, *col_dims))
        wanted.append(tuple(range(2, b + 1)))
        sources.append("col")
    return chains, wanted, tuple(sources)


@lru_cache(maxsize=256)
def lowrank_plan(row_dims: tuple[int, ...], col_dims: tuple[int, ...], r: int) -> tuple[BondPlan, tuple[str, ...]]:
    """The plan for ``B @ A`` (see :func:`lowrank_chains`) and which states it reads, in order."""
    chains, wanted, sources = lowrank_chains(row_dims, col_dims, r)
    return BondPlan(chains, wanted), sources
