"""The public API of artent_fast in one place (re-exported by the package)."""

from __future__ import annotations

from artent_fast.core.layout import Sites, prime_factors, sites
from artent_fast.core.lowrank import lowrank_profile
from artent_fast.core.mps import MPS, mps_decompose
from artent_fast.core.profile import entanglement_profile
from artent_fast.core.theory import CardyFit, fit_cardy, page_curve, random_lowrank_profile

__all__ = [
    "MPS",
    "CardyFit",
    "Sites",
    "entanglement_profile",
    "fit_cardy",
    "lowrank_profile",
    "mps_decompose",
    "page_curve",
    "prime_factors",
    "random_lowrank_profile",
    "sites",
]
