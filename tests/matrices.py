"""Test-matrix families shared by the core tests."""

from __future__ import annotations

import numpy as np


def random(rng, m, n):
    return rng.standard_normal((m, n))


def lowrank(rng, m, n, r=3):
    return rng.standard_normal((m, r)) @ rng.standard_normal((r, n))


def kronecker(rng, m, n):
    """A (x) B with A the first row/col prime factors' block (m, n need a factor > 1 each)."""
    a = (min(p for p in range(2, m + 1) if m % p == 0), min(p for p in range(2, n + 1) if n % p == 0))
    return np.kron(rng.standard_normal(a), rng.standard_normal((m // a[0], n // a[1])))


def decaying(rng, m, n):
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (u * np.exp(-np.arange(k) / 4.0)) @ v.T


FAMILIES = {"random": random, "lowrank": lowrank, "kronecker": kronecker, "decaying": decaying}
