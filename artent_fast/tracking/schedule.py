"""What the tracker measures when, and where: the units it tracks, each with what was decided for it once.

Every rank builds the same :class:`Tracked` list in the same order (the model is the same on every
rank): a unit's position in it, its width (the exchange's layout), its estimated cost and its owner
(the rank that measures it, :func:`artent_fast.parallel.owners`), and, under ``torch.distributed``,
how its parameters are gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artent_fast.parallel import matrix_cost, owners, process_group
from artent_fast.updates import Unit

if TYPE_CHECKING:  # a type only: gathering is built by the tracker (tracking.dist.gather imports this module)
    from artent_fast.tracking.dist.gather import Gathering


@dataclass(eq=False)
class Tracked:
    """One tracked unit and the tracker's state for it."""

    unit: Unit
    index: int  # position in the unit order every rank shares
    width: int  # bonds at most (fixed at construction)
    cost: float  # estimated measuring cost
    owner: int = 0  # the rank that measures it
    gathering: Gathering | None = None  # under torch.distributed: how its parameters become whole
    live: bool = True  # False once dropped after repeated failures

    @property
    def factored(self) -> bool:
        return self.unit.kind == "lora"

    def due(self, lora_due: bool, dense_due: bool) -> bool:
        kind = self.unit.kind
        return self.live and ((kind == "lora" and lora_due) or (kind == "dense" and dense_due))


def plan(units: Sequence[Unit], world: int = 1) -> list[Tracked]:
    """The units in order, each with its width, cost and owner (LPT over ``world`` ranks)."""
    tracked = [Tracked(u, i, profile_width(u), unit_cost(u)) for i, u in enumerate(units)]
    for t, owner in zip(tracked, owners([t.cost for t in tracked], world), strict=True):
        t.owner = owner
    return tracked


def tracking_group(distributed: bool | None) -> tuple[int, int] | None:
    """``(rank, world)`` when the tracker works across ranks, else None.

    ``distributed=None`` (default): when ``torch.distributed`` is initialised with more than one
    rank. ``True`` requires it; ``False`` tracks each process on its own.
    """
    if distributed is False:
        return None
    group = process_group()
    if group is None:
        if distributed:
            raise ValueError(
                "distributed=True: torch.distributed is not initialised (launch with torchrun and "
                "call torch.distributed.init_process_group first)"
            )
        return None
    if group[1] == 1 and not distributed:
        return None
    return group


def unit_cost(unit: Unit) -> float:
    """Estimated measuring cost (:func:`artent_fast.parallel.matrix_cost`; 1 when the shape is not known)."""
    shape = unit.shape
    if shape is None:
        return 1.0
    if unit.kind == "lora":
        return matrix_cost("lora", shape, unit.rank)
    return matrix_cost("dense", shape)


def profile_width(unit: Unit) -> int:
    """An upper bound on the number of bonds of ``unit``'s update (fixed at construction).

    A side of ``s`` rows has at most ``log2(s)`` sites (each a prime factor, at least 2), parts and
    transposes included; the layout of the exchange buffer is built from these bounds.
    """
    shape = unit.shape
    if shape is None:
        return 64
    return max(1, sum(max(1, int(s).bit_length() - 1) for s in shape) - 1)
