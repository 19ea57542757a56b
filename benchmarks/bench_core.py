"""pytest-benchmark suite for the core engine.

    python -m pytest benchmarks/bench_core.py --benchmark-enable --benchmark-group-by=param:shape

Compare within one run: naive (one svdvals per bond), one svdvals of the matrix (the floor),
and the exact methods.
"""

import pytest
import torch

import artent_fast as af
from artent_fast.bench.core import naive_profile

SHAPES = [(1024, 1024), (2048, 512)]


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def shape(request):
    return request.param


@pytest.fixture(scope="module")
def matrix(shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_naive_per_bond_svd(benchmark, matrix):
    benchmark.pedantic(naive_profile, args=(matrix,), rounds=2, iterations=1)


def test_one_svdvals_floor(benchmark, matrix):
    benchmark(torch.linalg.svdvals, matrix)


@pytest.mark.parametrize("method", ["gram", "sweep"])
def test_exact_profile(benchmark, matrix, method):
    benchmark.pedantic(af.entanglement_profile, args=(matrix,), kwargs={"method": method}, rounds=3, iterations=1)


@pytest.mark.parametrize("r", [8, 16, 64])
def test_factored_profile(benchmark, shape, r):
    gen = torch.Generator().manual_seed(r)
    B, A = torch.randn(shape[0], r, generator=gen), torch.randn(r, shape[1], generator=gen)
    benchmark(af.lowrank_profile, B, A)
