import os

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly on machines without CUDA (CI never has one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A fresh, reported seed per test: random inputs differ run to run but failures reproduce."""
    seed = int(os.environ.get("ARTENT_TEST_SEED", np.random.SeedSequence().entropy % 2**31))
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return np.random.default_rng(seed)


def devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
