import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

# Tests marked ``interpreted`` run only inside the TRITON_INTERPRET=1 child that run_interpreted()
# starts; the parent deselects them (so they are not reported as "skipped": they do run).
IN_INTERPRETER_CHILD = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.interpreted


def pytest_configure(config):
    config.addinivalue_line("markers", "interpreted: runs in the TRITON_INTERPRET=1 child (run_interpreted)")


def pytest_collection_modifyitems(config, items):
    """Interpreted tests are deselected in the parent; GPU tests skip cleanly without CUDA (CI never has one)."""
    if not IN_INTERPRETER_CHILD:
        child_only = [item for item in items if "interpreted" in item.keywords]
        if child_only:
            config.hook.pytest_deselected(items=child_only)
            items[:] = [item for item in items if "interpreted" not in item.keywords]
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_interpreted(test_file: str, timeout: float = 1200) -> None:
    """Run ``test_file``'s ``interpreted`` tests in a child pytest with TRITON_INTERPRET=1 (Triton's CPU
    interpreter must be chosen before triton is imported, hence a separate process); fail with its output."""
    env = {k: v for k, v in os.environ.items() if k != "ARTENT_FAST_BACKEND"} | {"TRITON_INTERPRET": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        test_file,
        "-q",
        "-x",
        "-m",
        "interpreted and not gpu",
        "-p",
        "no:cacheprovider",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"interpreted Triton tests failed:\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    assert " passed" in res.stdout and " failed" not in res.stdout, res.stdout[-3000:]  # it ran something


def test_seed(nodeid: str) -> int:
    """A fixed seed per test (from its file's name and its name, not its folder: moving a file keeps its
    tests' inputs), shifted by ARTENT_TEST_SEED to try other inputs."""
    path, sep, name = nodeid.partition("::")
    key = f"tests/{path.rpartition('/')[2]}{sep}{name}"  # the id it had when every test file sat in tests/
    return (zlib.crc32(key.encode()) + int(os.environ.get("ARTENT_TEST_SEED", "0"))) % 2**31


test_seed.__test__ = False  # a helper, not a test


@pytest.fixture
def rng(request):
    """Random inputs, the same on every run (failures reproduce); ARTENT_TEST_SEED=N draws other ones."""
    seed = test_seed(request.node.nodeid)
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return np.random.default_rng(seed)


def devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
